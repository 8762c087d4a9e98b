"""Twins vision transformers (Chu et al., NeurIPS 2021): Twins-PCPVT and Twins-SVT in PyTorch.

`create_model`, `list_models`, `load_model`, `load_weights` and `Predictor` (any weights
file or exported model, any task: `predictor(images)`) are imported on first use (PEP 562), so
that importing a light part of the package, such as the command line's parsers, does not
import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twins.lazy import lazy_exports

if TYPE_CHECKING:
    from twins.models import list_models
    from twins.tasks import create_model, load_model
    from twins.tasks.predictor import Predictor
    from twins.weights import load_weights

__all__ = ["Predictor", "create_model", "list_models", "load_model", "load_weights"]
__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "Predictor": "twins.tasks.predictor",
    "create_model": "twins.tasks",
    "list_models": "twins.models",
    "load_model": "twins.tasks",
    "load_weights": "twins.weights",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
