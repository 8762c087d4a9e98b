"""How evaluation prepares an image for a model, as a plain description: what weights files
carry (`twins.weights.metadata`) and every reader uses (`twins.tasks.classify.transforms.eval_transform`).
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def eval_preprocessing(config: Any) -> dict[str, Any]:
    """How evaluation prepares an image, under timm's pretrained-cfg names; weights files carry
    it so that whoever uses them prepares images the same way.

    crop_mode "center" resizes the short side to image_size / crop_pct (the official and timm
    evaluation), "squash" resizes to that square whatever the aspect ratio (the seed's).
    """
    return {
        "image_size": int(config.image_size),
        "crop_pct": float(config.crop_pct),
        "crop_mode": "squash" if config.semantics == "seed" else "center",
        "interpolation": "bicubic" if config.interpolation == "random" else config.interpolation,
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
    }
