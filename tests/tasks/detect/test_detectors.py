"""The Twins detectors: torchvision's RetinaNet and Mask R-CNN over the dense backbone, as the
official configs wire and set them (dense/FACTS.md §2e-2f, §4, §5b)."""

from __future__ import annotations

import logging
import re

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

import twins
from factories import TINY_MODEL
from twins.errors import TwinsError
from twins.tasks import model_names
from twins.weights import model_metadata, save_weights

# Lean backbone + torchvision neck and heads (FACTS §4).
BACKBONE = {
    "pcpvt_small": 23_592_192,
    "pcpvt_base": 43_314_432,
    "pcpvt_large": 60_475_648,
    "svt_small": 23_548_672,
    "svt_base": 55_303_296,
    "svt_large": 98_248_192,
}
HEADS = {
    "retinanet": {"pcpvt": 10_249_972, "svt_small": 10_233_588, "svt_base": 10_938_100},
    "maskrcnn": {"pcpvt": 20_171_765, "svt_small": 20_155_381, "svt_base": 20_278_261},
}
HEADS["retinanet"]["svt_large"] = 11_642_612
HEADS["maskrcnn"]["svt_large"] = 20_401_141

TINY = {**TINY_MODEL, "min_size": 64, "max_size": 96}
CLASSES = 3


def _heads(name: str) -> int:
    head, variant = name.split("_", 1)
    return HEADS[head]["pcpvt" if variant.startswith("pcpvt") else variant]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", model_names("detect"))
def test_builds_with_the_torchvision_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = twins.create_model(name)
    variant = name.split("_", 1)[1]
    assert _count(model.backbone.body) == BACKBONE[variant]
    assert _count(model) == BACKBONE[variant] + _heads(name)
    assert model.arch == name and model.num_classes == 80


def test_official_test_settings_and_anchors() -> None:
    with torch.device("meta"):
        retina = twins.create_model("retinanet_svt_small")
        mask = twins.create_model("maskrcnn_pcpvt_small", num_classes=80)
    assert (retina.score_thresh, retina.nms_thresh, retina.detections_per_img) == (0.05, 0.5, 100)
    assert retina.topk_candidates == 1000
    sizes = retina.anchor_generator.sizes
    assert len(sizes) == 5 and sizes[0] == pytest.approx((32, 40.3175, 50.7968), abs=1e-3)
    assert sizes[-1][0] == 512
    assert retina.head.classification_head.num_classes == 80
    roi = mask.roi_heads
    assert (roi.score_thresh, roi.nms_thresh, roi.detections_per_img) == (0.05, 0.5, 100)
    assert roi.box_predictor.cls_score.out_features == 81  # background inside
    rpn = mask.rpn
    assert rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert rpn._post_nms_top_n == {"training": 1000, "testing": 1000}
    assert mask.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    for model in (retina, mask):
        assert (model.transform.min_size, model.transform.max_size) == ((800,), 1333)
        assert model.transform.size_divisible == 32


def test_model_args_rebuild_the_model() -> None:
    model = twins.create_model("maskrcnn_svt_small", num_classes=CLASSES, device="meta", **TINY)
    again = twins.create_model(model.arch, device="meta", **model.model_args)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert again.model_args == model.model_args and again.num_classes == CLASSES


