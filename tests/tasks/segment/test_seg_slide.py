"""The sliding-window test against mmsegmentation's `slide_inference`, written out here as mmseg
writes it (one window at a time, each padded to the image and added, then divided by the count
matrix), on the tiny segmenter and on a model whose logits depend on the window's position."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from factories import TINY_MODEL
from twins.cli.main import main
from twins.errors import TwinsError
from twins.tasks import create_model
from twins.tasks.segment.evaluate import _logits
from twins.tasks.segment.metrics import predict_labels
from twins.tasks.segment.slide import slide_labels, slide_logits, window_starts
from twins.train.precision import Precision
from twins.weights import model_metadata, save_weights


def mmseg_slide_inference(model, img, crop, stride, num_classes):
    """mmseg's `EncoderDecoder.slide_inference` on a 1 x 3 x H x W image, without the resize."""
    h_stride, w_stride = stride
    h_crop, w_crop = crop
    batch_size, _, h_img, w_img = img.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((batch_size, num_classes, h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_seg_logit = model(img[:, :, y1:y2, x1:x2])
            pad = (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2))
            preds += F.pad(crop_seg_logit, pad)
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat


def position_model(batch: torch.Tensor) -> torch.Tensor:
    """Logits that differ by window content and position in it: 3 classes from the pixels."""
    height, width = batch.shape[-2:]
    ramp = torch.linspace(-1, 1, width).expand(height, width)
    return torch.stack([batch[:, 0] + ramp, batch[:, 1] - ramp, batch[:, 2] * 0.5], dim=1)


@pytest.mark.parametrize(
    ("size", "crop", "stride"),
    [
        ((37, 53), (16, 16), (11, 11)),  # overlaps, the last window moved back
        ((40, 40), (20, 20), (20, 20)),  # an exact tiling
        ((12, 50), (16, 16), (7, 9)),  # the image lower than a crop
        ((30, 31), (8, 12), (8, 5)),  # rectangular windows
        ((300, 40), (90, 20), (70, 20)),  # bands of more rows than are divided at once
        ((151, 33), (40, 16), (3, 5)),  # many rows of windows, each moving the band by 3
    ],
)
def test_the_windows_give_mmsegs_logits_and_labels(size, crop, stride):
    image = torch.randn(3, *size, generator=torch.Generator().manual_seed(0))
    expected = mmseg_slide_inference(position_model, image[None], crop, stride, 3)[0]
    assert torch.equal(slide_logits(position_model, image, crop, stride), expected)
    assert torch.equal(slide_labels(position_model, image, size, crop, stride), expected.argmax(0))
    resized = (size[0] * 2 + 1, size[1] + 3)
    want = predict_labels(expected[None], resized)[0]
    assert torch.equal(slide_labels(position_model, image, resized, crop, stride), want)


def test_the_tiny_segmenter_slides_as_mmseg_does():
    model = create_model("semantic_fpn_svt_small", num_classes=5, **TINY_MODEL).eval()
    logits = functools.partial(_logits, model, Precision(torch.device("cpu"), None), 32)
    image = torch.randn(3, 70, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = mmseg_slide_inference(logits, image[None], (48, 48), (32, 32), 5)[0]
        ours = slide_logits(logits, image, (48, 48), (32, 32))
    # The windows go through the model in batches here, one at a time there: float sums only.
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_window_starts_cover_the_side_once_per_stride():
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(101, 40, 30) == [0, 30, 60, 61]
    assert window_starts(20, 40, 30) == [0]


def test_a_stride_larger_than_the_crop_is_refused():
    with pytest.raises(TwinsError, match="leaves pixels between windows"):
        slide_logits(position_model, torch.zeros(3, 8, 8), (4, 4), (5, 4))


@pytest.fixture(scope="module")
def segmenter_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slide")
    model = create_model("semantic_fpn_svt_small", num_classes=4, **TINY_MODEL)
    metadata = model_metadata(model)
    metadata["preprocessing"] = {"img_scale": [200, 100]}  # the images are tested unresized
    save_weights(model.state_dict(), folder / "segmenter.safetensors", metadata=metadata)
    pixels = np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "photo.png")
    return folder


def test_predict_slide_writes_the_sliding_window_labels(segmenter_file, capsys):
    from twins.tasks.segment.predict import SegmentationPredictor
    from twins.weights import load_weights

    weights = load_weights(segmenter_file / "segmenter.safetensors")
    args = ["predict", "--checkpoint", str(segmenter_file / "segmenter.safetensors")]
    args += [str(segmenter_file / "photo.png"), "--device", "cpu", "--json"]
    assert main([*args, "--output", str(segmenter_file / "slid"), "--slide", "64", "40"]) == 0
    written = json.loads(capsys.readouterr().out)["predictions"][0]["label_map"]
    predictor = SegmentationPredictor(weights, device="cpu", slide=(64, 40))
    image = torch.from_numpy(np.array(Image.open(segmenter_file / "photo.png"))).permute(2, 0, 1)
    labels = np.asarray(Image.open(written))
    assert np.array_equal(labels, predictor.label_map(image).numpy())
    whole = SegmentationPredictor(weights, device="cpu").label_map(image).numpy()
    assert labels.shape == whole.shape == (90, 150)


def test_predict_slide_is_refused_for_a_classifier(tmp_path, capsys):
    model = create_model("pcpvt_small", num_classes=3, **TINY_MODEL)
    save_weights(model.state_dict(), tmp_path / "c.safetensors", metadata=model_metadata(model))
    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    args = ["predict", "--checkpoint", str(tmp_path / "c.safetensors"), str(tmp_path / "x.png")]
    assert main([*args, "--slide", "32", "16"]) == 2
    assert "slide" in capsys.readouterr().err


def test_eval_slide_scores_mmsegs_sliding_window_labels(tiny_segmenter_run, capsys):
    from twins.tasks.segment.data import open_segmentation
    from twins.tasks.segment.metrics import SegmentationMetrics
    from twins.tasks.segment.transforms import SegTestTransform
    from twins.weights import load_weights

    run = tiny_segmenter_run
    window = ["test_mode=slide", "test_crop_size=[32,32]", "test_stride=[20,24]"]
    args = ["eval", "-c", str(run / "config.yaml"), "--checkpoint"]
    args += [str(run / "checkpoints" / "last.pt"), "--data", str(run.parent / "data")]
    assert main([*args, "--json", *window]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["slide"] == {"crop": [32, 32], "stride": [20, 24]}

    weights = load_weights(run / "checkpoints" / "last.pt")
    model = create_model("semantic_fpn_svt_small", num_classes=11, **TINY_MODEL)
    model.load_state_dict(dict(weights))
    model.eval()
    logits = functools.partial(_logits, model, Precision(torch.device("cpu"), None), 32)
    val = open_segmentation(str(run.parent / "data"), "validation", SegTestTransform((96, 48)))
    metrics = SegmentationMetrics(11)
    with torch.no_grad():
        for image, label in val:
            expected = mmseg_slide_inference(logits, image[None], (32, 32), (20, 24), 11)
            metrics.update(predict_labels(expected, label.shape[-2:])[0], label.long())
    assert result["mIoU"] == pytest.approx(metrics.compute()["mIoU"], abs=1e-9)
    assert main([*args, *window]) == 0
    assert "(3 images, sliding-window test, 32x32 every 20x24)" in capsys.readouterr().out
    assert main([*args, "test_mode=slide", "test_stride=[40,8]", "test_crop_size=[32,32]"]) == 2
    assert "leaves pixels between windows" in capsys.readouterr().err
