"""Exports: ONNX in onnxruntime and torch.export at input sizes other than the traced one,
including sizes whose SVT window grids need padding on one side only."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from timm.models.twins import Twins as TimmTwins

import twins
from twins.cli.main import main
from twins.errors import TwinsError
from twins.export.engine import export_onnx, export_pt2, exported_metadata
from twins.tasks import export
from twins.weights import StateDict, load_weights, model_metadata, save_weights

# Two-stage models keep the traces short; the SVT one has LSA and GSA blocks in both stages.
TINY = {
    "svt_small": {
        "embed_dims": (16, 32),
        "num_heads": (2, 4),
        "mlp_ratios": (4, 4),
        "sr_ratios": (8, 4),
        "wss": (7, 7),
        "depths": (2, 2),
    },
    "pcpvt_small": {
        "embed_dims": (16, 40),
        "num_heads": (1, 5),
        "mlp_ratios": (8, 4),
        "sr_ratios": (8, 2),
        "depths": (1, 1),
    },
}
PREPROCESSING = {
    "image_size": 96,
    "crop_pct": 0.9,
    "crop_mode": "center",
    "interpolation": "bicubic",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}
# (batch, channels, height, width): square, windows padded on the right only, on both sides,
# and on the bottom only (map sides 16, 28x21 / 14x10, 25x18 / 12x9, 21x28 / 10x14).
SHAPES = [(1, 3, 64, 64), (2, 3, 112, 84), (3, 3, 100, 75), (2, 3, 84, 112)]


def _tiny(arch, **overrides):
    torch.manual_seed(0)
    return twins.create_model(arch, num_classes=5, **{**TINY[arch], **overrides}).eval()


def _relative(result, reference):
    return np.abs(result - reference).max() / np.abs(reference).max()


@pytest.fixture(scope="module", params=["svt_small", "pcpvt_small"])
def onnx_export(request, tmp_path_factory):
    arch = request.param
    model = _tiny(arch)
    path = tmp_path_factory.mktemp("onnx") / f"{arch}.onnx"
    result = export_onnx(
        model, path, image_size=96, class_names=list("abcde"), preprocessing=PREPROCESSING
    )
    assert max(result.differences.values()) < 1e-5
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return arch, model, path, session


def test_onnx_takes_any_batch_height_and_width(onnx_export):
    arch, model, path, session = onnx_export
    (images,) = session.get_inputs()
    assert images.name == "images" and images.shape == ["batch", 3, "height", "width"]
    for shape in SHAPES:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x).numpy()
        (logits,) = session.run(None, {"images": x.numpy()})
        assert logits.shape == (shape[0], 5)
        assert _relative(logits, expected) < 1e-5, shape
    properties = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert properties["arch"] == arch and properties["class_names"] == list("abcde")
    assert properties["preprocessing"] == PREPROCESSING
    assert exported_metadata(path) == {**properties}
    assert properties["model_args"] == model.model_args


@pytest.mark.parametrize("onnx_export", ["svt_small"], indirect=True)
def test_onnx_keeps_the_window_mask(onnx_export):
    """timm pads SVT windows without a mask: at padded sizes the export must match our masked
    model and not timm's, at unpadded sizes all three agree."""
    arch, model, _, session = onnx_export
    reference = TimmTwins(num_classes=5, **TINY[arch]).eval()
    reference.load_state_dict(model.state_dict())
    for shape, padded in [((1, 3, 100, 75), True), ((1, 3, 112, 112), False)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ours, unmasked = model(x).numpy(), reference(x).numpy()
        (exported,) = session.run(None, {"images": x.numpy()})
        assert _relative(exported, ours) < 1e-5
        assert (_relative(exported, unmasked) > 1e-3) == padded


def test_pt2_program_runs_at_other_sizes(tmp_path):
    model = _tiny("svt_small")
    path = tmp_path / "svt.pt2"
    export_pt2(model, path, image_size=96, class_names=list("abcde"), preprocessing=PREPROCESSING)
    metadata = exported_metadata(path)
    assert metadata["preprocessing"] == PREPROCESSING and metadata["arch"] == "svt_small"
    assert metadata["model_args"] == model.model_args and metadata["class_names"] == list("abcde")
    extra = {"twins_metadata.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    assert json.loads(extra["twins_metadata.json"])["preprocessing"] == PREPROCESSING
    guarded = program.module()
    for shape in [(2, 3, 112, 84), (3, 3, 100, 75)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert _relative(guarded(x).numpy(), model(x).numpy()) < 1e-5, shape
    # A single image: torch's convolution adds a batch > 1 guard about memory layout only.
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        single = program.module(check_guards=False)(x)
        assert _relative(single.numpy(), model(x).numpy()) < 1e-5


@pytest.mark.slow  # ~60 s; test_pt2_program_runs_at_other_sizes covers dynamic sizes
def test_pt2_of_a_four_stage_svt_takes_any_size(tmp_path):
    # Every stage has windows; at 64 to 223 pixels stages 3 and 4 are one window wide, above it
    # several: one program serves both (torch.export used to fix the width here).
    model = twins.create_model(
        "svt_small", num_classes=5, embed_dims=(16, 32, 64, 128), depths=(2, 2, 2, 2)
    ).eval()
    shapes = [(2, 3, 64, 64), (2, 3, 224, 224), (3, 3, 130, 250)]
    _assert_pt2_matches(model, tmp_path / "svt.pt2", 96, shapes, tolerance=1e-5)


def _assert_pt2_matches(model, path, image_size, shapes, tolerance):
    """Export `model` at `image_size`, then check the program against eager at `shapes` (a
    batch of one runs without torch.export's guards, see twins.export.engine)."""
    result = export_pt2(model, path, image_size=image_size)
    assert max(result.differences.values()) < tolerance
    program = torch.export.load(str(path))
    for shape in shapes:
        x = torch.randn(shape)
        with torch.no_grad():
            exported = program.module(check_guards=shape[0] > 1)(x).numpy()
            assert _relative(exported, model(x).numpy()) < tolerance, shape


def test_pt2_failure_is_one_line(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Constraints violated (width)!\n  - many\n  - lines")

    monkeypatch.setattr(torch.export, "export", fail)
    with pytest.raises(TwinsError) as error:
        export_pt2(_tiny("pcpvt_small"), tmp_path / "m.pt2", image_size=96)
    message = str(error.value)
    assert "\n" not in message and "pcpvt_small" in message
    assert "RuntimeError: Constraints violated (width)!" in message
    assert isinstance(error.value.__cause__, RuntimeError)
    assert not (tmp_path / "m.pt2").exists()


@pytest.mark.slow
@pytest.mark.parametrize("arch", twins.list_models())
def test_full_depth_pt2_matches_pytorch(tmp_path, arch):
    torch.manual_seed(0)
    model = twins.create_model(arch).eval()
    shapes = [(2, 3, 224, 224), (1, 3, 64, 64), (1, 3, 300, 420)]
    _assert_pt2_matches(model, tmp_path / f"{arch}.pt2", 224, shapes, tolerance=1e-4)


def test_cli_exports_a_training_checkpoint(tmp_path, capsys):
    model = _tiny("svt_small", act_layer="gelu_tanh")
    ema = {name: tensor * 0.5 for name, tensor in model.state_dict().items()}
    meta = {"arch": "svt_small", "model_args": model.model_args, "num_classes": 5}
    config = {"image_size": 64, "crop_pct": 1.0, "interpolation": "bilinear", "semantics": "seed"}
    checkpoint = tmp_path / "best.pt"
    torch.save(
        {
            "format": "twins-checkpoint",
            "version": 1,
            "model": model.state_dict(),
            "model_ema": ema,
            "meta": meta,
            "optimizer": {},
            "config": config,
        },
        checkpoint,
    )

    release = tmp_path / "release.safetensors"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(checkpoint),
                "--format",
                "safetensors",
                "-o",
                str(release),
                "--ema",
            ]
        )
        == 0
    )
    weights = load_weights(release)
    assert weights.metadata["arch"] == "svt_small" and weights.metadata["act_layer"] == "gelu_tanh"
    assert weights.metadata["preprocessing"] == load_weights(checkpoint).metadata["preprocessing"]
    assert weights.metadata["preprocessing"]["crop_mode"] == "squash"
    assert set(weights) == set(ema) and all(torch.equal(weights[k], ema[k]) for k in ema)

    # The ONNX path of the command, on a one-stage model to keep the trace short.
    small = twins.create_model(
        "pcpvt_small",
        num_classes=3,
        embed_dims=8,
        num_heads=1,
        mlp_ratios=2,
        sr_ratios=2,
        depths=(1,),
    )
    small_weights = tmp_path / "small.safetensors"
    save_weights(
        StateDict(small.state_dict(), {"arch": "pcpvt_small", "model_args": small.model_args}),
        small_weights,
    )
    onnx_path = tmp_path / "model.onnx"
    args = [
        "export",
        "--checkpoint",
        str(small_weights),
        "--format",
        "onnx",
        "-o",
        str(onnx_path),
        "--image-size",
        "96",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"wrote {onnx_path} (onnx)" in out and out.count("max relative difference") == 2


def test_export_mistakes_are_one_line(tmp_path, capsys):
    bare = tmp_path / "bare.safetensors"
    save_weights(StateDict(_tiny("pcpvt_small").state_dict()), bare)
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(bare),
                "--format",
                "onnx",
                "-o",
                str(tmp_path / "m.onnx"),
            ]
        )
        == 2
    )
    assert "pass arch" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("image_size", [0, 8200])
