"""The dense-prediction backbone: the Twins classifier's four stages, giving one NCHW map per
stage (strides 4, 8, 16, 32), as the official segmentation and detection code builds it
(Meituan-AutoML/Twins, `segmentation/gvt.py`, `detection/gvt.py`).

Differences from the classifier: no head and no final norm (the official code builds both and
never uses them; they are left out here, so parameter counts are the "lean" ones of the dense
facts), and for SVT a LayerNorm on each stage's output, which the next stage takes as its
input (`norm_list`, new when fine-tuning from ImageNet weights). Parameter names are the
classifier's, so `backbone.*` keys of the official checkpoints load as they are. Inputs of
any size of at least `smallest_side`: locally-grouped attention pads its windows and masks
the padded keys (`twins.models.lsa`), on both sides alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from twins.models.registry import VARIANTS, resolve_name
from twins.models.tokens import tokens_to_map
from twins.models.twins import Twins, check_input

# Stochastic depth of the official dense code (hard-coded in its backbone classes, whatever the
# configs say): 0.2, except SVT-L in segmentation, 0.3.
DENSE_DROP_PATH = 0.2


class DenseBackbone(Twins):
    """`forward(images)` -> the four stage maps, a list of (N, C_i, H / 2^(i+2), W / 2^(i+2)).

    `stage_norms`: a LayerNorm (eps 1e-6) on each stage's tokens, as the official code has for
    SVT (`extra_norm`): the normalised map is the stage's output and the next stage's input;
    default: True for SVT (windowed) variants, False for PCPVT.
    `out_channels` lists the widths, `strides` the reductions.
    """

    def __init__(self, stage_norms: bool | None = None, **twins_args: Any) -> None:
        twins_args = {**twins_args, "num_classes": 0}
        super().__init__(**twins_args)
        del self.norm  # the classifier's final norm: not part of the dense model
        self.norm = nn.Identity()
        if stage_norms is None:
            stage_norms = twins_args.get("wss") is not None
        self.stage_norms = bool(stage_norms)
        self.model_args["stage_norms"] = self.stage_norms
        del self.model_args["num_classes"], self.model_args["global_pool"]
        self.norm_list = (
            nn.ModuleList(nn.LayerNorm(width, eps=1e-6) for width in self.embed_dims)
            if self.stage_norms
            else None
        )
        self.out_channels = list(self.embed_dims)
        self.strides = [info["reduction"] for info in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        if self.norm_list is None:
            return self.forward_intermediates(x, intermediates_only=True)
        # SVT: as in the official code, each stage's tokens are normalised before the reshape,
        # and that normalised map is both the stage's output and the next stage's input.
        check_input(x, self.in_chans, self.smallest_side)
        x = x.contiguous(memory_format=torch.channels_last)
        maps = []
        for embed, drop, blocks, peg, norm in zip(
            self.patch_embeds,
            self.pos_drops,
            self.blocks,
            self.pos_block,
            self.norm_list,
            strict=True,
        ):
            x, size = embed(x)
            x = drop(x)
            for index, block in enumerate(blocks):
                x = self._run_block(block, x, size)
                if index == 0:
                    x = peg(x, size)
            x = tokens_to_map(norm(x), size)
            maps.append(x.contiguous())
        return maps


def dense_backbone(
    variant: str,
    drop_path_rate: float = DENSE_DROP_PATH,
    stage_norms: bool | None = None,
    **overrides: Any,
) -> DenseBackbone:
    """The dense backbone of a variant (any name or alias `twins.create_model` takes)."""
    arch = resolve_name(variant)
    return DenseBackbone(
        stage_norms=stage_norms,
        **{**VARIANTS[arch], "drop_path_rate": drop_path_rate, **overrides},
        arch=arch,
    )


def stage_widths(variant: str) -> Sequence[int]:
    return tuple(VARIANTS[resolve_name(variant)]["embed_dims"])
