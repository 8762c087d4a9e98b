"""The detection pipelines: boxes and masks stay on their objects through resize, crop and flip;
the draws are a function of (seed, epoch, index); batches are lists."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from coco_files import COLOURS
from twins.data.loader import collate_batch
from twins.seeds import seeded
from twins.tasks.detect.data import open_coco_split
from twins.tasks.detect.transforms import (
    MULTI_SCALE_SHORT_SIDES,
    eval_transform,
    images_and_targets,
    to_model_input,
    train_transform_1x,
    train_transform_3x,
)
from twins.train.sample_seeds import SampleSeededDataset


def assert_aligned(image: torch.Tensor, target: dict, categories) -> None:
    """Each object's mask lies on its box and covers pixels of its colour."""
    boxes, masks, labels = target["boxes"], target["masks"], target["labels"]
    assert len(boxes) == len(masks) == len(labels)
    assert boxes.canvas_size == tuple(image.shape[-2:]) == tuple(masks.shape[-2:])
    height, width = boxes.canvas_size
    for box, mask, label in zip(boxes.tolist(), masks, labels.tolist(), strict=True):
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
        if mask.sum() == 0:
            continue  # a sliver the crop left without a whole pixel of mask
        x0, y0, x1, y1 = masks_to_boxes(mask[None].as_subclass(torch.Tensor))[0].tolist()
        scale = max(width / 64, height / 48, 1)
        tolerance = 1.5 * scale + 1
        assert abs(x0 - box[0]) <= tolerance and abs(x1 + 1 - box[2]) <= tolerance
        assert abs(y0 - box[1]) <= tolerance and abs(y1 + 1 - box[3]) <= tolerance
        if min(box[2] - box[0], box[3] - box[1]) < 6:
            continue  # too thin for its colour to survive the antialiased resize
        colour = image[:, mask.bool()].median(dim=1).values
        expected = torch.tensor(COLOURS[categories.category_id(label)])
        assert (colour - expected).abs().max() <= 8, (colour, expected)


def test_1x_resizes_once_into_1333_by_800_keeping_the_ratio():
    wide = tv_tensors.Image(torch.zeros(3, 500, 2000, dtype=torch.uint8))
    assert eval_transform()(wide).shape == (3, 333, 1333)  # the long side caps
    small = tv_tensors.Image(torch.zeros(3, 48, 64, dtype=torch.uint8))
    assert eval_transform()(small).shape == (3, 800, 1066)  # the short side sets the scale


def test_a_square_scale_sets_the_long_side():
    resize = eval_transform(64, 64)
    assert resize(torch.zeros(3, 64, 64, dtype=torch.uint8)).shape == (3, 64, 64)
    assert resize(torch.zeros(3, 50, 100, dtype=torch.uint8)).shape == (3, 32, 64)


def test_1x_resize_and_flip_move_boxes_and_masks_with_the_image(coco_val):
    data = open_coco_split(coco_val, "val", train_transform_1x(96, 200, flip=1.0), with_masks=True)
    image, target = data[0]
    assert image.shape == (3, 96, 128) and target["orig_size"] == (48, 64)
    # [4, 6, 24, 22] doubled, then mirrored in a width of 128.
    assert target["boxes"][0].tolist() == [80, 12, 120, 44]
    assert_aligned(image, target, data.categories)


def test_3x_crops_and_scales_keep_boxes_and_masks_on_their_objects(coco_val):
    transform = train_transform_3x(
        short_sides=(40, 56), long_side=1000, crop_short_sides=(48,), crop_size_range=(16, 40)
    )
    data = open_coco_split(coco_val, "val", transform, with_masks=True)
    shapes, box_counts = set(), []
    for seed in range(40):
        with seeded(seed):
            image, target = data[0]
        assert_aligned(image, target, data.categories)
        shapes.add(tuple(image.shape[-2:]))
        box_counts.append(len(target["boxes"]))
    assert min(image_shape[0] for image_shape in shapes) in (40, 56)  # short side after (a)
    assert {(40, 53), (56, 74)} <= shapes  # policy (a) alone keeps the aspect of 64 x 48
    assert len(shapes) > 4  # policy (b)'s crops change it
    assert min(box_counts) < 2 == max(box_counts)  # crops cut objects out, and may keep none


def test_3x_short_sides_are_the_recipe_s():
    assert MULTI_SCALE_SHORT_SIDES == (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)


def test_augmentation_is_a_function_of_seed_epoch_and_index(coco_val):
    transform = train_transform_3x(short_sides=(40, 56), long_side=1000, crop_short_sides=(48,))
    data = SampleSeededDataset(open_coco_split(coco_val, "val", transform, with_masks=True), seed=3)

    def draw(epoch: int, index: int) -> tuple:
        data.set_epoch(epoch)
        image, target = data[index]
        return image.shape, target["boxes"].tolist(), image.sum().item()

    first = [draw(epoch, 0) for epoch in range(6)]
    torch.rand(5)  # the caller's random state does not enter
    assert [draw(epoch, 0) for epoch in reversed(range(6))] == first[::-1]
    assert len({str(d) for d in first}) > 1  # epochs draw differently


def test_collate_gives_lists_and_leaves_out_unreadable_images(coco_val):
    data = open_coco_split(coco_val, "val", eval_transform(32, 100))
    (images, targets), skipped, converted = collate_batch(
        [data[0], None, data[1]], refill=False, stack=images_and_targets
    )
    assert (skipped, converted) == (1, 0)
    assert [image.shape for image in images] == [(3, 32, 42), (3, 32, 32)]
    assert [t["image_id"] for t in targets] == [1, 2]
    (images, targets), _, _ = collate_batch(
        [data[0], None, data[1]], refill=True, stack=images_and_targets
    )
    assert [t["image_id"] for t in targets] == [1, 2, 1]
    assert collate_batch([None, None], refill=False, stack=images_and_targets) == (None, 2, 0)
    inputs, moved = to_model_input(images, targets, "cpu")
    assert (
        inputs[0].dtype == torch.float32
        and 0 <= float(inputs[0].min()) <= float(inputs[0].max()) <= 1
    )
    assert torch.equal(moved[0]["boxes"], targets[0]["boxes"])


def test_the_resizes_give_torchvisions_sizes_and_never_a_side_of_0():
    for height, width in [(480, 640), (333, 517), (1000, 300), (427, 640), (64, 64), (20, 1900)]:
        image = tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))
        for short_side, long_side in [(800, 1333), (64, 96), (96, 96)]:
            ours = eval_transform(short_side, long_side)(image)
            theirs = (
                v2.Resize(size=None, max_size=short_side)
                if long_side <= short_side
                else v2.Resize(size=short_side, max_size=long_side)
            )(image)
            assert ours.shape == theirs.shape, (height, width, short_side, long_side)
    line = tv_tensors.Image(torch.zeros(3, 1, 2000, dtype=torch.uint8))
    assert eval_transform(800, 1333)(line).shape == (3, 1, 1333)
    boxes = tv_tensors.BoundingBoxes([[100, 0, 500, 1]], format="XYXY", canvas_size=(1, 2000))
    for seed in range(8):  # both policies
        with seeded(seed):
            image, _ = train_transform_3x()(line, {"boxes": boxes, "labels": torch.tensor([1])})
        assert min(image.shape[-2:]) >= 1
