"""Token sequence <-> feature map views.

Tokens are kept as a contiguous (B, H*W, C) tensor. Seen as a (B, C, H, W) map that tensor is
already in channels-last memory order, so convolutions (patch embedding, PEG, spatial
reduction) read it without a copy and give back channels-last maps that flatten to contiguous
tokens again. The official code copies to NCHW at every stage boundary instead.
"""

import torch


def tokens_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) channels-last view, no copy."""
    batch, _, channels = x.shape
    return x.transpose(1, 2).unflatten(2, size).view(batch, channels, *size)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map -> (B, H*W, C) tokens; a view when the map is channels-last."""
    return x.flatten(2).transpose(1, 2)
