"""Each task reads its own config keys (`Task.reads`): a key of another task, given in the YAML
file or as key=value, is refused in one line naming the key and the task, and a run's
config.yaml lists the keys its task reads, no others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

import twins
from twins.cli.main import main
from twins.config import KEYS
from twins.errors import TwinsError
from twins.tasks import TASKS, task_for, task_named
from twins.train import load_config

ROOT = Path(__file__).resolve().parents[2]
UPERNET = ROOT / "configs" / "dense" / "upernet_pcpvt_small_ade20k.yaml"
RETINANET = ROOT / "configs" / "dense" / "retinanet_pcpvt_small_coco_1x.yaml"
CLASSIFIER = ROOT / "configs" / "pcpvt_small.yaml"


@pytest.mark.parametrize(
    ("recipe", "override", "task"),
    [
        (UPERNET, "mix_up=0.5", "segment"),
        (UPERNET, "image_size=512", "segment"),
        (RETINANET, "re_prob=0.5", "detect"),
        (RETINANET, "crop_size=[256,256]", "detect"),
        (CLASSIFIER, "img_scale=[512,512]", "classify"),
        (CLASSIFIER, "aux_loss_weight=0.2", "classify"),
    ],
)
def test_a_key_of_another_task_is_refused_in_one_line(recipe, override, task, tmp_path, capsys):
    args = ["train", "-c", str(recipe), "--data", str(tmp_path), "--output", str(tmp_path / "r")]
    assert main([*args, override]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    key = override.split("=")[0]
    assert f"{key} is a key a {task} run does not read" in error and "leave it out" in error
    assert not (tmp_path / "r").exists()


def test_a_yaml_file_naming_keys_of_another_task_is_refused(tmp_path):
    values = yaml.safe_load(UPERNET.read_text()) | {"auto_augment": "rand-m9", "re_prob": 0.5}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(TwinsError, match="^auto_augment, re_prob are keys a segment run does not"):
        task_for(load_config(tmp_path / "recipe.yaml"))


def test_a_key_given_at_its_default_changes_nothing_and_passes(tmp_path):
    """A config.yaml written with every key (an earlier version's) still loads."""
    values = yaml.safe_load(UPERNET.read_text()) | {"mix_up": 0.8, "image_size": 224}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(values))
    assert task_for(load_config(tmp_path / "recipe.yaml")).name == "segment"


def test_a_segment_runs_config_yaml_lists_the_keys_it_reads(tiny_segmenter_run):
    written = yaml.safe_load((tiny_segmenter_run / "config.yaml").read_text())
    assert set(written) == task_named("segment").reads
    assert not {"mix_up", "re_prob", "auto_augment", "image_size", "crop_pct"} & set(written)
    config = load_config(tiny_segmenter_run / "config.yaml")  # and it trains again as written
    assert task_for(config).name == "segment" and config.img_scale == [96, 48]


def _keys_read(package: Path) -> set[str]:
    """The config keys the modules of a task's package read (`config.<key>`, `cfg.<key>`)."""
    found = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("config", "cfg")
                and node.attr in KEYS
            ):
                found.add(node.attr)
    return found


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_task_declares_every_key_its_modules_read(name):
    package = Path(twins.__file__).parent / "tasks" / name
    assert _keys_read(package) - task_named(name).reads == set()


def test_every_key_is_read_by_some_task():
    assert set(KEYS) == set().union(*(task_named(name).reads for name in TASKS))
