"""The GPU engine's recurrences as PyTorch operators (``torch.ops.rnnlab_gpu.*``).

Each cell family is one forward op and one backward op, joined by ``register_autograd``, each
with an explicit fake (shape-only) implementation, so compile/export see one node per
recurrence (``triton_op``/``wrap_triton`` are not used: their fake path fails on CPU). Inside an
op the time loop runs on the host: per step the product with the recurrent weights is one
cuBLAS GEMM (``torch.addmm``/``torch.mm``) and the pointwise work one fused Triton kernel; the
gradients of the weights are one GEMM over all T at the end (Σ_t da(t)ᵀ s(t-1)), not T small
ones. The input projection of all steps is computed by the caller (one GEMM, autograd).

Every operand is made contiguous first, incoming gradients included (an expanded stride-0
gradient would otherwise be read as garbage without an error). Second-order gradients are not
supported (the backward ops are not differentiable): a clear error says to use the reference
loop, as the CPU engine does.

Shapes: T time, B batch, H hidden, O Jordan output, G gate blocks, S FGR gate-state blocks.
Sequences of states carry the initial one first: hs (T+1, B, H).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _triton_kernels as K
from . import _triton_persistent as P
from ._triton_lstm import lstm_bwd_kernel, lstm_fwd_kernel

# Elman with H <= P.MAX_H runs the persistent kernel (time loop inside, U on chip) instead of
# per-step launches; a switch so the tests check both paths. Not for float64: its products
# would be a float64 tl.dot, which not every GPU compiles; the per-step path (cuBLAS) is safe.
PERSISTENT = [True]


def _persistent(t: Tensor, H: int) -> bool:
    return PERSISTENT[-1] and H <= P.MAX_H and t.dtype != torch.float64


_SECOND_ORDER = (
    "rnnlab.engine (GPU): second-order gradients through a Triton kernel are not supported; "
    "run this code under `with rnnlab.engine.disabled():` to use the differentiable "
    "reference loop"
)


def _c(*ts: Tensor) -> list[Tensor]:
    return [t.contiguous() for t in ts]


def _grad(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g.contiguous()


def _first_order() -> None:
    if torch.is_grad_enabled():
        raise RuntimeError(_SECOND_ORDER)


def _flat(s: Tensor) -> Tensor:
    """(T, B, n) -> (T·B, n) for the weight-gradient GEMMs."""
    return s.reshape(-1, s.shape[-1])


# ------------------------------------------------------------------------------- Elman ----
@torch.library.custom_op("rnnlab_gpu::elman_fwd", mutates_args=())
def elman_fwd(gx: Tensor, w_hh: Tensor, h0: Tensor, act: int) -> Tensor:
    """h(t) = act(gx(t) + U h(t-1)); returns hs (T+1, B, H) with hs[0] = h(0)."""
    gx, w_hh, h0 = _c(gx, w_hh, h0)
    T, B, H = gx.shape
    if _persistent(gx, H):
        return P.forward(gx, w_hh, h0, act)
    hs = gx.new_empty(T + 1, B, H)
    hs[0] = h0
    wt = w_hh.t()
    for t in range(T):
        torch.addmm(gx[t], hs[t], wt, out=hs[t + 1])
        K.launch(K.act_fwd_kernel, B * H, hs[t + 1], hs[t + 1], B * H, ACT=act)
    return hs


@elman_fwd.register_fake
def _(gx: Tensor, w_hh: Tensor, h0: Tensor, act: int) -> Tensor:
    return gx.new_empty(gx.shape[0] + 1, gx.shape[1], gx.shape[2])


@torch.library.custom_op("rnnlab_gpu::elman_bwd", mutates_args=())
def elman_bwd(g_hs: Tensor, hs: Tensor, w_hh: Tensor, act: int) -> tuple[Tensor, Tensor, Tensor]:
    g_hs, hs, w_hh = _c(g_hs, hs, w_hh)
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    if _persistent(hs, H):
        return P.backward(g_hs, hs, w_hh, act)
    da = hs.new_empty(T, B, H)
    rec = torch.zeros_like(hs[0])
    for t in range(T - 1, -1, -1):
        K.launch(K.act_bwd_kernel, B * H, g_hs[t + 1], rec, hs[t + 1], da[t], B * H,
                 HAS_REC=True, ACT=act)  # fmt: skip
        rec = torch.mm(da[t], w_hh)
    dw = torch.mm(_flat(da).t(), _flat(hs[:-1]))
    return da, dw, rec + g_hs[0]


@elman_bwd.register_fake
def _(g_hs: Tensor, hs: Tensor, w_hh: Tensor, act: int) -> tuple[Tensor, Tensor, Tensor]:
    return (
        hs.new_empty(hs.shape[0] - 1, *hs.shape[1:]),
        torch.empty_like(w_hh),
        hs.new_empty(hs.shape[1:]),
    )


def _elman_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(output, inputs[1])
    ctx.act = inputs[3]


def _elman_backward(ctx: Any, g_hs: Tensor) -> Any:
    _first_order()
    hs, w_hh = ctx.saved_tensors
    da, dw, dh0 = elman_bwd(_grad(g_hs, hs), hs, w_hh, ctx.act)
    return da, dw, dh0, None


elman_fwd.register_autograd(_elman_backward, setup_context=_elman_setup)


# ------------------------------------------------------------------------------ Jordan ----
@torch.library.custom_op("rnnlab_gpu::jordan_fwd", mutates_args=())
def jordan_fwd(
    gx: Tensor, u: Tensor, wy: Tensor, by: Tensor, y0: Tensor, act: int, oact: int
) -> tuple[Tensor, Tensor]:
    """h(t) = act(gx(t) + U y(t-1)), y(t) = oact(W_y h(t) + b_y): two dependent GEMMs and two
    pointwise kernels per step. Returns ys (T+1, B, O) with ys[0] = y(0), and hs (T, B, H)."""
    gx, u, wy, by, y0 = _c(gx, u, wy, by, y0)
    T, B, H = gx.shape
    O = wy.shape[0]
    ys = gx.new_empty(T + 1, B, O)
    hs = gx.new_empty(T, B, H)
    ys[0] = y0
    ut, wyt = u.t(), wy.t()
    for t in range(T):
        torch.addmm(gx[t], ys[t], ut, out=hs[t])
        K.launch(K.act_fwd_kernel, B * H, hs[t], hs[t], B * H, ACT=act)
        if by.numel():
            torch.addmm(by, hs[t], wyt, out=ys[t + 1])
        else:
            torch.mm(hs[t], wyt, out=ys[t + 1])
        K.launch(K.act_fwd_kernel, B * O, ys[t + 1], ys[t + 1], B * O, ACT=oact)
    return ys, hs


@jordan_fwd.register_fake
def _(gx: Tensor, u: Tensor, wy: Tensor, by: Tensor, y0: Tensor, act: int, oact: int) -> Any:
    T, B, _ = gx.shape
    return gx.new_empty(T + 1, B, wy.shape[0]), torch.empty_like(gx)


@torch.library.custom_op("rnnlab_gpu::jordan_bwd", mutates_args=())
def jordan_bwd(
    g_ys: Tensor, ys: Tensor, hs: Tensor, u: Tensor, wy: Tensor, act: int, oact: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    g_ys, ys, hs, u, wy = _c(g_ys, ys, hs, u, wy)
    T, B, H = hs.shape
    O = ys.shape[2]
    da = hs.new_empty(T, B, H)  # pre-activation gradients of h
    dya = ys.new_empty(T, B, O)  # pre-activation gradients of y
    rec = torch.zeros_like(ys[0])
    for t in range(T - 1, -1, -1):
        K.launch(K.act_bwd_kernel, B * O, g_ys[t + 1], rec, ys[t + 1], dya[t], B * O,
                 HAS_REC=True, ACT=oact)  # fmt: skip
        dh = torch.mm(dya[t], wy)
        K.launch(K.act_bwd_kernel, B * H, dh, dh, hs[t], da[t], B * H, HAS_REC=False, ACT=act)
        rec = torch.mm(da[t], u)
    du = torch.mm(_flat(da).t(), _flat(ys[:-1]))
    dwy = torch.mm(_flat(dya).t(), _flat(hs))
    return da, du, dwy, dya.sum((0, 1)), rec + g_ys[0]


@jordan_bwd.register_fake
def _(g_ys: Tensor, ys: Tensor, hs: Tensor, u: Tensor, wy: Tensor, act: int, oact: int) -> Any:
    return (torch.empty_like(hs), torch.empty_like(u), torch.empty_like(wy),
            ys.new_empty(ys.shape[2]), ys.new_empty(ys.shape[1:]))  # fmt: skip


def _jordan_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ys, hs = output
    ctx.save_for_backward(ys, hs, inputs[1], inputs[2])
    ctx.codes = (inputs[5], inputs[6])
    ctx.has_bias = inputs[3].numel() > 0


def _jordan_backward(ctx: Any, g_ys: Tensor, g_hs: Tensor | None) -> Any:
    _first_order()
    ys, hs, u, wy = ctx.saved_tensors
    da, du, dwy, dby, dy0 = jordan_bwd(_grad(g_ys, ys), ys, hs, u, wy, *ctx.codes)
    return da, du, dwy, dby if ctx.has_bias else None, dy0, None, None


jordan_fwd.register_autograd(_jordan_backward, setup_context=_jordan_setup)


# --------------------------------------------------------------------- GRU, reset before ----
@torch.library.custom_op("rnnlab_gpu::gru_fwd", mutates_args=())
def gru_fwd(gx: Tensor, w_hh: Tensor, h0: Tensor, act: int) -> tuple[Tensor, Tensor, Tensor]:
    """The lecture's GRU: r, z = σ(gx_rz + U_rz h(t-1)); n = act(gx_n + U_n (r ⊙ h(t-1)));
    h(t) = z ⊙ h(t-1) + (1 - z) ⊙ n. The reset sits inside the second product, so a step is two
    GEMMs with a pointwise kernel after each. Returns hs (T+1, B, H), the saved gates [r, z, n]
    (T, B, 3H) and r ⊙ h(t-1) (T, B, H)."""
    gx, w_hh, h0 = _c(gx, w_hh, h0)
    T, B, H3 = gx.shape
    H = H3 // 3
    hs = gx.new_empty(T + 1, B, H)
    gates = gx.new_empty(T, B, H3)
    rh = gx.new_empty(T, B, H)
    a_rz = gx.new_empty(B, 2 * H)
    a_n = gx.new_empty(B, H)
    hs[0] = h0
    w_rz, w_n = w_hh[: 2 * H].t(), w_hh[2 * H :].t()
    for t in range(T):
        torch.addmm(gx[t, :, : 2 * H], hs[t], w_rz, out=a_rz)
        K.launch(K.gru_gates_kernel, B * H, a_rz, hs[t], gates[t], rh[t], B * H, H)
        torch.addmm(gx[t, :, 2 * H :], rh[t], w_n, out=a_n)
        K.launch(K.gru_out_kernel, B * H, a_n, hs[t], gates[t], hs[t + 1], B * H, H, ACT=act)
    return hs, gates, rh


@gru_fwd.register_fake
def _(gx: Tensor, w_hh: Tensor, h0: Tensor, act: int) -> Any:
    T, B, H3 = gx.shape
    return gx.new_empty(T + 1, B, H3 // 3), torch.empty_like(gx), gx.new_empty(T, B, H3 // 3)


@torch.library.custom_op("rnnlab_gpu::gru_bwd", mutates_args=())
def gru_bwd(
    g_hs: Tensor, hs: Tensor, gates: Tensor, rh: Tensor, w_hh: Tensor, act: int
) -> tuple[Tensor, Tensor, Tensor]:
    g_hs, hs, gates, rh, w_hh = _c(g_hs, hs, gates, rh, w_hh)
    T, B, H3 = gates.shape
    H = H3 // 3
    da = gates.new_empty(T, B, H3)
    dhp = hs.new_empty(B, H)
    rec = torch.zeros_like(hs[0])
    w_rz, w_n = w_hh[: 2 * H], w_hh[2 * H :]
    for t in range(T - 1, -1, -1):
        K.launch(K.gru_bwd_out_kernel, B * H, g_hs[t + 1], rec, gates[t], hs[t], da[t], dhp,
                 B * H, H, ACT=act)  # fmt: skip
        drh = torch.mm(da[t, :, 2 * H :], w_n)
        K.launch(K.gru_bwd_gates_kernel, B * H, drh, gates[t], hs[t], da[t], dhp, B * H, H)
        rec = torch.addmm(dhp, da[t, :, : 2 * H], w_rz)
    dw = torch.cat(
        [
            torch.mm(_flat(da[:, :, : 2 * H]).t(), _flat(hs[:-1])),
            torch.mm(_flat(da[:, :, 2 * H :]).t(), _flat(rh)),
        ]
    )
    return da, dw, rec + g_hs[0]


@gru_bwd.register_fake
def _(g_hs: Tensor, hs: Tensor, gates: Tensor, rh: Tensor, w_hh: Tensor, act: int) -> Any:
    return torch.empty_like(gates), torch.empty_like(w_hh), hs.new_empty(hs.shape[1:])


def _gru_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(*output, inputs[1])
    ctx.act = inputs[3]


def _gru_backward(ctx: Any, g_hs: Tensor, *_unused: Any) -> Any:
    _first_order()
    hs, gates, rh, w_hh = ctx.saved_tensors
    da, dw, dh0 = gru_bwd(_grad(g_hs, hs), hs, gates, rh, w_hh, ctx.act)
    return da, dw, dh0, None


gru_fwd.register_autograd(_gru_backward, setup_context=_gru_setup)


# -------------------------------------------------------------------------------- LSTM ----
_CFG_KEYS = ("G", "KI", "KF", "KG", "KO", "S", "SI", "SF", "SO", "COUPLED", "ACT", "CACT")


def _meta(cfg: list[int], pci: Tensor, pcf: Tensor, pco: Tensor, wgg: Tensor) -> dict[str, Any]:
    meta: dict[str, Any] = dict(zip(_CFG_KEYS, cfg))
    meta["COUPLED"] = bool(meta["COUPLED"])
    meta.update(PI=pci.numel() > 0, PF=pcf.numel() > 0, PO=pco.numel() > 0, FGR=wgg.numel() > 0)
    return meta


@torch.library.custom_op("rnnlab_gpu::lstm_fwd", mutates_args=())
def lstm_fwd(
    gx: Tensor,
    w_hh: Tensor,
    pci: Tensor,
    pcf: Tensor,
    pco: Tensor,
    wgg: Tensor,
    h0: Tensor,
    c0: Tensor,
    g0: Tensor,
    cfg: list[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every LSTM variant without projection: per step one GEMM (plus FGR's gate-recurrence
    GEMM) and one fused kernel. ``cfg`` holds the block layout (see ``_CFG_KEYS``); absent
    peepholes / W_gg are empty tensors. Returns ys, cs (T+1, B, H), the FGR gate states
    gs (T+1, B, S·H) (empty without FGR) and the saved gate activations (T, B, G·H)."""
    gx, w_hh, pci, pcf, pco, wgg, h0, c0, g0 = _c(gx, w_hh, pci, pcf, pco, wgg, h0, c0, g0)
    meta = _meta(cfg, pci, pcf, pco, wgg)
    T, B, GH = gx.shape
    H = h0.shape[1]
    fgr = meta["FGR"]
    ys, cs = gx.new_empty(T + 1, B, H), gx.new_empty(T + 1, B, H)
    gs = gx.new_empty(T + 1, *g0.shape) if fgr else gx.new_empty(0)
    acts = gx.new_empty(T, B, GH)
    ys[0], cs[0] = h0, c0
    if fgr:
        gs[0] = g0
    wt, ggt = w_hh.t(), wgg.t()
    for t in range(T):
        torch.addmm(gx[t], ys[t], wt, out=acts[t])
        rec = torch.mm(gs[t], ggt) if fgr else acts[t]
        K.launch(lstm_fwd_kernel, B * H, acts[t], rec, cs[t], cs[t + 1], ys[t + 1],
                 gs[t + 1] if fgr else rec, pci, pcf, pco, B * H, H, **meta)  # fmt: skip
    return ys, cs, gs, acts


