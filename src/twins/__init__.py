"""Twins vision transformers (Chu et al., NeurIPS 2021): Twins-PCPVT and Twins-SVT in PyTorch."""

from twins.models import create_model, list_models
from twins.weights import load_weights

__all__ = ["create_model", "list_models", "load_weights"]
__version__ = "0.1.0"
