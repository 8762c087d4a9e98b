"""The built-in digit scenes: ADE20K layout read back by the segmentation folder, labels from
the strokes, instances that agree with the label maps, and one seed one set of files."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from twins.tasks.scenes import CLASSES, SceneLayout, write_digit_scenes
from twins.tasks.segment.data import open_segmentation


def test_scenes_are_ade20k_style_files_with_matching_instances(tmp_path):
    instances = write_digit_scenes(tmp_path, train=4, val=2, layout=SceneLayout(size=32), seed=1)
    train, val = open_segmentation(tmp_path, "train"), open_segmentation(tmp_path, "val")
    assert (len(train), len(val)) == (4, 2) and train.classes == list(CLASSES)
    image, label = train[0]
    assert image.shape == (3, 32, 32) and label.shape == (32, 32)
    assert set(label.unique().tolist()) <= {*range(11), 255} and (label == 0).any()  # background
    for index, scene in enumerate(instances["training"]):
        stored = np.asarray(Image.open(tmp_path / f"annotations/training/{index:05d}.png"))
        assert 1 <= len(scene) <= 4
        for digit in scene:
            assert (stored[digit.mask] == digit.digit + 2).all()  # value = class + 1
            rows, cols = np.nonzero(digit.mask)
            assert digit.box == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        drawn = sum(int(d.mask.sum()) for d in scene)
        assert drawn == int((stored >= 2).sum())  # every digit pixel belongs to one instance
    assert len(instances["validation"]) == 2


def test_one_seed_gives_one_set_of_files(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_digit_scenes(tmp_path / name, train=2, val=1, layout=SceneLayout(size=32), seed=seed)
    first = (tmp_path / "a/images/training/00001.jpg").read_bytes()
    assert first == (tmp_path / "b/images/training/00001.jpg").read_bytes()
    assert first != (tmp_path / "c/images/training/00001.jpg").read_bytes()
    a = open_segmentation(tmp_path / "a", "val")[0][1]
    assert torch.equal(a, open_segmentation(tmp_path / "b", "val")[0][1])


def test_count_and_side_set_how_many_digits_and_how_large(tmp_path):
    instances = write_digit_scenes(
        tmp_path, train=6, val=1, layout=SceneLayout(size=32, count=(1, 1), side=(0.5, 0.5))
    )
    for scene in instances["training"]:
        assert len(scene) == 1
        x0, y0, x1, y1 = scene[0].box
        assert max(x1 - x0, y1 - y0) <= 16  # the ink lies inside its 16 px square
    # Other parameters are another set of scenes: the folder is rewritten, not reused.
    again = write_digit_scenes(tmp_path, train=6, val=1, layout=SceneLayout(size=32))
    assert any(len(scene) > 1 for scene in again["training"])


def test_cells_hold_one_digit_each_and_light_ink_is_lighter_than_its_ground(tmp_path):
    instances = write_digit_scenes(
        tmp_path,
        train=6,
        val=1,
        layout=SceneLayout(32, (4, 4), (0.5, 0.5), cell=16, light_ink=True),
    )
    for index, scene in enumerate(instances["training"]):
        assert len(scene) == 4  # one digit in each of the 2 x 2 cells
        cells = {(d.box[1] // 16, d.box[0] // 16) for d in scene}
        assert cells == {(0, 0), (0, 1), (1, 0), (1, 1)}
        for digit in scene:  # the ink stays inside its cell
            x0, y0, x1, y1 = digit.box
            assert (x0 // 16, y0 // 16) == ((x1 - 1) // 16, (y1 - 1) // 16)
        image = np.asarray(Image.open(tmp_path / f"images/training/{index:05d}.jpg"), float)
        ink = np.logical_or.reduce([d.mask for d in scene])
        assert image[ink].mean() > image[~ink].mean() + 60
