"""The MindSpore `.ckpt` protobuf stream, read and written without MindSpore: tensors by tag, as
the file stores them (`twins.weights.mindspore` maps the tags to the official layout).

The file is a stream of protobuf `Checkpoint` messages as MindSpore's `save_checkpoint` writes
them (mindspore/ccsrc/utils/checkpoint.proto, mindspore/train/serialization.py):

    message Checkpoint { message Value { string tag = 1; TensorProto tensor = 2; }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3; }

Content is raw little-endian C-order bytes; a scalar has `dims = [0]`; a tensor over 512 MiB is
split into consecutive values with the same tag; newer versions may end the file with the
17-byte trailer `b"crc_num"` + CRC-32 of everything before it (10 bytes, big-endian).
A string (what `save_checkpoint(append_dict={"name": "text"})` stores beside the parameters,
and `load_checkpoint` gives back as a Python str) has `tensor_type = "str"`, `dims = [0]` and
the text as NumPy's unicode bytes: UTF-32, little-endian, no byte-order mark.
The message classes are built at run time from a descriptor, so protobuf does all decoding.
"""

from __future__ import annotations

import functools
import math
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from twins.atomic import atomic_path
from twins.errors import TwinsError

CRC_MARK = b"crc_num"
CRC_TRAILER_BYTES = len(CRC_MARK) + 10
# MindSpore splits tensors above 512 MiB (serialization.SLICE_SIZE, in KiB).
SLICE_BYTES = 512 * 1024 * 1024

DTYPES: dict[str, torch.dtype] = {
    "Float16": torch.float16,
    "Float32": torch.float32,
    "Float64": torch.float64,
    "BFloat16": torch.bfloat16,
    "Int8": torch.int8,
    "UInt8": torch.uint8,
    "Int16": torch.int16,
    "UInt16": torch.uint16,
    "Int32": torch.int32,
    "UInt32": torch.uint32,
    "Int64": torch.int64,
    "UInt64": torch.uint64,
    "Bool": torch.bool,
}
TYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
STRING_TYPE = "str"
STRING_ENCODING = "utf-32-le"


@functools.cache
def checkpoint_message() -> type:
    """The `Checkpoint` message class (proto2, as MindSpore declares it: unpacked `dims`)."""
    field = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(
        name="twins_mindspore_checkpoint.proto", package="twins.mindspore", syntax="proto2"
    )
    tensor = proto.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, type=field.TYPE_INT64, label=repeated)
    tensor.field.add(name="tensor_type", number=2, type=field.TYPE_STRING, label=optional)
    tensor.field.add(name="tensor_content", number=3, type=field.TYPE_BYTES, label=optional)
    checkpoint = proto.message_type.add(name="Checkpoint")
    value = checkpoint.nested_type.add(name="Value")
    value.field.add(name="tag", number=1, type=field.TYPE_STRING, label=optional)
    value.field.add(
        name="tensor",
        number=2,
        type=field.TYPE_MESSAGE,
        label=optional,
        type_name=".twins.mindspore.TensorProto",
    )
    checkpoint.field.add(
        name="value",
        number=1,
        type=field.TYPE_MESSAGE,
        label=repeated,
        type_name=".twins.mindspore.Checkpoint.Value",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("twins.mindspore.Checkpoint"))


def strip_crc(data: bytes, path: str | os.PathLike) -> bytes:
    """Remove and verify the CRC trailer when the file has one."""
    if data[-CRC_TRAILER_BYTES:-10] != CRC_MARK:
        return data
    body, stored = data[:-CRC_TRAILER_BYTES], int.from_bytes(data[-10:], "big")
    if zlib.crc32(body) != stored:
        raise TwinsError(
            f"{path}: CRC check failed, the MindSpore checkpoint is damaged; copy it again"
        )
    return body


def parse_checkpoint(data: bytes, path: str | os.PathLike):
    """Parse the protobuf stream (without trailer) into a `Checkpoint` message."""
    message = checkpoint_message()()
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        raise TwinsError(
            f"{path}: not a readable MindSpore checkpoint ({error}); the file is truncated or corrupted"
        ) from error
    return message


def _tensor_shape(dims: list[int], content_bytes: int, itemsize: int) -> tuple[int, ...]:
    # MindSpore writes scalars as dims [0] (older writers: []); a real empty tensor has no bytes.
    if dims == [0] and content_bytes == itemsize:
        return ()
    return tuple(dims)


