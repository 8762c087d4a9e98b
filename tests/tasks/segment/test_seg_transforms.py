"""The official segmentation pipelines: sizes, padding, the single-class crop cap, photometric
distortion and per-sample determinism, on small images."""

from __future__ import annotations

import torch

from twins.tasks.segment.transforms import (
    MEAN,
    STD,
    SegTestTransform,
    SegTrainTransform,
    collate_crops,
    collate_whole_images,
    photometric_distortion,
    random_crop_box,
    random_scale,
    rescale_size,
    sample_generator,
    scale_saturation,
)


def random_pair(height: int, width: int, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    label = torch.randint(0, classes, (height, width), dtype=torch.uint8, generator=g)
    return image, label


def test_rescale_follows_mmcv_imrescale():
    # min(2048 / 400, 512 / 300) = 1.7067: 300 x 400 -> 512 x int(682.67 + 0.5)
    assert rescale_size(300, 400, (2048, 512)) == (512, 683)
    # a panorama: the long side caps it, 512 * 2048 / 3000 = 349.5 rounds up
    assert rescale_size(512, 3000, (2048, 512)) == (350, 2048)
    assert rescale_size(400, 300, (512, 2048)) == (683, 512)  # the order of scale is free


def test_a_resized_side_never_rounds_to_0():
    # 96 / 5000 = 0.0192 of 1 pixel would round to 0 (an empty image): it stays 1
    assert rescale_size(1, 5000, (96, 48)) == (1, 96)
    assert rescale_size(5000, 1, (96, 48)) == (96, 1)
    image = torch.zeros(3, 1, 5000, dtype=torch.uint8)
    assert SegTestTransform((96, 48)).image(image).shape == (3, 1, 96)


def test_random_scale_stays_in_the_ratio_range():
    g = torch.Generator().manual_seed(0)
    scales = [random_scale((2048, 512), (0.5, 2.0), g) for _ in range(200)]
    assert all(1024 <= long < 4096 and 256 <= short < 1024 for long, short in scales)
    assert all(abs(long - 4 * short) < 5 for long, short in scales)  # one ratio for both sides
    assert min(s[1] for s in scales) < 400 and max(s[1] for s in scales) > 900


def test_training_output_is_a_normalised_crop_with_an_int64_label():
    image, label = random_pair(30, 40)
    transform = SegTrainTransform(img_scale=(64, 16), crop_size=(16, 16))
    out_image, out_label = transform(image, label, sample_generator(0, 0, 0))
    assert out_image.shape == (3, 16, 16) and out_image.dtype == torch.float32
    assert out_label.shape == (16, 16) and out_label.dtype == torch.int64
    low = min(-m / s for m, s in zip(MEAN, STD, strict=True))
    high = max((255 - m) / s for m, s in zip(MEAN, STD, strict=True))
    assert low - 1e-4 <= out_image.min() and out_image.max() <= high + 1e-4
    assert set(out_label.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_small_images_are_padded_with_0_and_the_label_with_255():
    image, label = random_pair(10, 12)
    transform = SegTrainTransform(
        img_scale=(12, 10), ratio_range=(1.0, 1.0), crop_size=(16, 16), hflip=0.0,
        photometric=False,
    )  # fmt: skip
    out_image, out_label = transform(image, label, sample_generator(1, 0, 0))
    assert out_image.shape == (3, 16, 16) and out_label.shape == (16, 16)
    assert torch.equal(out_label[:10, :12], label.long())  # scale 1: unchanged, not flipped
    assert (out_label[10:] == 255).all() and (out_label[:, 12:] == 255).all()
    assert (out_image[:, 10:] == 0).all() and (out_image[:, :, 12:] == 0).all()
    expected = (image.float() - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(out_image[:, :10, :12], expected)


def boxes_without_cap(label, seed, count):
    g = torch.Generator().manual_seed(seed)
    return [random_crop_box(label, (16, 16), 1.0, g) for _ in range(count)]


def test_crop_keeps_the_first_box_that_passes_the_class_cap():
    _, label = random_pair(40, 50, classes=4)  # every crop holds 4 classes near evenly
    g = torch.Generator().manual_seed(3)
    assert random_crop_box(label, (16, 16), 0.75, g) == boxes_without_cap(label, 3, 1)[0]


def test_crop_draws_ten_more_boxes_then_keeps_the_last():
    one_class = torch.ones(40, 50, dtype=torch.uint8)
    one_class[:, :25] = 255  # the ignore index does not count as a second class
    g = torch.Generator().manual_seed(5)
    assert random_crop_box(one_class, (16, 16), 0.75, g) == boxes_without_cap(one_class, 5, 11)[-1]


def test_crop_cap_prefers_crops_without_a_dominant_class():
    label = torch.zeros(64, 64, dtype=torch.uint8)
    label[:16, :16] = 1  # only crops near the corner hold a second class
    g_cap, g_free = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)

    def mixed(box):
        top, left, h, w = box
        crop = label[top : top + h, left : left + w]
        return 0 < int(crop.sum()) < 0.75 * crop.numel()

    capped = sum(mixed(random_crop_box(label, (16, 16), 0.75, g_cap)) for _ in range(100))
    free = sum(mixed(random_crop_box(label, (16, 16), 1.0, g_free)) for _ in range(100))
    assert capped > 2 * free


def test_a_sample_is_a_function_of_seed_epoch_and_index():
    image, label = random_pair(30, 40)
    transform = SegTrainTransform(img_scale=(64, 16), crop_size=(16, 16))
    first = transform(image, label, sample_generator(7, 2, 11))
    again = transform(image, label, sample_generator(7, 2, 11))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    for other in (sample_generator(8, 2, 11), sample_generator(7, 3, 11)):
        assert not torch.equal(transform(image, label, other)[0], first[0])
    torch.manual_seed(123)  # without a generator: torch's default one (what the engine seeds)
    default = transform(image, label)
    torch.manual_seed(123)
    assert torch.equal(transform(image, label)[0], default[0])


def test_photometric_distortion_keeps_uint8_and_changes_colours():
    image, _ = random_pair(8, 8)
    outs = [photometric_distortion(image, torch.Generator().manual_seed(s)) for s in range(8)]
    assert all(o.dtype == torch.uint8 and o.shape == image.shape for o in outs)
    assert sum(not torch.equal(o, image) for o in outs) >= 6  # 4 coins: few draws change nothing


def test_saturation_scales_hsv_saturation_keeping_hue_and_value():
    def rgb(*pixel):
        return torch.tensor(pixel, dtype=torch.uint8).view(3, 1, 1)

    # (200, 100, 0): V 200, S 1, hue 30 degrees; half the saturation keeps hue and value
    assert scale_saturation(rgb(200, 100, 0), 0.5).flatten().tolist() == [200, 150, 100]
    assert scale_saturation(rgb(200, 100, 50), 0.0).flatten().tolist() == [200, 200, 200]
    # saturation cannot pass 1: the smallest channel reaches 0 and stops there
    assert scale_saturation(rgb(200, 150, 100), 10.0).flatten().tolist() == [200, 100, 0]
    assert scale_saturation(rgb(90, 90, 90), 1.5).flatten().tolist() == [90, 90, 90]


def test_test_pipeline_resizes_keep_ratio_and_keeps_the_label():
    image, label = random_pair(60, 90)
    out_image, out_label = SegTestTransform()(image, label)
    assert out_image.shape == (3, 512, 768) and out_image.dtype == torch.float32
    assert torch.equal(out_label, label.long())
    wide, _ = random_pair(20, 200)
    assert SegTestTransform().image(wide).shape == (3, 205, 2048)  # long side capped


def test_collate_stacks_crops_and_lists_whole_images():
    crops = [(torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.long)) for _ in range(2)]
    images, labels = collate_crops(crops)
    assert images.shape == (2, 3, 4, 4) and labels.shape == (2, 4, 4)
    whole = [(torch.zeros(3, 5, 6), torch.zeros(7, 8)), (torch.zeros(3, 4, 4), torch.zeros(9, 9))]
    images, labels = collate_whole_images(whole)
    assert [tuple(i.shape) for i in images] == [(3, 5, 6), (3, 4, 4)] and len(labels) == 2
