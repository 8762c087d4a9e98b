"""Locally-grouped self-attention (LSA), Twins §3.2: attention within non-overlapping
ws x ws windows. Parameter names follow the official code (`qkv`, `proj`).

Maps whose sides are not multiples of the window are padded to the next multiple, and the
padded keys are masked out, so real tokens attend only to real tokens of their window. (The
official dense-prediction code loses its mask when only one side is padded; timm pads without
a mask. Where the windows divide the map, no mask is built and the result is the official one.)
The qkv projection is applied to the tokens before padding: it is per-token, so the result is
the same, and the padded positions cost nothing.
"""

import torch
import torch.nn.functional as F
from torch import nn


def window_key_mask(
    size: tuple[int, int], window: int, device: torch.device | None = None
) -> torch.Tensor:
    """(windows, window * window) bool: True where the key is a real token, False if padding."""
    height, width = size
    rows = -(-height // window)
    cols = -(-width // window)
    valid = torch.zeros(rows * window, cols * window, dtype=torch.bool, device=device)
    valid[:height, :width] = True
    valid = valid.view(rows, window, cols, window).transpose(1, 2)
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

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        batch, length, dim = x.shape
        height, width = size
        ws, heads, head_dim = self.window_size, self.num_heads, dim // self.num_heads
        pad_bottom = -height % ws
        pad_right = -width % ws
        rows, cols = (height + pad_bottom) // ws, (width + pad_right) // ws

        qkv = self.qkv(x).view(batch, height, width, 3 * dim)
        if pad_bottom or pad_right:
            qkv = F.pad(qkv, (0, 0, 0, pad_right, 0, pad_bottom))
        # (B, rows, ws, cols, ws, 3, heads, hd) -> (3, B * windows, heads, ws * ws, hd)
        qkv = qkv.view(batch, rows, ws, cols, ws, 3, heads, head_dim)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(
            3, batch * rows * cols, heads, ws * ws, -1
        )
        q, k, v = qkv.unbind(0)

        mask = None
        if pad_bottom or pad_right:
            mask = window_key_mask(size, ws, x.device)  # (windows, keys)
            mask = mask[None, :, None, None, :].expand(batch, -1, 1, 1, -1).flatten(0, 1)
        dropout = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)

        # (B * windows, heads, ws * ws, hd) -> (B, rows * ws, cols * ws, C), then crop.
        x = x.view(batch, rows, cols, heads, ws, ws, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
        x = x.reshape(batch, rows * ws, cols * ws, dim)
        if pad_bottom or pad_right:
            x = x[:, :height, :width]
        x = x.reshape(batch, length, dim)
        return self.proj_drop(self.proj(x))
