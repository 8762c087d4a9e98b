"""Train and eval transforms: output shapes, the seed's recipe steps, the 0-bit posterize fix
(how the training transform matches timm's pixels: test_train_transform.py)."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing

from twins.tasks.classify.train_transform import build_train_transform
from twins.tasks.classify.transforms import build_eval_transform, posterize


def _noise_image(width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("size", [(50, 40), (17, 90), (1, 1), (32, 32)])
def test_train_transform_gives_square_uint8_image_and_erasing_table(make_config, size):
    transform = build_train_transform(make_config(image_size=32, re_count=2))
    torch.manual_seed(0)
    random.seed(0)
    for _ in range(5):
        image, erasing = transform(_noise_image(*size))
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert erasing.shape == (2, 5) and erasing.dtype == torch.int64


def test_train_transform_has_the_seed_recipe_steps(make_config):
    cfg = make_config(image_size=48, re_prob=0.25, re_mode="pixel", re_count=2, hflip=0.5)
    transform = build_train_transform(cfg)
    assert transform.size == (48, 48) and transform.scale == (0.08, 1.0)
    assert transform.hflip == 0.5 and transform.interpolation == "bicubic"
    augment = transform.augment
    assert isinstance(augment, RandAugment)
    assert augment.num_layers == 2 and augment.ops[0].magnitude == 9
    erasing = transform.erasing.reference
    assert isinstance(erasing, RandomErasing)
    assert erasing.probability == 0.25 and erasing.mode == "pixel" and erasing.max_count == 2


def test_train_transform_without_flip_augment_or_erasing(make_config):
    transform = build_train_transform(make_config(hflip=0.0, auto_augment=None, re_prob=0.0))
    assert transform.hflip == 0 and transform.augment is None
    random.seed(0)
    assert not any(transform(_noise_image(40, 40))[1].any() for _ in range(20))


@pytest.mark.parametrize(
    ("semantics", "image_size", "crop_pct", "resize"),
    [("official", 224, 0.875, 256), ("twins", 32, 1.0, 32), ("seed", 224, 0.875, (256, 256))],
)
def test_eval_transform_resizes_to_size_over_crop_pct(
    make_config, semantics, image_size, crop_pct, resize
):
    config = make_config(semantics=semantics, image_size=image_size, crop_pct=crop_pct)
    transform = build_eval_transform(config)
    resize_step, crop_step = transform.transforms[:2]
    assert resize_step.size == resize and crop_step.size == (image_size, image_size)
    image = _noise_image(300, 200)
    first, second = transform(image), transform(image)
    assert first.shape == (3, image_size, image_size)
    assert torch.equal(first, second)  # deterministic


def test_seed_eval_squashes_while_official_keeps_the_aspect_ratio(make_config):
    """A wide image: the seed resizes it to a 256 square (the whole width stays in the crop),
    the official evaluation resizes its short side and crops the middle."""
    pixels = np.zeros((200, 400, 3), dtype=np.uint8)
    pixels[:, :50] = 255  # a bright band on the left edge
    image = Image.fromarray(pixels)
    seed = build_eval_transform(make_config(semantics="seed", image_size=224, crop_pct=0.875))
    official = build_eval_transform(make_config(semantics="official", image_size=224))
    assert seed(image)[:, :, :8].mean() > 1.0  # the band survives the squash
    assert official(image)[:, :, :8].mean() < -1.0  # and is cropped away otherwise


def test_posterize_keeping_zero_bits_gives_black_image():
    image = _noise_image(8, 8)
    assert np.asarray(posterize(image, 0)).max() == 0
    assert np.asarray(posterize(image, 8)).tolist() == np.asarray(image).tolist()
    assert set(np.unique(np.asarray(posterize(image, 1)))) <= {0, 128}


def test_randaugment_posterize_at_full_magnitude_does_not_raise(make_config):
    # Magnitude 10 makes "PosterizeIncreasing" keep 0 bits, which Pillow refuses.
    augment = build_train_transform(make_config(auto_augment="rand-m10-inc1")).augment
    op = next(op for op in augment.ops if op.name == "PosterizeIncreasing")
    op.prob = 1.0
    image = torch.from_numpy(np.asarray(_noise_image(16, 16)).copy()).permute(2, 0, 1)
    assert op(image).max() == 0


def test_crop_scale_sets_the_random_resized_crop(make_config):
    assert build_train_transform(make_config()).scale == (0.08, 1.0)  # the seed's and DeiT's
    assert build_train_transform(make_config(crop_scale=[0.5, 0.9])).scale == (0.5, 0.9)
