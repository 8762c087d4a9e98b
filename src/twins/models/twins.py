"""Twins-PCPVT and Twins-SVT (Chu et al., "Twins: Revisiting the Design of Spatial Attention in
Vision Transformers", NeurIPS 2021), one parameterised class.

A four-stage pyramid: each stage embeds patches (stride 4, then 2), runs its blocks, and
applies the PEG once, after the first block. PCPVT uses global sub-sampled attention in every
block; SVT (`wss` given) alternates locally-grouped attention (even blocks) and global
sub-sampled attention (odd blocks). Parameter names, initialisation and stochastic depth follow
the official code (github.com/Meituan-AutoML/Twins), so official and timm state dicts load
with `strict=True`. The timm-style methods (`forward_intermediates`, `feature_info`,
`group_matcher`, `prune_intermediate_layers`, `reset_classifier`) follow timm's `twins.py`.
"""

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from twins.models import arguments
from twins.models.arguments import ACT_LAYERS, GLOBAL_POOLS, STAGE_ARGS
from twins.models.block import Block
from twins.models.fast_path import enabled_by_default
from twins.models.patch_embed import PatchEmbed
from twins.models.peg import PosConv
from twins.models.tokens import tokens_to_map


class Twins(nn.Module):
    # What the model does, as its files record it (a segmenter's or detector's says its own).
    task = "classify"

    def __init__(
        self,
        embed_dims: Sequence[int] | int = (64, 128, 320, 512),
        num_heads: Sequence[int] | int = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] | float = (8, 8, 4, 4),
        depths: Sequence[int] = (3, 4, 6, 3),
        sr_ratios: Sequence[int] | int = (8, 4, 2, 1),
        wss: Sequence[int] | int | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        patch_size: int = 4,
        drop_rate: float = 0.0,
        pos_drop_rate: float | None = None,
        proj_drop_rate: float | None = None,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: str = "gelu",
        global_pool: str = "avg",
        arch: str | None = None,
        fast_path: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Arguments as in the official code; `drop_rate` is the dropout after the patch
        embeddings, the projections and before the head, unless `pos_drop_rate` or
        `proj_drop_rate` (timm's names) set the first two apart. `fast_path`: fused CPU kernels
        where they apply (`twins.models.fast_path`; None: on unless TWINS_FAST_PATH=0).
        `device` and `dtype` of the parameters ("meta" allocates nothing)."""
        super().__init__()
        stages = arguments.stage_count(depths)
        embed_dims = arguments.per_stage("embed_dims", embed_dims, stages)
        num_heads = arguments.per_stage("num_heads", num_heads, stages)
        mlp_ratios = arguments.per_stage("mlp_ratios", mlp_ratios, stages, integer=False)
        sr_ratios = arguments.per_stage("sr_ratios", sr_ratios, stages)
        wss = None if wss is None else arguments.per_stage("wss", wss, stages)
        arguments.check_heads(embed_dims, num_heads)
        rates = {
            name: arguments.check_rate(name, value)
            for name, value in (
                ("drop_rate", drop_rate),
                ("pos_drop_rate", drop_rate if pos_drop_rate is None else pos_drop_rate),
                ("proj_drop_rate", drop_rate if proj_drop_rate is None else proj_drop_rate),
                ("attn_drop_rate", attn_drop_rate),
                ("drop_path_rate", drop_path_rate),
            )
        }
        gelu = ACT_LAYERS[arguments.check_choice("act_layer", act_layer, list(ACT_LAYERS))]
        self.global_pool = arguments.check_choice("global_pool", global_pool, GLOBAL_POOLS)
        num_classes = arguments.check_count("num_classes", num_classes, 0)
        in_chans = arguments.check_count("in_chans", in_chans, 1)
        patch_size = arguments.check_count("patch_size", patch_size, 1)
        fast_path = enabled_by_default() if fast_path is None else bool(fast_path)

        self.arch = arch
        # What rebuilds this model: `Twins(**model_args)` or `create_model(arch, **model_args)`.
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
            "pos_drop_rate": pos_drop_rate,
            "proj_drop_rate": proj_drop_rate,
            "attn_drop_rate": attn_drop_rate,
            "drop_path_rate": drop_path_rate,
            "act_layer": act_layer,
            "global_pool": global_pool,
        }
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.smallest_side = smallest_side(patch_size, sr_ratios)
        self.depths = tuple(depths)
        self.embed_dims = embed_dims
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False
        # timm's feature metadata: the output of each stage, its width and its stride.
        self.feature_info = [
            {"module": f"blocks.{i}", "num_chs": embed_dims[i], "reduction": patch_size * 2**i}
            for i in range(stages)
        ]

        with torch.device(device) if device is not None else contextlib.nullcontext():
            self._build_stages(
                embed_dims, num_heads, mlp_ratios, sr_ratios, wss, list(depths),
                in_chans, patch_size, gelu, rates, fast_path,
            )  # fmt: skip
            self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.apply(_init_weights)
        if dtype is not None:
            self.to(dtype)

    def _build_stages(
        self,
        embed_dims: list[int],
        num_heads: list[int],
        mlp_ratios: list[float],
        sr_ratios: list[int],
        wss: list[int] | None,
        depths: list[int],
        in_chans: int,
        patch_size: int,
        gelu: type[nn.Module],
        rates: dict[str, float],
        fast_path: bool,
    ) -> None:
        """Each stage's patch embedding, blocks and PEG (`pos_block`), in the official order."""
        stages = len(depths)
        # Stochastic depth grows linearly over all blocks of all stages.
        drop_path = torch.linspace(0, rates["drop_path_rate"], sum(depths), device="cpu").tolist()
        self.patch_embeds = nn.ModuleList()
        self.pos_drops = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.pos_block = nn.ModuleList()
        first = 0
        for stage in range(stages):
            self.patch_embeds.append(
                PatchEmbed(
                    in_chans if stage == 0 else embed_dims[stage - 1],
                    embed_dims[stage],
                    patch_size if stage == 0 else 2,
                )
            )
            self.pos_drops.append(nn.Dropout(rates["pos_drop_rate"]))
            self.blocks.append(
                nn.ModuleList(
                    Block(
                        embed_dims[stage],
                        num_heads[stage],
                        mlp_ratios[stage],
                        sr_ratios[stage],
                        _window_size(wss, stage, index),
                        gelu,
                        proj_drop=rates["proj_drop_rate"],
                        attn_drop=rates["attn_drop_rate"],
                        drop_path=drop_path[first + index],
                        use_fast_path=fast_path,
                    )
                    for index in range(depths[stage])
                )
            )
            self.pos_block.append(PosConv(embed_dims[stage]))
            first += depths[stage]

    # Features -------------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, tokens, D) normalised last-stage tokens."""
        x, _ = self._run_stages(x, [], len(self.blocks) - 1, False)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens -> logits (`pre_logits`: the pooled features); tokens as they are without
        pooling (`global_pool=""`)."""
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs as contiguous NCHW maps at strides 4, 8, 16, 32 (timm's signature and
        meaning).

        `indices`: the last n stages if an int, all if None, else the stage indices to return.
        `norm` applies the final norm to the last stage's map (it is sized for it alone).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; Twins gives 'NCHW'")
        take = _take_indices(len(self.blocks), indices)
        last = max(take) if stop_early or intermediates_only else len(self.blocks) - 1
        x, intermediates = self._run_stages(x, take, last, norm)
        return intermediates if intermediates_only else (x, intermediates)

    def _run_stages(
        self, x: torch.Tensor, take: list[int], last: int, norm: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stages 0 to `last` on images `x`: the output (normalised tokens after the last
        stage, else a map) and the NCHW maps of the stages in `take`."""
        check_input(x, self.in_chans, self.smallest_side)
        intermediates: list[torch.Tensor] = []
        final = len(self.blocks) - 1
        # Channels-last images give channels-last patch maps, which are tokens already.
        x = x.contiguous(memory_format=torch.channels_last)
        # (TorchScript iterates over module lists only as a whole, and its zip has no strict=.)
        for stage, (embed, drop, blocks, peg) in enumerate(
            zip(self.patch_embeds, self.pos_drops, self.blocks, self.pos_block)  # noqa: B905
        ):
            if stage <= last:
                x, size = embed(x)
                x = drop(x)
                for index, block in enumerate(blocks):
                    if torch.jit.is_scripting():
                        x = block(x, size)
                    else:
                        x = self._run_block(block, x, size)
                    if index == 0:
                        x = peg(x, size)
                if stage < final:
                    x = tokens_to_map(x, size)
                    if stage in take:
                        intermediates.append(x.contiguous())
                else:  # the final norm is sized for the last stage only
                    normed = self.norm(x)
                    if stage in take:
                        tokens = normed if norm else x
                        intermediates.append(tokens_to_map(tokens, size).contiguous())
                    x = normed
        return x, intermediates

    @torch.jit.ignore
    def _run_block(self, block: nn.Module, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, size, use_reentrant=False)
        return block(x, size)

    # timm-style helpers ---------------------------------------------------------------------

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for `num_classes` (0: none, `forward` gives the pooled features);
        `global_pool` "avg" or "" (no pooling: `forward` gives the tokens)."""
        num_classes = arguments.check_count("num_classes", num_classes, 0)
        if global_pool is not None:
            self.global_pool = arguments.check_choice("global_pool", global_pool, GLOBAL_POOLS)
            self.model_args["global_pool"] = global_pool
        self.num_classes = num_classes
        self.model_args["num_classes"] = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        _init_weights(self.head)
        reference = next(self.parameters(), None)  # the new head goes where the model is
        if reference is not None:
            self.head.to(reference.device, reference.dtype)
        self.head.train(self.training)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names the official recipe excludes from weight decay besides biases and
        norm weights: the PEG convolutions."""
        return {name for name, _ in self.named_parameters() if name.startswith("pos_block.")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups (layer-wise lr decay, `timm.optim.param_groups_layer_decay`):
        the stem, then each block in order (each stage's patch embedding and PEG with its first
        block; `coarse`: whole stages), the final norm last; the head is ungrouped."""
        if coarse:
            blocks = [(r"^(?:blocks|patch_embeds|pos_block)\.(\d+)", None), (r"^norm", (99999,))]
        else:
            blocks = [
                (r"^blocks\.(\d+)\.(\d+)", None),
                (r"^(?:patch_embeds|pos_block)\.(\d+)", (0,)),
                (r"^norm", (99999,)),
            ]
        return {"stem": r"^patch_embeds.0", "blocks": blocks}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def set_fast_path(self, enable: bool = True) -> None:
        """Run blocks through the fused CPU kernels where they apply, or always plain."""
        for block in self.modules():
            if isinstance(block, Block):
                block.use_fast_path = enable

    @torch.jit.ignore
    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last of `indices` (timm's meaning): the model then serves
        `forward_intermediates` for them. Returns the stage indices taken."""
        take = _take_indices(len(self.blocks), indices)
        keep = max(take) + 1
        pruned_end = keep < len(self.blocks)
        for name in ("patch_embeds", "pos_drops", "blocks", "pos_block"):
            setattr(self, name, getattr(self, name)[:keep])
        self.depths = self.depths[:keep]
        self.embed_dims = self.embed_dims[:keep]
        self.feature_info = self.feature_info[:keep]
        for name in STAGE_ARGS:
            if self.model_args[name] is not None:
                self.model_args[name] = self.model_args[name][:keep]
        if prune_norm or pruned_end:
            self.norm = nn.Identity()  # sized for the last stage only
        if pruned_end:
            self.num_features = self.head_hidden_size = self.embed_dims[-1]
        if prune_head or pruned_end:
            self.reset_classifier(0, "")
        return take


def smallest_side(patch_size: int, sr_ratios: Sequence[int]) -> int:
    """The smallest input side a model takes: each stage's map must hold a spatial-reduction
    window (sr_ratio tokens across), the last stage one token."""
    stride = int(patch_size)
    smallest = stride
    for stage, ratio in enumerate(sr_ratios):
        smallest = max(smallest, stride * int(ratio))
        if stage < len(sr_ratios) - 1:
            stride *= 2
    return max(smallest, stride)


@torch.fx.wrap  # a leaf of fx graphs: its branches are on the input's shape
def check_input(x: torch.Tensor, in_chans: int, smallest: int) -> None:
    """Refuse what the layers would fail on with an opaque message: not (N, C, H, W), another
    channel count, or a side under the smallest the model takes. Shape reads only."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        fix = "give a batch: N x C x H x W"
        if x.dim() == 3:
            fix = "add the batch axis with x.unsqueeze(0)"
        elif x.dim() == 4:
            fix = "give images with " + str(in_chans) + " channels"
        raise ValueError(
            "Twins takes (N, "
            + str(in_chans)
            + ", H, W) images, not a tensor of shape "
            + str(list(x.shape))
            + ": "
            + fix
        )
    if x.shape[2] < smallest or x.shape[3] < smallest:
        raise ValueError(
            "this model takes images of at least "
            + str(smallest)
            + " x "
            + str(smallest)
            + " pixels, not "
            + str(x.shape[2])
            + " x "
            + str(x.shape[3])
            + ": resize or pad them"
        )


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
    if any(not -stages <= i < stages for i in indices):
        raise ValueError(f"indices {list(indices)}: stage indices run from 0 to {stages - 1}")
    return [i % stages for i in indices]


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