def test_retinanet_head_norm_and_anchor_scale_are_recorded_and_rebuild_the_model() -> None:
    official = twins.create_model("retinanet_pcpvt_small", num_classes=CLASSES, device="meta")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in official.head.modules())
    assert {"head_norm", "anchor_scale"}.isdisjoint(official.model_args)
    model = twins.create_model(
        "retinanet_pcpvt_small", num_classes=CLASSES, device="meta", fpn_channels=64,
        head_norm=True, anchor_scale=2, **TINY,
    )  # fmt: skip
    norms = [m for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 8 and all(n.num_groups == 32 and n.num_channels == 64 for n in norms)
    assert model.anchor_generator.sizes[0] == pytest.approx((16, 20.1587, 25.3984), abs=1e-3)
    assert model.model_args["head_norm"] is True and model.model_args["anchor_scale"] == 2
    again = twins.create_model(model.arch, device="meta", **model.model_args)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert again.anchor_generator.sizes == model.anchor_generator.sizes


def test_p7_comes_from_p6_without_relu_and_p6_from_the_raw_last_stage() -> None:
    torch.manual_seed(0)
    model = twins.create_model("retinanet_pcpvt_small", num_classes=CLASSES, **TINY).eval()
    fpn = model.backbone
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = fpn.body(images)
        levels = list(fpn(images).values())
    extra = fpn.fpn.extra_blocks
    p6 = F.conv2d(stages[3], extra.p6.weight, extra.p6.bias, stride=2, padding=1)
    assert (p6 < 0).any()  # a ReLU before P7 would change it
    assert len(levels) == 5 and torch.allclose(levels[3], p6, atol=1e-5)
    p7 = F.conv2d(p6, extra.p7.weight, extra.p7.bias, stride=2, padding=1)
    assert torch.allclose(levels[4], p7, atol=1e-5)
    assert [level.shape[-1] for level in levels] == [8, 4, 2, 1, 1]


def _few_regions(model: torch.nn.Module) -> torch.nn.Module:
    """Fewer proposals, sampled RoIs and detections than the official settings: the same code
    paths on a budget of CPU seconds."""
    if hasattr(model, "rpn"):
        model.rpn._pre_nms_top_n = {"training": 200, "testing": 100}
        model.rpn._post_nms_top_n = {"training": 48, "testing": 24}
        model.roi_heads.fg_bg_sampler.batch_size_per_image = 32
        model.roi_heads.detections_per_img = 8
        model.roi_heads.score_thresh = 0.0  # fresh heads score low: show some boxes
    else:
        model.detections_per_img = 8
        model.score_thresh = 0.0
    return model


def _images_and_targets() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 64, 80, generator=generator),
        torch.rand(3, 72, 64, generator=generator),
    ]
    targets = []
    for image, boxes in zip(
        images, ([[4, 6, 40, 50], [30, 10, 70, 40]], [[8, 8, 56, 60]]), strict=True
    ):
        boxes = torch.tensor(boxes, dtype=torch.float32)
        masks = torch.zeros(len(boxes), *image.shape[1:], dtype=torch.uint8)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist(), strict=True):
            mask[y1:y2, x1:x2] = 1
        labels = torch.arange(1, len(boxes) + 1)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return images, targets


