"""`create_model(..., features_only=True)`: the stage maps of a Twins classifier, as timm's
`features_only` Twins gives them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models import FeatureInfo
from torch import nn

# Keys of a classifier's pretrained config that say nothing about a feature extractor (timm
# drops the same ones).
CLASSIFIER_CFG_KEYS = ("num_classes", "classifier", "global_pool")


class TwinsFeatures(nn.Module):
    """`model(x)` is the list of the `out_indices` stage maps (N x C x H x W) and
    `feature_info` (timm's `FeatureInfo`) their channels and reductions. The classifier's
    stages after the last index, its final norm and its head are dropped; it is kept as
    `model`, so the state dict is timm's `features_only` Twins' key for key."""

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] = 4) -> None:
        super().__init__()
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_norm=True)
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.pretrained_cfg = self.default_cfg = {
            key: value
            for key, value in model.pretrained_cfg.items()
            if key not in CLASSIFIER_CFG_KEYS
        }
        self.model = model

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            images, indices=self.out_indices, intermediates_only=True
        )
