"""The training configuration: defaults, then a YAML file, then `key=value` overrides.

Key names are those of the seed's YAML and argument parser (MindSpore ModelZoo Twins,
`src/configs/twin_s.yaml` and `src/args.py`), so its files load unchanged, byte for byte
(YAML allows tabs before a comment, PyYAML does not: they are read as spaces). Keys added here:
`semantics` (whose training math the keys mean: the seed's, the official runs' or this
toolkit's; docs/recipes.md), `model_args` (create_model overrides), `hflip`, `crop_scale`,
`lr_base_size` and `layer_decay` (timm's meanings), `shuffle_block`, `cache_dir` and
`cache_size` (packed data sets, docs/data.md), `val_split` (a validation part drawn from the
training images, docs/data.md), `eval_every`, `log_every`,
`save_every_steps` (checkpoints within an epoch), `max_nonfinite_steps`, `loggers` and the
trackers' `mlflow_tracking_uri`, `mlflow_experiment`, `wandb_project`, `wandb_entity` (the
trackers, `twins.train.trackers`), and the speed switches `compile` and `channels_last`
(`twins.train.speed`); for the dense
recipes (docs/recipes.md, "Dense recipes"), `task`, the mmcv schedules' `max_iters`,
`warmup_iters`, `warmup_ratio`, `poly_power` and `lr_steps`, `no_decay_keys`, `aux_loss_weight`
and the data pipeline's `img_scale`, `ratio_range`, `crop_size`, `cat_max_ratio`,
`reduce_zero_label`, `ignore_index`, `scale_policy` and `pad_divisor`, and the sliding-window test's
`test_mode`, `test_crop_size` and `test_stride`. A file that does
not name its semantics is read as the seed's, whose keys these are. Every value is checked for type and range, an unknown key
is refused with the closest known names, and the resolved configuration is what a run writes
to its output folder as `config.yaml`: the keys its task reads (`ENGINE_KEYS` and the task's
own, `twins.train.task.Task.reads`); a key given (`TrainConfig.given`) that the task does not
read is refused by the task.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from twins.atomic import write_text
from twins.errors import TwinsError

# seed: the MindSpore seed's training code; official: the released runs of the official code;
# twins: this toolkit's per-step schedule (docs/recipes.md has the table).
SEMANTICS = ("seed", "official", "twins")

# What a config trains: its `arch` must be a model of that task (`twins.tasks.task_for`).
TASKS = ("classify", "segment", "detect")

# The learning rate policies of mmcv 1.2 (the dense recipes): they warm up by `warmup_iters`
# with `warmup_ratio`, where the cosine ones warm up by `warmup_length` epochs from `warmup_lr`.
MMCV_POLICIES = ("poly_lr", "step_lr")

# Where a run sends its metrics (`twins.train.trackers`): TensorBoard event files, an MLflow
# tracking server, Weights & Biases.
LOGGERS = ("tensorboard", "mlflow", "wandb")

# What a YAML file or override may say for "no value".
_NONE_WORDS = ("", "none", "null", "off")


def _key(default: Any, kind: str, check: Any = None, doc: str = "", **extra: Any) -> Any:
    """A config field: its kind (int, float, bool, str, optional_str, weights, pair, int_pair,
    int_list, optional_str_list, name_list, mapping, size), a check
    (a (low, high) range with inclusive ends, or a tuple of choices) and a one-line meaning."""
    metadata = {"kind": kind, "check": check, "doc": doc, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every key of a training run. Defaults are the official ImageNet-1k recipe of Twins
    (AdamW, lr 1e-3 at global batch 1024, weight decay 0.05, 300 epochs, 5 warmup epochs)."""

    # The keys the YAML file, the key=value overrides and the settings named (`build_config`
    # sets it): a task refuses those it does not read.
    given: ClassVar[frozenset[str]] = frozenset()

    # ===== Semantics ===== #
    semantics: str = _key(
        "seed",
        "str",
        SEMANTICS,
        doc="whose training math the keys mean (docs/recipes.md)",
    )

    # ===== Task and architecture ===== #
    task: str = _key("classify", "str", TASKS, doc="what arch does; it must be a model of it")
    arch: str = _key(
        "pcpvt_small",
        "str",
        doc="model name or alias (twins models), a dense one as <head>_<variant>",
    )
    model_args: dict = _key({}, "mapping", doc="create_model overrides, e.g. {depths: [1,1,1,1]}")
    pretrained: str | bool | None = _key(
        None,
        "weights",
        doc="weights to start from: a file, a Hub-layout folder, hf-hub:org/name[@revision], "
        "an s3:// URL, or true for the variant's ImageNet weights (timm/twins_<variant>.in1k)",
    )

    # ===== Dataset ===== #
    data_url: str = _key(
        "",
        "str",
        doc="folder with train/ and val/ class folders or train.csv and val.csv (path,label), "
        "or a packed data set (twins pack): its folder or URL (s3://...)",
    )
    shuffle_block: int = _key(
        16,
        "int",
        (1, None),
        doc="packed data: shards shuffled together; larger mixes better, needs more cache",
    )
    cache_dir: str = _key(
        "", "str", doc="cache of shards read from a URL ('' = $TWINS_CACHE_DIR or ~/.cache/twins)"
    )
    cache_size: str = _key("50GB", "size", doc="size limit of that cache, e.g. 50GB")
    val_split: float = _key(
        0.0,
        "float",
        (0.0, 0.99),
        doc="classify: hold out this fraction of the training images for validation, drawn "
        "from seed, where the data has no validation part; 0 = off",
    )
    set: str = _key("ImageNet", "str", doc="data set name (informative)")
    num_classes: int = _key(1000, "int", (1, None))
    mix_up: float = _key(0.8, "float", (0.0, None), doc="mixup alpha, 0 = off")
    cutmix: float = _key(1.0, "float", (0.0, None), doc="cutmix alpha, 0 = off")
    auto_augment: str | None = _key("rand-m9-mstd0.5-inc1", "optional_str", doc="timm string")
    interpolation: str = _key("bicubic", "str", ("bicubic", "bilinear", "nearest", "random"))
    re_prob: float = _key(0.25, "float", (0.0, 1.0), doc="random erasing probability")
    re_mode: str = _key("pixel", "str", ("pixel", "rand", "const"))
    re_count: int = _key(1, "int", (1, None))
    mixup_prob: float = _key(1.0, "float", (0.0, 1.0))
    switch_prob: float = _key(0.5, "float", (0.0, 1.0))
    mixup_mode: str = _key("batch", "str", ("batch", "pair", "elem"))
    image_size: int = _key(224, "int", (1, None), doc="at least the model's smallest (32)")
    crop_pct: float = _key(0.875, "float", (0.01, 1.0), doc="eval resize = image_size / crop_pct")
    hflip: float = _key(0.5, "float", (0.0, 1.0), doc="horizontal flip probability (timm)")
    crop_scale: list = _key(
        [0.08, 1.0], "pair", (0.0, 1.0), doc="random resized crop area range (timm's scale)"
    )

    # ===== Dense data pipeline (task segment or detect; mmseg / mmdet names) ===== #
    img_scale: list = _key(
        [2048, 512],
        "int_pair",
        (1, None),
        doc="keep-ratio resize: [long, short] side caps, for training and evaluation",
    )
    ratio_range: list = _key(
        [0.5, 2.0], "pair", (0.01, None), doc="segment: training rescales img_scale by U(low, high)"
    )
    crop_size: list = _key(
        [512, 512], "int_pair", (1, None), doc="segment: training crop [height, width]"
    )
    cat_max_ratio: float = _key(
        0.75, "float", (0.0, 1.0), doc="segment: most of a crop one class may cover (1 = off)"
    )
    reduce_zero_label: bool = _key(
        False, "bool", doc="segment: label 0 is ignored and the others shift down (ADE20K)"
    )
    ignore_index: int = _key(255, "int", (0, 255), doc="segment: label value left out of loss")
    tta: bool = _key(
        False, "bool", doc="segment eval: average 6 scales x 2 flips (mmseg's --aug-test)"
    )
    test_mode: str = _key(
        "whole", "str", ("whole", "slide"), doc="segment eval: whole image or sliding windows"
    )
    test_crop_size: list = _key(
        [512, 512], "int_pair", (1, None), doc="segment eval: sliding window [height, width]"
    )
    test_stride: list = _key(
        [341, 341], "int_pair", (1, None), doc="segment eval: window step [height, width]"
    )
    scale_policy: str = _key(
        "single",
        "str",
        ("single", "detr"),
        doc="detect: training resize, img_scale (1x) or DETR's multi-scale with crop (3x)",
    )
    pad_divisor: int = _key(32, "int", (1, None), doc="detect: images padded to a multiple")

    # ===== Learning rate policy ===== #
    optimizer: str = _key("adamw", "str", ("adamw", "sgd"))
    base_lr: float = _key(1e-3, "float", (0.0, None), positive=True)
    lr_base_size: int = _key(
        0, "int", (0, None), doc="if > 0, lr = base_lr * global batch / lr_base_size (timm)"
    )
    layer_decay: float = _key(
        0.0, "float", (0.0, 1.0), doc="0 = off; e.g. 0.75: timm's layer-wise lr decay"
    )
    warmup_lr: float = _key(1e-6, "float", (0.0, None))
    min_lr: float = _key(1e-5, "float", (0.0, None))
    lr_scheduler: str = _key(
        "cosine_lr",
        "str",
        ("cosine_lr", "constant_lr", *MMCV_POLICIES),
        doc="poly_lr and step_lr: mmcv's, warmed up by warmup_iters",
    )
    warmup_length: int = _key(5, "int", (0, None), doc="warmup epochs (cosine_lr, constant_lr)")
    max_iters: int = _key(
        0, "int", (0, None), doc="train N iterations (poly_lr), 0 = count in epochs"
    )
    warmup_iters: int = _key(
        0, "int", (0, None), doc="poly_lr, step_lr: linear warmup iterations, 0 = none"
    )
    warmup_ratio: float = _key(
        0.001, "float", (0.0, 1.0), positive=True, doc="warmup starts at this times the lr"
    )
    poly_power: float = _key(
        1.0, "float", (0.0, None), positive=True, doc="poly_lr: (1 - i / max_iters) ** power"
    )
    lr_steps: list = _key(
        [], "int_list", (1, None), doc="step_lr: epochs after which the lr is multiplied by 0.1"
    )

    # ===== Network training ===== #
    amp_level: str = _key("O0", "str", ("O0", "O1", "O2", "O3"))
    keep_bn_fp32: bool = _key(False, "bool", doc="MindSpore setting; autocast keeps norms fp32")
    beta: list = _key([0.9, 0.999], "pair", (0.0, 0.999999), doc="AdamW betas")
    eps: float = _key(1e-8, "float", (0.0, None), positive=True)
    clip_global_norm_value: float = _key(5.0, "float", (0.0, None), doc="0 = no clipping")
    is_dynamic_loss_scale: bool = _key(True, "bool")
    loss_scale: float = _key(1024.0, "float", (1.0, None), doc="fp16 initial or fixed scale")
    epochs: int = _key(300, "int", (1, None))
    cooldown_epochs: int = _key(10, "int", (0, None), doc="epochs at min_lr after `epochs`")
    label_smoothing: float = _key(0.1, "float", (0.0, 0.99))
    weight_decay: float = _key(0.05, "float", (0.0, None))
    no_decay_keys: list | None = _key(
        None,
        "optional_str_list",
        doc="null: no decay for biases, norms and pos_block; a list: for the parameters whose "
        "names contain one of these (mmcv's custom_keys), [] = decay all",
    )
    aux_loss_weight: float = _key(
        0.4, "float", (0.0, None), doc="segment: weight of the auxiliary head's loss"
    )
    momentum: float = _key(0.9, "float", (0.0, 0.999), doc="SGD momentum")
    batch_size: int = _key(128, "int", (1, None), doc="per device")
    accumulation_step: int = _key(1, "int", (1, None))
    drop_path_rate: float = _key(0.2, "float", (0.0, 0.99))
    with_ema: bool = _key(False, "bool")
    ema_decay: float = _key(0.9999, "float", (0.0, 0.999999))
    start_epoch: int = _key(0, "int", (0, None), doc="first epoch when not resuming")

    # ===== Run, output and hardware ===== #
    seed: int = _key(0, "int", (0, 2**32 - 1))
    train_url: str = _key(
        "runs/train", "str", doc="output folder or URL (runs/<recipe name> if unset)"
    )
    keep_checkpoint_max: int = _key(20, "int", (1, None), doc="epoch checkpoints kept")
    save_every: int = _key(
        2,
        "int",
        (0, None),
        doc="kept checkpoint every N epochs (iterations with max_iters), 0 = none",
    )
    save_every_steps: int = _key(
        0, "int", (0, None), doc="also update last.pt every N steps within an epoch, 0 = off"
    )
    max_nonfinite_steps: int = _key(
        20, "int", (0, None), doc="stop after N steps in a row with NaN/inf loss, 0 = never"
    )
    eval_every: int = _key(
        1,
        "int",
        (1, None),
        doc="evaluate every N epochs (iterations with max_iters), and at the end",
    )
    log_every: int = _key(50, "int", (1, None), doc="metrics.jsonl line every N steps")
    num_parallel_workers: int = _key(8, "int", (0, None), doc="data loader workers per process")
    threads: int = _key(
        0,
        "int",
        (0, None),
        doc="compute threads per process (0: the cores left after the data workers, at least 1)",
    )
    device_target: str = _key("auto", "str", ("auto", "GPU", "CPU", "Ascend"))
    loggers: list = _key(
        ["tensorboard"], "name_list", LOGGERS, doc="where metrics go besides metrics.jsonl"
    )
    mlflow_tracking_uri: str | None = _key(
        None, "optional_str", doc="MLflow server (MLFLOW_TRACKING_URI if unset)"
    )
    mlflow_experiment: str | None = _key(
        None, "optional_str", doc="MLflow experiment (MLFLOW_EXPERIMENT_NAME if unset, else twins)"
    )
    wandb_project: str | None = _key(
        None, "optional_str", doc="W&B project (WANDB_PROJECT if unset, else twins)"
    )
    wandb_entity: str | None = _key(
        None, "optional_str", doc="W&B team or user (WANDB_ENTITY if unset, else your default)"
    )
    compile: bool = _key(
        False, "bool", doc="torch.compile the training forward, once per input size (dynamic=False)"
    )
    channels_last: bool = _key(
        False, "bool", doc="model weights and input images in channels-last memory format"
    )

    @property
    def total_epochs(self) -> int:
        """The epochs the run trains: `epochs` under the seed's and the official semantics
        (their schedules declare `cooldown_epochs` but their training loops never reach them),
        `epochs + cooldown_epochs` under this toolkit's (the cooldown held at `min_lr`); mmcv's
        policies have no cooldown. A run that counts iterations (`max_iters`) has no epochs."""
        if self.semantics == "twins" and self.lr_scheduler not in MMCV_POLICIES:
            return self.epochs + self.cooldown_epochs
        return self.epochs

    @property
    def counts_iterations(self) -> bool:
        """Whether the run is `max_iters` iterations long (mmseg's IterBasedRunner): then
        `eval_every` and `save_every` count iterations and `epochs` is not read."""
        return self.max_iters > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))
