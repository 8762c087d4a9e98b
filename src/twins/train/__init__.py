"""Training and evaluation: config, optimizer and schedule, engine, checkpoints, the fit loop."""

from twins.train.config import KEYS, TrainConfig, build_config, load_config, save_config
from twins.train.evaluate import evaluate_checkpoint
from twins.train.fit import build_model, fit

__all__ = [
    "KEYS",
    "TrainConfig",
    "build_config",
    "build_model",
    "evaluate_checkpoint",
    "fit",
    "load_config",
    "save_config",
]
