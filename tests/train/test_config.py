"""Config layering, the seed's YAML, and refusals of bad keys and values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from twins.cli.main import main
from twins.config import save_config
from twins.errors import TwinsError
from twins.tasks import fit, task_for
from twins.train import KEYS, TrainConfig, build_config, load_config
from twins.train.precision import Precision, build_precision, hardware_notice

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# The keys GUIDE §5 lists for the seed's YAML and argument parser.
SEED_KEYS = """arch data_url set num_classes mix_up cutmix auto_augment interpolation re_prob re_mode
re_count mixup_prob switch_prob mixup_mode image_size crop_pct optimizer base_lr warmup_lr min_lr
lr_scheduler warmup_length amp_level keep_bn_fp32 beta clip_global_norm_value
is_dynamic_loss_scale epochs cooldown_epochs label_smoothing weight_decay momentum batch_size
drop_path_rate num_parallel_workers device_target eps seed pretrained train_url start_epoch
accumulation_step with_ema ema_decay keep_checkpoint_max save_every loss_scale""".split()  # noqa: SIM905


def test_every_seed_key_is_known():
    assert set(SEED_KEYS) <= set(KEYS)


# The seed's twin_s.yaml, value for value (its README lists the file).
SEED_VALUES = {
    "arch": "pcpvt_small_v0",
    "data_url": "../data/imagenet",
    "set": "ImageNet",
    "num_classes": 1000,
    "mix_up": 0.8,
    "cutmix": 1.0,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "interpolation": "bicubic",
    "re_prob": 0.25,
    "re_mode": "pixel",
    "re_count": 1,
    "mixup_prob": 1.0,
    "switch_prob": 0.5,
    "mixup_mode": "batch",
    "image_size": 224,
    "crop_pct": 0.875,
    "optimizer": "adamw",
    "base_lr": 0.001,
    "warmup_lr": 0.000001,
    "min_lr": 0.00001,
    "lr_scheduler": "cosine_lr",
    "warmup_length": 20,
    "amp_level": "O1",
    "keep_bn_fp32": True,
    "beta": [0.9, 0.999],
    "clip_global_norm_value": 5.0,
    "is_dynamic_loss_scale": True,
    "epochs": 300,
    "cooldown_epochs": 10,
    "label_smoothing": 0.1,
    "weight_decay": 0.05,
    "momentum": 0.9,
    "batch_size": 128,
    "drop_path_rate": 0.1,
    "num_parallel_workers": 16,
    "device_target": "Ascend",
}


def test_seed_yaml_as_shipped_parses_to_its_values():
    """configs/twin_s.yaml is the seed's file byte for byte: runs of tabs before its comments,
    Chinese comments, `5.` and `[ 0.9, 0.999 ]`, and no semantics key."""
    text = (CONFIGS / "twin_s.yaml").read_text(encoding="utf-8")
    assert "\t\t# " in text and "# 基础学习率" in text and "semantics" not in text
    assert "clip_global_norm_value: 5.\t" in text and "beta: [ 0.9, 0.999 ]\t" in text
    config = load_config(CONFIGS / "twin_s.yaml")
    assert {key: getattr(config, key) for key in SEED_VALUES} == SEED_VALUES
    assert isinstance(config.clip_global_norm_value, float)  # written `5.` in the seed's file
    assert config.semantics == "seed"  # a file that does not say is the seed's
    assert config.total_epochs == 300  # the seed never trains its cooldown_epochs
    assert config.train_url == str(Path("runs") / "twin_s")  # output default: runs/<recipe>


def test_a_yaml_in_the_seed_layout_loads(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "# 模型\narch: svt_small\t\t\t# 网络\n\t# 注释\nclip_global_norm_value: 5.\t\t    # 梯度\n"
        "beta: [ 0.9, 0.999 ]\t# 优化器\nauto_augment: 'rand-m9-mstd0.5-inc1'\t# quoted\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert (config.arch, config.clip_global_norm_value, config.beta) == (
        "svt_small",
        5.0,
        [0.9, 0.999],
    )
    assert config.auto_augment == "rand-m9-mstd0.5-inc1"


def test_a_tab_yaml_cannot_take_is_named_with_its_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model_args:\n\tdepths: [1, 1, 1, 1]\n")
    with pytest.raises(TwinsError, match="line 2 holds a tab where YAML allows only spaces"):
        load_config(path)


@pytest.mark.parametrize(
    "path", sorted(set(CONFIGS.glob("*.yaml")) - {CONFIGS / "twin_s.yaml"}), ids=lambda p: p.name
)
def test_every_recipe_loads_and_names_its_command(path):
    config = load_config(path)
    header = path.read_text().split("\n\n")[0]
    assert "twins train -c" in header and "Expect" in header and "Time" in header
    assert config.epochs >= 1
    assert "semantics" in path.read_text()  # our recipes say whose math they follow
    assert "cooldown" not in header or config.semantics == "twins"


def test_official_recipes_follow_the_released_runs():
    """The settings the official logs and code share (the peaks, warmups and epochs are
    replayed against the logs in test_schedule)."""
    drop_path = {"small": 0.2, "base": 0.3, "large": 0.5}
    for family in ("pcpvt", "svt"):
        for size, rate in drop_path.items():
            config = load_config(CONFIGS / f"{family}_{size}.yaml")
            assert config.arch == f"{family}_{size}" and config.drop_path_rate == rate
            official = {"semantics": "official", "lr_base_size": 1024, "weight_decay": 0.05}
            official |= {"epochs": 300, "clip_global_norm_value": 5.0, "crop_pct": 0.875}
            official |= {"optimizer": "adamw", "label_smoothing": 0.1, "mix_up": 0.8, "cutmix": 1.0}
            assert {key: getattr(config, key) for key in official} == official


def test_layers_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("epochs: 7\nbatch_size: 32\n")
    config = load_config(
        path,
        ["batch_size=8", "base_lr=1e-3", "beta=[0.8, 0.9]", "model_args.depths=[1,1,1,1]"],
        data_url="/data",
    )
    assert (config.epochs, config.batch_size, config.base_lr) == (7, 8, 0.001)
    assert config.beta == [0.8, 0.9] and config.model_args == {"depths": [1, 1, 1, 1]}
    assert config.data_url == "/data" and config.weight_decay == 0.05  # a default
    assert load_config(path, ["pretrained=null", "auto_augment=none"]).auto_augment is None


def test_resolved_config_round_trips(tmp_path):
    config = load_config(CONFIGS / "twin_s.yaml", ["model_args={depths: [1, 1, 1, 1]}"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lerning_rate": 0.1}, "did you mean base_lr"),
        ({"warmup_lenght": 3}, "warmup_length"),
        ({"epochs": "ten"}, "not an integer"),
        ({"epochs": 0}, "out of range"),
        ({"batch_size": 2.5}, "not an integer"),
        ({"re_prob": 1.5}, "out of range"),
        ({"base_lr": 0}, "greater than 0"),
        ({"amp_level": "O4"}, "O0, O1, O2, O3"),
        ({"optimizer": "lamb"}, "adamw, sgd"),
        ({"with_ema": "maybe"}, "true or false"),
        ({"beta": [0.9]}, "two numbers"),
        ({"beta": [0.9, 1.5]}, "out of range"),
        ({"min_lr": 0.1, "base_lr": 0.01}, "min_lr"),
        ({"auto_augment": "rand-q9"}, "auto_augment"),
        ({"auto_augment": "fancy"}, "auto_augment"),
        ({"model_args": {"num_classes": 3}}, "num_classes"),
        ({"weight_decay": float("nan")}, "finite"),
        ({"semantics": "mindspore"}, "seed, official, twins"),
        ({"image_size": 16}, "at least 32 pixels"),
        ({"image_size": 12, "model_args": {"patch_size": 2}}, "at least 16 pixels"),
        ({"layer_decay": 1.5}, "out of range"),
        (
            {"loggers": ["tensorboard", "mlfow"]},
            "'mlfow', which does not exist: did you mean mlflow",
        ),
        ({"loggers": "neptune"}, "use tensorboard, mlflow, wandb"),
    ],
)
def test_bad_keys_and_values_are_refused(values, message):
    with pytest.raises(TwinsError, match=message):
        task_for(build_config(values))  # the task checks what depends on the model


DENSE = {"task": "segment", "arch": "upernet_pcpvt_small"}
POLY = {"lr_scheduler": "poly_lr", "warmup_length": 0, "max_iters": 100}
STEP = {"lr_scheduler": "step_lr", "warmup_length": 0, "epochs": 12, "lr_steps": [8, 11]}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"arch": "upernet_svt_small"}, "is a segment model, but task is classify: set task: seg"),
        ({"task": "detect", "arch": "upernet_svt_small"}, "give a detect model as arch"),
        ({"task": "segment"}, "pcpvt_small is a classify model"),
        ({"task": "depth"}, "classify, segment, detect"),
        (POLY | {"warmup_length": 5}, "set warmup_length to 0"),
        ({"warmup_iters": 10}, "cosine_lr warms up by warmup_length"),
        ({"max_iters": 1000}, "set lr_scheduler to poly_lr"),
        (STEP | {"max_iters": 1000}, "step_lr counts epochs"),
        (DENSE | POLY | {"start_epoch": 1}, "set start_epoch to 0"),
        (DENSE | POLY | {"warmup_iters": 101}, "exceeds max_iters"),
        (STEP | {"lr_steps": []}, "step_lr needs lr_steps"),
        (STEP | {"lr_steps": [11, 8]}, "must rise"),
        (STEP | {"lr_steps": [8, 13]}, "within the run's 12 epochs"),
        (DENSE | POLY | {"lr_steps": [8]}, "lr_steps belongs to step_lr"),
        (POLY | {"warmup_ratio": 0}, "greater than 0"),
        ({"no_decay_keys": ["norm", " "]}, "empty name"),
        ({"no_decay_keys": ["norm"], "layer_decay": 0.75}, "set no_decay_keys to null"),
        ({"crop_size": [512.5, 512]}, "not an integer"),
        ({"ratio_range": [2.0, 0.5]}, "low <= high"),
        ({"ignore_index": 256}, "out of range"),
        ({"scale_policy": "random"}, "single, detr"),
        ({"samples_per_gpu": 2}, "did you mean batch_size"),
        ({"custom_keys": ["norm"]}, "did you mean no_decay_keys"),
    ],
)
def test_dense_keys_are_refused_where_they_would_mean_nothing(values, message):
    with pytest.raises(TwinsError, match=message):
        task_for(build_config(values))  # the task checks that arch is one of its models


def test_dense_keys_from_overrides():
    config = load_config(
        None,
        [*(f"{k}={v}" for k, v in (DENSE | POLY).items()), "no_decay_keys=[pos_block,norm]"]
        + ["crop_size=[640, 640]", "img_scale=[2560,640]", "reduce_zero_label=true"],
    )
    assert config.task == "segment" and config.counts_iterations
    assert config.no_decay_keys == ["pos_block", "norm"] and config.crop_size == [640, 640]
    assert config.img_scale == [2560, 640] and config.reduce_zero_label is True
    assert load_config(None, ["no_decay_keys=[]"]).no_decay_keys == []
    assert load_config(None, ["no_decay_keys=null"]).no_decay_keys is None
    detect = load_config(
        None, [f"{k}={v}" for k, v in STEP.items()] + ["arch=retinanet_svt_small", "task=detect"]
    )
    assert detect.lr_steps == [8, 11] and not detect.counts_iterations
    # mmcv's policies have no cooldown: the run is `epochs` long under every semantics.
    assert build_config(STEP | {"semantics": "twins"}).total_epochs == 12


def test_loggers_take_a_list_or_one_name():
    assert load_config(None, ["loggers=[MLflow, wandb, mlflow]"]).loggers == ["mlflow", "wandb"]
    assert load_config(None, ["loggers=wandb"]).loggers == ["wandb"]
    assert load_config(None, ["loggers=[]"]).loggers == []
    assert load_config(None).loggers == ["tensorboard"]


def test_unknown_key_names_the_close_matches():
    with pytest.raises(TwinsError) as error:
        build_config({"drop_path": 0.1})
    assert "drop_path_rate" in str(error.value)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(TwinsError, match="key=value"):
        load_config(None, ["epochs"])
    with pytest.raises(TwinsError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(TwinsError, match="key: value"):
        load_config(tmp_path / "list.yaml")


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("arch: pcpvt_small\nepochs: 3\nbatch_size: 8\nepochs: 5\n")
    assert main(["train", "-c", str(recipe), "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "key 'epochs' is given twice, on lines 2 and 4" in error
    assert not (tmp_path / "run").exists()
    (tmp_path / "nested.yaml").write_text(
        "model_args:\n  depths: [1, 1, 1, 1]\n  depths: [2, 2, 2, 2]\n"
    )
    with pytest.raises(TwinsError, match="'depths' is given twice, on lines 2 and 3"):
        load_config(tmp_path / "nested.yaml")


def test_seed_flags_accept_its_parser_spellings():
    config = build_config({"is_dynamic_loss_scale": 0, "with_ema": 1, "device_target": "cuda"})
    assert config.is_dynamic_loss_scale is False and config.with_ema is True
    assert config.device_target == "GPU"


def test_ascend_settings_map_with_one_notice_line():
    config = load_config(CONFIGS / "twin_s.yaml")
    notice = hardware_notice(config, Precision(torch.device("cpu"), None))
    assert notice is not None and "\n" not in notice
    assert "Ascend" in notice and "O1" in notice and "keep_bn_fp32" in notice
    plain = build_config({"device_target": "CPU"})
    assert hardware_notice(plain, Precision(torch.device("cpu"), None)) is None


class ReadTracking(TrainConfig):
    """A TrainConfig that notes which keys are read, other than by the config module itself
    (checks, properties) and by dataclasses (copies, `config.yaml`)."""

    def __getattribute__(self, name):
        if name in KEYS:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller not in ("dataclasses", "twins.config"):
                object.__getattribute__(self, "reads").add(name)
        return object.__getattribute__(self, name)


# Keys a run on the CPU does not reach, and where each is read (each tested there).
READ_ELSEWHERE = {
    "set": "informative only: the data set's name, as the seed's files say it",
    "momentum": "the SGD optimizer (test_optim)",
    "max_nonfinite_steps": "a step skipped as non-finite (test_engine, test_nonfinite)",
    "is_dynamic_loss_scale": "float16 autocast on a GPU without bfloat16 (test_config)",
    "loss_scale": "float16 autocast on a GPU without bfloat16 (test_config)",
    "cache_dir": "a packed data set behind a URL (test_shards_s3)",
    "cache_size": "a packed data set (test_shards, test_shards_s3)",
    "mlflow_tracking_uri": "loggers: [mlflow] (test_mlflow_tracker)",
    "mlflow_experiment": "loggers: [mlflow] (test_mlflow_tracker)",
    "wandb_project": "loggers: [wandb] (test_wandb_tracker)",
    "wandb_entity": "loggers: [wandb] (test_wandb_tracker)",
}
# Keys of the dense tasks, read by their data pipelines, losses and the task dispatch of the
# fit loop, not by a classification run (the recipes that set them: tests/train/test_dense_recipes).
READ_ELSEWHERE |= {
    "aux_loss_weight": "the segmentation loss",
    "img_scale": "the dense data pipelines",
    "ratio_range": "the segmentation training pipeline",
    "crop_size": "the segmentation training pipeline",
    "cat_max_ratio": "the segmentation training pipeline",
    "reduce_zero_label": "the segmentation data sets",
    "ignore_index": "the segmentation data sets, loss and metrics",
    "scale_policy": "the detection training pipeline",
    "pad_divisor": "the detection pipelines",
    "tta": "twins eval of a segmenter (tests/dense/test_seg_evaluate)",
    "test_mode": "twins eval of a segmenter (test_seg_slide)",
    "test_crop_size": "twins eval of a segmenter (test_seg_slide)",
    "test_stride": "twins eval of a segmenter (test_seg_slide)",
}


def test_every_config_key_is_read_by_what_builds_the_run(imagefolder, tiny_config, tmp_path):
    """A key that nothing reads is a promise nothing keeps (as `crop_scale` once was)."""
    values = tiny_config(imagefolder, tmp_path / "run", epochs=1, with_ema=True).to_dict()
    values |= {"mix_up": 0.8, "cutmix": 1.0, "auto_augment": "rand-m9-mstd0.5-inc1"}
    tracked = ReadTracking(**values)
    object.__setattr__(tracked, "reads", set())
    fit(tracked)
    unread = set(KEYS) - tracked.reads
    assert unread == set(READ_ELSEWHERE), sorted(unread)


@pytest.mark.parametrize(("dynamic", "fixed"), [(True, None), (False, 256.0)])
def test_loss_scale_keys_make_the_float16_scaler(monkeypatch, dynamic, fixed):
    """A GPU without bfloat16 trains in float16 with the seed's loss scale settings."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    made = []  # no CUDA here: record how the scaler is made
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *args, **kwargs: made.append(kwargs))
    config = build_config(
        {"amp_level": "O2", "is_dynamic_loss_scale": dynamic, "loss_scale": 256.0}
    )
    precision = build_precision(config, torch.device("cuda"))
    assert precision.dtype == torch.float16 and precision.fixed_scale == fixed
    assert made == [{"init_scale": 256.0}]


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("pretrained=true", True),
        (
            "pretrained=hf-hub:timm/twins_svt_small.in1k@main",
            "hf-hub:timm/twins_svt_small.in1k@main",
        ),
        ("pretrained=s3://bucket/svt_small.safetensors", "s3://bucket/svt_small.safetensors"),
        ("pretrained=false", None),
    ],
)
def test_pretrained_takes_true_ids_and_urls_in_a_dense_recipe(given, meant, tmp_path):
    recipe = Path(__file__).parents[2] / "configs" / "dense" / "upernet_svt_small_ade20k.yaml"
    config = load_config(recipe, [given])
    assert config.pretrained == meant
    save_config(config, tmp_path / "config.yaml")  # as a run keeps it
    assert load_config(tmp_path / "config.yaml").pretrained == meant