@lstm_fwd.register_fake
def _(gx: Tensor, w_hh: Tensor, pci: Tensor, pcf: Tensor, pco: Tensor, wgg: Tensor,
      h0: Tensor, c0: Tensor, g0: Tensor, cfg: list[int]) -> Any:  # fmt: skip
    T, B, _ = gx.shape
    H = h0.shape[1]
    gs = gx.new_empty(T + 1, *g0.shape) if wgg.numel() else gx.new_empty(0)
    return gx.new_empty(T + 1, B, H), gx.new_empty(T + 1, B, H), gs, torch.empty_like(gx)


@torch.library.custom_op("rnnlab_gpu::lstm_bwd", mutates_args=())
def lstm_bwd(
    g_ys: Tensor,
    g_cs: Tensor,
    g_gs: Tensor,
    ys: Tensor,
    cs: Tensor,
    gs: Tensor,
    acts: Tensor,
    w_hh: Tensor,
    pci: Tensor,
    pcf: Tensor,
    pco: Tensor,
    wgg: Tensor,
    cfg: list[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    g_ys, g_cs, g_gs, ys, cs, gs, acts, w_hh, pci, pcf, pco, wgg = _c(
        g_ys, g_cs, g_gs, ys, cs, gs, acts, w_hh, pci, pcf, pco, wgg
    )
    meta = _meta(cfg, pci, pcf, pco, wgg)
    fgr = meta["FGR"]
    T, B, GH = acts.shape
    H = ys.shape[2]
    da = torch.empty_like(acts)
    ds = gs.new_empty(T, *gs.shape[1:]) if fgr else acts.new_empty(0)
    dp = acts.new_zeros(T, 3, B, H)
    ry, rc = torch.zeros_like(ys[0]), torch.zeros_like(cs[0])
    rg = torch.zeros_like(gs[0]) if fgr else ry
    for t in range(T - 1, -1, -1):
        K.launch(lstm_bwd_kernel, B * H, g_ys[t + 1], ry, g_cs[t + 1], rc,
                 g_gs[t + 1] if fgr else ry, rg, acts[t], cs[t], cs[t + 1], pci, pcf, pco,
                 da[t], ds[t] if fgr else da[t], dp[t], B * H, H, **meta)  # fmt: skip
        ry = torch.mm(da[t], w_hh)
        if fgr:
            rg = torch.mm(ds[t], wgg)
    dw = torch.mm(_flat(da).t(), _flat(ys[:-1]))
    dpeep = dp.sum((0, 2))  # (3, H): p_i, p_f, p_o
    dwgg = torch.mm(_flat(ds).t(), _flat(gs[:-1])) if fgr else torch.empty_like(wgg)
    dg0 = rg + g_gs[0] if fgr else torch.empty_like(g_gs)
    dpi, dpf, dpo = (d.clone() for d in dpeep)  # outputs of an op may not alias each other
    return da, dw, dpi, dpf, dpo, dwgg, ry + g_ys[0], rc + g_cs[0], dg0


@lstm_bwd.register_fake
def _(g_ys: Tensor, g_cs: Tensor, g_gs: Tensor, ys: Tensor, cs: Tensor, gs: Tensor,
      acts: Tensor, w_hh: Tensor, pci: Tensor, pcf: Tensor, pco: Tensor, wgg: Tensor,
      cfg: list[int]) -> Any:  # fmt: skip
    H = ys.shape[2]
    state = ys.new_empty(ys.shape[1:])
    dg0 = gs.new_empty(gs.shape[1:]) if wgg.numel() else torch.empty_like(g_gs)
    peep = [ys.new_empty(H) for _ in range(3)]
    return (torch.empty_like(acts), torch.empty_like(w_hh), *peep, torch.empty_like(wgg),
            state, torch.empty_like(state), dg0)  # fmt: skip


def _lstm_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ys, cs, gs, acts = output
    w_hh, pci, pcf, pco, wgg = inputs[1:6]
    ctx.save_for_backward(ys, cs, gs, acts, w_hh, pci, pcf, pco, wgg)
    ctx.cfg = inputs[9]
    ctx.present = [t.numel() > 0 for t in (pci, pcf, pco, wgg)]


def _lstm_backward(ctx: Any, g_ys: Tensor, g_cs: Tensor, g_gs: Tensor, _g_acts: Any) -> Any:
    _first_order()
    ys, cs, gs, acts, w_hh, pci, pcf, pco, wgg = ctx.saved_tensors
    out = lstm_bwd(_grad(g_ys, ys), _grad(g_cs, cs), _grad(g_gs, gs), ys, cs, gs, acts, w_hh,
                   pci, pcf, pco, wgg, ctx.cfg)  # fmt: skip
    da, dw, dpi, dpf, dpo, dwgg, dh0, dc0, dg0 = out
    opt = [g if p else None for g, p in zip((dpi, dpf, dpo, dwgg), ctx.present)]
    return (da, dw, *opt, dh0, dc0, dg0 if ctx.present[3] else None, None)


lstm_fwd.register_autograd(_lstm_backward, setup_context=_lstm_setup)
