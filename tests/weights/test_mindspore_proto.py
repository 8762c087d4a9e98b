"""The MindSpore .ckpt protobuf stream: reading, writing, slices, CRC trailer, damaged files."""

import zlib

import numpy as np
import pytest
import torch

from twins.errors import TwinsError
from twins.weights.mindspore_proto import (
    CRC_MARK,
    checkpoint_message,
    read_checkpoint,
    read_tags,
    write_tags,
)


def test_round_trip_keeps_dtypes_shapes_and_values(tmp_path):
    tensors = {
        "float": torch.randn(3, 4),
        "half": torch.randn(5).half(),
        "bfloat": torch.randn(2, 2).bfloat16(),
        "int": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "long": torch.tensor([7, -8], dtype=torch.int64),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.0**24),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "weights.ckpt"
    write_tags(tensors, path)
    back = read_tags(path)
    assert list(back) == list(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype, name
        assert back[name].shape == tensor.shape, name
        assert torch.equal(back[name], tensor), name


def test_scalar_is_written_with_dims_zero(tmp_path):
    path = tmp_path / "scalar.ckpt"
    write_tags({"learning_rate": torch.tensor(0.5)}, path)
    message = checkpoint_message()()
    message.ParseFromString(path.read_bytes())
    assert list(message.value[0].tensor.dims) == [0]
    assert message.value[0].tensor.tensor_type == "Float32"


def test_large_tensors_are_sliced_and_joined(tmp_path):
    weight = torch.randn(10, 7)
    path = tmp_path / "sliced.ckpt"
    write_tags({"w": weight, "b": torch.randn(3)}, path, slice_bytes=64)
    message = checkpoint_message()()
    message.ParseFromString(path.read_bytes())
    tags = [value.tag for value in message.value]
    assert tags.count("w") == 5  # 280 bytes in slices of 64
    assert all(list(v.tensor.dims) == [10, 7] for v in message.value if v.tag == "w")
    assert torch.equal(read_tags(path)["w"], weight)


def test_crc_trailer_is_checked(tmp_path):
    path = tmp_path / "crc.ckpt"
    write_tags({"w": torch.randn(4, 4)}, path, crc=True)
    data = path.read_bytes()
    assert data[-17:-10] == CRC_MARK
    assert int.from_bytes(data[-10:], "big") == zlib.crc32(data[:-17])
    assert read_tags(path)["w"].shape == (4, 4)

    damaged = bytearray(data)
    damaged[-30] ^= 0xFF  # a byte of the tensor content
    path.write_bytes(bytes(damaged))
    with pytest.raises(TwinsError, match="CRC check failed"):
        read_tags(path)


def _write_raw(path, tag, dims, tensor_type, content):
    message = checkpoint_message()()
    value = message.value.add()
    value.tag = tag
    value.tensor.dims.extend(dims)
    value.tensor.tensor_type = tensor_type
    value.tensor.tensor_content = content
    path.write_bytes(message.SerializeToString())


def test_byte_count_is_checked_before_allocating(tmp_path):
    path = tmp_path / "huge.ckpt"
    # Claims 4 TB of float32 but holds 8 bytes: refused without allocating anything.
    _write_raw(path, "w", [1_000_000, 1_000_000], "Float32", b"\0" * 8)
    with pytest.raises(TwinsError, match=r"'w' holds 8 bytes but shape \[1000000, 1000000\]"):
        read_tags(path)


def test_unknown_tensor_type_and_nameless_entries_are_refused(tmp_path):
    path = tmp_path / "odd.ckpt"
    _write_raw(path, "w", [2], "Complex64", b"\0" * 16)
    with pytest.raises(TwinsError, match="tensor type 'Complex64'"):
        read_tags(path)
    _write_raw(path, "", [2], "Float32", b"\0" * 8)
    with pytest.raises(TwinsError, match="has no name"):
        read_tags(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "cut.ckpt"
    write_tags({"a": torch.randn(64), "b": torch.randn(64)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 3])
    with pytest.raises(TwinsError, match="truncated or corrupted"):
        read_tags(path)


def test_keep_filters_entries_but_still_checks_them(tmp_path):
    path = tmp_path / "mixed.ckpt"
    write_tags({"model.w": torch.randn(2), "adam_m.model.w": torch.randn(2)}, path)
    assert list(read_tags(path, keep=lambda tag: tag.startswith("model."))) == ["model.w"]


def test_seed_checkpoints_read_completely(seed_fixtures):
    pcpvt = read_tags(seed_fixtures / "seed_pcpvt_train.ckpt")
    svt = read_tags(seed_fixtures / "seed_svt_train.ckpt")
    assert (len(pcpvt), len(svt)) == (545, 509)
    assert pcpvt["scale_sense"].shape == () and pcpvt["scale_sense"].item() == 2.0**24
    assert pcpvt["global_step"].tolist() == [1] and pcpvt["global_step"].dtype == torch.int32
    assert pcpvt["model.head.weight"].shape == (10, 64)
    assert pcpvt["adam_m.model.head.weight"].shape == pcpvt["model.head.weight"].shape


def test_strings_are_written_as_mindspore_writes_and_reads_them(tmp_path):
    """As `save_checkpoint(append_dict={"name": "text"})` writes a string: type "str", dims [0],
    NumPy's unicode bytes; `load_checkpoint` gives it back as `str(np.frombuffer(content,
    "U<n>")[0])`, which is what is checked here."""
    text = '{"arch": "svt_small", "labels": ["Å", "猫"]}'
    path = tmp_path / "described.ckpt"
    write_tags({"model.w": torch.randn(2)}, path, strings={"twins_metadata": text})
    message = checkpoint_message()()
    message.ParseFromString(path.read_bytes())
    entry = message.value[1]
    assert (entry.tag, entry.tensor.tensor_type, list(entry.tensor.dims)) == (
        "twins_metadata",
        "str",
        [0],
    )
    content = entry.tensor.tensor_content
    assert content == np.array(text).tobytes()  # what MindSpore's writer stores
    assert str(np.frombuffer(content, f"U{len(content) // 4}")[0]) == text  # and its reader
    tensors, strings = read_checkpoint(path)
    assert list(tensors) == ["model.w"] and strings == {"twins_metadata": text}
