"""Training and evaluation: config, schedule, optimizer and loss, the Trainer, engine,
checkpoints and resume, the fit loop."""

from twins.train.config import KEYS, TrainConfig, build_config, load_config, save_config
from twins.train.evaluate import evaluate_checkpoint
from twins.train.fit import build_model, fit
from twins.train.schedule import lr_schedule
from twins.train.trainer import Trainer

__all__ = [
    "KEYS",
    "TrainConfig",
    "Trainer",
    "build_config",
    "build_model",
    "evaluate_checkpoint",
    "fit",
    "load_config",
    "lr_schedule",
    "save_config",
]
