"""What a task supplies to the one fit loop: its data sets, how samples become batches and
reach the device, its loss and its evaluation (torchvision's `references/{classification,
segmentation,detection}` show how little else differs). The loop, resume, DDP, the lock, stop
signals, logging and checkpoints are shared (`twins.train.fit_loop`), and so is the evaluation
of a weights file (`twins.train.evaluate`). The tasks (`twins.tasks`) implement it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from twins.config import DEFAULTS, KEYS
from twins.errors import TwinsError
from twins.train.loss import Criterion

if TYPE_CHECKING:
    from twins.train.precision import Precision

# inputs, targets, device -> inputs and targets on the device, ready for the model
ToDevice = Callable[[Any, Any, torch.device], tuple[Any, Any]]


class Task:
    """Base of the tasks; each method reads the keys of the config it needs."""

    name: str = ""
    # The evaluation result best.pt follows (higher is better, in %), its name in a sentence,
    # and the results an epoch line shows (the score first).
    score: str = ""
    score_label: str = ""
    shown: tuple[str, ...] = ()
    # Whether the recipes synchronise BatchNorm statistics across processes (SyncBN).
    sync_batchnorm: bool = False
    # The folders of the task's data layout an output folder must not be inside (its files
    # would become data there).
    data_folders: tuple[str, ...] = ()
    # The config keys the task reads: the engines' (`twins.config.ENGINE_KEYS`) and those of
    # its data pipeline and loss. A run's config.yaml lists these; another key given is refused.
    reads: frozenset[str] = frozenset(KEYS)

    def check_config(self, config: Any) -> None:
        """Refuse, in one line, a config this task cannot train or evaluate (its `arch` is
        checked to be a model of the task before: `twins.tasks.task_for`): here, a key given
        that the task does not read (another task's), which would change nothing. A key given
        at its default value changes nothing either way, so a config.yaml written with every
        key (by an earlier version) still loads."""
        given = getattr(config, "given", frozenset())
        unread = [
            key
            for key in KEYS
            if key in given and key not in self.reads and getattr(config, key) != DEFAULTS[key]
        ]
        if unread:
            one = len(unread) == 1
            raise TwinsError(
                f"{', '.join(unread)} {'is a key' if one else 'are keys'} a {self.name} run "
                f"does not read (another task's): leave {'it' if one else 'them'} out of the "
                "config and the key=value overrides",
                argument=unread[0],
            )

    def create_model(self, name: str, **kwargs: Any) -> nn.Module:
        """Build the model `name` of this task (`twins.tasks.create_model`'s arguments)."""
        raise NotImplementedError

    def model_from_weights(
        self, weights: Any, arch: str | None = None, *, model_args: Any = None
    ) -> nn.Module:
        """The model of this task the weights describe, loaded strictly, in eval mode."""
        raise NotImplementedError

    def datasets(self, config: Any) -> tuple[Dataset, Dataset, list[str]]:
        """(training set, validation set, class names) of `config.data_url`."""
        raise NotImplementedError

    def model_arguments(self, config: Any) -> dict[str, Any]:
        """`create_model` arguments the task's data pipeline sets (over `model_args`): a
        detector's input scale and padding, its resize left to the pipeline."""
        return {}

    def collate(self, train: bool) -> Callable[[list[tuple]], Any]:
        """Readable samples (tuples) -> one batch."""
        raise NotImplementedError

    def to_device(self, config: Any) -> ToDevice:
        raise NotImplementedError

    def metadata(self, config: Any, train_set: Dataset) -> dict[str, Any]:
        """What the task's checkpoints say over the model's metadata (`twins.weights.metadata`):
        its "preprocessing" (a classifier's crop and normalisation, a dense task's scale) and a
        dense task's "dataset" (palette, category ids)."""
        return {}

    def batch_mix(self, config: Any) -> Callable | None:
        """A whole-batch augmentation run on the device after `to_device` (Mixup), or None."""
        return None

    def criterion(self, config: Any) -> Criterion:
        raise NotImplementedError

    def evaluate(
        self,
        models: dict[str, nn.Module],
        loader: Any,
        precision: Precision,
        *,
        progress: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """Each model's validation metrics over every process's shard, in one pass."""
        raise NotImplementedError

    # --- the evaluation of a weights file (`twins.train.evaluate.evaluate_checkpoint`) ---
    # What the task's models do, in a sentence ("the weights classify 10 classes").
    verb: str = ""

    def evaluation_model(self, weights: Any, config: Any) -> nn.Module:
        """The model of `weights` to evaluate under `config` (its class count checked)."""
        raise NotImplementedError

    def evaluation_set(self, config: Any, metadata: dict[str, Any], model: nn.Module) -> Dataset:
        """The validation set of `config.data_url`, checked against what the file says."""
        raise NotImplementedError

    def evaluate_file(
        self,
        models: dict[str, nn.Module],
        loader: Any,
        precision: Precision,
        config: Any,
        *,
        progress: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """`evaluate` as a weights file is evaluated (a segmenter's multi-scale test, ...)."""
        return self.evaluate(models, loader, precision, progress=progress)

    def evaluation_result(
        self, metrics: dict[str, Any], config: Any, val_set: Dataset | None
    ) -> dict[str, Any]:
        """The result `twins eval --json` prints of one model's metrics (`val_set`: the data
        it was read from, for the raw weights; None for the EMA ones)."""
        return dict(metrics)

    def describe_evaluation(self, result: dict[str, Any], data_url: str) -> str:
        """The lines `twins eval` prints of a result."""
        raise NotImplementedError

    # --- the applications: `twins predict`, `twins export` (`twins.tasks`) ---
    # The `predict` options the task reads; any other one given is refused (`twins.tasks.predict`).
    predict_options: tuple[str, ...] = ()

    def predict(self, weights: Any, paths: list[Any], checkpoint: Any, **options: Any) -> Any:
        """The predictions of the model in `weights` (read from `checkpoint`) for the image
        files `paths`: a run with `predictions`, `failures`, `to_json()` and `format()`.
        `options`: `arch`, `model_args`, `device` and those of `predict_options` given."""
        raise NotImplementedError

    def row_predictor(
        self, source: Any, checkpoint: Any, *, to_file: bool = False, **options: Any
    ) -> Any:
        """The model of `source` (a `StateDict`, or an exported model: `twins.export.runtimes`)
        as a row predictor (`twins.inference.stream.RowPredictor`): one row per image, the
        objects `twins predict --out` writes. `to_file`: the rows go to a file, so whatever
        they name (a label map) must be written (`options`: those of `predict_options` that
        apply, `arch`, `model_args`, `device`)."""
        raise NotImplementedError

    def export(self, model: nn.Module, format: str, output: Any, metadata: dict, **options) -> Any:
        """Export `model` (built from a file with `metadata`) as `format` to `output`;
        `options`: `image_size` (the side traced at), `check`, and `quantize` for an int8
        OpenVINO model (`twins.export.formats.export_as`)."""
        raise NotImplementedError

    def calibration_set(self, folder: Any, metadata: dict, model: nn.Module) -> Any:
        """The int8 export's calibration samples of `folder` for `model` (built from a file with
        `metadata`): a `twins.export.calibration.CalibrationSet`."""
        raise TwinsError(
            f"int8 export is not offered for {self.description} models: export float32 "
            "(leave int8 out)",
            argument="int8",
        )

    # --- `twins benchmark` (`twins.benchmark`) ---
    # The task's models in a sentence ("segmentation models"), and the libraries `--compare`
    # times them against.
    description: str = ""
    compares_with: tuple[str, ...] = ()

    def benchmark_batch(
        self, model: nn.Module, batch_size: int, side: int, device: torch.device
    ) -> tuple[Any, Any, Callable[..., torch.Tensor]]:
        """(inputs, targets, loss): a random batch of `side`-pixel images the model takes, the
        targets a training step needs, and `loss(run, inputs, targets)` of a training step."""
        raise NotImplementedError

    def count_macs(self, model: nn.Module, side: int) -> int:
        """Multiply-adds of one `side`-pixel image's forward."""
        raise NotImplementedError

    def model_arguments_for_benchmark(self) -> dict[str, Any]:
        """`create_model` arguments a benchmarked model takes (under the user's)."""
        return {}
