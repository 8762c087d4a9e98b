"""Mixup / CutMix on whole batches with label smoothing folded into the soft targets (timm's Mixup).

Keys as in the seed: `mix_up` (mixup alpha), `cutmix` (cutmix alpha), `mixup_prob`,
`switch_prob`, `mixup_mode` ("batch", "pair" or "elem"), `label_smoothing`, `num_classes`.
Train with timm's SoftTargetCrossEntropy on its output; with both alphas 0 there is no mixing
and a plain label-smoothed cross entropy does the same job.
"""

from __future__ import annotations

from typing import Any

from timm.data import Mixup


def build_mixup(cfg: Any) -> Mixup | None:
    """timm Mixup from the config, or None when both mixup and cutmix alphas are 0."""
    if float(cfg.mix_up) <= 0 and float(cfg.cutmix) <= 0:
        return None
    return Mixup(
        mixup_alpha=float(cfg.mix_up),
        cutmix_alpha=float(cfg.cutmix),
        prob=float(cfg.mixup_prob),
        switch_prob=float(cfg.switch_prob),
        mode=cfg.mixup_mode,
        label_smoothing=float(cfg.label_smoothing),
        num_classes=int(cfg.num_classes),
    )