def read_tags(
    path: str | os.PathLike, keep: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """All tensors of a MindSpore checkpoint by tag, or those whose tag `keep` accepts."""
    return read_checkpoint(path, keep)[0]


def read_checkpoint(
    path: str | os.PathLike, keep: Callable[[str], bool] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors by tag, or those whose tag `keep` accepts; every string entry by tag).

    Every entry's byte count is checked against its shape and type before any tensor is made.
    """
    data = strip_crc(Path(path).read_bytes(), path)
    values = parse_checkpoint(data, path).value
    groups: list[tuple[str, list]] = []
    for value in values:
        if not value.tag:
            raise TwinsError(
                f"{path}: a MindSpore checkpoint entry has no name; the file is corrupted"
            )
        if not value.HasField("tensor"):
            continue  # a MapParameter (embedding tables): nothing a Twins model holds
        if groups and groups[-1][0] == value.tag:
            groups[-1][1].append(value.tensor)  # a slice of a tensor over 512 MiB
        else:
            groups.append((value.tag, [value.tensor]))

    tensors: dict[str, torch.Tensor] = {}
    strings: dict[str, str] = {}
    for tag, parts in groups:
        if tag in tensors or tag in strings:
            raise TwinsError(f"{path}: entry {tag!r} appears twice; the file is corrupted")
        type_name = parts[-1].tensor_type
        wanted = keep is None or keep(tag)
        if type_name == STRING_TYPE:
            strings[tag] = _string(tag, b"".join(part.tensor_content for part in parts), path)
            continue
        if type_name not in DTYPES or any(part.tensor_type != type_name for part in parts):
            raise TwinsError(
                f"{path}: entry {tag!r} has tensor type {type_name!r}, expected one of "
                f"{', '.join(DTYPES)}; the file is corrupted or not a weights checkpoint"
            )
        dims = list(parts[-1].dims)
        if any(part.dims != parts[-1].dims for part in parts) or any(d < 0 for d in dims):
            raise TwinsError(
                f"{path}: entry {tag!r} has invalid dims {dims}; the file is corrupted"
            )
        dtype = DTYPES[type_name]
        itemsize = torch.empty((), dtype=dtype).element_size()
        content_bytes = sum(len(part.tensor_content) for part in parts)
        shape = _tensor_shape(dims, content_bytes, itemsize)
        expected = math.prod(shape) * itemsize
        if content_bytes != expected:
            raise TwinsError(
                f"{path}: entry {tag!r} holds {content_bytes} bytes but shape {list(shape)} of "
                f"{type_name} needs {expected}; the file is truncated or corrupted"
            )
        if not wanted:
            continue
        if expected == 0:
            tensors[tag] = torch.empty(shape, dtype=dtype)
            continue
        content = bytearray(b"".join(part.tensor_content for part in parts))
        tensors[tag] = torch.frombuffer(content, dtype=dtype).reshape(shape)
    return tensors, strings


def _string(tag: str, content: bytes, path: str | os.PathLike) -> str:
    try:
        # NumPy pads unicode arrays with NUL characters, which are no part of the text.
        return content.decode(STRING_ENCODING).rstrip("\0")
    except UnicodeDecodeError as error:
        raise TwinsError(
            f"{path}: string entry {tag!r} is not UTF-32 text; the file is corrupted"
        ) from error


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """Raw little-endian C-order bytes of a tensor."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_tags(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    strings: Mapping[str, str] | None = None,
    crc: bool = False,
    slice_bytes: int = SLICE_BYTES,
) -> None:
    """Write tensors, then `strings`, as a MindSpore checkpoint, one `Checkpoint` message per
    value as MindSpore does (strings as its `append_dict` strings); with `crc` append the
    trailer that MindSpore 2.x checks (older versions cannot read it)."""
    shared = sorted(set(strings or {}) & set(tensors))
    if shared:
        raise TwinsError(f"{shared[0]}: a string entry cannot have a tensor's name")
    message_class = checkpoint_message()
    checksum = 0
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        for tag, tensor in tensors.items():
            if tensor.dtype not in TYPE_NAMES:
                raise TwinsError(f"{tag}: dtype {tensor.dtype} has no MindSpore equivalent")
            dims = list(tensor.shape) if tensor.dim() > 0 else [0]
            content = tensor_bytes(tensor)
            step = max(tensor.element_size(), slice_bytes - slice_bytes % tensor.element_size())
            for start in range(0, max(len(content), 1), step):
                message = message_class()
                value = message.value.add()
                value.tag = tag
                value.tensor.dims.extend(dims)
                value.tensor.tensor_type = TYPE_NAMES[tensor.dtype]
                value.tensor.tensor_content = content[start : start + step]
                blob = message.SerializeToString()
                checksum = zlib.crc32(blob, checksum)
                file.write(blob)
        for tag, text in (strings or {}).items():
            message = message_class()
            value = message.value.add()
            value.tag = tag
            value.tensor.dims.append(0)
            value.tensor.tensor_type = STRING_TYPE
            value.tensor.tensor_content = text.encode(STRING_ENCODING)
            blob = message.SerializeToString()
            checksum = zlib.crc32(blob, checksum)
            file.write(blob)
        if crc:
            file.write(CRC_MARK + checksum.to_bytes(10, "big"))
