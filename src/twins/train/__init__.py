"""Training and evaluation: config, schedule, optimizer and loss, the Trainer, engine,
checkpoints and resume, the fit loop.

The names below are imported on first use (PEP 562): the config alone (`twins.config`,
what `twins train --help` reads) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twins.lazy import lazy_exports

if TYPE_CHECKING:
    from twins.config import KEYS, TrainConfig, build_config, config_yaml, load_config, save_config
    from twins.train.dry_run import dry_run
    from twins.train.evaluate import evaluate_checkpoint
    from twins.train.fit_loop import build_model, fit
    from twins.train.schedule import lr_schedule
    from twins.train.trainer import Trainer

# Public name -> the module that defines it.
_LAZY = {
    "KEYS": "twins.config",
    "TrainConfig": "twins.config",
    "build_config": "twins.config",
    "config_yaml": "twins.config",
    "dry_run": "twins.train.dry_run",
    "load_config": "twins.config",
    "save_config": "twins.config",
    "evaluate_checkpoint": "twins.train.evaluate",
    "build_model": "twins.train.fit_loop",
    "fit": "twins.train.fit_loop",
    "lr_schedule": "twins.train.schedule",
    "Trainer": "twins.train.trainer",
}
__all__ = [
    "KEYS",
    "TrainConfig",
    "Trainer",
    "build_config",
    "build_model",
    "config_yaml",
    "dry_run",
    "evaluate_checkpoint",
    "fit",
    "load_config",
    "lr_schedule",
    "save_config",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
