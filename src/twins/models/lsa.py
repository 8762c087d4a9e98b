"""Locally-grouped self-attention (LSA), Twins §3.2: attention within non-overlapping
ws x ws windows. Parameter names follow the official code (`qkv`, `proj`).

Maps whose sides are not multiples of the window are padded to the next multiple, and the
padded keys are masked out, so real tokens attend only to real tokens of their window. (The
official dense-prediction code loses its mask when only one side is padded; timm pads without
a mask. Where the windows divide the map, no mask is built and the result is the official one.)
The tokens are gathered window by window before the qkv projection, so q, k and v are views of
its output and only C-wide rows are copied (3C-wide ones otherwise).
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn


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


def _sizes_are_symbols(size: tuple[int, int]) -> bool:
    """True while torch.export, torch.fx or torch.jit.trace trace the model: one graph then
    serves every input size, so it always pads and masks (by nothing where the windows divide
    the map)."""
    if torch.jit.is_scripting():
        return False
    else:
        proxies = isinstance(size[0], torch.fx.Proxy) or isinstance(size[1], torch.fx.Proxy)
        return proxies or torch.compiler.is_exporting() or torch.jit.is_tracing()


def _copy(x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of windows transposed into place. (`reshape` copies them too, but first
    asks whether a view would do; torch.export cannot answer that for every input size, since a
    map may be one window wide, and would fix the width.)"""
    return x.clone(memory_format=torch.contiguous_format)


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

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Attention of tokens `x` (B, H*W, C) on a `size` = (H, W) map."""
        qkv = self.qkv(self.to_windows(x, size))
        x = self.from_windows(self.attend(qkv, size), size)
        return self.proj_drop(self.proj(x))

    def grid(self, size: tuple[int, int]) -> tuple[int, int, int, int, bool]:
        """Window rows and columns, padding at the bottom and right, and whether to pad."""
        height, width = size
        ws = self.window_size
        # Ceil division written for non-negative sizes: ONNX divides integers truncating toward
        # zero, so the usual -(-h // ws) would export wrongly.
        rows, cols = (height + ws - 1) // ws, (width + ws - 1) // ws
        pad_bottom, pad_right = rows * ws - height, cols * ws - width
        padded = _sizes_are_symbols(size) or pad_bottom > 0 or pad_right > 0
        return rows, cols, pad_bottom, pad_right, padded

    def to_windows(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, H*W, C) tokens -> (B * windows, ws * ws, C), each window's tokens contiguous, so
        that q, k and v are views of the projection and only C-wide rows are ever copied."""
        batch, _, dim = x.shape
        rows, cols, pad_bottom, pad_right, padded = self.grid(size)
        ws = self.window_size
        x = x.view(batch, size[0], size[1], dim)
        if padded:
            x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))
        x = x.view(batch, rows, ws, cols, ws, dim).transpose(2, 3)
        return _copy(x).view(batch * rows * cols, ws * ws, dim)

    def attend(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B * windows, ws * ws, 3C) projections -> (B * windows, ws * ws, C): attention within
        each window, padded keys masked out."""
        windows, length, dim = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        heads = self.num_heads
        rows, cols, _, _, padded = self.grid(size)
        # Unbound along the q/k/v axis in place, so that autograd stacks their gradients
        # straight back into the projection's layout (one copy, not two).
        q, k, v = qkv.view(windows, length, 3, heads, dim // heads).unbind(2)
        mask: torch.Tensor | None = None
        if padded:
            mask = window_key_mask(size, self.window_size, qkv.device)  # (windows, keys)
            mask = mask.repeat(windows // (rows * cols), 1)[:, None, None, :]
        dropout = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, dropout
        )
        return x.transpose(1, 2).reshape(windows, length, dim)

    def from_windows(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B * windows, ws * ws, C) -> (B, H*W, C) tokens, padding cropped."""
        rows, cols, pad_bottom, pad_right, padded = self.grid(size)
        ws, dim = self.window_size, x.shape[-1]
        batch = x.shape[0] // (rows * cols)
        x = x.view(batch, rows, cols, ws, ws, dim).transpose(2, 3)
        x = _copy(x).view(batch, rows * ws, cols * ws, dim)
        if padded:
            x = F.pad(x, (0, 0, 0, -pad_right, 0, -pad_bottom))  # crop; a slice would guard
        return x.reshape(batch, size[0] * size[1], dim)
