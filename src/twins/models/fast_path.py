"""The CPU fast path of a transformer block, kept beside the plain layers (as dinov2 keeps its
memory-efficient attention beside its attention): the parameters and the math of
`Block.forward`, run through the fused oneDNN kernels of `twins.models.fused`:

- each residual add is done by its branch's output projection (attention `proj`, MLP `fc2`),
  inside the matmul;
- the MLP runs in cache-sized chunks with its bias and GELU fused (`fused.mlp`);
- projections with thin inputs get their bias fused (`fused.linear`);
- GSA without spatial reduction computes q, k and v in one matmul (`q` and `kv` joined at run
  time, so the parameters keep their official names).

`Block.forward` hands itself over when `applies(block, x)`. The block runs its plain layers
instead where fused kernels would be wrong or in the way: under TorchScript (the hook is compiled
out), torch.fx tracing, torch.export, torch.jit.trace, torch.func transforms and autocast; with
layers swapped by quantization (`torch.ao.quantization.quantize_dynamic`) or replaced by the user;
on other devices and dtypes; and in training while dropout is on (its mask sits between the
matmul and the add). Stochastic depth keeps the fast path, without the fused residual add.

The switch: `create_model(..., fast_path=False)` or `model.set_fast_path(False)`; the
environment variable TWINS_FAST_PATH=0 makes "off" the default of the models built afterwards.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from twins.errors import TwinsError
from twins.models import fused
from twins.models.gsa import GlobalSubSampleAttention
from twins.models.lsa import LocallyGroupedAttention
from twins.models.mlp import Mlp

ENVIRONMENT_VARIABLE = "TWINS_FAST_PATH"
_SETTINGS = {"1": True, "on": True, "true": True, "0": False, "off": False, "false": False}


def enabled_by_default() -> bool:
    """The default of `create_model(..., fast_path=None)`: on unless TWINS_FAST_PATH says off."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower()
    if value not in _SETTINGS:
        raise TwinsError(
            f"{ENVIRONMENT_VARIABLE}={value!r} is not a setting: use 1 (fused CPU kernels where "
            "they apply) or 0 (the plain layers everywhere)",
            argument="fast_path",
        )
    return _SETTINGS[value]


def applies(block: nn.Module, x: torch.Tensor) -> bool:
    """True where `block` (a `twins.models.block.Block`) may run `block_forward` on `x`."""
    return (
        block.use_fast_path
        and fused.serves(x)
        and not _graph_capture_or_transform()
        and _plain_layers(block)
        and not _dropout_on(block)
    )


def block_forward(block: nn.Module, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`Block.forward` through the fused kernels."""
    if block.training and block.drop_path.drop_prob > 0:
        normed = block.norm1(x)
        with _profiled(block.attn):
            branch = _attention(block.attn, normed, size)
        x = x + block.drop_path(branch)
        normed = block.norm2(x)
        with _profiled(block.mlp):
            branch = _mlp(block.mlp, normed)
        return x + block.drop_path(branch)
    normed = block.norm1(x)
    with _profiled(block.attn):
        x = _attention(block.attn, normed, size, residual=x)
    normed = block.norm2(x)
    with _profiled(block.mlp):
        return _mlp(block.mlp, normed, residual=x)


def _profiled(layer: nn.Module) -> contextlib.AbstractContextManager:
    """While torch.profiler records: a range named as a profile's hooks name the layer's own
    call (`nn.Module: <class>`), so the fused kernels count to the layer they stand in for."""
    # The flag first: one attribute read per call while no profiler runs.
    if not torch.autograd.profiler._is_profiler_enabled or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.autograd.profiler.record_function(f"nn.Module: {type(layer).__name__}")


def _attention(
    attn: nn.Module,
    x: torch.Tensor,
    size: tuple[int, int],
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`residual + attn(x, size)`: the module's own steps, with fused projections."""
    if isinstance(attn, LocallyGroupedAttention):
        qkv = fused.linear(attn.to_windows(x, size), attn.qkv.weight, attn.qkv.bias)
        x = attn.from_windows(attn.attend(qkv, size), size)
    elif attn.sr is None:
        # Keys and values come from the same tokens as the queries: one matmul for all three.
        dim = x.shape[-1]
        weight = torch.cat([attn.q.weight, attn.kv.weight])
        bias = torch.cat([attn.q.bias, attn.kv.bias])
        q, kv = fused.linear(x, weight, bias).split([dim, 2 * dim], dim=-1)
        x = attn.attend(q, kv)
    else:
        q = fused.linear(x, attn.q.weight, attn.q.bias)
        kv = fused.linear(attn.reduce(x, size), attn.kv.weight, attn.kv.bias)
        x = attn.attend(q, kv)
    return fused.linear(x, attn.proj.weight, attn.proj.bias, residual)


def _mlp(mlp: Mlp, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    return fused.mlp(x, mlp.fc1, mlp.fc2, mlp.act.approximate, residual)


def _graph_capture_or_transform() -> bool:
    """Contexts that must see the standard ops: exported and traced graphs, autocast (its
    casts are per op), torch.func transforms. torch.compile takes the custom ops whole."""
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return True
    if torch.is_autocast_enabled("cpu"):
        return True
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def _plain_layers(block: nn.Module) -> bool:
    """The block still holds the layers it was built with (not quantized or replaced ones)."""
    attn, mlp = block.attn, block.mlp
    if type(attn) is GlobalSubSampleAttention:
        linears = [attn.q, attn.kv, attn.proj]
    elif type(attn) is LocallyGroupedAttention:
        linears = [attn.qkv, attn.proj]
    else:
        return False
    if type(mlp) is not Mlp or type(mlp.act) is not nn.GELU:
        return False
    return all(type(layer) is nn.Linear for layer in [*linears, mlp.fc1, mlp.fc2])


def _dropout_on(block: nn.Module) -> bool:
    """Dropout after a projection sits between its matmul and the residual add: nothing to fuse.
    (Attention dropout is inside the attention and stays.)"""
    return block.training and (block.attn.proj_drop.p > 0 or block.mlp.drop.p > 0)
