"""Linear layers with their bias, GELU and residual add fused into oneDNN matmuls on CPU.

Why: a plain `F.linear` on CPU first copies the broadcast bias into a fresh output, then adds
the matmul to it (BLAS `beta=1`); a GELU or a residual add then reads and writes the whole
output again, and each of these tensors is fresh memory the kernel has to fault in. On the
large token maps of the first stages these passes cost as much as the matmuls (PCPVT-S,
batch 16: bias copies 15% and the exact GELU 18% of the forward time). oneDNN's matmul
applies the bias, the GELU (exact or tanh) and the add as post-ops while the output tile is
still in cache; the arithmetic is the same, in the same order. It is the kernel that
torch.compile's CPU backend itself emits for these patterns (`mkldnn._linear_pointwise`),
there only for weights frozen into the graph.

MLP in chunks: each token's MLP is independent of the others, so the hidden activations (8x
the width in stages 1-2) are computed a few thousand rows at a time and never leave the cache.
In training (stages 1-2) the forward keeps only its input, and the backward recomputes each
chunk's hidden activations.

The kernels are wrapped as custom ops (`twins::linear`, `twins::mlp`, `twins::mlp_backward`)
with shape functions and their own backward, so torch.compile takes them whole. They serve plain
CPU tensors in float32, or bfloat16 where the CPU has oneDNN's bfloat16 kernels (`serves`);
elsewhere, and for products too small to gain, each function here is the plain composition of
`F.linear`, `F.gelu` and `+`. When a block may use them at all (not under export, tracing,
autocast, ...) is `twins.models.fast_path`'s call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_ONEDNN_AVAILABLE = _ONEDNN_LINEAR is not None and torch.backends.mkldnn.is_available()


def _onednn_bf16_supported() -> bool:
    # oneDNN's bfloat16 inner product needs AVX-512 (BF16) or AMX: on an AVX2-only CPU it
    # refuses to build the primitive, and F.linear (which converts) must serve instead.
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


_ONEDNN_DTYPES = (torch.float32, torch.bfloat16) if _onednn_bf16_supported() else (torch.float32,)

# Below this many output elements a oneDNN call costs more (about 50 us to set up) than the
# passes it saves: batch-1 layers of the last stages run faster through F.linear.
_MIN_OUTPUT_ELEMENTS = 1 << 19

# Hidden elements of one MLP chunk per thread: about 4 MiB of float32 per core stays in cache.
# (Per thread, so that more threads mean fewer chunks, not smaller shares of one.)
_MLP_CHUNK_ELEMENTS = 1 << 20


def _chunk_rows(hidden_features: int) -> int:
    return max(1, _MLP_CHUNK_ELEMENTS * torch.get_num_threads() // hidden_features)


# Where oneDNN beats BLAS without a fused add: products with a thin inner dimension, which are
# bound by memory traffic. Compute-bound ones (stages 3-4) run as fast or faster through BLAS.
_THIN_IN_FEATURES = 128

# Training MLPs with a hidden tensor this large (stages 1-2) are run chunk by chunk; smaller
# ones are compute-bound, and the unchunked matmuls are faster there.
_CHUNKED_TRAINING_ELEMENTS = 1 << 22


def serves(x: torch.Tensor) -> bool:
    """True where the kernels take `x`: oneDNN is there and `x` is a plain float32 (or, where
    supported, bfloat16) CPU tensor (not a subclass, not an fx proxy)."""
    return (
        _ONEDNN_AVAILABLE
        and type(x) is torch.Tensor
        and x.device.type == "cpu"
        and x.dtype in _ONEDNN_DTYPES
    )


def onednn_eligible(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where the fused oneDNN kernels serve `F.linear(x, weight)` and gain (module notes)."""
    return (
        serves(x)
        and weight.dtype == x.dtype
        and x.numel() // x.shape[-1] * weight.shape[0] >= _MIN_OUTPUT_ELEMENTS
    )


def _custom_op_needed(*tensors: torch.Tensor | None) -> bool:
    """The custom op (rather than a direct call) when autograd or a compiler has to see it."""
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return grad or torch.compiler.is_compiling()


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`residual + F.linear(x, weight, bias)` (without `residual` when None)."""
    thin = x.shape[-1] <= _THIN_IN_FEATURES
    if not onednn_eligible(x, weight) or (residual is None and not thin):
        y = F.linear(x, weight, bias)
        return y if residual is None else residual + y
    if _custom_op_needed(x, weight, bias, residual):
        return _linear_op(x, weight, bias, residual)
    return _linear_forward(x, weight, bias, residual)


def mlp(
    x: torch.Tensor,
    fc1: nn.Linear,
    fc2: nn.Linear,
    approximate: str,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`residual + fc2(gelu(fc1(x)))` (without `residual` when None); no dropout."""
    weights = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    if not onednn_eligible(x, fc1.weight):
        return linear(F.gelu(fc1(x), approximate=approximate), fc2.weight, fc2.bias, residual)
    tensors = (x, residual, *weights)
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)):
        if torch.compiler.is_compiling():
            return _mlp_op(x, *weights, residual, approximate)
        return _mlp_inference(x, *weights, residual, approximate)
    hidden_elements = x.numel() // x.shape[-1] * fc1.weight.shape[0]
    # bfloat16 weight gradients would lose precision summed chunk by chunk: no chunks.
    if x.dtype == torch.float32 and hidden_elements >= _CHUNKED_TRAINING_ELEMENTS:
        return _mlp_op(x, *weights, residual, approximate)
    hidden = F.gelu(linear(x, fc1.weight, fc1.bias), approximate=approximate)
    return linear(hidden, fc2.weight, fc2.bias, residual)