def test_a_trace_size_that_cannot_work_is_refused_first(tmp_path, image_size):
    with pytest.raises(TwinsError, match="image_size") as error:
        export(tmp_path / "missing.safetensors", "onnx", tmp_path / "m.onnx", image_size=image_size)
    assert error.value.argument == "image_size" and "--" not in str(error.value)


def _trained_at_32(path):
    """Weights of a model trained on 32 px images, as training describes them."""
    torch.manual_seed(0)
    model = twins.create_model(
        "pcpvt_small", num_classes=4, embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8),
        depths=(1, 1, 1, 1),
    ).eval()  # fmt: skip
    preprocessing = {**PREPROCESSING, "image_size": 32, "crop_pct": 1.0}
    save_weights(StateDict(model.state_dict(), model_metadata(model, None, preprocessing)), path)
    return model


def test_a_model_trained_at_32_px_exports_and_runs_at_32(tmp_path, capsys):
    weights = tmp_path / "digits.safetensors"
    model = _trained_at_32(weights)
    path = tmp_path / "digits.pt2"
    argv = ["export", "--checkpoint", str(weights), "--format", "pt2", "-o", str(path)]
    assert main([*argv, "--image-size", "32"]) == 0
    assert "checked input 1x3x32x32" in capsys.readouterr().out
    program = torch.export.load(str(path)).module()  # its guards on: they admit 32 and one image
    for shape in [(1, 3, 32, 32), (2, 3, 32, 45), (3, 3, 71, 100), (1, 3, 224, 224)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert _relative(program(x).numpy(), model(x).numpy()) < 1e-5, shape
    assert main([*argv, "--image-size", "16"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "image_size 16 is below the smallest input pcpvt_small takes: use 32" in line


def test_export_never_writes_over_its_checkpoint(tmp_path):
    path = tmp_path / "weights.safetensors"
    model = _tiny("pcpvt_small")
    save_weights(
        StateDict(model.state_dict(), {"arch": "pcpvt_small", "model_args": model.model_args}), path
    )
    content = path.read_bytes()
    with pytest.raises(TwinsError, match="is the file being read"):
        export(path, "safetensors", path)
    assert path.read_bytes() == content


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["pcpvt_small", "svt_small"])
def test_full_size_onnx_matches_pytorch(tmp_path, arch):
    model = twins.create_model(arch).eval()
    path = tmp_path / f"{arch}.onnx"
    result = export_onnx(model, path, image_size=224)
    assert max(result.differences.values()) < 1e-4


@pytest.mark.parametrize(
    ("format", "name", "told"),
    [("onnx", "model.pt2", "model.onnx (or format 'pt2'"), ("pt2", "m.bin", "m.pt2")],
)
def test_an_export_named_for_another_format_is_refused(tmp_path, capsys, format, name, told):
    path = tmp_path / "weights.safetensors"
    model = _tiny("pcpvt_small")
    save_weights(StateDict(model.state_dict(), model_metadata(model)), path)
    argv = ["export", "--checkpoint", str(path), "--format", format, "-o", str(tmp_path / name)]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{format} exports are *.{format} files" in line and told in line
    assert line.endswith("(command line: --output)")
    assert not (tmp_path / name).exists()
