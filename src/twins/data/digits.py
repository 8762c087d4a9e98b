"""The built-in demo data set: scikit-learn's 1,797 handwritten digits, written as an ImageFolder.

The digits (UCI "Optical Recognition of Handwritten Digits", 8x8 px, 16 grey levels) ship
inside scikit-learn, so nothing is downloaded. They are written once as PNG class folders
`root/train/<digit>/` and `root/val/<digit>/`, so the demo reads them through exactly the code a
user's own data takes. The train/val split is fixed (stratified, 20% val, same for every seed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# Fixed split: part of the data set's definition, not of a run.
VAL_FRACTION = 0.2
SPLIT_SEED = 0
MANIFEST = "digits.json"


def write_digits_imagefolder(root: str | Path, image_size: int = 32) -> Path:
    """Write the digits under `root` (train/ and val/ class folders) unless already complete.

    Each 8x8 image is scaled from 16 grey levels to 0-255 and upscaled with bicubic
    interpolation to `image_size` px (ink bright on a dark ground). Returns `root`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root)
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(
        indices, test_size=VAL_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    expected = {
        "source": "sklearn.datasets.load_digits",
        "image_size": image_size,
        "train": len(train_idx),
        "val": len(val_idx),
    }
    if _is_complete(root, expected):
        return root

    (root / MANIFEST).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    for split, split_indices in (("train", train_idx), ("val", val_idx)):
        for index in split_indices:
            label = int(digits.target[index])
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            _digit_image(digits.images[index], image_size).save(folder / f"{index:04d}.png")
    # Written last: its presence means every image above is in place.
    (root / MANIFEST).write_text(json.dumps(expected, indent=2) + "\n")
    return root


def _digit_image(pixels: np.ndarray, image_size: int) -> Image.Image:
    gray = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).resize((image_size, image_size), Image.Resampling.BICUBIC)


def _is_complete(root: Path, expected: dict) -> bool:
    manifest = root / MANIFEST
    if not manifest.is_file():
        return False
    try:
        if json.loads(manifest.read_text()) != expected:
            return False
    except ValueError:
        return False
    for split in ("train", "val"):
        if sum(1 for _ in (root / split).glob("*/*.png")) != expected[split]:
            return False
    return True
