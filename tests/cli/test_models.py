"""`twins models`: the classifiers, then the dense models with ours and the paper's counts."""

from __future__ import annotations

from twins.cli.main import main
from twins.cli.models import describe_dense
from twins.tasks import model_names


def test_dense_rows_give_our_and_the_papers_counts():
    rows = {row["name"]: row for row in describe_dense()}
    assert set(model_names("segment")) <= set(rows)
    assert {rows[name]["task"] for name in model_names("segment")} == {"segment"}
    # Ours: the lean backbone + the official heads; the paper's: with the official backbone's
    # unused classifier (FACTS §4).
    assert rows["upernet_pcpvt_small"]["params"] == 23_592_192 + 30_487_852
    assert rows["upernet_pcpvt_small"]["paper_params_m"] == 54.6
    assert rows["semantic_fpn_svt_large"]["params"] == 98_248_192 + 4_496_022
    assert rows["semantic_fpn_svt_large"]["paper_params_m"] == 103.7


def test_models_table_has_a_dense_section(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "pcpvt_small"
    start = next(i for i, line in enumerate(lines) if line.startswith("dense model"))
    row = next(line.split() for line in lines[start:] if line.startswith("upernet_svt_base"))
    assert row == ["upernet_svt_base", "segment", f"{55_303_296 + 32_421_164:,}", "88.5"]