# The keys the task-blind engines read, whatever the task (the fit loop, the loader, the
# optimiser, schedule and precision, checkpoints and output); a task reads these and the keys of
# its own data pipeline and loss (`twins.train.task.Task.reads`).
ENGINE_KEYS: frozenset[str] = frozenset(
    {"semantics", "task", "arch", "model_args", "pretrained", "data_url", "set", "num_classes"}
    # Learning rate policy
    | {"optimizer", "base_lr", "lr_base_size", "layer_decay", "warmup_lr", "min_lr"}
    | {"lr_scheduler", "warmup_length", "max_iters", "warmup_iters", "warmup_ratio"}
    | {"poly_power", "lr_steps"}
    # Network training
    | {"amp_level", "keep_bn_fp32", "beta", "eps", "clip_global_norm_value"}
    | {"is_dynamic_loss_scale", "loss_scale", "epochs", "cooldown_epochs", "weight_decay"}
    | {"no_decay_keys", "momentum", "batch_size", "accumulation_step", "drop_path_rate"}
    | {"with_ema", "ema_decay", "start_epoch"}
    # Run, output and hardware
    | {"seed", "train_url", "keep_checkpoint_max", "save_every", "save_every_steps"}
    | {"max_nonfinite_steps", "eval_every", "log_every", "num_parallel_workers", "device_target"}
    | {"threads", "loggers", "mlflow_tracking_uri", "mlflow_experiment", "wandb_project"}
    | {"wandb_entity", "compile", "channels_last"}
)
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Each key's default value.
DEFAULTS: dict[str, Any] = dataclasses.asdict(TrainConfig())
_CHOICE_ALIASES = {"device_target": {"cuda": "GPU", "gpu": "GPU", "cpu": "CPU"}}
# Names other tools (timm, DeiT, the seed's own command line flags) use for our keys: an
# unknown key close to one of them is pointed to the key meant.
_OTHER_NAMES = {
    "lr": "base_lr",
    "learning_rate": "base_lr",
    "wd": "weight_decay",
    "betas": "beta",
    "opt": "optimizer",
    "model": "arch",
    "warmup_epochs": "warmup_length",
    "mixup": "mix_up",
    "smoothing": "label_smoothing",
    "clip_grad": "clip_global_norm_value",
    "model_ema": "with_ema",
    "model_ema_decay": "ema_decay",
    "workers": "num_parallel_workers",
    "data_dir": "data_url",
    "output": "train_url",
    "output_dir": "train_url",
    "drop_path": "drop_path_rate",
    "input_size": "image_size",
    "aa": "auto_augment",
    "reprob": "re_prob",
    # mmseg / mmdet config names
    "power": "poly_power",
    "step": "lr_steps",
    "custom_keys": "no_decay_keys",
    "samples_per_gpu": "batch_size",
    "max_epochs": "epochs",
    "size_divisor": "pad_divisor",
}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **settings: Any,
) -> TrainConfig:
    """Defaults, then the YAML file at `path`, then `key=value` strings (values read as YAML),
    then `settings` given as Python values (the command line's --data / --output)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml(path))
    for text in overrides:
        key, value = parse_override(text)
        _merge(values, key, value)
    values.update({k: v for k, v in settings.items() if v is not None})
    if "train_url" not in values and path is not None:
        values["train_url"] = str(Path("runs") / Path(path).stem)
    source = " and ".join(
        filter(None, [str(path) if path else "", "key=value" if overrides else ""])
    )
    return build_config(values, source=source or "settings")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise TwinsError(
            f"{path} is a folder, not a config file: give a YAML recipe (configs/*.yaml), or "
            f"a run's resolved config, {path / 'config.yaml'}",
            argument="config",
        )
    if not path.is_file():
        raise TwinsError(
            f"config file {path} not found: give the path of an existing YAML file",
            argument="config",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TwinsError(f"{path} is not UTF-8 text: save the YAML file as UTF-8") from error
    try:
        values = yaml.load(untab_comments(text), Loader=_UniqueKeyLoader)  # noqa: S506 (safe)
    except DuplicateKeyError as error:
        raise TwinsError(f"{path}: {error}: keep one of them") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        if mark is None:
            raise TwinsError(f"{path} is not valid YAML: fix the file") from error
        line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
        if "\t" in line:
            raise TwinsError(
                f"{path} line {mark.line + 1} holds a tab where YAML allows only spaces: "
                "replace the tab with spaces"
            ) from error
        raise TwinsError(f"{path} line {mark.line + 1} is not valid YAML: fix the file") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TwinsError(f"{path} must hold `key: value` lines, not a {type(values).__name__}")
    return values


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that names one key twice (PyYAML keeps the last silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # an unhashable key: the base class refuses it
            line = key_node.start_mark.line + 1
            if key in lines:
                raise DuplicateKeyError(
                    f"key {key!r} is given twice, on lines {lines[key]} and {line}"
                )
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


# White space that holds a tab, before a comment that follows a value or starts the line.
_TABBED_COMMENT = re.compile(r"(^|(?<=\S))[ \t]*\t[ \t]*(?=#)")


def untab_comments(text: str) -> str:
    """`text` with the tabs before its comments read as spaces.

    YAML allows tabs as white space before a comment; PyYAML's scanner refuses them, and the
    seed's own files line their comments up with runs of tabs. A line with an unpaired quote
    before its `#` is left as it is: the `#` could be inside the quotes.
    """
    lines = []
    for line in text.splitlines(keepends=True):
        head = line.split("#", 1)[0]
        if "\t" in head and head.count("'") % 2 == 0 and head.count('"') % 2 == 0:
            line = _TABBED_COMMENT.sub(lambda m: m.group(1) + " ", line, count=1)
        lines.append(line)
    return "".join(lines)


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (`epochs=5`, `beta=[0.9,0.99]`, `pretrained=null`);
    `model_args.depths=[1,1,1,1]` sets one entry of a mapping key."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise TwinsError(f"override {text!r} is not key=value: write e.g. epochs=10")
    try:
        return key, yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return key, value


def _merge(values: dict[str, Any], key: str, value: Any) -> None:
    name, _, sub = key.partition(".")
    if not sub:
        values[key] = value
        return
    if name in _FIELDS and _FIELDS[name].metadata["kind"] != "mapping":
        raise TwinsError(f"{name} is not a mapping: write {name}=VALUE without .{sub}")
    values[name] = {**(values.get(name) or {}), sub: value}


def build_config(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Check and convert every value; unknown keys are refused with their closest matches."""
    unknown = [k for k in values if k not in _FIELDS]
    if unknown:
        key = unknown[0]
        names = difflib.get_close_matches(key, [*KEYS, *_OTHER_NAMES], n=3, cutoff=0.6)
        close = list(dict.fromkeys(_OTHER_NAMES.get(name, name) for name in names))
        hint = f"did you mean {' or '.join(close)}?" if close else "see configs/ for the keys"
        raise TwinsError(f"unknown config key {key!r} in {source}: {hint}")
    config = TrainConfig(**{k: _convert(k, v) for k, v in values.items()})
    config.given = frozenset(values)
    _check_together(config)
    return config


