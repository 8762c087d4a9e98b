"""Sizes in bytes written as people write them: 512MB, 50GB, 300MiB, 1000000."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9}
_UNITS |= {"GB": 10**9, "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_UNITS |= {"TIB": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes in `text` (decimal units KB, MB, GB, TB; binary KiB, MiB, GiB, TiB); ValueError
    for anything else or less than one byte."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not match or match.group(2).upper() not in _UNITS:
            raise ValueError(f"{text!r} is not a size: write e.g. 512MB or 50GB")
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value < 1:
        raise ValueError(f"{text!r} is not a size of at least one byte")
    return value
