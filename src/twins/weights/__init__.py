"""Weights in and out: official & timm `.pth`, our training checkpoints, the seed's MindSpore
`.ckpt` and safetensors, all read into (and written from) the official Twins layout."""

from twins.weights.architecture import infer_model_args, model_arguments, model_from_weights
from twins.weights.detect import detect_format
from twins.weights.fit import load_into_model, mismatches
from twins.weights.load import load_weights
from twins.weights.save import save_weights
from twins.weights.state_dict import METADATA_KEYS, StateDict

__all__ = [
    "METADATA_KEYS",
    "StateDict",
    "detect_format",
    "infer_model_args",
    "load_into_model",
    "load_weights",
    "mismatches",
    "model_arguments",
    "model_from_weights",
    "save_weights",
]