@pytest.mark.parametrize("name", ["retinanet_svt_small", "maskrcnn_svt_small"])
def test_trains_one_step_and_predicts(name: str) -> None:
    torch.manual_seed(0)
    model = _few_regions(twins.create_model(name, num_classes=CLASSES, **TINY)).train()
    images, targets = _images_and_targets()
    losses = model(images, targets)
    expected = (
        {"classification", "bbox_regression"}
        if name.startswith("retinanet")
        else {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    )
    assert set(losses) == expected
    assert all(torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []  # norm_list.0 included: stage 1's norm feeds stage 2
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for image, output in zip(images, outputs, strict=True):
        keys = {"boxes", "labels", "scores"} | ({"masks"} if name.startswith("mask") else set())
        assert set(output) == keys
        count = len(output["boxes"])
        assert 0 < count <= 8 and output["boxes"].shape == (count, 4)
        assert output["labels"].min() >= 1 and output["labels"].max() <= CLASSES
        assert (output["boxes"][:, 2] <= image.shape[2]).all()
        if "masks" in output:
            assert output["masks"].shape == (count, 1, *image.shape[1:])


def test_retinanet_labels_count_from_one() -> None:
    model = twins.create_model("retinanet_pcpvt_small", num_classes=CLASSES, **TINY).train()
    images, targets = _images_and_targets()
    targets[1]["labels"] = torch.tensor([0])
    with pytest.raises(TwinsError, match="labels count from 1"):
        model(images, targets)


# mmdetection 2.x names of the torchvision ones (FACTS §3e-3f), written from the tables.
TO_MMDET = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.", r"neck.lateral_convs.\1.conv."),
    (r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.", r"neck.fpn_convs.\1.conv."),
    (r"^backbone\.fpn\.extra_blocks\.p6\.", "neck.fpn_convs.3.conv."),
    (r"^backbone\.fpn\.extra_blocks\.p7\.", "neck.fpn_convs.4.conv."),
    (r"^head\.classification_head\.conv\.(\d)\.0\.", r"bbox_head.cls_convs.\1.conv."),
    (r"^head\.regression_head\.conv\.(\d)\.0\.", r"bbox_head.reg_convs.\1.conv."),
    (r"^head\.classification_head\.cls_logits\.", "bbox_head.retina_cls."),
    (r"^head\.regression_head\.bbox_reg\.", "bbox_head.retina_reg."),
    (r"^rpn\.head\.conv\.0\.0\.", "rpn_head.rpn_conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn_head.rpn_cls."),
    (r"^rpn\.head\.bbox_pred\.", "rpn_head.rpn_reg."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_head.bbox_head.shared_fcs.0."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_head.bbox_head.shared_fcs.1."),
    (r"^roi_heads\.box_predictor\.cls_score\.", "roi_head.bbox_head.fc_cls."),
    (r"^roi_heads\.box_predictor\.bbox_pred\.", "roi_head.bbox_head.fc_reg."),
    (r"^roi_heads\.mask_head\.(\d)\.0\.", r"roi_head.mask_head.convs.\1.conv."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_head.mask_head.upsample."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_head.mask_head.conv_logits."),
]


def _as_mmdet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmdetection checkpoint's tensors for a torchvision model's: background last in fc_cls,
    no background rows in fc_reg or the mask logits; the unused classifier head and norm kept,
    as the official backbone builds them."""
    mmdet = {}
    for name, tensor in state_dict.items():
        for pattern, replacement in TO_MMDET:
            if re.match(pattern, name):
                new = re.sub(pattern, replacement, name)
                break
        else:
            raise AssertionError(f"no mmdet name for {name}")
        if ".fc_cls." in new:
            tensor = torch.cat([tensor[1:], tensor[:1]])
        elif ".fc_reg." in new:
            tensor = tensor[4:]
        elif ".conv_logits." in new:
            tensor = tensor[1:]
        mmdet[new] = tensor.clone()
    width = state_dict["backbone.body.patch_embeds.3.proj.weight"].shape[0]
    mmdet["backbone.norm.weight"] = torch.ones(width)
    mmdet["backbone.norm.bias"] = torch.zeros(width)
    mmdet["backbone.head.weight"] = torch.zeros(1000, width)
    mmdet["backbone.head.bias"] = torch.zeros(1000)
    return mmdet


BACKGROUND_ROWS = {
    "roi_heads.box_predictor.bbox_pred": 4,
    "roi_heads.mask_predictor.mask_fcn_logits": 1,
}


@pytest.mark.parametrize("name", ["retinanet_pcpvt_small", "maskrcnn_svt_small"])
def test_mmdet_layout_loads_strictly_with_the_same_weights_and_outputs(name, tmp_path) -> None:
    torch.manual_seed(0)
    source = twins.create_model(name, num_classes=CLASSES, **TINY).eval()
    path = tmp_path / "mmdet.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": _as_mmdet(source.state_dict())}, path)
    torch.manual_seed(1)
    loaded = twins.create_model(name, num_classes=CLASSES, pretrained=path, **TINY).eval()
    want, got = source.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    for key, tensor in got.items():
        rows = BACKGROUND_ROWS.get(key.rsplit(".", 1)[0], 0)
        assert torch.equal(tensor[rows:], want[key][rows:]), key
        assert not tensor[:rows].any()  # added background rows start at zero
    images, _ = _images_and_targets()
    _few_regions(source), _few_regions(loaded)
    with torch.no_grad():
        expected, outputs = source(images), loaded(images)
    for out, exp in zip(outputs, expected, strict=True):
        assert len(out["boxes"]) > 0
        for key in exp:
            assert torch.equal(out[key], exp[key]), key


def test_mmdet_layout_with_a_wrong_shape_is_one_clear_error(tmp_path) -> None:
    model = twins.create_model("maskrcnn_pcpvt_small", num_classes=CLASSES, **TINY)
    mmdet = _as_mmdet(model.state_dict())
    mmdet["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(81, 1024)
    del mmdet["rpn_head.rpn_conv.bias"]
    path = tmp_path / "mmdet.pth"
    torch.save(mmdet, path)
    with pytest.raises(TwinsError) as raised:
        twins.create_model("maskrcnn_pcpvt_small", num_classes=CLASSES, pretrained=path, **TINY)
    message = str(raised.value)
    assert "\n" not in message
    assert "missing rpn.head.conv.0.0.bias" in message
    assert "roi_heads.box_predictor.cls_score.weight (81, 1024) in file vs (4, 1024)" in message


def test_imagenet_weights_fill_the_backbone_with_one_note(tmp_path, caplog) -> None:
    classifier = twins.create_model("svt_small", **TINY_MODEL)
    path = tmp_path / "imagenet.pth"
    torch.save(classifier.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="twins.notes"):
        model = twins.create_model("retinanet_alt_gvt_small", pretrained=path, **TINY)
    notes = [r.getMessage() for r in caplog.records if r.name == "twins.notes"]
    assert len(notes) == 1 and "head and final norm dropped" in notes[0] and "norm_list" in notes[0]
    body = model.backbone.body.state_dict()
    for key, tensor in classifier.state_dict().items():
        if not key.startswith(("head.", "norm.")):
            assert torch.equal(body[key], tensor), key
    assert torch.equal(body["norm_list.2.weight"], torch.ones(TINY_MODEL["embed_dims"][2]))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_own_layout_loads_back(tmp_path, suffix) -> None:
    torch.manual_seed(0)
    model = twins.create_model("retinanet_svt_small", num_classes=CLASSES, **TINY)
    path = tmp_path / f"detector{suffix}"
    save_weights(model.state_dict(), path, metadata=model_metadata(model))
    torch.manual_seed(1)
    again = twins.create_model(model.arch, pretrained=path, **model.model_args)
    for key, tensor in again.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[key]), key


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [({"rpn_batch": 4}, "unknown argument(s) rpn_batch"), ({"num_classes": 0}, "num_classes=0")],
)
def test_bad_arguments_are_one_clear_error(arguments, complaint) -> None:
    with pytest.raises(TwinsError) as raised:
        twins.create_model("maskrcnn_svt_small", device="meta", **arguments)
    assert complaint in str(raised.value) and "\n" not in str(raised.value)


def test_a_retinanet_argument_for_mask_rcnn_is_not_listed_as_valid() -> None:
    with pytest.raises(TwinsError) as raised:
        twins.create_model("maskrcnn_svt_small", device="meta", head_norm=True)
    message = str(raised.value)
    assert "unknown argument(s) head_norm for maskrcnn_svt_small (head_norm: RetinaNet's" in message
    assert "head_norm" not in message.split("valid ones are")[1]


def test_resize_in_model_false_leaves_the_images_at_their_size() -> None:
    images = [torch.rand(3, 64, 80), torch.rand(3, 50, 40)]
    sizes = {}
    for resize in (True, False):
        model = twins.create_model(
            "retinanet_svt_small", num_classes=CLASSES, resize_in_model=resize, pad_divisor=16,
            **TINY_MODEL, min_size=128, max_size=256,
        )  # fmt: skip
        assert model.model_args["resize_in_model"] is resize
        batch, _ = model.transform.eval()(images)
        sizes[resize] = batch.image_sizes
        assert batch.tensors.shape[-1] % 16 == 0
    assert sizes == {True: [(128, 160), (160, 128)], False: [(64, 80), (50, 40)]}
