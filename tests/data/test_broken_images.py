"""A zoo of awkward files: converted to RGB when they can be, otherwise skipped and counted."""

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from twins.data import build_loader
from twins.data.images import to_rgb
from twins.errors import TwinsError
from twins.tasks import fit
from twins.tasks.classify.data import build_datasets


def _noise(height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(height * width).integers(0, 256, shape, dtype=np.uint8)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _palette_with_transparency() -> Image.Image:
    image = Image.fromarray(_noise(20, 20)).convert("P", palette=Image.Palette.ADAPTIVE)
    image.info["transparency"] = 0
    return image


# name -> writer of the file; the first group converts, the second cannot be decoded.
CONVERTIBLE = {
    "rgb.png": lambda p: Image.fromarray(_noise(24, 30)).save(p),
    "gray.png": lambda p: Image.fromarray(_noise(24, 30, 1)).save(p),
    "gray_alpha.png": lambda p: Image.fromarray(_noise(24, 30, 4)).convert("LA").save(p),
    "cmyk.jpg": lambda p: Image.fromarray(_noise(24, 30, 4), mode="CMYK").save(p),
    "palette.png": lambda p: Image.fromarray(_noise(24, 30)).quantize(16).save(p),
    "palette_alpha.png": lambda p: _palette_with_transparency().save(p, transparency=0),
    "rgba.png": lambda p: Image.fromarray(_noise(24, 30, 4)).save(p),
    "sixteen_bit.png": lambda p: Image.fromarray(
        (np.arange(24 * 30).reshape(24, 30) * 80).astype(np.uint16)
    ).save(p),
    "one_pixel.png": lambda p: Image.new("RGB", (1, 1), (10, 200, 30)).save(p),
}
BROKEN = {
    "corrupt.jpg": lambda p: p.write_bytes(np.random.default_rng(1).bytes(3000)),
    "truncated.png": lambda p: p.write_bytes(_png_bytes(Image.fromarray(_noise(64, 64)))[:1500]),
    "truncated.jpg": lambda p: p.write_bytes(_jpeg_bytes(Image.fromarray(_noise(64, 64)))[:2000]),
    "empty.png": lambda p: p.write_bytes(b""),
    "text.jpg": lambda p: p.write_text("not an image at all\n"),
}


def _write_zoo(root: Path) -> Path:
    """train/zoo holds every file of the zoo; train/plain and both val classes hold RGB images."""
    for name, write in {**CONVERTIBLE, **BROKEN}.items():
        (root / "train" / "zoo").mkdir(parents=True, exist_ok=True)
        write(root / "train" / "zoo" / name)
    for split, folder in (("train", "plain"), ("val", "plain"), ("val", "zoo")):
        (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.fromarray(_noise(20 + i, 20)).save(root / split / folder / f"{i}.png")
    return root


@pytest.fixture
def zoo(tmp_path, make_config):
    root = _write_zoo(tmp_path / "zoo")
    cfg = make_config(data_url=str(root), batch_size=4, crop_pct=1.0)
    train, _, _ = build_datasets(cfg)
    return cfg, train


def _sample(dataset, name: str):
    index = next(i for i, (path, _) in enumerate(dataset.samples) if path.endswith(name))
    return dataset[index]


@pytest.mark.parametrize("name", sorted(CONVERTIBLE))
def test_convertible_files_load_as_rgb_tensors(zoo, name):
    _, train = zoo
    (image, _), label = _sample(train, name)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert train.classes[label] == "zoo"


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_are_skipped_and_counted(zoo, name, caplog):
    _, train = zoo
    with caplog.at_level(logging.WARNING, logger="twins.tasks.classify.data"):
        assert _sample(train, name) is None
    assert train.skipped == 1 and train.tried == 1
    assert name in caplog.text
    assert [Path(p).name for p in train.broken_files] == [name]


def test_counts_of_a_pass_over_the_zoo(zoo):
    _, train = zoo
    for index in range(len(train)):
        train[index]
    assert train.tried == len(CONVERTIBLE) + len(BROKEN) + 4
    assert train.skipped == len(BROKEN)
    # rgb.png, one_pixel.png and the four plain images are stored as RGB already
    assert train.converted == len(CONVERTIBLE) - 2


def test_sixteen_bit_values_are_rescaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(values)))
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_transparent_pixels_become_white():
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent
    rgba[0, 1] = (10, 20, 30, 255)  # opaque
    rgb = np.asarray(to_rgb(Image.fromarray(rgba)))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [10, 20, 30]


