"""Engine operators for the regularised LSTM and GRU of issue 18: recurrent dropout and zoneout.

``torch.ops.rnnlab.lstm_reg_forward/_backward`` and ``gru_reg_forward/_backward`` run
torch's LSTM maths (gates i, f, g, o) and the GRU (reset after or before) with, inside the
time loop (C++: ``csrc/regularised.h``):

- a per-sequence state mask m (B, H) on h(t-1) in every product U h(t-1) (variational
  recurrent dropout; the GRU's interpolation and the LSTM's c use the true values);
- zoneout keep weights d (T, B, H) per state field: s(t) = d ⊙ s(t-1) + (1 - d) ⊙ s̃(t),
  d ∈ {0, 1} drawn in Python in training (the reference loop's draws), d = p in eval.

Each absent argument is ``None``. The input mask multiplies x before the hoisted input GEMM
(in :mod:`.kernels_extra`, with autograd). The schemas, fakes, vmap (slice by slice) and
autocast rules follow :mod:`.ops`; the Functions follow :mod:`.functions`: the forward's
backward is the hand-written BPTT op, whose own backward (the second derivative) is
``torch.func.vjp`` of the differentiable reference below. The masks and keep weights are
constants: no gradient flows to them.

Shapes: T time, B batch, H hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops
from .ops import op
from .reference import _keep, _masks, activation, second_derivative

SCHEMAS = {
    "lstm_reg_forward": "(Tensor gx, Tensor w_hh, Tensor h0, Tensor c0, Tensor? mask_h, "
    "Tensor? keep_h, Tensor? keep_c, Tensor? lengths, int act, int cact) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
    "lstm_reg_backward": "(Tensor grad_hs, Tensor grad_cs, Tensor hs, Tensor cs, Tensor gates, "
    "Tensor tc, Tensor w_hh, Tensor? mask_h, Tensor? keep_h, Tensor? keep_c, Tensor? lengths, "
    "int act, int cact) -> (Tensor, Tensor, Tensor, Tensor)",
    "gru_reg_forward": "(Tensor gx, Tensor w_hh, Tensor? b_hh, Tensor h0, Tensor? mask_h, "
    "Tensor? keep_h, Tensor? lengths, bool before, int act) -> (Tensor, Tensor, Tensor)",
    "gru_reg_backward": "(Tensor grad_hs, Tensor hs, Tensor gates, Tensor aux, Tensor w_hh, "
    "Tensor? mask_h, Tensor? keep_h, Tensor? lengths, bool before, int act) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
    "elman_reg_forward": "(Tensor gx, Tensor w_hh, Tensor h0, Tensor? mask_h, Tensor? keep_h, "
    "Tensor? lengths, int act) -> (Tensor, Tensor)",
    "elman_reg_backward": "(Tensor grad_hs, Tensor hs, Tensor hc, Tensor w_hh, Tensor? mask_h, "
    "Tensor? keep_h, Tensor? lengths, int act) -> (Tensor, Tensor, Tensor)",
}
_LENGTHS = {"lstm_reg_forward": 7, "lstm_reg_backward": 10, "gru_reg_forward": 6,
            "gru_reg_backward": 7, "elman_reg_forward": 5, "elman_reg_backward": 6}  # fmt: skip
_PRIMARY = {"lstm_reg_forward": 0, "lstm_reg_backward": 2, "gru_reg_forward": 0,
            "gru_reg_backward": 1, "elman_reg_forward": 0, "elman_reg_backward": 1}  # fmt: skip


def _lstm_fwd_fake(gx, w_hh, h0, c0, mask_h, keep_h, keep_c, lengths, act, cact):  # type: ignore[no-untyped-def]
    S, B, G = gx.shape
    H = G // 4
    n = gx.new_empty
    return n(S + 1, B, H), n(S + 1, B, H), n(S, B, G), n(S, B, H)


def _lstm_bwd_fake(g_hs, g_cs, hs, cs, gates, tc, w_hh, m, kh, kc, lengths, act, cact):  # type: ignore[no-untyped-def]
    S, B, G = gates.shape
    H = G // 4
    n = hs.new_empty
    return n(S, B, G), n(G, H), n(B, H), n(B, H)


def _gru_fwd_fake(gx, w_hh, b_hh, h0, mask_h, keep_h, lengths, before, act):  # type: ignore[no-untyped-def]
    S, B, G = gx.shape
    H = G // 3
    n = gx.new_empty
    return n(S + 1, B, H), n(S, B, G), n(S, B, H)


def _gru_bwd_fake(g_hs, hs, gates, aux, w_hh, m, kh, lengths, before, act):  # type: ignore[no-untyped-def]
    S, B, G = gates.shape
    H = G // 3
    n = hs.new_empty
    return n(S, B, G), n(G, H), n(G), n(B, H)


def _elman_fwd_fake(gx, w_hh, h0, mask_h, keep_h, lengths, act):  # type: ignore[no-untyped-def]
    S, B, H = gx.shape
    return gx.new_empty(S + 1, B, H), gx.new_empty(S, B, H)


def _elman_bwd_fake(g_hs, hs, hc, w_hh, m, kh, lengths, act):  # type: ignore[no-untyped-def]
    S, B, H = hc.shape
    n = hs.new_empty
    return n(S, B, H), n(H, H), n(B, H)


_FAKES: dict[str, Callable[..., Any]] = {
    "elman_reg_forward": _elman_fwd_fake,
    "elman_reg_backward": _elman_bwd_fake,
    "lstm_reg_forward": _lstm_fwd_fake,
    "lstm_reg_backward": _lstm_bwd_fake,
    "gru_reg_forward": _gru_fwd_fake,
    "gru_reg_backward": _gru_bwd_fake,
}


def _register() -> None:
    ops._LENGTHS.update(_LENGTHS)  # the shared CPU implementation reads where `lengths` is
    for name, schema in SCHEMAS.items():
        ops._lib.define(name + schema)
        qual = f"{ops.NAMESPACE}::{name}"
        torch.library.register_fake(qual, _FAKES[name], lib=ops._lib)
        ops._lib.impl(name, ops._cpu_impl(name, _PRIMARY[name]), "CPU")
        torch.library.register_vmap(qual, ops._vmap_loop(name), lib=ops._lib)
        torch.library.register_autocast(qual, "cpu", torch.float32, lib=ops._lib)


_register()


# --------------------------------------------------------------------------- reference ----
def _zone(d: Tensor | None, t: int, prev: Tensor, new: Tensor) -> Tensor:
    return new if d is None else d[t] * prev + (1 - d[t]) * new


def lstm_reg(
    gx: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    mask_h: Tensor | None,
    keep_h: Tensor | None,
    keep_c: Tensor | None,
    lengths: Tensor | None,
    act: int,
    cact: int,
) -> tuple[Tensor, Tensor]:
    """(hs, cs) (T+1, B, H), step by step as the kernel: a = gx(t) + U (m ⊙ h(t-1)),
    c̃ = f ⊙ c(t-1) + i ⊙ g, h̃ = o ⊙ σ_y(c̃), then zoneout and the length freeze."""
    fa, fc = activation(act), activation(cact)
    h, c, hs, cs = h0, c0, [h0], [c0]
    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        hin = h if mask_h is None else mask_h * h
        i, f, g, o = (gx[t] + F.linear(hin, w_hh)).chunk(4, -1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * fa(g)
        h_new = torch.sigmoid(o) * fc(c_new)
        h, c = _keep(m, _zone(keep_h, t, h, h_new), h), _keep(m, _zone(keep_c, t, c, c_new), c)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), torch.stack(cs)


def gru_reg(
    gx: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    h0: Tensor,
    mask_h: Tensor | None,
    keep_h: Tensor | None,
    lengths: Tensor | None,
    before: bool,
    act: int,
) -> tuple[Tensor]:
    """hs (T+1, B, H): the GRU with hin = m ⊙ h(t-1) in the products, then zoneout."""
    f = activation(act)
    H = h0.shape[-1]
    h, hs = h0, [h0]
    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        hin = h if mask_h is None else mask_h * h
        xr, xz, xn = gx[t].split(H, -1)
        if before:
            hr, hz = F.linear(hin, w_hh[: 2 * H]).split(H, -1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = f(xn + F.linear(r * hin, w_hh[2 * H :]))
        else:
            hr, hz, hn = F.linear(hin, w_hh, b_hh).split(H, -1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = f(xn + r * hn)
        h = _keep(m, _zone(keep_h, t, h, z * h + (1 - z) * n), h)
        hs.append(h)
    return (torch.stack(hs),)


def elman_reg(
    gx: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    mask_h: Tensor | None,
    keep_h: Tensor | None,
    lengths: Tensor | None,
    act: int,
) -> tuple[Tensor]:
    """hs (T+1, B, H): h̃ = act(gx(t) + U (m ⊙ h(t-1))), then zoneout and the length freeze."""
    f = activation(act)
    h, hs = h0, [h0]
    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        hin = h if mask_h is None else mask_h * h
        h = _keep(m, _zone(keep_h, t, h, f(gx[t] + F.linear(hin, w_hh))), h)
        hs.append(h)
    return (torch.stack(hs),)


def _second(ref: Any, consts: dict[int, Any], n_grads: int, ctx: Any, cot: Any) -> Any:
    """The backward op's own backward: vjp of (grads, diff inputs) -> vjp(ref)(grads).
    ``ref`` takes the diff inputs by position in ``ctx.diff_at``, the rest from ``consts``."""
    saved = ctx.saved_tensors
    grads, xs = tuple(saved[:n_grads]), tuple(saved[n_grads:])

    def f(*a: Tensor) -> Any:
        full = dict(consts)
        full.update(zip(ctx.diff_at, a))
        return ref(*(full[i] for i in range(len(full))))

    return second_derivative(f, grads, xs, cot)


def _lean_grads(ctx: Any, grads: tuple[Any, ...], outs: tuple[Tensor, ...]) -> list[Tensor]:
    """The output gradients (zeros where autograd passed None: the forward Functions set
    ``set_materialize_grads(False)``, so that the buffer outputs' T·B·G·H zeros are never
    made); ``ctx.direct``: call the backward op itself, without its differentiable Function,
    when the backward is not differentiated (no ``create_graph``)."""
    ctx.direct = not torch.is_grad_enabled()
    return [torch.zeros_like(o) if g is None else g for g, o in zip(grads, outs)]


def _save_forward(ctx: Any, inputs: tuple[Any, ...], output: Any, n: int, buffers: int) -> Any:
    """A regularised forward Function's ``setup_context``: the outputs from index ``buffers``
    on (the saved gates and statistics) get no gradient and no materialised zeros
    (:func:`_lean_grads`), the first ``n`` inputs and every output are saved; returns the rest
    of the inputs (the configuration: activation codes, eps)."""
    ctx.mark_non_differentiable(*output[buffers:])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs[:n], *output)
    return inputs[n:]


# ---------------------------------------------------------------------------- Functions ----
class LSTMRegBackward(torch.autograd.Function):
    """``rnnlab::lstm_reg_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        g_hs, g_cs, gx, w_hh, h0, c0, mask_h, keep_h, keep_c, lengths, act, cact, hs, cs, gates, tc
    ):  # type: ignore[no-untyped-def,override]  # noqa: E501
        return op("lstm_reg_backward")(
            g_hs, g_cs, hs, cs, gates, tc, w_hh, mask_h, keep_h, keep_c, lengths, act, cact
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        g_hs, g_cs, gx, w_hh, h0, c0, mask_h, keep_h, keep_c, lengths, act, cact = inputs[:12]
        ctx.save_for_backward(g_hs, g_cs, gx, w_hh, h0, c0)
        ctx.consts = {4: mask_h, 5: keep_h, 6: keep_c, 7: lengths, 8: act, 9: cact}
        ctx.diff_at = (0, 1, 2, 3)

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        d_g, d_x = _second(lstm_reg, ctx.consts, 2, ctx, cot)
        return (*d_g, *d_x, *([None] * 10))


class LSTMReg(torch.autograd.Function):
    """``rnnlab::lstm_reg_forward`` with its gradients (``LSTMRegBackward``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, h0, c0, mask_h, keep_h, keep_c, lengths, act, cact):  # type: ignore[no-untyped-def,override]
        return op("lstm_reg_forward")(gx, w_hh, h0, c0, mask_h, keep_h, keep_c, lengths, act, cact)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.cfg = _save_forward(ctx, inputs, output, 8, 2)

    @staticmethod
    def backward(ctx: Any, g_hs: Tensor | None, g_cs: Tensor | None, *_: Any) -> Any:
        gx, w_hh, h0, c0, mask_h, keep_h, keep_c, lengths, hs, cs, gates, tc = ctx.saved_tensors
        g_hs, g_cs = _lean_grads(ctx, (g_hs, g_cs), (hs, cs))
        run: Any = LSTMRegBackward.forward if ctx.direct else LSTMRegBackward.apply
        res = run(
            g_hs, g_cs, gx, w_hh, h0, c0, mask_h, keep_h, keep_c, lengths, *ctx.cfg,
            hs, cs, gates, tc,
        )  # fmt: skip
        return (*res, *([None] * 6))


class GRURegBackward(torch.autograd.Function):
    """``rnnlab::gru_reg_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g_hs, gx, w_hh, b_hh, h0, mask_h, keep_h, lengths, before, act, hs, gates, aux):  # type: ignore[no-untyped-def,override]
        dgx, dw, db, dh0 = op("gru_reg_backward")(
            g_hs, hs, gates, aux, w_hh, mask_h, keep_h, lengths, before, act
        )
        return dgx, dw, db, dh0

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        g_hs, gx, w_hh, b_hh, h0, mask_h, keep_h, lengths, before, act = inputs[:10]
        ctx.has_b = b_hh is not None
        if ctx.has_b:
            ctx.save_for_backward(g_hs, gx, w_hh, b_hh, h0)
            ctx.diff_at = (0, 1, 2, 3)
            ctx.consts = {4: mask_h, 5: keep_h, 6: lengths, 7: before, 8: act}
        else:
            ctx.save_for_backward(g_hs, gx, w_hh, h0)
            ctx.diff_at = (0, 1, 3)
            ctx.consts = {2: None, 4: mask_h, 5: keep_h, 6: lengths, 7: before, 8: act}

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        # cot: for dgx, dw, db, dh0; without b_hh db has no formula input (cot ignored)
        c = cot if ctx.has_b else (cot[0], cot[1], cot[3])
        d_g, d_x = _second(gru_reg, ctx.consts, 1, ctx, c)
        d_x = list(d_x)
        if not ctx.has_b:
            d_x.insert(2, None)
        return (*d_g, *d_x, *([None] * 8))


