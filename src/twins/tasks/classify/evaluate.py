"""The classifier's evaluation: top-1 / top-5 accuracy and cross entropy over every process's
shard of the validation set (the fit loop's and `twins eval`'s), and the validation set of a
weights file's evaluation: the class folders of `data_url/val`, or a packed set's `val` split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from twins.config import TrainConfig
from twins.data.csv_labels import is_csv_data
from twins.data.folder import SafeImageFolder
from twins.errors import TwinsError
from twins.tasks.classify.data import is_packed_data, open_data
from twins.tasks.classify.parquet_data import is_parquet_data
from twins.tasks.classify.transforms import build_eval_transform
from twins.train.distributed import all_reduce_sum
from twins.train.precision import Precision


def evaluate(
    model: nn.Module, loader, precision: Precision, *, progress: bool = False, desc: str = "eval"
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (%), mean cross entropy and the number of images, over every
    process's shard. Top-5 is top-k with k = min(5, classes)."""
    return evaluate_models({desc: model}, loader, precision, progress=progress, desc=desc)[desc]


@torch.no_grad()
def evaluate_models(
    models: dict[str, nn.Module],
    loader,
    precision: Precision,
    *,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, dict[str, Any]]:
    """`evaluate` of several models (the raw and the EMA weights) in one pass over `loader`:
    each batch goes through every model, so every image (and every broken file) is read once."""
    for model in models.values():
        model.eval()
    device = precision.device
    # Per model: sums of loss, top-1 hits, top-5 hits and images, in float64 so counts stay exact.
    totals = torch.zeros(len(models), 4, dtype=torch.float64, device=device)
    bar = tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    for inputs, targets in bar:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        for row, model in enumerate(models.values()):
            with precision.autocast():
                logits = model(inputs)
            logits = logits.float()
            hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])
            totals[row] += torch.stack(
                [
                    F.cross_entropy(logits, targets, reduction="sum").double(),
                    hits[:, 0].sum().double(),
                    hits.any(dim=1).sum().double(),
                    totals.new_tensor(targets.shape[0]),
                ]
            )
    results = {}
    for name, (loss_sum, top1, top5, count) in zip(
        models, all_reduce_sum(totals).tolist(), strict=True
    ):
        if count == 0:
            raise TwinsError("the validation set is empty: put images in the val/ class folders")
        results[name] = {
            "top1": 100.0 * top1 / count,
            "top5": 100.0 * top5 / count,
            "loss": loss_sum / count,
            "images": int(count),
        }
    return results


def validation_set(config: TrainConfig, class_names: list[str] | None, num_classes: int):
    url = config.data_url
    if is_packed_data(url) or is_parquet_data(url) or is_csv_data(url) or config.val_split:
        val_set = open_data(config, {"val": build_eval_transform(config)})["val"]
        folder = val_set.root
    else:
        folder = Path(config.data_url).expanduser() / "val"
        val_set = _val_folder(config, folder)
    if len(val_set.classes) != num_classes:
        raise TwinsError(
            f"{folder} has {len(val_set.classes)} class folders but the model has {num_classes} "
            "classes: evaluate on the data set the model was trained for"
        )
    if class_names and list(class_names) != val_set.classes:
        raise TwinsError(
            f"the class folders of {folder} are not the classes the model was trained on "
            f"(first: {val_set.classes[:3]} vs {list(class_names)[:3]}): use the same class names"
        )
    return val_set


def _val_folder(config: TrainConfig, folder: Path) -> SafeImageFolder:
    if not folder.is_dir():
        raise TwinsError(
            f"validation folder {folder} not found: expected {folder}/<class>/<image>; "
            "set data_url",
            argument="data_url",
        )
    try:
        return SafeImageFolder(folder, transform=build_eval_transform(config))
    except FileNotFoundError as error:
        raise TwinsError(f"{str(error).splitlines()[0]}: add images to {folder}") from error


def describe(result: dict[str, Any], data_url: str) -> str:
    """The lines `twins eval` prints of a classifier's result."""
    text = (
        f"{result['arch']} on {data_url}/val: top-1 {result['top1']:.2f}%  "
        f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  ({result['images']} images"
        + (f"; {result['left_out']})" if result.get("left_out") else ")")
    )
    if "ema" in result:
        ema = result["ema"]
        text += (
            f"\nEMA weights: top-1 {ema['top1']:.2f}%  top-5 {ema['top5']:.2f}%  "
            f"loss {ema['loss']:.4f}"
        )
    return text