# Kernels and the custom ops around them ------------------------------------------------------


def _linear_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
) -> torch.Tensor:
    if residual is None:
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    return _ONEDNN_LINEAR.binary(x, residual, weight, bias, "add")


# The op is the eager function itself, registered; eager calls without autograd or a compiler
# skip the dispatcher and call the function directly.
_linear_op = torch.library.custom_op("twins::linear", _linear_forward, mutates_args=())


@_linear_op.register_fake
def _(x, weight, bias, residual):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_setup(ctx, inputs, output) -> None:
    x, weight, bias, residual = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None
    ctx.has_residual = residual is not None


def _linear_backward(ctx, grad: torch.Tensor):
    x, weight = ctx.saved_tensors
    grad_2d = grad.reshape(-1, grad.shape[-1])
    grad_x = grad_weight = grad_bias = grad_residual = None
    if ctx.needs_input_grad[0]:
        grad_x = grad.matmul(weight)
    if ctx.needs_input_grad[1]:
        grad_weight = grad_2d.t().mm(x.reshape(-1, x.shape[-1]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = grad_2d.sum(0)
    if ctx.has_residual and ctx.needs_input_grad[3]:
        grad_residual = grad
    return grad_x, grad_weight, grad_bias, grad_residual


_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup)


def _mlp_inference(
    x: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    residual: torch.Tensor | None,
    approximate: str,
) -> torch.Tensor:
    rows = _chunk_rows(fc1_weight.shape[0])
    x_2d = x.reshape(-1, x.shape[-1])
    residual_2d = None if residual is None else residual.reshape(-1, residual.shape[-1])
    out = x.new_empty((*x.shape[:-1], fc2_weight.shape[0]))
    out_2d = out.view(-1, out.shape[-1])
    for start in range(0, x_2d.shape[0], rows):
        chunk = slice(start, start + rows)
        hidden = _ONEDNN_LINEAR(x_2d[chunk], fc1_weight, fc1_bias, "gelu", [], approximate)
        if residual_2d is None:
            out_2d[chunk] = _ONEDNN_LINEAR(hidden, fc2_weight, fc2_bias, "none", [], "")
        else:
            out_2d[chunk] = _ONEDNN_LINEAR.binary(
                hidden, residual_2d[chunk], fc2_weight, fc2_bias, "add"
            )
    return out


# The MLP as one op, for compiled graphs and for training the memory-bound stages: the forward
# is the chunked inference one and keeps nothing but its input; the backward recomputes each
# chunk's hidden activations from it (one thin matmul more, far cheaper there than writing the
# hidden tensor out and reading it back) and sums the weight gradients over the chunks. Without
# gradients, the op runs the forward alone.


_mlp_op = torch.library.custom_op("twins::mlp", _mlp_inference, mutates_args=())


@_mlp_op.register_fake
def _(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, approximate):
    return x.new_empty((*x.shape[:-1], fc2_weight.shape[0]))


@torch.library.custom_op("twins::mlp_backward", mutates_args=())
def _mlp_backward_op(
    grad: torch.Tensor,
    x: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    approximate: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of x, fc1 weight and bias, fc2 weight and bias."""
    rows = _chunk_rows(fc1_weight.shape[0])
    grad_2d = grad.reshape(-1, grad.shape[-1])
    x_2d = x.reshape(-1, x.shape[-1])
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    grad_x_2d = grad_x.view(-1, grad_x.shape[-1])
    grad_fc1_weight = torch.zeros_like(fc1_weight)
    grad_fc1_bias = fc1_weight.new_zeros(fc1_weight.shape[0])
    grad_fc2_weight = torch.zeros_like(fc2_weight)
    for start in range(0, grad_2d.shape[0], rows):
        chunk = slice(start, start + rows)
        grad_out, x_chunk = grad_2d[chunk], x_2d[chunk]
        pre = _ONEDNN_LINEAR(x_chunk, fc1_weight, fc1_bias, "none", [], "")
        grad_fc2_weight.addmm_(grad_out.t(), F.gelu(pre, approximate=approximate))
        grad_pre = torch.ops.aten.gelu_backward(
            grad_out.mm(fc2_weight), pre, approximate=approximate
        )
        grad_fc1_weight.addmm_(grad_pre.t(), x_chunk)
        grad_fc1_bias += grad_pre.sum(0)
        torch.mm(grad_pre, fc1_weight, out=grad_x_2d[chunk])
    return grad_x, grad_fc1_weight, grad_fc1_bias, grad_fc2_weight, grad_2d.sum(0)


@_mlp_backward_op.register_fake
def _(grad, x, fc1_weight, fc1_bias, fc2_weight, approximate):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(fc1_weight),
        fc1_weight.new_empty(fc1_weight.shape[0]),
        torch.empty_like(fc2_weight),
        fc2_weight.new_empty(fc2_weight.shape[0]),
    )


def _mlp_setup(ctx, inputs, output) -> None:
    x, fc1_weight, fc1_bias, fc2_weight, _, residual, approximate = inputs
    ctx.save_for_backward(x, fc1_weight, fc1_bias, fc2_weight)
    ctx.approximate = approximate
    ctx.has_residual = residual is not None


def _mlp_backward(ctx, grad: torch.Tensor):
    x, fc1_weight, fc1_bias, fc2_weight = ctx.saved_tensors
    grads = _mlp_backward_op(grad, x, fc1_weight, fc1_bias, fc2_weight, ctx.approximate)
    return *grads, grad if ctx.has_residual else None, None


_mlp_op.register_autograd(_mlp_backward, setup_context=_mlp_setup)
