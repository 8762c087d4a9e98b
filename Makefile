# `make demo` and `make test` each create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision come pinned: these releases lie on the CI machines' disk.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-slow lint format bench clean

$(BIN)/twins: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(BIN)/twins

install: $(BIN)/twins

demo: install
	$(BIN)/twins demo

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q --numprocesses auto --maxprocesses 4

test-slow: install
	$(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The CPU speed goals against timm (one thread) and where each step goes, in bench/cpu_benchmark.md
bench: install
	$(BIN)/python scripts/cpu_benchmark.py --out bench

clean:
	rm -rf $(VENV) build bench src/*.egg-info .pytest_cache .ruff_cache
