"""The fused pointwise Triton kernels of the GPU engine and their launchers.

Each kernel is one step's pointwise work (gates, cell update, activations) over all B·H units,
forward or backward from the saved activations; the products with the weights run in cuBLAS
(torch) around them (see :mod:`rnnlab.engine.gpu.ops`). Arithmetic is float32 (float64 for
float64 tensors) whatever the storage dtype: fp16/bf16 values are loaded, upcast, computed and
rounded once on store.

Interpreter-safe by construction (``TRITON_INTERPRET=1`` runs them on CPU tensors): no
``tl.dot`` (so no dot-size or TF32 question), no libdevice (tanh is 2σ(2x) − 1, σ through
``exp``), masked loads and stores only; the launchers assert what the interpreter does not
enforce (contiguous operands, the block size, the grid limit).

Shapes: B batch, H hidden, G gate blocks present, S sigmoid gates kept as FGR state.
Activation codes are the CPU engine's (``kernels.ACT_CODES``): 0 identity, 1 tanh, 2 sigmoid,
3 relu; derivatives are taken from the activation's *output*, so backward needs no
pre-activations.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

SUPPORTED_ACTS = (0, 1, 2, 3)
_BLOCK = 256  # a power of two; a pointwise block needs no shared memory
_MAX_GRID = 2**31 - 1


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _act(x, ACT: tl.constexpr):
    if ACT == 1:
        y = 2.0 * _sigmoid(2.0 * x) - 1.0
    elif ACT == 2:
        y = _sigmoid(x)
    elif ACT == 3:
        y = tl.maximum(x, 0.0)
    else:
        y = x
    return y


@triton.jit
def _dact(y, ACT: tl.constexpr):
    """The activation's derivative written through its output y."""
    if ACT == 1:
        d = 1.0 - y * y
    elif ACT == 2:
        d = y * (1.0 - y)
    elif ACT == 3:
        d = tl.where(y > 0.0, 1.0, 0.0)
    else:
        d = y * 0.0 + 1.0
    return d


