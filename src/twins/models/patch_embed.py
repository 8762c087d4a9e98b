"""Patch embedding: a strided convolution (kernel = stride = patch) then LayerNorm (eps 1e-5)."""

import torch
from torch import nn

from twins.models.tokens import map_to_tokens


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) map -> (B, H'*W', D) tokens and their grid size (H', W')."""
        x = self.proj(x)
        size = (x.shape[2], x.shape[3])
        return self.norm(map_to_tokens(x)), size
