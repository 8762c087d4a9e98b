"""Weights in and out: official & timm `.pth`, our training checkpoints, the seed's MindSpore
`.ckpt`, safetensors and the Hugging Face Hub layout, local or by `hf-hub:` id or URL, all read into (and written from) the official Twins layout, with the
metadata that describes their model. File I/O only: building a model from weights is
`twins.models.from_weights`."""

from twins.weights.formats import FORMATS, detect_format, format_for_path
from twins.weights.into_model import check_values, load_into_model, mismatches
from twins.weights.load import load_weights
from twins.weights.locate import local_weights_file
from twins.weights.metadata import model_metadata
from twins.weights.save import save_weights
from twins.weights.state_dict import METADATA_KEYS, StateDict

__all__ = [
    "FORMATS",
    "METADATA_KEYS",
    "StateDict",
    "check_values",
    "detect_format",
    "format_for_path",
    "load_into_model",
    "load_weights",
    "local_weights_file",
    "mismatches",
    "model_metadata",
    "save_weights",
]
