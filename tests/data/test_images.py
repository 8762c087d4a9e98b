"""`twins.data.images`: the one decoder of training, evaluation and prediction turns images
upright by their EXIF orientation, as `PIL.ImageOps.exif_transpose` does, whatever their mode."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from twins.data import images
from twins.data.images import IMAGE_EXTENSIONS, open_rgb

ORIENTATION = 0x0112


def _with_orientation(path, pixels, orientation, **options):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), **options)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured_as_pillow_does(tmp_path, orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"  # lossless, so the pixels can be compared exactly
    _with_orientation(path, pixels, orientation)
    image, mode = open_rgb(path)
    with Image.open(path) as stored:
        expected = ImageOps.exif_transpose(stored).convert("RGB")
    assert mode == "RGB" and image.size == expected.size
    assert np.array_equal(np.asarray(image), np.asarray(expected))
    assert image.size == ((12, 20) if orientation in (5, 6, 7, 8) else (20, 12))


def test_sixteen_bit_and_alpha_images_are_turned_too(tmp_path):
    wide = np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 250
    _with_orientation(tmp_path / "wide.png", wide, 6)
    image, mode = open_rgb(tmp_path / "wide.png")
    assert mode.startswith("I") and image.size == (12, 20)
    gray = np.asarray(image)[..., 0].astype(np.int64)
    assert np.array_equal(gray, (np.rot90(wide, k=-1).astype(np.int64) * 255 + 32767) // 65535)

    rgba = np.zeros((12, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red where opaque; transparent pixels show the white background
    rgba[:, :10, 3] = 255
    _with_orientation(tmp_path / "alpha.png", rgba, 8)
    image, mode = open_rgb(tmp_path / "alpha.png")
    assert mode == "RGBA" and image.size == (12, 20)
    upright = np.asarray(image)
    assert (upright[10:, :, 1] == 0).all() and (upright[:10, :, 1] == 255).all()


def test_gifs_are_images():
    assert ".gif" in IMAGE_EXTENSIONS and ".png" in IMAGE_EXTENSIONS


def _jpegs() -> dict[str, bytes]:
    """JPEGs of each kind the training decoder tells apart, as bytes."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    files = {}

    def save(name, image, **options):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", **options)
        files[name] = buffer.getvalue()

    save("rgb", rgb, quality=90)
    save("rgb 4:4:4 progressive", rgb, subsampling=0, progressive=True)
    save("gray", rgb.convert("L"))
    save("cmyk", rgb.convert("CMYK"))
    save("icc profile and comment", rgb, icc_profile=b"\0" * 300, comment=b"twins")
    for orientation in (1, 6):
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        save(f"exif orientation {orientation}", rgb, exif=exif.tobytes())
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="3"/></x:xmpmeta>'
    save("xmp orientation", rgb, xmp=xmp)
    return files


def test_the_training_decoder_gives_pillows_pixels_and_mode_for_every_kind_of_jpeg():
    for name, data in _jpegs().items():
        with Image.open(io.BytesIO(data)) as header:
            plain = header.mode in ("RGB", "L") and header.getexif().get(ORIENTATION, 1) == 1
        assert images._plain_jpeg_mode(data) == images._pillow_jpeg_mode(data), name
        assert (images._plain_jpeg_mode(data) is not None) == plain, name
        # Read without Pillow where the header holds no EXIF, XMP or CMYK frame.
        read_here = images._scan_jpeg_header(data) != images._ASK_PILLOW
        assert read_here == name.startswith(("rgb", "gray", "icc")), name
        expected, mode = images.decode_rgb(data)
        pixels, tensor_mode = images.decode_rgb_tensor(data)
        assert tensor_mode == mode, name
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, *expected.size[::-1]), name
        assert np.array_equal(pixels.permute(1, 2, 0).numpy(), np.asarray(expected)), name


def test_the_training_decoder_hands_out_a_tensor_of_its_own():
    """The transforms may write into the decoded pixels: they must not share Pillow's bytes."""
    pixels, _ = images.decode_rgb_tensor(_jpegs()["rgb"])
    before = pixels.clone()
    pixels.zero_()  # writable: raises or warns on a read-only buffer
    again, _ = images.decode_rgb_tensor(_jpegs()["rgb"])
    assert torch.equal(again, before)
