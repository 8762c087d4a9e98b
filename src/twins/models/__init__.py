"""Twins models: the layers, the parameterised `Twins` class and the variant table."""

from twins.models.flops import count_macs
from twins.models.registry import (
    ALIASES,
    OVERRIDES,
    VARIANTS,
    aliases_of,
    create_model,
    list_models,
    resolve_name,
    smallest_image_size,
)
from twins.models.twins import Twins

__all__ = [
    "ALIASES",
    "OVERRIDES",
    "VARIANTS",
    "Twins",
    "aliases_of",
    "count_macs",
    "create_model",
    "list_models",
    "resolve_name",
    "smallest_image_size",
]
