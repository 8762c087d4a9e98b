"""Transformer feed-forward: Linear -> GELU -> Linear, with dropout after each.

Without dropout, the bias, the GELU (exact or its tanh approximation) and the block's residual
add run fused into the matmuls where `twins.models.fused` allows it.
"""

import torch
from torch import nn

from twins.models.fused import mlp


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, gelu_approximate: str, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """`residual + mlp(x)`, or `mlp(x)` without a residual."""
        if self.drop.p and self.training:
            x = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
            return x if residual is None else residual + x
        return mlp(x, self.fc1, self.fc2, self.act.approximate, residual)
