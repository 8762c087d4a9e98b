"""Mixup / CutMix on whole batches with label smoothing folded into the soft targets (timm's Mixup).

Keys as in the seed: `mix_up` (mixup alpha), `cutmix` (cutmix alpha), `mixup_prob`,
`switch_prob`, `mixup_mode` ("batch", "pair" or "elem"), `label_smoothing`, `num_classes`.
Train with timm's SoftTargetCrossEntropy on its output; with both alphas 0 there is no mixing
and a plain label-smoothed cross entropy does the same job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from timm.data import Mixup

if TYPE_CHECKING:  # the config is only read here; importing it would tie data to train
    from twins.config import TrainConfig


def build_mixup(config: TrainConfig) -> Mixup | None:
    """timm Mixup from the config, or None when both mixup and cutmix alphas are 0."""
    if float(config.mix_up) <= 0 and float(config.cutmix) <= 0:
        return None
    return Mixup(
        mixup_alpha=float(config.mix_up),
        cutmix_alpha=float(config.cutmix),
        prob=float(config.mixup_prob),
        switch_prob=float(config.switch_prob),
        mode=config.mixup_mode,
        label_smoothing=float(config.label_smoothing),
        num_classes=int(config.num_classes),
    )
