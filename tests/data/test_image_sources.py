"""What `twins predict --out` reads: files, folders, globs, `@list.txt` files and packed data
sets, as named items read when predicted; images held in memory in any common form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from factories import write_imagefolder
from twins.data.image_input import as_pil, as_tensor
from twins.data.image_sources import expand_lists, list_images
from twins.data.packed.writer import pack
from twins.errors import TwinsError


def test_a_list_file_names_inputs_relative_to_its_folder(tmp_path):
    folder = write_imagefolder(tmp_path / "data", 1, (2, 1))
    (tmp_path / "data" / "more.txt").write_text("# train images\ntrain/class_0/0.png\n\nval\n")
    expanded = expand_lists([f"@{tmp_path / 'data' / 'more.txt'}"])
    assert expanded == [str(folder / "train/class_0/0.png"), str(folder / "val")]
    items, missing = list_images([f"@{tmp_path / 'data' / 'more.txt'}", str(tmp_path / "none")])
    assert [Path(item.name).name for item in items] == ["0.png", "0.png", "1.png", "0.png"]
    assert items[0].read() == (folder / "train/class_0/0.png").read_bytes()
    assert missing == [(str(tmp_path / "none"), "no such file or folder")]
    with pytest.raises(TwinsError, match="cannot read the list"):
        list_images([f"@{tmp_path / 'absent.txt'}"])


def test_a_packed_data_set_gives_every_sample_by_its_source_path(tmp_path):
    source = write_imagefolder(tmp_path / "folder", 2, (1, 1))
    pack(source, str(tmp_path / "packed"), workers=1)
    items, missing = list_images([str(tmp_path / "packed")])
    names = sorted(item.name for item in items)
    assert not missing and len(names) == 6
    assert "val/class_1/0.png" in names and "train/class_0/1.png" in names
    item = next(item for item in items if item.name == "val/class_1/0.png")
    assert item.read() == (source / "val" / "class_1" / "0.png").read_bytes()


@pytest.mark.parametrize("form", ["pil", "array", "uint8 tensor", "float tensor", "gray array"])
def test_images_in_memory_are_the_pixels_of_their_file(tmp_path, form):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    if form == "gray array":
        pixels = pixels[..., 0]
    Image.fromarray(pixels).save(tmp_path / "image.png")
    held = {
        "pil": Image.fromarray(pixels),
        "array": pixels,
        "gray array": pixels,
        "uint8 tensor": torch.from_numpy(pixels).permute(2, 0, 1) if pixels.ndim == 3 else None,
        "float tensor": torch.from_numpy(pixels).permute(2, 0, 1) / 255
        if pixels.ndim == 3
        else None,
    }[form]
    from_file = as_tensor(tmp_path / "image.png")
    assert torch.equal(as_tensor(held), from_file)
    assert np.array_equal(np.asarray(as_pil(held)), np.asarray(as_pil(str(tmp_path / "image.png"))))


def test_an_image_of_another_shape_is_refused_saying_what_is_taken():
    with pytest.raises(ValueError, match="H x W, H x W x 1, 3 or 4 of uint8"):
        as_tensor(np.zeros((4, 5, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="not an image file Pillow can read"):
        as_tensor(b"neither")


def test_a_parquet_set_gives_every_row_of_every_split_test_too(tmp_path):
    from hub_parquet import imagefolder_to_parquet, write_parquet_file

    source = write_imagefolder(tmp_path / "folder", 2, (2, 1))
    hub = imagefolder_to_parquet(source, tmp_path / "hub", {"train": 2, "val": 1})
    test_image = (source / "val" / "class_0" / "0.png").read_bytes()
    write_parquet_file(hub / "data" / "test-00000-of-00001.parquet", [(test_image, "", -1)], None)
    items, missing = list_images([str(hub)])
    images = [path for path in source.rglob("*.png")]
    assert not missing and len(items) == len(images) + 1
    names = [item.name for item in items]
    assert len(set(names)) == len(names)  # the Hub's paths repeat ("0.png"): rows do not
    assert names[0] == "test-00000-of-00001.parquet row 0"
    assert names[1] == "train-00000-of-00002.parquet row 0 (0.png)"
    val = [item for item in items if item.name.startswith("validation-")]
    assert val[0].read() == (source / "val" / "class_0" / "0.png").read_bytes()
    assert val[-1].read() == (source / "val" / "class_1" / "0.png").read_bytes()


def test_a_parquet_file_without_an_image_column_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "hub" / "data").mkdir(parents=True)
    table = pa.table({"pixels": [b"x"], "label": [0]})
    pq.write_table(table, tmp_path / "hub" / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(TwinsError, match="has no `image` column of image bytes"):
        list_images([str(tmp_path / "hub")])
