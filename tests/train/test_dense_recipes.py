"""The official dense recipes (configs/dense/*.yaml) against the official configs' settings:
every file loads, says its task, names its model, and holds the recipe's values."""

from __future__ import annotations

from pathlib import Path

import pytest

import twins
from twins.tasks import task_for, task_of
from twins.train import load_config

ROOT = Path(__file__).resolve().parents[2]
DENSE = ROOT / "configs" / "dense"
VARIANTS = ["pcpvt_small", "pcpvt_base", "pcpvt_large", "svt_small", "svt_base", "svt_large"]
# The official repository has 3x configs for S and B, and for SVT-L (no result published).
THREE_X = ["pcpvt_small", "pcpvt_base", "svt_small", "svt_base", "svt_large"]

SEGMENTATION = {
    "img_scale": [2048, 512],
    "ratio_range": [0.5, 2.0],
    "crop_size": [512, 512],
    "cat_max_ratio": 0.75,
    "reduce_zero_label": True,
    "ignore_index": 255,
    "num_classes": 150,
    "lr_scheduler": "poly_lr",
    "warmup_length": 0,
}
# The official configs (segmentation/configs/*, detection/configs/*), key for key.
UPERNET = SEGMENTATION | {
    "base_lr": 6e-5,
    "beta": [0.9, 0.999],
    "weight_decay": 0.01,
    "no_decay_keys": ["pos_block", "norm"],
    "poly_power": 1.0,
    "min_lr": 0.0,
    "warmup_iters": 1500,
    "warmup_ratio": 1e-6,
    "max_iters": 160_000,
    "eval_every": 16_000,
    "save_every": 16_000,
    "aux_loss_weight": 0.4,
    "batch_size": 2,  # x 8 devices: 16
}
SEMANTIC_FPN = SEGMENTATION | {
    "base_lr": 1e-4,
    "weight_decay": 1e-4,
    "no_decay_keys": [],
    "poly_power": 0.9,
    "min_lr": 1e-6,
    "warmup_iters": 0,
    "max_iters": 80_000,
    "eval_every": 8000,
    "save_every": 8000,
    "batch_size": 2,  # x 8 devices: the paper's 16
}
DETECTION = {
    "num_classes": 80,
    "img_scale": [1333, 800],
    "pad_divisor": 32,
    "lr_scheduler": "step_lr",
    "warmup_length": 0,
    "warmup_iters": 500,
    "warmup_ratio": 0.001,
    "max_iters": 0,
    "eval_every": 1,
    "batch_size": 2,  # x 8 devices: 16
    "drop_path_rate": 0.2,
}
ONE_X = DETECTION | {
    "scale_policy": "single",
    "weight_decay": 1e-4,
    "no_decay_keys": [],
    "lr_steps": [8, 11],
    "epochs": 12,
    "amp_level": "O0",
}
THREE_X_RECIPE = DETECTION | {
    "scale_policy": "detr",
    "base_lr": 1e-4,
    "beta": [0.9, 0.999],
    "weight_decay": 0.05,
    "no_decay_keys": ["pos_block", "norm"],
    "lr_steps": [27, 33],
    "epochs": 36,
}


def expected_recipes() -> dict[str, dict]:
    recipes = {}
    for v in VARIANTS:
        drop_path = 0.3 if v == "svt_large" else 0.2  # segmentation/gvt.py hard-codes these
        upernet = UPERNET | {"drop_path_rate": drop_path}
        if v == "pcpvt_small":
            upernet["batch_size"] = 4  # its config keeps 4 per GPU: global 32, as its log shows
        recipes[f"upernet_{v}_ade20k"] = upernet
        recipes[f"semantic_fpn_{v}_ade20k"] = SEMANTIC_FPN | {"drop_path_rate": drop_path}
        recipes[f"retinanet_{v}_coco_1x"] = ONE_X | {"base_lr": 1e-4}
        recipes[f"maskrcnn_{v}_coco_1x"] = ONE_X | {"base_lr": 2e-4}
    for v in THREE_X:
        recipes[f"retinanet_{v}_coco_3x"] = THREE_X_RECIPE | {"amp_level": "O0"}
        # fp16 with a fixed loss scale of 512 in the official Mask R-CNN 3x configs
        recipes[f"maskrcnn_{v}_coco_3x"] = THREE_X_RECIPE | {
            "amp_level": "O1",
            "is_dynamic_loss_scale": False,
            "loss_scale": 512.0,
        }
    return recipes


RECIPES = expected_recipes()


def test_the_dense_recipes_are_the_official_ones():
    assert sorted(p.stem for p in DENSE.glob("*.yaml")) == sorted(RECIPES)
    assert len(RECIPES) == 12 + 12 + 10


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_dense_recipe_holds_the_official_settings(name):
    config = load_config(DENSE / f"{name}.yaml")
    model = name.removesuffix("_ade20k").removesuffix("_coco_1x").removesuffix("_coco_3x")
    assert config.arch == model and task_of(config.arch) == config.task
    assert config.task == ("segment" if name.endswith("ade20k") else "detect")
    assert config.semantics == "official" and config.optimizer == "adamw"
    assert config.clip_global_norm_value == 0.0  # no gradient clipping in any of them
    assert config.lr_base_size == 0  # the lr is the config's, whatever the batch
    # No label smoothing: the dense losses do not read the key, and the recipe does not set it.
    assert "label_smoothing" not in task_for(config).reads | config.given
    values = {key: getattr(config, key) for key in RECIPES[name]}
    assert values == RECIPES[name]
    text = (DENSE / f"{name}.yaml").read_text()
    header = text.split("\n\n", 1)[0]
    for line in ("# Run:", "# Expect:", "# Time:", f"-c configs/dense/{name}.yaml"):
        assert line in header, line


@pytest.mark.parametrize(
    "path", sorted([*DENSE.glob("*.yaml"), *ROOT.glob("configs/*.yaml")]), ids=lambda p: p.name
)
def test_every_shipped_recipe_gives_only_keys_its_task_reads(path):
    """The task refuses a key it does not read (`Task.check_config`): no recipe, dense, demo or
    classification, gives one."""
    config = load_config(path)
    assert config.given <= task_for(config).reads


def test_dense_recipes_resolve_from_the_checkout_and_ship_with_the_package(monkeypatch):
    """`twins train -c configs/dense/...` from the repository root, and the installed copy."""
    monkeypatch.chdir(ROOT)
    config = load_config("configs/dense/upernet_pcpvt_small_ade20k.yaml")
    assert config.train_url == str(Path("runs") / "upernet_pcpvt_small_ade20k")
    packaged = Path(twins.__file__).parent / "configs" / "dense"
    assert sorted(p.name for p in packaged.glob("*.yaml")) == sorted(f"{n}.yaml" for n in RECIPES)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"configs/dense/*.yaml"' in pyproject  # package data: the wheel carries them
