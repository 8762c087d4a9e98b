"""The shape of the package (GUIDE §2): layers, one package per task, no import circle.

Every module's imports are read with `ast`, those inside functions and under `TYPE_CHECKING`
included, and so are `"twins.module:attr"` strings (what `importlib` resolves). A module may
import its own layer or lower ones only; nothing outside `tasks/` and `cli/` compares a value
with a task name; no two modules reach each other through any chain of imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "twins"
TASK_NAMES = {"classify", "segment", "detect"}
# Bottom to top. A module's layer is that of the longest prefix listed.
LAYERS: list[set[str]] = [
    {"twins.errors", "twins.notes", "twins.lazy", "twins.atomic", "twins.seeds", "twins.sizes"}
    | {"twins.device", "twins.storage", "twins.preprocessing", "twins.config", "twins.memory"}
    | {"twins.console", "twins.environment"},
    {"twins.weights"},
    {"twins.models"},
    {"twins.data"},
    {"twins.train", "twins.export", "twins.inference"},
    {"twins.tasks"},
    {"twins.cli", "twins.benchmark", "twins.convert", "twins", "twins.__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for candidate in [module, *_parents(module)]:
        for index, members in enumerate(LAYERS):
            if candidate in members:
                return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(len(parts) - 1, 0, -1)]


def resolve(name: str) -> str | None:
    """The module of `twins...` (a module, or a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:  # `from twins.data import packed`: the submodule
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in MODULES else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = re.fullmatch(r"(twins(?:\.\w+)+)(?::\w+)?", node.value)
            if match and match.group(1) in MODULES:  # not a file name such as "twins.ckpt"
                targets = [match.group(1)]
        for target in targets:
            if target == "twins" or target.startswith("twins."):
                resolved = resolve(target)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_imports_its_own_layer_or_lower_ones():
    upward = [
        f"{module} -> {imported}"
        for module, imported_modules in GRAPH.items()
        for imported in imported_modules
        if module != "twins" and layer_of(imported) > layer_of(module)
    ]
    assert upward == []


def test_there_is_no_import_circle():
    circles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in GRAPH[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        # A package's own __init__ is run by every import of its modules: not an edge.
        if module not in index:
            visit(module)
    assert circles == []


def _compared_task_names(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                values = _constants(operand)
                named = sorted(values & TASK_NAMES)
                if named:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {named}")
    return found


def _constants(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {e.value for e in node.elts if isinstance(e, ast.Constant)}
    return set()


def test_nothing_below_the_tasks_compares_with_a_task_name():
    below = [path for module, path in MODULES.items() if layer_of(module) < layer_of("twins.tasks")]
    assert [hit for path in below for hit in _compared_task_names(path)] == []


@pytest.mark.parametrize("task", sorted(TASK_NAMES))
def test_each_task_is_one_package_with_its_task_and_its_predict(task):
    folder = PACKAGE / "tasks" / task
    assert (folder / "__init__.py").is_file() and (folder / "task.py").is_file()
    for name in ("data", "transforms", "evaluate", "predict", "demo"):
        assert (folder / f"{name}.py").is_file(), f"tasks/{task}/{name}.py"


def test_the_checks_see_what_they_must():
    """The checks above fail where they should: an upward import, a circle, a comparison."""
    assert "twins.tasks.classify.task" in GRAPH["twins.tasks"]  # an importlib string
    assert layer_of("twins.train.fit_loop") < layer_of("twins.tasks.segment.task")
    sample = PACKAGE / "tasks" / "__init__.py"
    assert _compared_task_names(sample)  # the registry compares with "classify"


def test_no_function_is_longer_than_100_lines():
    """A function a reader cannot take in at once becomes a few named steps."""
    long = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)"
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := node.end_lineno - node.lineno + 1) > 100
    ]
    assert long == []
