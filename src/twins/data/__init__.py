"""Data every task reads with: image decoding, class folders, the packed format, a
reproducible loader, the counted-read health check, the demo digits."""

from twins.data.digits import write_digits_imagefolder
from twins.data.folder import SafeImageFolder, describe_left_out
from twins.data.loader import TwinsDataLoader, build_loader

__all__ = [
    "SafeImageFolder",
    "TwinsDataLoader",
    "build_loader",
    "describe_left_out",
    "write_digits_imagefolder",
]
