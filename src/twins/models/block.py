"""Transformer block: pre-norm attention and MLP residuals with stochastic depth.

The attention is GSA (`window_size` None) or LSA (`window_size` given). Norms use eps 1e-6 as
in the official code. Without stochastic depth, each residual add is done by the branch's output
projection (fused into its matmul on CPU, `twins.models.fused`).
"""

import torch
from torch import nn

from twins.models.drop_path import DropPath
from twins.models.gsa import GlobalSubSampleAttention
from twins.models.lsa import LocallyGroupedAttention
from twins.models.mlp import Mlp


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        window_size: int | None,
        gelu_approximate: str,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if window_size is None:
            self.attn = GlobalSubSampleAttention(dim, num_heads, sr_ratio, attn_drop, drop)
        else:
            self.attn = LocallyGroupedAttention(dim, num_heads, window_size, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), gelu_approximate, drop)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.drop_path.drop_prob and self.training:
            x = x + self.drop_path(self.attn(self.norm1(x), size))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = self.attn(self.norm1(x), size, residual=x)
        return self.mlp(self.norm2(x), residual=x)
