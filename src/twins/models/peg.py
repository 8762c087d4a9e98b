"""Positional encoding generator (PEG) of CPVT (Chu et al., 2021), the conditional position
encoding Twins uses instead of absolute position embeddings: a depthwise 3x3 convolution over
the token map, added back to the tokens.
"""

import torch
from torch import nn

from twins.models.tokens import map_to_tokens, tokens_to_map


class PosConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        # A Sequential only to keep the official parameter names (`proj.0.weight`).
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x + map_to_tokens(self.proj(tokens_to_map(x, size)))
