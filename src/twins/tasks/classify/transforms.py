"""Evaluation transforms, built with timm's transform factory, and the 0-bit posterize fix for
timm's PIL augmentations.

Eval: resize the short side to floor(image_size / crop_pct) (squash to that square under the
seed's semantics), centre crop `image_size`, ImageNet normalisation: PIL images in, float
tensors out, the same for evaluation and `twins predict`.
Train: `twins.tasks.classify.train_transform` (uint8 tensors; normalisation and erasing on the device).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps
from timm.data import create_transform

from twins.preprocessing import eval_preprocessing

if TYPE_CHECKING:  # the config is only read here; importing it would tie data to train
    from twins.config import TrainConfig


def eval_transform(preprocessing: Mapping[str, Any]) -> Any:
    """Deterministic transform from an `eval_preprocessing` description: resize (by crop_mode)
    to image_size / crop_pct, centre crop image_size, normalise."""
    return create_transform(
        input_size=int(preprocessing["image_size"]),
        is_training=False,
        interpolation=preprocessing["interpolation"],
        crop_pct=float(preprocessing["crop_pct"]),
        crop_mode=preprocessing["crop_mode"],
        mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]),
    )


def build_eval_transform(config: TrainConfig) -> Any:
    """The config's deterministic evaluation transform."""
    return eval_transform(eval_preprocessing(config))


def posterize(image: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op, also for 0 bits kept: a black image, as TF's RandAugment gives.

    RandAugment's "PosterizeIncreasing" keeps 0 bits at magnitude 10 (reached by
    "rand-m9-mstd0.5-inc1" about once in 40 draws); recent Pillow (13) refuses 0 bits with a ValueError.
    """
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return ImageOps.posterize(image, bits_to_keep)


def allow_zero_bit_posterize(transform: Any) -> None:
    """Give the posterize ops of timm's RandAugment / AutoAugment / AugMix the op above."""
    for step in getattr(transform, "transforms", ()):
        ops = list(getattr(step, "ops", ()))
        for sub_policy in getattr(step, "policy", ()):
            ops.extend(sub_policy)
        for op in ops:
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = posterize
