"""Transformer block: pre-norm attention and MLP residuals with stochastic depth.

The attention is GSA (`window_size` None) or LSA (`window_size` given). Norms use eps 1e-6 as
in the official code. On CPU the block may run through `twins.models.fast_path` instead: the
same parameters and the same math, in fused kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from twins.models import fast_path
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
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        use_fast_path: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if window_size is None:
            self.attn = GlobalSubSampleAttention(dim, num_heads, sr_ratio, attn_drop, proj_drop)
        else:
            self.attn = LocallyGroupedAttention(dim, num_heads, window_size, attn_drop, proj_drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), gelu_approximate, proj_drop)
        self.use_fast_path = use_fast_path

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # Two ifs: TorchScript drops a branch under `if not torch.jit.is_scripting()` uncompiled,
        # but not one under `and`; a scripted block is the plain one.
        if not torch.jit.is_scripting():  # noqa: SIM102
            if fast_path.applies(self, x):
                return fast_path.block_forward(self, x, size)
        x = x + self.drop_path(self.attn(self.norm1(x), size))
        return x + self.drop_path(self.mlp(self.norm2(x)))
