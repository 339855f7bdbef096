"""The large products outside the time loops (input projections over all T·B rows and their
gradients) through oneDNN's matmul instead of MKL's sgemm.

On the AMD EPYC this project measures on, MKL's sgemm runs its AVX2 code (about 170 GFLOP/s on
2 threads for a 3200 x 128 x 768 projection) and oneDNN's JIT-ed AVX-512 kernel about twice
as fast; torch's own ``F.linear`` on the time-major view ``x.transpose(0, 1)`` additionally
copies x first. :func:`linear` is ``F.linear`` with that product (``torch.ops.mkldnn.
_linear_pointwise``, the op Inductor calls) in plain eager float32 CPU calls, and ``F.linear``
everywhere else: float64 and bf16, other devices, small products (oneDNN's per-call set-up
costs more than it saves), CPU autocast, and whenever a transform or trace is active (compile,
export, jit tracing, torch.func, forward-mode AD, dispatch modes), so those see torch's own op.

Its backward calls :func:`linear` again (dx = g W, dWᵀ = xᵀ g), so double backward works and
runs the same product. ``RNNLAB_DENSE_DNNL=0`` / ``=1`` (read on import; tests set
:data:`SWITCH`): never / always, unset: by size.

Shapes: N rows (every leading dimension of x), I input, O output.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad


def _op() -> Any:
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


_LINEAR = _op()
# "0" never, "1" always, anything else: by size
SWITCH = os.environ.get("RNNLAB_DENSE_DNNL", "")
# multiply-adds from which oneDNN wins on 2 threads (a 3200 x 128 x 512 projection: 1.2-1.6 ms
# against MKL's 2.5-2.7 ms; its set-up, about 15 us more per call than F.linear, dominates below)
MIN_MACS = 1 << 23


_PLAIN = (Tensor, torch.nn.Parameter)  # no subclass with a __torch_function__ of its own


def _eager() -> bool:
    if torch.compiler.is_compiling():  # first: Dynamo must not see the calls below
        return False
    return (
        not torch.jit.is_tracing()
        and not torch.is_autocast_enabled("cpu")  # F.linear's bf16 under autocast, as before
        and forward_ad._current_level < 0
        and torch._C._functorch.peek_interpreter_stack() is None
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
    )


def _wanted(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    if _LINEAR is None or SWITCH == "0" or not _eager():
        return False
    for t in (x, weight) if bias is None else (x, weight, bias):
        if type(t) not in _PLAIN or t.dtype is not torch.float32 or t.device.type != "cpu":
            return False
    if x.dim() < 2 or weight.dim() != 2 or (bias is not None and bias.dim() != 1):
        return False
    if x.numel() == 0 or weight.numel() == 0:
        return False
    return SWITCH == "1" or x.numel() * weight.shape[0] >= MIN_MACS


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``: x (..., I), weight (O, I), bias (O,) -> (..., O),
    contiguous, through oneDNN where that is faster (module docstring)."""
    if _wanted(x, weight, bias):
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def addmm(bias: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``torch.addmm(bias, a, b)`` = a b + bias (CompiledCell's hoisted input projection, where
    b is the transposed weight) as :func:`linear` (a, bᵀ, bias) for a bias of one dimension."""
    if bias.dim() == 1 and a.dim() == 2 and b.dim() == 2:
        return linear(a, b.t(), bias)
    return torch.ops.aten.addmm.default(bias, a, b)


def mm(a: Tensor, b: Tensor) -> Tensor:
    """``torch.mm(a, b)`` as :func:`linear` (a, bᵀ)."""
    if a.dim() == 2 and b.dim() == 2:
        return linear(a, b.t())
    return torch.ops.aten.mm.default(a, b)


class _Linear(torch.autograd.Function):
    # plain eager only (see _wanted): a lean forward(ctx, ...) without setup_context, whose
    # inspect-based binding costs about 0.1 ms per call
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _LINEAR(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = gw = gb = None
        if need_x:
            gx = linear(g, weight.t())  # g W: (..., O) (I, O)ᵀ
        if need_w or need_b:
            g2 = g.reshape(-1, g.shape[-1])
            if need_w:
                x2 = x.reshape(-1, x.shape[-1])
                gw = linear(x2.t(), g2.t()).t()  # (xᵀ g)ᵀ: oneDNN is faster this way round
            if need_b and ctx.has_bias:
                gb = g2.sum(0)
        return gx, gw, gb