def _convert(key: str, value: Any) -> Any:
    meta = _FIELDS[key].metadata
    kind, check = meta["kind"], meta["check"]
    value = _CONVERTERS[kind](key, value)
    if isinstance(check, tuple) and check and isinstance(check[0], str) and kind == "name_list":
        # A name given twice means it once.
        value = list(dict.fromkeys(_choose_close(key, name, check) for name in value))
    elif isinstance(check, tuple) and check and isinstance(check[0], str):
        value = _choose(key, value, check)
    elif isinstance(check, tuple):
        low, high = check
        numbers = value if isinstance(value, list) else [value]
        if any((low is not None and v < low) or (high is not None and v > high) for v in numbers):
            span = f"{low} .. {high}" if high is not None else f">= {low}"
            raise TwinsError(f"{key}={value} is out of range: use a value in {span}")
    if meta.get("positive") and not value > 0:
        raise TwinsError(f"{key}={value} must be greater than 0")
    return value


def _choose(key: str, value: str, choices: tuple[str, ...]) -> str:
    lowered = {c.lower(): c for c in choices}
    value = _CHOICE_ALIASES.get(key, {}).get(value.lower(), value)
    if value.lower() in lowered:
        return lowered[value.lower()]
    raise TwinsError(f"{key}={value!r} is not allowed: use one of {', '.join(choices)}")


