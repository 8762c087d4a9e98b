"""mmsegmentation's sliding-window test (`test_cfg = dict(mode='slide', crop_size, stride)`),
for images larger than what a segmenter is best tested on whole (remote sensing, pathology,
4K frames).

mmseg's rule (`EncoderDecoder.slide_inference`, 0.x and 1.x alike), on the image after the test
resize: windows of `crop` (height, width) every `stride` pixels, the last of each row and
column moved back to end at the image's edge (so every window is whole where the image is at
least a crop, and all windows have one shape); each window's logits are added where it lies,
and each pixel's sum divided by the number of windows over it; the result is then resized back
to the original size and argmaxed (the softmax mmseg applies before changes no label).

`slide_labels` gives the same labels with the windows taken a batch at a time and one row of
windows in memory at once: rows no later window reaches are final after each row of windows,
so where the test image is the original size (no resize back) a band of rows at a time is
divided and argmaxed, and memory grows with the image's width, not its area. Where a resize
back is due, the windows' sums over the (test-resized) image are kept whole for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from twins.errors import TwinsError
from twins.tasks.segment.metrics import predict_labels

# A batch of crops (N x 3 x h x w, normalised) -> their logits (N x K x h x w).
WindowLogits = Callable[[torch.Tensor], torch.Tensor]

WINDOW_BATCH = 8  # windows given to the model at once


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """The first pixel of each window along one side, by mmseg's rule: one every `stride`,
    as many as cover `length`, the last moved back to end at the edge."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, length) - crop, 0) for i in range(count)]


def check_window(crop: Sequence[int], stride: Sequence[int]) -> None:
    """TwinsError where a stride would leave pixels between windows (mmseg asserts it)."""
    if len(crop) != 2 or len(stride) != 2 or min(*crop, *stride) < 1:
        raise TwinsError(
            f"a sliding window takes a crop and a stride of two positive sizes [height, width], "
            f"not {list(crop)} and {list(stride)}",
            argument="test_crop_size",
        )
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise TwinsError(
            f"a stride of {list(stride)} leaves pixels between windows of {list(crop)}: "
            "give a stride no larger than the crop on each side",
            argument="test_stride",
        )


class _Rows:
    """The running sums and window counts of the rows from `top` down that a window reached."""

    def __init__(self, classes: int, width: int, like: torch.Tensor) -> None:
        self.top = 0
        self.sums = like.new_zeros((classes, 0, width), dtype=torch.float32)
        self.counts = like.new_zeros((0, width), dtype=torch.float32)

    def add(self, logits: torch.Tensor, y: int, x: int) -> None:
        """Add one window's logits (K x h x w) at image pixel (y, x)."""
        bottom = y + logits.shape[-2] - self.top
        if bottom > self.counts.shape[0]:  # the band grows down to the window's last row
            grow = bottom - self.counts.shape[0]
            self.sums = torch.cat(
                [self.sums, self.sums.new_zeros((len(self.sums), grow, self.sums.shape[-1]))], 1
            )
            self.counts = torch.cat(
                [self.counts, self.counts.new_zeros((grow, self.counts.shape[-1]))]
            )
        rows = slice(y - self.top, bottom)
        columns = slice(x, x + logits.shape[-1])
        self.sums[:, rows, columns] += logits.float()
        self.counts[rows, columns] += 1

    def take(self, end: int) -> torch.Tensor:
        """The mean logits (K x rows x W) of the rows above `end`, which no window adds to
        any more; they leave the band."""
        height = end - self.top
        mean = self.sums[:, :height] / self.counts[:height]
        self.sums, self.counts = self.sums[:, height:], self.counts[height:]
        self.top = end
        return mean


def _windows_of_row(
    logits_of: WindowLogits, image: torch.Tensor, y: int, xs: list[int], crop: tuple[int, int]
) -> list[torch.Tensor]:
    """The logits of the windows at row `y` and columns `xs`, WINDOW_BATCH at a time."""
    height, width = min(crop[0], image.shape[-2]), min(crop[1], image.shape[-1])
    out = []
    for start in range(0, len(xs), WINDOW_BATCH):
        batch = torch.stack(
            [image[:, y : y + height, x : x + width] for x in xs[start : start + WINDOW_BATCH]]
        )
        out.extend(logits_of(batch))
    return out


def _slide_bands(logits_of: WindowLogits, image: torch.Tensor, crop, stride):
    """(top, mean logits of a band of rows) down a test image (3 x H x W), by mmseg's rule."""
    height, width = image.shape[-2:]
    ys = window_starts(height, crop[0], stride[0])
    xs = window_starts(width, crop[1], stride[1])
    rows: _Rows | None = None
    for index, y in enumerate(ys):
        windows = _windows_of_row(logits_of, image, y, xs, crop)
        if rows is None:
            rows = _Rows(windows[0].shape[0], width, image)
        for x, logits in zip(xs, windows, strict=True):
            rows.add(logits, y, x)
        end = ys[index + 1] if index + 1 < len(ys) else height
        if end > rows.top:
            top = rows.top
            yield top, rows.take(end)


def slide_logits(
    logits_of: WindowLogits, image: torch.Tensor, crop: Sequence[int], stride: Sequence[int]
) -> torch.Tensor:
    """The sliding-window logits (K x H x W) of a normalised test image (3 x H x W)."""
    check_window(crop, stride)
    bands = [band for _, band in _slide_bands(logits_of, image, tuple(crop), tuple(stride))]
    return torch.cat(bands, dim=1)


def slide_labels(
    logits_of: WindowLogits,
    image: torch.Tensor,
    size: Sequence[int],
    crop: Sequence[int],
    stride: Sequence[int],
) -> torch.Tensor:
    """Class indices (H x W at `size`, the original image's) of a normalised test image by the
    sliding-window test: a band of rows at a time where no resize back is due."""
    check_window(crop, stride)
    if tuple(size) != tuple(image.shape[-2:]):
        logits = slide_logits(logits_of, image, crop, stride)
        return predict_labels(logits[None], size)[0]
    labels = torch.empty(tuple(size), dtype=torch.int64, device=image.device)
    for top, band in _slide_bands(logits_of, image, tuple(crop), tuple(stride)):
        labels[top : top + band.shape[1]] = band.argmax(0)
    return labels