class GRUReg(torch.autograd.Function):
    """``rnnlab::gru_reg_forward`` with its gradients (``GRURegBackward``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, b_hh, h0, mask_h, keep_h, lengths, before, act):  # type: ignore[no-untyped-def,override]
        return op("gru_reg_forward")(gx, w_hh, b_hh, h0, mask_h, keep_h, lengths, before, act)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.cfg = _save_forward(ctx, inputs, output, 7, 1)

    @staticmethod
    def backward(ctx: Any, g_hs: Tensor | None, *_: Any) -> Any:
        gx, w_hh, b_hh, h0, mask_h, keep_h, lengths, hs, gates, aux = ctx.saved_tensors
        (g_hs,) = _lean_grads(ctx, (g_hs,), (hs,))
        run: Any = GRURegBackward.forward if ctx.direct else GRURegBackward.apply
        dgx, dw, db, dh0 = run(
            g_hs, gx, w_hh, b_hh, h0, mask_h, keep_h, lengths, *ctx.cfg, hs, gates, aux
        )
        return dgx, dw, db if b_hh is not None else None, dh0, None, None, None, None, None


class ElmanRegBackward(torch.autograd.Function):
    """``rnnlab::elman_reg_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g_hs, gx, w_hh, h0, mask_h, keep_h, lengths, act, hs, hc):  # type: ignore[no-untyped-def,override]
        dgx, dw, dh0 = op("elman_reg_backward")(g_hs, hs, hc, w_hh, mask_h, keep_h, lengths, act)
        return dgx, dw, dh0

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        g_hs, gx, w_hh, h0, mask_h, keep_h, lengths, act = inputs[:8]
        ctx.save_for_backward(g_hs, gx, w_hh, h0)
        ctx.diff_at = (0, 1, 2)
        ctx.consts = {3: mask_h, 4: keep_h, 5: lengths, 6: act}

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        d_g, d_x = _second(elman_reg, ctx.consts, 1, ctx, cot)
        return (*d_g, *d_x, *([None] * 6))


class ElmanReg(torch.autograd.Function):
    """``rnnlab::elman_reg_forward`` with its gradients (``ElmanRegBackward``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, h0, mask_h, keep_h, lengths, act):  # type: ignore[no-untyped-def,override]
        return op("elman_reg_forward")(gx, w_hh, h0, mask_h, keep_h, lengths, act)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        (ctx.act,) = _save_forward(ctx, inputs, output, 6, 1)

    @staticmethod
    def backward(ctx: Any, g_hs: Tensor | None, *_: Any) -> Any:
        gx, w_hh, h0, mask_h, keep_h, lengths, hs, hc = ctx.saved_tensors
        (g_hs,) = _lean_grads(ctx, (g_hs,), (hs,))
        run: Any = ElmanRegBackward.forward if ctx.direct else ElmanRegBackward.apply
        dgx, dw, dh0 = run(g_hs, gx, w_hh, h0, mask_h, keep_h, lengths, ctx.act, hs, hc)
        return dgx, dw, dh0, None, None, None, None
