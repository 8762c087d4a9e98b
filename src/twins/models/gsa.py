"""Global sub-sampled attention (GSA), Twins §3.2: every token attends to a spatially reduced
summary of the whole map. Keys and values come from tokens pooled by a strided convolution
(kernel = stride = sr_ratio) and a LayerNorm (eps 1e-5); with sr_ratio 1 this is plain
multi-head self-attention. Parameter names follow the official code (`q`, `kv`, `proj`, `sr`,
`norm`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from twins.models.tokens import map_to_tokens, tokens_to_map


class GlobalSubSampleAttention(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, sr_ratio: int, attn_drop: float, proj_drop: float
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr = None
        self.norm = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Attention of tokens `x` (B, H*W, C) on a `size` = (H, W) map."""
        q = self.q(x)
        kv = self.kv(self.reduce(x, size))
        return self.proj_drop(self.proj(self.attend(q, kv)))

    def reduce(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The tokens keys and values are computed from: the map pooled by sr_ratio, or `x`."""
        if self.sr is None:
            return x
        return self.norm(map_to_tokens(self.sr(tokens_to_map(x, size))))

    def attend(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Queries (B, N, C) on keys and values (B, M, 2C) -> (B, N, C), heads merged."""
        batch, length, dim = q.shape
        heads = self.num_heads
        q = q.reshape(batch, length, heads, dim // heads).transpose(1, 2)
        # Unbound along the k/v axis in place: their gradients stack back into kv's layout.
        k, v = kv.reshape(batch, -1, 2, heads, dim // heads).unbind(2)
        dropout = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout
        )
        return x.transpose(1, 2).reshape(batch, length, dim)
