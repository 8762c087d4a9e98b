"""Locally-grouped self-attention (LSA), Twins §3.2: attention within non-overlapping
ws x ws windows. Parameter names follow the official code (`qkv`, `proj`).

Maps whose sides are not multiples of the window are padded to the next multiple, and the
padded keys are masked out, so real tokens attend only to real tokens of their window. (The
official dense-prediction code loses its mask when only one side is padded; timm pads without
a mask. Where the windows divide the map, no mask is built and the result is the official one.)
The tokens are gathered window by window before the qkv projection, so q, k and v are views of
its output and only C-wide rows are copied (3C-wide ones otherwise).
"""

import torch
import torch.nn.functional as F
from torch import nn

from twins.models.fused import linear, project


def window_key_mask(
    size: tuple[int, int], window: int, device: torch.device | None = None
) -> torch.Tensor:
    """(windows, window * window) bool: True where the key is a real token, False if padding.

    Built from index comparisons in window layout (no slices or views of a padded map), so that
    torch.export keeps height and width symbolic.
    """
    height, width = size
    rows, cols = (height + window - 1) // window, (width + window - 1) // window
    offsets = torch.arange(window, device=device)
    row_valid = torch.arange(rows, device=device)[:, None] * window + offsets < height
    col_valid = torch.arange(cols, device=device)[:, None] * window + offsets < width
    valid = row_valid[:, None, :, None] & col_valid[None, :, None, :]  # (rows, cols, ws, ws)
    return valid.reshape(rows * cols, window * window)


class LocallyGroupedAttention(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, window_size: int, attn_drop: float, proj_drop: float
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention of tokens `x` on a `size` map; `residual` (if given) is added to the result."""
        batch, length, dim = x.shape
        height, width = size
        ws, heads, head_dim = self.window_size, self.num_heads, dim // self.num_heads
        # Ceil division written for non-negative sizes: ONNX divides integers truncating toward
        # zero, so the usual -(-h // ws) would export wrongly.
        rows, cols = (height + ws - 1) // ws, (width + ws - 1) // ws
        pad_bottom, pad_right = rows * ws - height, cols * ws - width
        # Exported graphs always pad and mask (by nothing where the windows divide the map), so
        # that one graph serves every input size.
        padded = torch.compiler.is_exporting() or pad_bottom > 0 or pad_right > 0

        # Windows first (B * windows, ws * ws, C), then qkv: each window's tokens are contiguous,
        # so q, k and v are views of the projection and only C-wide rows are ever copied.
        x = x.view(batch, height, width, dim)
        if padded:
            x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))
        x = x.view(batch, rows, ws, cols, ws, dim).transpose(2, 3)
        x = x.reshape(batch * rows * cols, ws * ws, dim)
        qkv = linear(x, self.qkv.weight, self.qkv.bias)
        # Unbound along the q/k/v axis in place, so that autograd stacks their gradients
        # straight back into the projection's layout (one copy, not two).
        qkv = qkv.view(batch * rows * cols, ws * ws, 3, heads, head_dim).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in qkv)  # (B * windows, heads, ws * ws, hd)

        mask = None
        if padded:
            mask = window_key_mask(size, ws, x.device)  # (windows, keys)
            mask = mask.repeat(batch, 1)[:, None, None, :]  # (B * windows, 1, 1, keys)
        dropout = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)

        # (B * windows, heads, ws * ws, hd) -> (B, rows * ws, cols * ws, C), then crop.
        x = x.transpose(1, 2).reshape(batch, rows, cols, ws, ws, dim).transpose(2, 3)
        x = x.reshape(batch, rows * ws, cols * ws, dim)
        if padded:
            x = F.pad(x, (0, 0, 0, -pad_right, 0, -pad_bottom))  # crop; a slice would guard
        x = x.reshape(batch, length, dim)
        return project(x, self.proj, self.proj_drop, residual)
