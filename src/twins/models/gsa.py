"""Global sub-sampled attention (GSA), Twins §3.2: every token attends to a spatially reduced
summary of the whole map. Keys and values come from tokens pooled by a strided convolution
(kernel = stride = sr_ratio) and a LayerNorm (eps 1e-5); with sr_ratio 1 this is plain
multi-head self-attention. Parameter names follow the official code (`q`, `kv`, `proj`, `sr`,
`norm`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from twins.models.fused import linear, project
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
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention of tokens `x` on a `size` map; `residual` (if given) is added to the result."""
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        if self.sr_ratio > 1:
            q = linear(x, self.q.weight, self.q.bias)
            pooled = self.norm(map_to_tokens(self.sr(tokens_to_map(x, size))))
            kv = linear(pooled, self.kv.weight, self.kv.bias)
        else:
            # Keys and values come from the same tokens as the queries: one matmul for all
            # three, with the official `q` and `kv` weights joined at run time.
            weight = torch.cat([self.q.weight, self.kv.weight])
            bias = torch.cat([self.q.bias, self.kv.bias])
            q, kv = linear(x, weight, bias).split([dim, 2 * dim], dim=-1)
        q = q.view(batch, length, heads, head_dim).transpose(1, 2)
        # Unbound along the k/v axis in place: their gradients stack back into kv's layout.
        k, v = (t.transpose(1, 2) for t in kv.view(batch, -1, 2, heads, head_dim).unbind(2))
        dropout = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        x = x.transpose(1, 2).reshape(batch, length, dim)
        return project(x, self.proj, self.proj_drop, residual)
