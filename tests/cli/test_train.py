"""`twins train --print-config`: the resolved config as YAML that `twins train -c` reads back
as the same run, with nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from twins.cli.main import main
from twins.train import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# The seed's own file (tabs before its comments) and a recipe of each dense task.
RECIPES = ["twin_s.yaml", "dense/upernet_pcpvt_small_ade20k.yaml"]
RECIPES += ["dense/maskrcnn_svt_small_coco_3x.yaml"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_printed_config_reads_back_as_the_same_run_and_nothing_starts(
    recipe, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the default output, runs/<recipe name>, would be made here
    overrides = ["seed=3", "compile=true", "channels_last=true", "model_args.depths=[1,1,1,1]"]
    argv = ["train", "-c", str(CONFIGS / recipe), "--data", "data", *overrides]

    assert main([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    assert main(["train", "-c", "printed.yaml", "--print-config"]) == 0

    assert capsys.readouterr().out == printed
    resolved = load_config(CONFIGS / recipe, overrides, data_url="data")
    assert load_config("printed.yaml").to_dict() == resolved.to_dict()
    assert resolved.compile and resolved.channels_last
    assert sorted(path.name for path in tmp_path.iterdir()) == ["printed.yaml"]