@triton.jit
def act_fwd_kernel(pre_ptr, out_ptr, N, ACT: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """out = act(pre) (may be in place)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    x = tl.load(pre_ptr + offs, mask=m, other=0.0).to(ACC)
    tl.store(out_ptr + offs, _act(x, ACT).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def act_bwd_kernel(
    g_ptr,
    rec_ptr,
    y_ptr,
    d_ptr,
    N,
    HAS_REC: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    """d = (g + rec) · act'(pre), with act' written through y = act(pre)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(ACC)
    if HAS_REC:
        g += tl.load(rec_ptr + offs, mask=m, other=0.0).to(ACC)
    y = tl.load(y_ptr + offs, mask=m, other=0.0).to(ACC)
    tl.store(d_ptr + offs, (g * _dact(y, ACT)).to(d_ptr.dtype.element_ty), mask=m)


@triton.jit
def gru_gates_kernel(a_ptr, h_ptr, gates_ptr, rh_ptr, N, H, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """GRU (reset before), first half of a step: r, z = σ(a_rz); rh = r ⊙ h(t-1).
    a (B, 2H) holds the r and z pre-activations; gates (B, 3H) gets r and z."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    b = offs // H
    j = offs % H
    r = _sigmoid(tl.load(a_ptr + b * 2 * H + j, mask=m, other=0.0).to(ACC))
    z = _sigmoid(tl.load(a_ptr + b * 2 * H + H + j, mask=m, other=0.0).to(ACC))
    h = tl.load(h_ptr + offs, mask=m, other=0.0).to(ACC)
    ty = gates_ptr.dtype.element_ty
    tl.store(gates_ptr + b * 3 * H + j, r.to(ty), mask=m)
    tl.store(gates_ptr + b * 3 * H + H + j, z.to(ty), mask=m)
    tl.store(rh_ptr + offs, (r * h).to(ty), mask=m)


@triton.jit
def gru_out_kernel(
    an_ptr,
    h_ptr,
    gates_ptr,
    out_ptr,
    N,
    H,
    ACT: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    """Second half: n = act(a_n); h(t) = z ⊙ h(t-1) + (1 - z) ⊙ n; n is saved in gates."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    b = offs // H
    j = offs % H
    n = _act(tl.load(an_ptr + offs, mask=m, other=0.0).to(ACC), ACT)
    z = tl.load(gates_ptr + b * 3 * H + H + j, mask=m, other=0.0).to(ACC)
    h = tl.load(h_ptr + offs, mask=m, other=0.0).to(ACC)
    ty = out_ptr.dtype.element_ty
    tl.store(gates_ptr + b * 3 * H + 2 * H + j, n.to(ty), mask=m)
    tl.store(out_ptr + offs, (z * h + (1.0 - z) * n).to(ty), mask=m)


@triton.jit
def gru_bwd_out_kernel(
    g_ptr,
    rec_ptr,
    gates_ptr,
    h_ptr,
    da_ptr,
    dhp_ptr,
    N,
    H,
    ACT: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    """Backward of the second half: from dh = g + rec, da_z and da_n into da (B, 3H) and the
    direct part of dh(t-1), dh ⊙ z, into dhp."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    b = offs // H
    j = offs % H
    dh = tl.load(g_ptr + offs, mask=m, other=0.0).to(ACC)
    dh += tl.load(rec_ptr + offs, mask=m, other=0.0).to(ACC)
    z = tl.load(gates_ptr + b * 3 * H + H + j, mask=m, other=0.0).to(ACC)
    n = tl.load(gates_ptr + b * 3 * H + 2 * H + j, mask=m, other=0.0).to(ACC)
    h = tl.load(h_ptr + offs, mask=m, other=0.0).to(ACC)
    ty = da_ptr.dtype.element_ty
    tl.store(da_ptr + b * 3 * H + H + j, (dh * (h - n) * z * (1.0 - z)).to(ty), mask=m)
    tl.store(da_ptr + b * 3 * H + 2 * H + j, (dh * (1.0 - z) * _dact(n, ACT)).to(ty), mask=m)
    tl.store(dhp_ptr + offs, (dh * z).to(dhp_ptr.dtype.element_ty), mask=m)


@triton.jit
def gru_bwd_gates_kernel(
    drh_ptr, gates_ptr, h_ptr, da_ptr, dhp_ptr, N, H, BLOCK: tl.constexpr, ACC: tl.constexpr
):
    """Backward of the first half: d(rh) gives da_r and adds d(rh) ⊙ r to dh(t-1)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    b = offs // H
    j = offs % H
    drh = tl.load(drh_ptr + offs, mask=m, other=0.0).to(ACC)
    r = tl.load(gates_ptr + b * 3 * H + j, mask=m, other=0.0).to(ACC)
    h = tl.load(h_ptr + offs, mask=m, other=0.0).to(ACC)
    dhp = tl.load(dhp_ptr + offs, mask=m, other=0.0).to(ACC)
    tl.store(da_ptr + b * 3 * H + j, (drh * h * r * (1.0 - r)).to(da_ptr.dtype.element_ty), mask=m)
    tl.store(dhp_ptr + offs, (dhp + drh * r).to(dhp_ptr.dtype.element_ty), mask=m)


def launch(kernel: Any, n: int, *args: Any, **meta: Any) -> None:
    """Launch a pointwise kernel over n units, checking what the interpreter does not: every
    tensor operand contiguous (a stride-0 expanded gradient reads garbage silently), one device,
    the grid within CUDA's limit."""
    devices = set()
    for k, a in enumerate(args):
        if isinstance(a, Tensor):
            if not a.is_contiguous():
                raise AssertionError(f"launch {kernel}: operand {k} is not contiguous")
            devices.add(a.device)
    if len(devices) > 1:
        raise AssertionError(f"launch {kernel}: operands on several devices {devices}")
    grid = triton.cdiv(n, _BLOCK)
    if not 0 < grid <= _MAX_GRID:
        raise AssertionError(f"launch {kernel}: grid {grid} outside (0, {_MAX_GRID}]")
    acc = tl.float64 if any(
        isinstance(a, Tensor) and a.dtype == torch.float64 for a in args
    ) else tl.float32  # fmt: skip
    kernel[(grid,)](*args, BLOCK=_BLOCK, ACC=acc, **meta)


def check_dtype(t: Tensor) -> None:
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise AssertionError(f"triton kernels: unsupported dtype {t.dtype}")
