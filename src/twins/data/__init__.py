"""Data: ImageFolder data sets, the seed's transforms (training on uint8 tensors, finished on
the device), a reproducible loader, mixup, the demo digits."""

from twins.data.datasets import SafeImageFolder, build_datasets
from twins.data.device_batch import DeviceBatch, build_device_batch
from twins.data.digits import write_digits_imagefolder
from twins.data.loader import TwinsDataLoader, build_loader
from twins.data.mixup import build_mixup
from twins.data.train_transform import build_train_transform
from twins.data.transforms import build_eval_transform

__all__ = [
    "DeviceBatch",
    "SafeImageFolder",
    "TwinsDataLoader",
    "build_datasets",
    "build_device_batch",
    "build_eval_transform",
    "build_loader",
    "build_mixup",
    "build_train_transform",
    "write_digits_imagefolder",
]
