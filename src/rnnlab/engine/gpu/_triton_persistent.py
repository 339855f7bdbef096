"""A persistent Elman kernel for small H: the time loop inside the kernel, U on chip.

For a small hidden size the per-step launches (one GEMM, one pointwise kernel) cost more than
the arithmetic, so one program owns a block of BB sequences for all T steps: U (H x H, padded
to BH) is loaded once, each step is one ``tl.dot`` with the previous h plus the activation.
Backward walks the steps in reverse inside the kernel as well, accumulates its block's share of
dU = Σ_t da(t)ᵀ h(t-1) on chip and adds it to the result once with ``tl.atomic_add``.

GPU limits the interpreter does not enforce are asserted by :func:`check_limits`: dot sizes of
at least 16 (BB, BH >= 16) and U plus the accumulators within a conservative on-chip budget.
``tl.dot`` runs with ``input_precision="ieee"`` (no TF32) on float32 operands (fp16/bf16 states
are upcast first); float64 runs take the per-step path instead (``ops._persistent``). The
kernels themselves accept float64, which the interpreter tests use for an exact comparison.
Shapes: T time, B batch, H hidden.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._triton_kernels import _act, _dact

MAX_H = 64  # U (64 x 64 float32) plus dU and the block's states fit one program comfortably
_BB = 16


@triton.jit
def elman_persistent_fwd(
    gx_ptr, w_ptr, h0_ptr, hs_ptr, T, B, H,
    ACT: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    cols = tl.arange(0, BH)
    m2 = (rows[:, None] < B) & (cols[None, :] < H)
    k = tl.arange(0, BH)
    # ut[k, j] = U[j, k], so that h (BB, BH) @ ut is h Uᵀ
    ut = tl.load(w_ptr + cols[None, :] * H + k[:, None],
                 mask=(k[:, None] < H) & (cols[None, :] < H), other=0.0).to(ACC)  # fmt: skip
    at = rows[:, None] * H + cols[None, :]
    h = tl.load(h0_ptr + at, mask=m2, other=0.0).to(ACC)
    tl.store(hs_ptr + at, h.to(hs_ptr.dtype.element_ty), mask=m2)
    for t in range(T):
        pre = tl.load(gx_ptr + t * B * H + at, mask=m2, other=0.0).to(ACC)
        pre += tl.dot(h, ut, input_precision="ieee")
        h = tl.where(m2, _act(pre, ACT), 0.0)  # padded units stay 0 for the next product
        tl.store(hs_ptr + (t + 1) * B * H + at, h.to(hs_ptr.dtype.element_ty), mask=m2)


@triton.jit
def elman_persistent_bwd(
    g_ptr, hs_ptr, w_ptr, da_ptr, dw_ptr, dh0_ptr, T, B, H,
    ACT: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    cols = tl.arange(0, BH)
    m2 = (rows[:, None] < B) & (cols[None, :] < H)
    j = tl.arange(0, BH)
    mw = (j[:, None] < H) & (cols[None, :] < H)
    w = tl.load(w_ptr + j[:, None] * H + cols[None, :], mask=mw, other=0.0).to(ACC)
    at = rows[:, None] * H + cols[None, :]
    # zeros built from index arithmetic: tl.zeros is a jit function of triton's standard library,
    # which is not interpretable when triton was imported before TRITON_INTERPRET was set
    rec = (rows[:, None] * 0 + cols[None, :] * 0).to(ACC)
    dw = (j[:, None] * 0 + cols[None, :] * 0).to(ACC)
    for i in range(T):
        t = T - 1 - i
        h = tl.load(hs_ptr + (t + 1) * B * H + at, mask=m2, other=0.0).to(ACC)
        g = tl.load(g_ptr + (t + 1) * B * H + at, mask=m2, other=0.0).to(ACC)
        da = tl.where(m2, (g + rec) * _dact(h, ACT), 0.0)
        tl.store(da_ptr + t * B * H + at, da.to(da_ptr.dtype.element_ty), mask=m2)
        hp = tl.load(hs_ptr + t * B * H + at, mask=m2, other=0.0).to(ACC)
        dw += tl.dot(tl.trans(da), hp, input_precision="ieee")  # dU[j, k] += Σ_b da[b, j] h[b, k]
        rec = tl.dot(da, w, input_precision="ieee")  # dh(t-1)[b, k] = Σ_j da[b, j] U[j, k]
    g0 = tl.load(g_ptr + at, mask=m2, other=0.0).to(ACC)
    tl.store(dh0_ptr + at, (rec + g0).to(dh0_ptr.dtype.element_ty), mask=m2)
    tl.atomic_add(dw_ptr + j[:, None] * H + cols[None, :], dw, mask=mw)


def check_limits(B: int, H: int, itemsize: int) -> tuple[int, int]:
    """The block sizes (BB, BH) for a launch, after asserting what a GPU needs."""
    BH = max(16, triton.next_power_of_2(H))
    if not (_BB >= 16 and BH >= 16):
        raise AssertionError("tl.dot needs operand sizes of at least 16")
    on_chip = (2 * BH * BH + 4 * _BB * BH) * max(itemsize, 4)  # U, dU, h, da, rec, g
    if H > MAX_H or on_chip > 96 * 1024:
        raise AssertionError(f"persistent Elman kernel: H={H} too large ({on_chip} bytes)")
    return _BB, BH


def _launch_args(*ts: Tensor) -> None:
    for k, t in enumerate(ts):
        if not t.is_contiguous():
            raise AssertionError(f"persistent Elman kernel: operand {k} is not contiguous")


def forward(gx: Tensor, w_hh: Tensor, h0: Tensor, act: int) -> Tensor:
    """hs (T+1, B, H) as ``ops.elman_fwd`` computes it, in one launch."""
    T, B, H = gx.shape
    BB, BH = check_limits(B, H, gx.element_size())
    hs = gx.new_empty(T + 1, B, H)
    _launch_args(gx, w_hh, h0, hs)
    acc = tl.float64 if gx.dtype == torch.float64 else tl.float32
    elman_persistent_fwd[(triton.cdiv(B, BB),)](
        gx, w_hh, h0, hs, T, B, H, ACT=act, BB=BB, BH=BH, ACC=acc
    )
    return hs


def backward(g_hs: Tensor, hs: Tensor, w_hh: Tensor, act: int) -> tuple[Tensor, Tensor, Tensor]:
    """(dgx, dU, dh0) as ``ops.elman_bwd`` computes them, in one launch."""
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    BB, BH = check_limits(B, H, hs.element_size())
    acc_dtype = torch.float64 if hs.dtype == torch.float64 else torch.float32
    da = hs.new_empty(T, B, H)
    dw = torch.zeros(H, H, dtype=acc_dtype, device=hs.device)  # atomic adds land in ACC
    dh0 = hs.new_empty(B, H)
    _launch_args(g_hs, hs, w_hh, da, dw, dh0)
    acc = tl.float64 if hs.dtype == torch.float64 else tl.float32
    elman_persistent_bwd[(triton.cdiv(B, BB),)](
        g_hs, hs, w_hh, da, dw, dh0, T, B, H, ACT=act, BB=BB, BH=BH, ACC=acc
    )
    return da, dw.to(w_hh.dtype), dh0
