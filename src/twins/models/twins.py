"""Twins-PCPVT and Twins-SVT (Chu et al., "Twins: Revisiting the Design of Spatial Attention in
Vision Transformers", NeurIPS 2021), one parameterised class.

A four-stage pyramid: each stage embeds patches (stride 4, then 2), runs its blocks, and
applies the PEG once, after the first block. PCPVT uses global sub-sampled attention in every
block; SVT (`wss` given) alternates locally-grouped attention (even blocks) and global
sub-sampled attention (odd blocks). Parameter names, initialisation and stochastic depth follow
the official code (github.com/Meituan-AutoML/Twins), so official and timm state dicts load
with `strict=True`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from twins.models.block import Block
from twins.models.patch_embed import PatchEmbed
from twins.models.peg import PosConv
from twins.models.tokens import tokens_to_map

# Activation names of `model_args` -> the `approximate` argument of the GELU.
ACT_LAYERS = {"gelu": "none", "gelu_tanh": "tanh"}


def _per_stage(name: str, value: Any, stages: int) -> tuple:
    """Accept one value for every stage, or one per stage."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != stages:
            raise ValueError(f"{name} has {len(value)} entries; expected {stages}, one per stage")
        return tuple(value)
    return (value,) * stages


class Twins(nn.Module):
    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] | float = (8, 8, 4, 4),
        depths: Sequence[int] = (3, 4, 6, 3),
        sr_ratios: Sequence[int] | int = (8, 4, 2, 1),
        wss: Sequence[int] | int | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        patch_size: int = 4,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: str = "gelu",
        arch: str | None = None,
    ) -> None:
        super().__init__()
        stages = len(depths)
        embed_dims = _per_stage("embed_dims", embed_dims, stages)
        num_heads = _per_stage("num_heads", num_heads, stages)
        mlp_ratios = _per_stage("mlp_ratios", mlp_ratios, stages)
        sr_ratios = _per_stage("sr_ratios", sr_ratios, stages)
        wss = None if wss is None else _per_stage("wss", wss, stages)
        if act_layer not in ACT_LAYERS:
            raise ValueError(f"act_layer {act_layer!r} is not one of {sorted(ACT_LAYERS)}")
        self.arch = arch
        self.model_args: dict[str, Any] = {
            "embed_dims": list(embed_dims),
            "num_heads": list(num_heads),
            "mlp_ratios": list(mlp_ratios),
            "depths": list(depths),
            "sr_ratios": list(sr_ratios),
            "wss": None if wss is None else list(wss),
            "num_classes": num_classes,
            "in_chans": in_chans,
            "patch_size": patch_size,
            "drop_rate": drop_rate,
            "attn_drop_rate": attn_drop_rate,
            "drop_path_rate": drop_path_rate,
            "act_layer": act_layer,
        }
        self.num_classes = num_classes
        self.depths = tuple(depths)
        self.embed_dims = embed_dims
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False

        self.patch_embeds = nn.ModuleList()
        self.pos_drops = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.pos_block = nn.ModuleList()
        # Stochastic depth grows linearly over all blocks of all stages.
        drop_path = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        first = 0
        for stage in range(stages):
            self.patch_embeds.append(
                PatchEmbed(
                    in_chans if stage == 0 else embed_dims[stage - 1],
                    embed_dims[stage],
                    patch_size if stage == 0 else 2,
                )
            )
            self.pos_drops.append(nn.Dropout(drop_rate))
            self.blocks.append(
                nn.ModuleList(
                    Block(
                        embed_dims[stage],
                        num_heads[stage],
                        mlp_ratios[stage],
                        sr_ratios[stage],
                        _window_size(wss, stage, index),
                        ACT_LAYERS[act_layer],
                        drop=drop_rate,
                        attn_drop=attn_drop_rate,
                        drop_path=drop_path[first + index],
                    )
                    for index in range(depths[stage])
                )
            )
            self.pos_block.append(PosConv(embed_dims[stage]))
            first += depths[stage]
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    # Features -------------------------------------------------------------------------------

    def _run_stage(self, stage: int, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, size = self.patch_embeds[stage](x)
        x = self.pos_drops[stage](x)
        for index, block in enumerate(self.blocks[stage]):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, size, use_reentrant=False)
            else:
                x = block(x, size)
            if index == 0:
                x = self.pos_block[stage](x, size)
        return x, size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, tokens, D) normalised last-stage tokens."""
        x = _channels_last(x)
        for stage in range(len(self.depths)):
            x, size = self._run_stage(stage, x)
            if stage < len(self.depths) - 1:
                x = tokens_to_map(x, size)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs as NCHW maps at strides 4, 8, 16, 32 (timm's signature and meaning).

        `indices`: the last n stages if an int, all if None, else the stage indices to return.
        `norm` applies the final norm to the last stage's map (it is sized for it alone).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; Twins gives 'NCHW'")
        stages = len(self.depths)
        take = _take_indices(stages, indices)
        last = max(take) if stop_early or intermediates_only else stages - 1
        intermediates = []
        x = _channels_last(x)
        for stage in range(last + 1):
            x, size = self._run_stage(stage, x)
            if stage == stages - 1:
                if stage in take:
                    intermediates.append(tokens_to_map(self.norm(x) if norm else x, size))
            else:
                x = tokens_to_map(x, size)
                if stage in take:
                    intermediates.append(x)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if last == stages - 1 else x), intermediates

    # timm-style helpers ---------------------------------------------------------------------

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.model_args["num_classes"] = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            _init_weights(self.head)

    def get_classifier(self) -> nn.Module:
        return self.head

    def no_weight_decay(self) -> set[str]:
        """Parameter names the official recipe excludes from weight decay besides biases and
        norm weights: the PEG convolutions."""
        return {name for name, _ in self.named_parameters() if name.startswith("pos_block.")}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable


def _window_size(wss: Sequence[int] | None, stage: int, index: int) -> int | None:
    """SVT: even blocks use LSA with the stage's window, odd blocks GSA. PCPVT: GSA only.
    A window of 1 means GSA, as in the official code."""
    if wss is None or index % 2 == 1 or wss[stage] == 1:
        return None
    return wss[stage]


def _take_indices(stages: int, indices: int | Sequence[int] | None) -> list[int]:
    if indices is None:
        return list(range(stages))
    if isinstance(indices, int):
        if not 0 < indices <= stages:
            raise ValueError(f"indices={indices}: ask for 1 to {stages} stages")
        return list(range(stages - indices, stages))
    take = [i % stages for i in indices]
    if any(not -stages <= i < stages for i in indices):
        raise ValueError(f"indices {list(indices)}: stage indices run from 0 to {stages - 1}")
    return take


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images in channels-last order give channels-last patch maps, which are tokens already."""
    return x.contiguous(memory_format=torch.channels_last)


def _init_weights(module: nn.Module) -> None:
    """The official initialisation."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        fan_out //= module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
