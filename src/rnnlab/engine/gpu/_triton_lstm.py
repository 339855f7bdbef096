"""The LSTM's fused pointwise step, forward and backward, for every variant of Greff et al.
without projection: peepholes, absent input / forget / output gates (the constant 1), coupled
input-forget (f = 1 - i), other activations, and the full gate recurrence (FGR).

Which gates exist is compile-time (``tl.constexpr``), so each variant is its own specialised
kernel with no branches at run time. Arithmetic is float32; see ``_triton_kernels``.

Shapes: B batch, H cells, G gate blocks present (order i, f, g, o, absent ones left out),
S sigmoid gates kept as the FGR state (order i, f, o). A block index K* / S* of -1 means the
gate is absent.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_kernels import _act, _dact, _sigmoid


@triton.jit
def lstm_fwd_kernel(
    pre_ptr,  # (B, G·H): the pre-activations in, the gate activations out (saved for backward)
    rec_ptr,  # (B, S·H): FGR's gate recurrence W_gg [i; f; o](t-1), else unused
    cp_ptr,  # (B, H) c(t-1)
    c_ptr,  # (B, H) c(t) out
    y_ptr,  # (B, H) y(t) out
    gs_ptr,  # (B, S·H) FGR's [i; f; o](t) out, else unused
    pci_ptr,
    pcf_ptr,
    pco_ptr,  # peepholes (H,), unused when absent
    N,
    H,
    G: tl.constexpr,
    KI: tl.constexpr,
    KF: tl.constexpr,
    KG: tl.constexpr,
    KO: tl.constexpr,
    S: tl.constexpr,
    SI: tl.constexpr,
    SF: tl.constexpr,
    SO: tl.constexpr,
    COUPLED: tl.constexpr,
    PI: tl.constexpr,
    PF: tl.constexpr,
    PO: tl.constexpr,
    FGR: tl.constexpr,
    ACT: tl.constexpr,
    CACT: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    b = offs // H
    j = offs % H
    row = pre_ptr + b * G * H + j
    ty = c_ptr.dtype.element_ty
    cp = tl.load(cp_ptr + offs, mask=m, other=0.0).to(ACC)
    one = cp * 0.0 + 1.0
    i = one
    if KI >= 0:
        a = tl.load(row + KI * H, mask=m, other=0.0).to(ACC)
        if FGR:
            a += tl.load(rec_ptr + b * S * H + SI * H + j, mask=m, other=0.0).to(ACC)
        if PI:
            a += tl.load(pci_ptr + j, mask=m, other=0.0).to(ACC) * cp
        i = _sigmoid(a)
        tl.store(row + KI * H, i.to(ty), mask=m)
    f = one
    if KF >= 0:
        a = tl.load(row + KF * H, mask=m, other=0.0).to(ACC)
        if FGR:
            a += tl.load(rec_ptr + b * S * H + SF * H + j, mask=m, other=0.0).to(ACC)
        if PF:
            a += tl.load(pcf_ptr + j, mask=m, other=0.0).to(ACC) * cp
        f = _sigmoid(a)
        tl.store(row + KF * H, f.to(ty), mask=m)
    elif COUPLED:
        f = 1.0 - i
    g = _act(tl.load(row + KG * H, mask=m, other=0.0).to(ACC), ACT)
    tl.store(row + KG * H, g.to(ty), mask=m)
    c = f * cp + i * g
    o = one
    if KO >= 0:
        a = tl.load(row + KO * H, mask=m, other=0.0).to(ACC)
        if FGR:
            a += tl.load(rec_ptr + b * S * H + SO * H + j, mask=m, other=0.0).to(ACC)
        if PO:
            a += tl.load(pco_ptr + j, mask=m, other=0.0).to(ACC) * c
        o = _sigmoid(a)
        tl.store(row + KO * H, o.to(ty), mask=m)
    tl.store(c_ptr + offs, c.to(ty), mask=m)
    tl.store(y_ptr + offs, (o * _act(c, CACT)).to(ty), mask=m)
    if FGR:
        srow = gs_ptr + b * S * H + j
        if SI >= 0:
            tl.store(srow + SI * H, i.to(ty), mask=m)
        if SF >= 0:
            tl.store(srow + SF * H, f.to(ty), mask=m)
        if SO >= 0:
            tl.store(srow + SO * H, o.to(ty), mask=m)


@triton.jit
def lstm_bwd_kernel(
    gy_ptr,  # (B, H) dL/dy(t) from outside the recurrence
    ry_ptr,  # (B, H) dL/dy(t) through step t+1 (da(t+1) U)
    gc_ptr,  # (B, H) dL/dc(t) from outside
    rc_ptr,  # (B, H) dL/dc(t) through step t+1 in, dL/dc(t-1) through this step out
    ggs_ptr,  # (B, S·H) FGR: dL/d[i; f; o](t) from outside
    rgs_ptr,  # (B, S·H) FGR: through step t+1 (dsig(t+1) W_gg)
    acts_ptr,  # (B, G·H) the saved gate activations of step t
    cp_ptr,
    c_ptr,  # c(t-1), c(t)
    pci_ptr,
    pcf_ptr,
    pco_ptr,
    da_ptr,  # (B, G·H) out: the pre-activation gradients (the input projection's gradient)
    ds_ptr,  # (B, S·H) out, FGR: the sigmoid gates' pre-activation gradients
    dp_ptr,  # (3, B, H) out: the peepholes' per-unit terms, summed over B and T by the caller
    N,
    H,
    G: tl.constexpr,
    KI: tl.constexpr,
    KF: tl.constexpr,
    KG: tl.constexpr,
    KO: tl.constexpr,
    S: tl.constexpr,
    SI: tl.constexpr,
    SF: tl.constexpr,
    SO: tl.constexpr,
    COUPLED: tl.constexpr,
    PI: tl.constexpr,
    PF: tl.constexpr,
    PO: tl.constexpr,
    FGR: tl.constexpr,
    ACT: tl.constexpr,
    CACT: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    b = offs // H
    j = offs % H
    row = acts_ptr + b * G * H + j
    drow = da_ptr + b * G * H + j
    ty = da_ptr.dtype.element_ty
    cp = tl.load(cp_ptr + offs, mask=m, other=0.0).to(ACC)
    c = tl.load(c_ptr + offs, mask=m, other=0.0).to(ACC)
    dy = tl.load(gy_ptr + offs, mask=m, other=0.0).to(ACC)
    dy += tl.load(ry_ptr + offs, mask=m, other=0.0).to(ACC)
    dc = tl.load(gc_ptr + offs, mask=m, other=0.0).to(ACC)
    dc += tl.load(rc_ptr + offs, mask=m, other=0.0).to(ACC)
    one = cp * 0.0 + 1.0
    zero = cp * 0.0
    sc = _act(c, CACT)
    i = one
    if KI >= 0:
        i = tl.load(row + KI * H, mask=m, other=0.0).to(ACC)
    f = one
    if KF >= 0:
        f = tl.load(row + KF * H, mask=m, other=0.0).to(ACC)
    elif COUPLED:
        f = 1.0 - i
    g = tl.load(row + KG * H, mask=m, other=0.0).to(ACC)
    o = one
    dao = zero
    if KO >= 0:
        o = tl.load(row + KO * H, mask=m, other=0.0).to(ACC)
        do = dy * sc
        if FGR:
            do += tl.load(ggs_ptr + b * S * H + SO * H + j, mask=m, other=0.0).to(ACC)
            do += tl.load(rgs_ptr + b * S * H + SO * H + j, mask=m, other=0.0).to(ACC)
        dao = do * o * (1.0 - o)
        tl.store(drow + KO * H, dao.to(ty), mask=m)
    dc += dy * o * _dact(sc, CACT)
    if PO:
        dc += dao * tl.load(pco_ptr + j, mask=m, other=0.0).to(ACC)
        tl.store(dp_ptr + 2 * N + offs, (dao * c).to(ty), mask=m)
    dcp = dc * f
    tl.store(drow + KG * H, (dc * i * _dact(g, ACT)).to(ty), mask=m)
    dai = zero
    if KI >= 0:
        di = dc * g
        if COUPLED:
            di -= dc * cp  # f = 1 - i
        if FGR:
            di += tl.load(ggs_ptr + b * S * H + SI * H + j, mask=m, other=0.0).to(ACC)
            di += tl.load(rgs_ptr + b * S * H + SI * H + j, mask=m, other=0.0).to(ACC)
        dai = di * i * (1.0 - i)
        tl.store(drow + KI * H, dai.to(ty), mask=m)
        if PI:
            dcp += dai * tl.load(pci_ptr + j, mask=m, other=0.0).to(ACC)
            tl.store(dp_ptr + offs, (dai * cp).to(ty), mask=m)
    daf = zero
    if KF >= 0:
        df = dc * cp
        if FGR:
            df += tl.load(ggs_ptr + b * S * H + SF * H + j, mask=m, other=0.0).to(ACC)
            df += tl.load(rgs_ptr + b * S * H + SF * H + j, mask=m, other=0.0).to(ACC)
        daf = df * f * (1.0 - f)
        tl.store(drow + KF * H, daf.to(ty), mask=m)
        if PF:
            dcp += daf * tl.load(pcf_ptr + j, mask=m, other=0.0).to(ACC)
            tl.store(dp_ptr + N + offs, (daf * cp).to(ty), mask=m)
    tl.store(rc_ptr + offs, dcp.to(ty), mask=m)
    if FGR:
        srow = ds_ptr + b * S * H + j
        if SI >= 0:
            tl.store(srow + SI * H, dai.to(ty), mask=m)
        if SF >= 0:
            tl.store(srow + SF * H, daf.to(ty), mask=m)
        if SO >= 0:
            tl.store(srow + SO * H, dao.to(ty), mask=m)


__all__ = ["lstm_bwd_kernel", "lstm_fwd_kernel", "triton"]
