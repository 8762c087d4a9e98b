"""A file in an object store as a seekable, read-only file object whose reads are byte-range
requests (`twins.storage.read_bytes`, with its retries): pyarrow reads a Parquet file's footer
and the columns it needs from it, not the whole object."""

from __future__ import annotations

import io
import os

from twins import storage


class RangeFile(io.RawIOBase):
    """The `size` bytes at `url`, read on demand."""

    def __init__(self, url: str, size: int) -> None:
        super().__init__()
        self.url, self.size, self.position = url, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        data = storage.read_bytes(self.url, self.position, end)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)
