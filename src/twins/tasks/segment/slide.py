"""mmsegmentation's sliding-window test (`test_cfg = dict(mode='slide', crop_size, stride)`),
for images larger than what a segmenter is best tested on whole (remote sensing, pathology,
4K frames).

mmseg's rule (`EncoderDecoder.slide_inference`, 0.x and 1.x alike), on the image after the test
resize: windows of `crop` (height, width) every `stride` pixels, the last of each row and
column moved back to end at the image's edge (so every window is whole where the image is at
least a crop, and all windows have one shape); each window's logits are added where it lies,
and each pixel's sum divided by the number of windows over it; the result is then resized back
to the original size and argmaxed (the softmax mmseg applies before changes no label).

`slide_labels` gives the same labels with the windows taken a batch at a time and the sums of
one row of windows in memory: rows no later window reaches are final after each row of
windows, so where the test image is the original size (no resize back) they are divided and
argmaxed as the windows move down, and memory holds a crop's height of rows (times the width and
the classes), not the image. Where a resize back is due, the sums over the (test-resized) image
are kept whole for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from twins.errors import TwinsError
from twins.tasks.segment.metrics import predict_labels

# A batch of crops (N x 3 x h x w, normalised) -> their logits (N x K x h x w).
WindowLogits = Callable[[torch.Tensor], torch.Tensor]

WINDOW_BATCH = 8  # windows given to the model at once, at most
WINDOW_BYTES = 256 * 2**20  # ... and at most this much of their logits
ROWS_AT_ONCE = 64  # finished rows are divided and argmaxed this many at a time


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
    """The running sums and window counts of one row of windows: `height` rows of the image
    from `top` down, held in buffers of a fixed size (a band that grew by concatenation would
    be copied whole at every row of windows)."""

    def __init__(self, classes: int, height: int, width: int, like: torch.Tensor) -> None:
        self.top = 0
        self.sums = like.new_zeros((classes, height, width), dtype=torch.float32)
        self.counts = like.new_zeros((height, width), dtype=torch.float32)

    def add(self, logits: torch.Tensor, y: int, x: int) -> None:
        """Add one window's logits (K x h x w) at image pixel (y, x)."""
        rows = slice(y - self.top, y - self.top + logits.shape[-2])
        columns = slice(x, x + logits.shape[-1])
        self.sums[:, rows, columns] += logits.float()
        self.counts[rows, columns] += 1

    def finished(self, end: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, mean logits K x rows x W) of the rows above `end`, which no window adds
        to any more, ROWS_AT_ONCE rows at a time; the band then moves down to start at `end`."""
        done = end - self.top
        for start in range(0, done, ROWS_AT_ONCE):
            rows = slice(start, min(start + ROWS_AT_ONCE, done))
            yield self.top + start, self.sums[:, rows] / self.counts[rows]
        # Move the rows still open up to the top, a shift's worth at a time: each copy reads
        # rows below the ones it writes, so nothing is read after it is overwritten.
        height = self.counts.shape[0]
        for start in range(0, height - done, done):
            source = slice(done + start, min(done + start + done, height))
            target = slice(start, start + source.stop - source.start)
            self.sums[:, target] = self.sums[:, source]
            self.counts[target] = self.counts[source]
        self.sums[:, height - done :] = 0
        self.counts[height - done :] = 0
        self.top = end


def _window_batch(classes: int, height: int, width: int) -> int:
    """Windows given to the model at once: WINDOW_BATCH, fewer where their logits would take
    more than WINDOW_BYTES (150 classes at 512 x 512 take 157 MB a window)."""
    return max(1, min(WINDOW_BATCH, WINDOW_BYTES // (classes * height * width * 4)))


def _windows_of_row(
    logits_of: WindowLogits, image: torch.Tensor, y: int, xs: list[int], crop, batch_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(x, logits) of the windows at row `y` and columns `xs`, `batch_size` at a time."""
    height, width = min(crop[0], image.shape[-2]), min(crop[1], image.shape[-1])
    for start in range(0, len(xs), batch_size):
        starts = xs[start : start + batch_size]
        batch = torch.stack([image[:, y : y + height, x : x + width] for x in starts])
        yield from zip(starts, logits_of(batch), strict=True)


def _slide_bands(
    logits_of: WindowLogits, image: torch.Tensor, crop, stride
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, mean logits of a band of rows) down a test image (3 x H x W), by mmseg's
    rule."""
    height, width = image.shape[-2:]
    ys = window_starts(height, crop[0], stride[0])
    xs = window_starts(width, crop[1], stride[1])
    window_height = min(crop[0], height)
    # The first window tells the classes; the batch size then follows from them.
    first = logits_of(image[None, :, :window_height, : min(crop[1], width)])[0]
    rows = _Rows(first.shape[0], window_height, width, image)
    batch_size = _window_batch(first.shape[0], window_height, min(crop[1], width))
    for index, y in enumerate(ys):
        if index == 0:
            rows.add(first, 0, 0)
            windows = _windows_of_row(logits_of, image, y, xs[1:], crop, batch_size)
        else:
            windows = _windows_of_row(logits_of, image, y, xs, crop, batch_size)
        for x, logits in windows:
            rows.add(logits, y, x)
        end = ys[index + 1] if index + 1 < len(ys) else height
        yield from rows.finished(end)


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
