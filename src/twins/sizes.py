"""Sizes in bytes written as people write them: 512MB, 50GB, 300MiB, 1000000."""

from __future__ import annotations

import math
import re

_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9}
_UNITS |= {"GB": 10**9, "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_UNITS |= {"TIB": 2**40}


def format_size(value: int, round_up: bool = False) -> str:
    """`value` bytes in the largest decimal unit it fills, to three significant digits, as
    `parse_size` reads it back: 80KB, 1.5GB, 512MB. `round_up` never gives less than
    `value` (for a size to set)."""
    units = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))
    unit, scale = next(((u, s) for u, s in units if value >= s), ("B", 1))
    if scale == 1:
        return f"{value}B"
    number = value / scale
    step = 10.0 ** (math.floor(math.log10(number)) - 2)  # the third significant digit
    number = (math.ceil(number / step) if round_up else round(number / step)) * step
    text = f"{number:.{max(0, -math.floor(math.log10(step)))}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + unit


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
