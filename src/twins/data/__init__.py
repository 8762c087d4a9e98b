"""Data: ImageFolder data sets, the seed's transforms, a reproducible loader, mixup, the demo digits."""

from twins.data.datasets import SafeImageFolder, build_datasets
from twins.data.digits import write_digits_imagefolder
from twins.data.loader import TwinsDataLoader, build_loader
from twins.data.mixup import build_mixup
from twins.data.transforms import build_eval_transform, build_train_transform

__all__ = [
    "SafeImageFolder",
    "TwinsDataLoader",
    "build_datasets",
    "build_eval_transform",
    "build_loader",
    "build_mixup",
    "build_train_transform",
    "write_digits_imagefolder",
]
