"""The training transform on uint8 tensors against timm's PIL transform: each op's pixels, the
random draws, the whole pipeline, and the device's normalisation and random erasing."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from timm.data import create_transform
from timm.data.auto_augment import NAME_TO_OP

from twins.seeds import seeded
from twins.tasks.classify.augment_ops import TENSOR_OPS
from twins.tasks.classify.device_batch import DeviceBatch
from twins.tasks.classify.train_transform import build_train_transform, tensor_augment, timm_augment
from twins.tasks.classify.transforms import allow_zero_bit_posterize, posterize

FILL = {"fillcolor": (124, 116, 104), "resample": Image.Resampling.BICUBIC}
# (op, level arguments): magnitudes around rand-m9's
OP_ARGUMENTS = [
    ("AutoContrast", ()), ("Equalize", ()), ("Invert", ()), ("Posterize", (3,)),
    ("Solarize", (100,)), ("SolarizeAdd", (90,)), ("Color", (1.8,)), ("Color", (0.2,)),
    ("Contrast", (1.8,)), ("Contrast", (0.3,)), ("Brightness", (1.7,)), ("Brightness", (0.2,)),
    ("Sharpness", (1.9,)), ("Sharpness", (0.1,)), ("Desaturate", (0.6,)),
    ("ShearX", (0.27,)), ("ShearY", (-0.2,)), ("TranslateXRel", (0.4,)),
    ("TranslateYRel", (-0.33,)), ("TranslateX", (-20.5,)), ("TranslateY", (13.25,)),
]  # fmt: skip
RESAMPLE = [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR, Image.Resampling.NEAREST]


def _photo(name: str, size: int = 64) -> Image.Image:
    return Image.fromarray(load_sample_image(name)).resize((size, size), Image.Resampling.BICUBIC)


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("photo", ["china.jpg", "flower.jpg"])
@pytest.mark.parametrize(("name", "args"), OP_ARGUMENTS)
def test_each_tensor_op_gives_pillows_pixels(photo, name, args):
    # Built on Pillow's own tables, kernels, clamping, fill and truncation: equal up to float
    # rounding (Pillow interpolates in double, we in float: one level, in a few pixels).
    image = _photo(photo)
    resamples = RESAMPLE if name.startswith(("Shear", "Translate")) else RESAMPLE[:1]
    for resample in resamples:
        options = {**FILL, "resample": resample}
        expected = _tensor(NAME_TO_OP[name](image, *args, **dict(options)))
        out = TENSOR_OPS[name](_tensor(image), *args, **dict(options))
        difference = (out.int() - expected.int()).abs()
        assert out.dtype == torch.uint8 and out.shape == expected.shape
        assert difference.max() <= 1 and difference.float().mean() <= 0.05, resample


def test_augment_draws_the_ops_and_magnitudes_timm_draws():
    """timm's own RandAugment object runs the tensor ops: for one seed, the same ops with the
    same arguments, and the same image (up to the ops' float rounding: a level in a few pixels,
    which a second resampling op may carry to two)."""
    text = "rand-m9-mstd0.5-inc1"
    ours, theirs = tensor_augment(text, 64, "bicubic"), timm_augment(text, 64, "bicubic")
    calls = {"ours": [], "timm": []}
    for key, augment in (("ours", ours), ("timm", theirs)):
        for op in augment.ops:
            pil_zero_bits = key == "timm" and op.name.startswith("Posterize")
            function = posterize if pil_zero_bits else op.aug_fn  # Pillow refuses 0 bits
            op.aug_fn = _recording(op.name, function, calls[key])
    image = _photo("china.jpg")
    for seed in range(40):
        with seeded(seed):
            out = ours(_tensor(image))
        with seeded(seed):
            expected = _tensor(theirs(image))
        difference = (out.float() - expected.float()).abs()
        assert difference.max() <= 2 and difference.mean() < 0.25
    assert calls["ours"] == calls["timm"] and len(calls["ours"]) > 20


def _recording(name, function, calls):
    def op(image, *args, **kwargs):
        calls.append((name, args, kwargs["resample"]))
        return function(image, *args, **kwargs)

    return op


@pytest.mark.parametrize("re_count", [1, 3])
def test_one_seed_gives_timms_crop_flip_ops_and_erasing_rectangles(make_config, re_count):
    """The whole transform: the same draws as timm's PIL transform, so the same crop, flip, ops
    (pixels within the resizers' rounding) and the same erased rectangles."""
    config = make_config(image_size=48, re_prob=1.0, re_mode="const", re_count=re_count)
    ours = build_train_transform(config)
    timm_kwargs = {
        "input_size": 48, "is_training": True, "scale": (0.08, 1.0), "hflip": 0.5,
        "color_jitter": None, "auto_augment": config.auto_augment, "interpolation": "bicubic",
    }  # fmt: skip
    prefetched = create_transform(**timm_kwargs, use_prefetcher=True)  # uint8, no erasing
    erased = create_transform(**timm_kwargs, re_prob=1.0, re_mode="const", re_count=re_count)
    allow_zero_bit_posterize(prefetched)
    allow_zero_bit_posterize(erased)
    image = _photo("flower.jpg", 120)
    differences = []
    for seed in range(12):
        with seeded(seed):
            pixels, erasing = ours(_tensor(image))
        with seeded(seed):
            expected = prefetched(image)
        with seeded(seed):
            timm_erased = erased(image)
        differences.append((pixels.float() - expected.float()).abs().mean().item())
        mask = torch.zeros(48, 48, dtype=torch.bool)
        for top, left, height, width, _ in erasing.tolist():
            mask[top : top + height, left : left + width] = True
        assert torch.equal(mask, (timm_erased == 0).all(dim=0))
    # torchvision's antialiased bicubic on uint8 and Pillow's resize round differently in a
    # few pixels; what the ops then do to them stays as small.
    assert np.mean(differences) < 1.0


def test_device_batch_normalises_as_timms_prefetcher_and_erases_the_rectangles():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    erasing = torch.tensor([[[2, 3, 5, 6, 11]], [[0, 0, 0, 0, 0]]])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    for mode in ("const", "rand", "pixel"):
        out = DeviceBatch(re_mode=mode)((images, erasing), torch.device("cpu"))
        assert out.dtype == torch.float32
        inside = out[0, :, 2:7, 3:9]
        outside = out.clone()
        outside[0, :, 2:7, 3:9] = expected[0, :, 2:7, 3:9]
        torch.testing.assert_close(outside, expected, atol=1e-5, rtol=1e-5)
        if mode == "const":
            assert (inside == 0).all()
        elif mode == "rand":  # one normal draw per channel
            assert (inside == inside[:, :1, :1]).all() and inside.std() > 0
        else:  # one per pixel, from the image's own seed
            again = DeviceBatch(re_mode=mode)((images, erasing), torch.device("cpu"))
            assert torch.equal(out, again) and inside.flatten().unique().numel() == 90


def test_pixel_noise_is_standard_normal_in_normalised_units():
    images = torch.zeros(1, 3, 200, 200, dtype=torch.uint8)
    erasing = torch.tensor([[[0, 0, 200, 150, 7]]])
    out = DeviceBatch(re_mode="pixel")((images, erasing), torch.device("cpu"))
    noise = out[0, :, :, :150]
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02


def test_erasing_draws_follow_timms_distribution(make_config):
    """Over many draws: erasing happens with re_prob, covers 2-33% of the image per count."""
    transform = build_train_transform(make_config(image_size=32, re_prob=0.25, re_count=1))
    random.seed(0)
    tables = [transform.erasing(32, 32) for _ in range(2000)]
    erased = [t[0] for t in tables if t[0, 2] > 0]
    assert 0.22 < len(erased) / 2000 < 0.28
    areas = [int(row[2] * row[3]) / 1024 for row in erased]
    assert min(areas) >= 0.015 and max(areas) <= 0.35


@pytest.mark.parametrize("text", ["original", "v0r", "3a", "augmix-m5-w3-d2", "rand-m9-n3-inc0"])
def test_every_auto_augment_timm_knows_runs_on_tensors(make_config, text):
    transform = build_train_transform(make_config(image_size=32, auto_augment=text))
    image = _tensor(_photo("flower.jpg", 48))
    for seed in range(6):
        with seeded(seed):
            out, _ = transform(image)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_a_pil_image_gives_the_pixels_and_draws_of_its_tensor(make_config):
    """The loaders hand the transform PIL images (cropped in Pillow); tensors take the same
    path from the crop on."""
    ours = build_train_transform(make_config(image_size=48, re_prob=1.0, re_count=2))
    image = _photo("flower.jpg", 120).crop((0, 10, 120, 100))  # not square
    for seed in range(12):
        with seeded(seed):
            from_pil = ours(image)
        with seeded(seed):
            from_tensor = ours(_tensor(image))
        assert all(map(torch.equal, from_pil, from_tensor)), seed


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest", "random"])
def test_the_crop_is_resized_as_pillow_resizes_it(make_config, interpolation):
    config = make_config(image_size=40, auto_augment=None, re_prob=0.0, hflip=0.0)
    config.interpolation = interpolation
    ours = build_train_transform(config)
    timm = create_transform(
        input_size=40, is_training=True, scale=(0.08, 1.0), hflip=0.0, color_jitter=None,
        interpolation=interpolation, use_prefetcher=True,
    )  # fmt: skip
    image = _photo("china.jpg", 150)
    for seed in range(8):
        with seeded(seed):
            out, _ = ours(_tensor(image))
        with seeded(seed):
            expected = timm(image)
        difference = (out.float() - expected.float()).abs()
        # torchvision's antialiased filters (and its exact nearest) are Pillow's; they round a
        # few pixels differently (nearest: a neighbour's pixel where a centre falls on an edge)
        assert difference.mean() < 0.5