@pytest.mark.parametrize("workers", [0, 1])
def test_training_batches_are_refilled_and_skips_counted_across_workers(zoo, workers):
    cfg, train = zoo
    cfg.num_parallel_workers = workers
    cfg.batch_size = len(train) // 2
    loader = build_loader(train, cfg, train=True)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [cfg.batch_size] * 2
    assert train.skipped == len(BROKEN)  # seen from this process, whichever process read them
    loader.set_epoch(1)
    list(loader)
    assert train.skipped == 2 * len(BROKEN)  # every read counts
    assert sorted(Path(p).name for p in train.broken_files) == sorted(BROKEN)  # each file once


def test_evaluation_batches_leave_broken_files_out(zoo, make_config):
    cfg, _ = zoo
    cfg.auto_augment, cfg.re_prob = None, 0.0
    dataset = build_datasets(cfg)[0]
    images = sum(len(labels) for _, labels in build_loader(dataset, cfg, train=False))
    assert images == len(dataset) - len(BROKEN)


def test_batch_without_any_readable_image_is_left_out(tmp_path, make_config, make_image_folder):
    root = make_image_folder(tmp_path / "data", per_class=2)
    for path in (root / "val" / "dog").iterdir():
        path.write_bytes(b"")
    cfg = make_config(data_url=str(root), batch_size=2)
    _, val, _ = build_datasets(cfg)
    batches = list(build_loader(val, cfg, train=False))
    assert len(batches) == 1 and batches[0][1].tolist() == [0, 0]


def test_mostly_broken_data_set_stops_with_a_clear_message(tmp_path, make_config, caplog):
    root = tmp_path / "broken"
    for split in ("train", "val"):
        for name in ("a", "b"):
            folder = root / split / name
            folder.mkdir(parents=True)
            Image.fromarray(_noise(16, 16)).save(folder / "good.png")
            for i in range(3):
                (folder / f"bad{i}.jpg").write_text("no image")
    cfg = make_config(data_url=str(root), batch_size=2)
    train, _, _ = build_datasets(cfg)
    with caplog.at_level(logging.ERROR), pytest.raises(TwinsError) as error:
        for _ in build_loader(train, cfg, train=True):
            pass
    message = str(error.value)
    assert "could not be decoded" in message and str(root / "train") in message
    assert "\n" not in message


def _broken_then_readable(root: Path) -> Path:
    """train/a: four unreadable files (samples 0-3); train/b: four images (samples 4-7)."""
    for index in range(4):
        (root / "train" / "a").mkdir(parents=True, exist_ok=True)
        BROKEN["corrupt.jpg"](root / "train" / "a" / f"{index}.jpg")
        (root / "train" / "b").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_noise(20 + index, 24)).save(root / "train" / "b" / f"{index}.png")
        for name in "ab":
            (root / "val" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_noise(20, 20)).save(root / "val" / name / f"{index}.png")
    return root


@pytest.mark.parametrize("order", [range(8), [4, 5, 6, 7, 0, 1, 2, 3]], ids=["first", "last"])
def test_in_lockstep_a_batch_without_readable_images_gets_a_stand_in(tmp_path, make_config, order):
    # Under DDP every process must run as many steps: the unreadable batch is replaced by a copy
    # of the next readable one (of the last one, at the end of the epoch), never left out.
    cfg = make_config(data_url=str(_broken_then_readable(tmp_path)), batch_size=4)
    train, _, _ = build_datasets(cfg)
    alone = list(build_loader(train, cfg, train=True, sampler=list(order)))
    assert len(alone) == 1  # one process: the unreadable batch is left out
    (images, erasing), labels = alone[0]
    lockstep = list(build_loader(train, cfg, train=True, sampler=list(order), lockstep=True))
    assert len(lockstep) == 2
    for (stand_in, stand_in_erasing), stand_in_labels in lockstep:
        assert torch.equal(stand_in, images) and torch.equal(stand_in_labels, labels)
        assert torch.equal(stand_in_erasing, erasing)
    assert lockstep[0][0][0].data_ptr() != lockstep[1][0][0].data_ptr()  # a copy
    assert train.classes == ["a", "b"] and labels.tolist() == [1, 1, 1, 1]


def test_a_class_whose_images_are_all_unreadable_is_named_after_the_first_epoch(
    make_imagefolder, tiny_config, tmp_path, capsys
):
    data = make_imagefolder(tmp_path / "data", 8, [2, 2, 2, 2])
    for image in (data / "train" / "class_3").iterdir():
        image.write_bytes(b"not an image")  # a quarter of the images: the run goes on
    fit(tiny_config(data, tmp_path / "run", epochs=2, batch_size=8))
    said = capsys.readouterr().out
    assert said.count("warning: no image of class class_3 in") == 1, said
    assert "the model has a class it never sees" in said
