"""Write an ImageFolder of ImageNet-like JPEGs for `twins benchmark --mode data`.

Each image is a random crop of one of scikit-learn's two sample photos (china.jpg, flower.jpg,
shipped with scikit-learn: nothing is downloaded), resized to 500 x 375 (or 375 x 500), maybe
mirrored, its colours shifted, saved as JPEG of quality 85-90: the size and file weight
(about 25-80 KB) of a typical ImageNet training image.

    python scripts/make_bench_images.py OUT [--images 150] [--classes 3] [--seed 0]
    twins benchmark --mode data --data OUT --compare timm
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image


def make_images(out: Path, images: int = 150, classes: int = 3, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    written = []
    for index in range(images):
        photo = photos[index % len(photos)]
        width, height = photo.size
        crop_w = int(rng.uniform(0.5, 1.0) * width)
        crop_h = min(height, int(crop_w * rng.uniform(0.6, 0.9)))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        size = (500, 375) if rng.random() < 0.8 else (375, 500)
        image = photo.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        shift = rng.integers(-30, 31, size=3)
        gain = rng.uniform(0.8, 1.2, size=3)
        pixels = np.asarray(image, dtype=np.float32) * gain + shift
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        folder = out / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:04d}.jpg"
        image.save(path, quality=int(rng.integers(85, 91)))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the class folders into")
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = make_images(args.out, args.images, args.classes, args.seed)
    sizes = [path.stat().st_size / 1000 for path in paths]
    print(f"{len(paths)} JPEGs in {args.out}: {min(sizes):.0f}-{max(sizes):.0f} KB, "
          f"mean {np.mean(sizes):.0f} KB")  # fmt: skip


if __name__ == "__main__":
    main()