def _choose_close(key: str, value: str, choices: tuple[str, ...]) -> str:
    """One name of a list of choices; an unknown one is refused with the closest choice."""
    if value.lower() in choices:
        return value.lower()
    close = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    raise TwinsError(f"{key} names {value!r}, which does not exist: {hint}use {', '.join(choices)}")


def _bad_type(key: str, value: Any, wanted: str) -> TwinsError:
    return TwinsError(f"{key}={value!r} is not {wanted}: give {key} {wanted}")


def _to_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _bad_type(key, value, "an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError as error:
            raise _bad_type(key, value, "an integer") from error
    if not isinstance(value, int):
        raise _bad_type(key, value, "an integer")
    return value


def _to_float(key: str, value: Any) -> float:
    # PyYAML reads `1e-3` (no dot) as a string; accept it as the number it means.
    if isinstance(value, bool):
        raise _bad_type(key, value, "a number")
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise _bad_type(key, value, "a number") from error
    if not math.isfinite(number):
        raise _bad_type(key, value, "a finite number")
    return number


def _to_bool(key: str, value: Any) -> bool:
    # The seed's argument parser reads flags as 0/1 integers.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "0", "1"):
        return value.lower() in ("true", "yes", "1")
    raise _bad_type(key, value, "true or false")


def _to_str(key: str, value: Any) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise _bad_type(key, value, "a string")


def _to_optional_str(key: str, value: Any) -> str | None:
    if value is None or value is False:
        return None
    text = _to_str(key, value)
    return None if text.strip().lower() in _NONE_WORDS else text


def _to_weights(key: str, value: Any) -> str | bool | None:
    """`pretrained`: True (YAML's true) for the published weights, else a path, id or URL."""
    if value is True or (isinstance(value, str) and value.strip().lower() == "true"):
        return True
    return _to_optional_str(key, value)


def _to_size(key: str, value: Any) -> str:
    from twins.sizes import parse_size

    try:
        parse_size(value)
    except ValueError as error:
        raise TwinsError(f"{key}: {error}") from error
    return str(value)


def _to_pair(key: str, value: Any) -> list[float]:
    if isinstance(value, str):
        value = value.strip("[]() ").split(",")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad_type(key, value, "two numbers like [0.9, 0.999]")
    return [_to_float(key, v) for v in value]


def _to_int_pair(key: str, value: Any) -> list[int]:
    if isinstance(value, str):
        value = value.strip("[]() ").split(",")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad_type(key, value, "two integers like [512, 512]")
    return [_to_int(key, v) for v in value]


def _to_int_list(key: str, value: Any) -> list[int]:
    if isinstance(value, str):
        value = [v for v in value.strip("[]() ").split(",") if v.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _bad_type(key, value, "a list of integers like [8, 11]")
    return [_to_int(key, v) for v in value]


def _to_optional_str_list(key: str, value: Any) -> list[str] | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        return None
    if isinstance(value, str):
        value = value.strip("[]() ").split(",")
    if not isinstance(value, (list, tuple)):
        raise _bad_type(key, value, "a list of names like [pos_block, norm]")
    names = [_to_str(key, v).strip() for v in value]
    if not all(names):
        raise TwinsError(f"{key}={value!r} holds an empty name, which every name contains: drop it")
    return names


def _to_name_list(key: str, value: Any) -> list[str]:
    return _to_optional_str_list(key, value) or []


def _to_mapping(key: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _bad_type(key, value, "a mapping like {depths: [1, 1, 1, 1]}")
    return dict(value)


_CONVERTERS = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "optional_str": _to_optional_str,
    "weights": _to_weights,
    "pair": _to_pair,
    "int_pair": _to_int_pair,
    "int_list": _to_int_list,
    "optional_str_list": _to_optional_str_list,
    "name_list": _to_name_list,
    "size": _to_size,
    "mapping": _to_mapping,
}


def _check_together(config: TrainConfig) -> None:
    """Checks that involve more than one key."""
    if not config.train_url.strip():
        raise TwinsError("train_url is empty: give an output folder", argument="train_url")
    if config.min_lr > config.base_lr:
        raise TwinsError(f"min_lr {config.min_lr} exceeds base_lr {config.base_lr}: lower min_lr")
    if config.warmup_length > config.epochs:
        raise TwinsError(
            f"warmup_length {config.warmup_length} exceeds epochs {config.epochs}: shorten it"
        )
    if config.start_epoch >= config.total_epochs:
        raise TwinsError(
            f"start_epoch {config.start_epoch} is past the run's {config.total_epochs} epochs"
        )
    clashes = sorted({"num_classes", "drop_path_rate"} & set(config.model_args))
    if clashes:
        raise TwinsError(f"set {clashes[0]} as a key of its own, not inside model_args")
    if config.crop_scale[0] > config.crop_scale[1]:
        raise TwinsError(f"crop_scale {config.crop_scale} must be [low, high] with low <= high")
    if config.auto_augment is not None:
        _check_auto_augment(config.auto_augment)
    _check_schedule(config)
    if config.ratio_range[0] > config.ratio_range[1]:
        raise TwinsError(f"ratio_range {config.ratio_range} must be [low, high] with low <= high")
    if config.no_decay_keys is not None and config.layer_decay:
        raise TwinsError(
            "layer_decay makes timm's groups, with their own no-decay rule: "
            "set no_decay_keys to null, or layer_decay to 0"
        )


def _check_schedule(config: TrainConfig) -> None:
    """The warmup and length keys of the policy chosen: those of the others are refused rather
    than silently unread."""
    policy = config.lr_scheduler
    if policy in MMCV_POLICIES and config.warmup_length:
        raise TwinsError(
            f"warmup_length counts epochs of the cosine policies; {policy} warms up by "
            f"warmup_iters (with warmup_ratio): set warmup_length to 0"
        )
    if policy not in MMCV_POLICIES and config.warmup_iters:
        raise TwinsError(
            f"warmup_iters belongs to poly_lr and step_lr; {policy} warms up by "
            "warmup_length epochs: set warmup_iters to 0"
        )
    if config.max_iters:
        if policy != "poly_lr":
            raise TwinsError(
                f"max_iters counts the run in iterations, which poly_lr does; {policy} counts "
                "epochs: set lr_scheduler to poly_lr, or max_iters to 0"
            )
        if config.start_epoch:
            raise TwinsError("a run of max_iters iterations has no epochs: set start_epoch to 0")
        if config.warmup_iters > config.max_iters:
            raise TwinsError(
                f"warmup_iters {config.warmup_iters} exceeds max_iters {config.max_iters}: "
                "shorten it"
            )
    steps = config.lr_steps
    if steps and policy != "step_lr":
        raise TwinsError(f"lr_steps belongs to step_lr, not {policy}: set lr_steps to []")
    if policy == "step_lr":
        if not steps:
            raise TwinsError("step_lr needs lr_steps, the epochs to decay after, e.g. [8, 11]")
        if sorted(set(steps)) != steps or steps[-1] > config.epochs:
            raise TwinsError(
                f"lr_steps {steps} must rise and end within the run's {config.epochs} epochs"
            )


def _check_auto_augment(text: str) -> None:
    """Refuse a malformed timm augmentation string now rather than when the loader starts."""
    from timm.data.auto_augment import (
        augment_and_mix_transform,
        auto_augment_transform,
        rand_augment_transform,
    )

    builders = {
        "rand": rand_augment_transform,
        "augmix": augment_and_mix_transform,
        "original": auto_augment_transform,
        "v0": auto_augment_transform,
        "3a": auto_augment_transform,
    }
    builder = next((b for p, b in builders.items() if text.startswith(p)), None)
    try:
        if builder is None:
            raise ValueError(text)
        builder(text, {})
    except Exception as error:  # whatever timm's parser raises for a string it cannot read
        raise TwinsError(
            f"auto_augment={text!r} is not a timm augmentation string: "
            "use e.g. rand-m9-mstd0.5-inc1, or none to switch it off"
        ) from error


def save_config(config: TrainConfig, path: str | Path, keys: Collection[str] | None = None) -> None:
    """Write the resolved configuration (`config_yaml`) to `path`."""
    write_text(path, config_yaml(config, keys))


def config_yaml(config: TrainConfig, keys: Collection[str] | None = None) -> str:
    """The resolved configuration as YAML: the values of `keys` (a run writes those its task
    reads: the others change nothing, and are left out rather than shown as if in use), by
    default of the keys given (`TrainConfig.given`) and the engines' (`ENGINE_KEYS`), so that no
    other task's key is written unless given. The keys left out hold their defaults, so
    `load_config` reads back the same values."""
    wanted = ENGINE_KEYS | config.given if keys is None else keys
    values = {key: value for key, value in config.to_dict().items() if key in wanted}
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=None)


def describe_keys() -> str:
    """One line per key: name, default, allowed values and meaning (for `twins train --help`)."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if callable(f.default_factory) else f.default
        check, doc = f.metadata["check"], f.metadata["doc"]
        notes = [doc] if doc else []
        if isinstance(check, tuple) and check and isinstance(check[0], str):
            notes.append(" | ".join(check))
        text = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"  {f.name}: {text}" + (f"  # {'; '.join(notes)}" if notes else ""))
    return "\n".join(lines)
