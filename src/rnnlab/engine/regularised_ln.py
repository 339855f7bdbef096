"""Engine operators for the layer-normalised LSTM (issue 18), with the regularisers.

``torch.ops.rnnlab.ln_lstm_forward/_backward`` (C++: ``csrc/layernorm.h``) run
:class:`~rnnlab.cells.LayerNormLSTMCell` without peepholes or projection: per step
a = gx(t) + LN(U hin(t-1); g_h, b_h), c̃ = f ⊙ c(t-1) + i ⊙ g, h̃ = o ⊙ tanh(LN(c̃; g_c, b_c)),
then zoneout and the length freeze as in :mod:`.regularised` (state mask m: hin = m ⊙ h(t-1);
keep weights d). The LSTM's input normalisation gx = LN(W x; g_x, b_x) runs over all T steps at
once, outside the loop (autograd); ``rnnlab::ln_gru_forward/_backward``
(:class:`~rnnlab.cells.LayerNormGRUCell`) take W x itself with g_x, b_x and normalise each row
inside the loop, forward and backward (``g_x=None``: gx is already normalised). Backward: the
hand-written BPTT through the normalisations; its own backward is ``torch.func.vjp`` of
:func:`ln_lstm` / :func:`ln_gru`, the differentiable references.

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
from .reference import _keep, _masks
from .regularised import _lean_grads, _save_forward, _second, _zone

SCHEMAS = {
    "ln_lstm_forward": "(Tensor gx, Tensor w_hh, Tensor g_hh, Tensor? b_hh, Tensor g_c, "
    "Tensor? b_c, Tensor h0, Tensor c0, Tensor? mask_h, Tensor? keep_h, Tensor? keep_c, "
    "Tensor? lengths, float eps) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "ln_lstm_backward": "(Tensor grad_hs, Tensor grad_cs, Tensor hs, Tensor cs, Tensor gates, "
    "Tensor uhat, Tensor ru, Tensor chat, Tensor rc, Tensor tc, Tensor w_hh, Tensor g_hh, "
    "Tensor g_c, Tensor? mask_h, Tensor? keep_h, Tensor? keep_c, Tensor? lengths) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "ln_gru_forward": "(Tensor gx, Tensor w_hh, Tensor g_hh, Tensor? b_hh, Tensor h0, "
    "Tensor? mask_h, Tensor? keep_h, Tensor? lengths, bool before, float eps, Tensor? g_x, "
    "Tensor? b_x) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "ln_gru_backward": "(Tensor grad_hs, Tensor hs, Tensor gates, Tensor uhat, Tensor ru, "
    "Tensor q, Tensor w_hh, Tensor g_hh, Tensor? b_hh, Tensor? mask_h, Tensor? keep_h, "
    "Tensor? lengths, bool before, Tensor xhat, Tensor rx, Tensor? g_x) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
}


def _fwd_fake(gx, w_hh, g_hh, b_hh, g_c, b_c, h0, c0, m, kh, kc, lengths, eps):  # type: ignore[no-untyped-def]
    S, B, G = gx.shape
    H = G // 4
    n = gx.new_empty
    return (n(S + 1, B, H), n(S + 1, B, H), n(S, B, G), n(S, B, G), n(S, B), n(S, B, H),
            n(S, B), n(S, B, H))  # fmt: skip


def _bwd_fake(
    g_hs, g_cs, hs, cs, gates, uhat, ru, chat, rc, tc, w_hh, g_hh, g_c, m, kh, kc, lengths
):  # type: ignore[no-untyped-def]  # noqa: E501
    S, B, G = gates.shape
    H = G // 4
    n = hs.new_empty
    return n(S, B, G), n(G, H), n(G), n(G), n(H), n(H), n(B, H), n(B, H)


def _gru_fwd_fake(gx, w_hh, g_hh, b_hh, h0, m, kh, lengths, before, eps, g_x, b_x):  # type: ignore[no-untyped-def]
    S, B, G = gx.shape
    H = G // 3
    n = gx.new_empty
    xhat, rx = (n(S, B, G), n(S, B)) if g_x is not None else (n(0), n(0))
    return n(S + 1, B, H), n(S, B, G), n(S, B, G), n(S, B, 2), n(S, B, H), xhat, rx


def _gru_bwd_fake(g_hs, hs, gates, uhat, ru, q, w_hh, g_hh, b_hh, m, kh, lengths, before, xhat,
                  rx, g_x):  # type: ignore[no-untyped-def]  # fmt: skip
    S, B, G = gates.shape
    H = G // 3
    n = hs.new_empty
    nx = G if g_x is not None else 0
    return n(S, B, G), n(G, H), n(G), n(G), n(B, H), n(nx), n(nx)


_FAKES: dict[str, Callable[..., Any]] = {
    "ln_lstm_forward": _fwd_fake,
    "ln_lstm_backward": _bwd_fake,
    "ln_gru_forward": _gru_fwd_fake,
    "ln_gru_backward": _gru_bwd_fake,
}
_PRIMARY = {"ln_lstm_forward": 0, "ln_lstm_backward": 2, "ln_gru_forward": 0,
            "ln_gru_backward": 1}  # fmt: skip


def _register() -> None:
    ops._LENGTHS.update(
        {"ln_lstm_forward": 11, "ln_lstm_backward": 16, "ln_gru_forward": 7, "ln_gru_backward": 11}
    )
    for name, schema in SCHEMAS.items():
        ops._lib.define(name + schema)
        qual = f"{ops.NAMESPACE}::{name}"
        torch.library.register_fake(qual, _FAKES[name], lib=ops._lib)
        ops._lib.impl(name, ops._cpu_impl(name, _PRIMARY[name]), "CPU")
        torch.library.register_vmap(qual, ops._vmap_loop(name), lib=ops._lib)
        torch.library.register_autocast(qual, "cpu", torch.float32, lib=ops._lib)


_register()


def ln_lstm(
    gx: Tensor,
    w_hh: Tensor,
    g_hh: Tensor,
    b_hh: Tensor | None,
    g_c: Tensor,
    b_c: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    mask_h: Tensor | None,
    keep_h: Tensor | None,
    keep_c: Tensor | None,
    lengths: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """(hs, cs) (T+1, B, H), step by step as the kernel (equations in the module docstring)."""
    G, H = gx.shape[-1], h0.shape[-1]
    h, c, hs, cs = h0, c0, [h0], [c0]
    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        hin = h if mask_h is None else mask_h * h
        a = gx[t] + F.layer_norm(F.linear(hin, w_hh), (G,), g_hh, b_hh, eps)
        i, f, g, o = a.chunk(4, -1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(F.layer_norm(c_new, (H,), g_c, b_c, eps))
        h, c = _keep(m, _zone(keep_h, t, h, h_new), h), _keep(m, _zone(keep_c, t, c, c_new), c)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), torch.stack(cs)


class LNLSTMBackward(torch.autograd.Function):
    """``rnnlab::ln_lstm_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        g_hs,
        g_cs,
        gx,
        w_hh,
        g_hh,
        b_hh,
        g_c,
        b_c,
        h0,
        c0,
        mask_h,
        keep_h,
        keep_c,
        lengths,
        eps,
        hs,
        cs,
        gates,
        uhat,
        ru,
        chat,
        rc,
        tc,
    ):  # type: ignore[no-untyped-def,override]  # noqa: E501
        return op("ln_lstm_backward")(
            g_hs, g_cs, hs, cs, gates, uhat, ru, chat, rc, tc, w_hh, g_hh, g_c, mask_h, keep_h,
            keep_c, lengths,
        )  # fmt: skip

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        g_hs, g_cs = inputs[:2]
        args = inputs[2:15]  # ln_lstm's arguments
        ctx.diff_at = tuple(i for i in range(8) if args[i] is not None)
        ctx.consts = {i: a for i, a in enumerate(args) if i not in ctx.diff_at}
        ctx.save_for_backward(g_hs, g_cs, *(args[i] for i in ctx.diff_at))

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        d_g, d_x = _second(ln_lstm, ctx.consts, 2, ctx, tuple(cot[i] for i in ctx.diff_at))
        full: list[Any] = [None] * 8
        for i, d in zip(ctx.diff_at, d_x):
            full[i] = d
        return (*d_g, *full, *([None] * 13))


class LNLSTM(torch.autograd.Function):
    """``rnnlab::ln_lstm_forward`` with its gradients (``LNLSTMBackward``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, g_hh, b_hh, g_c, b_c, h0, c0, mask_h, keep_h, keep_c, lengths, eps):  # type: ignore[no-untyped-def,override]
        return op("ln_lstm_forward")(
            gx, w_hh, g_hh, b_hh, g_c, b_c, h0, c0, mask_h, keep_h, keep_c, lengths, eps
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        (ctx.eps,) = _save_forward(ctx, inputs, output, 12, 2)

    @staticmethod
    def backward(ctx: Any, g_hs: Tensor | None, g_cs: Tensor | None, *_: Any) -> Any:
        saved = ctx.saved_tensors
        args, outs = saved[:12], saved[12:]
        g_hs, g_cs = _lean_grads(ctx, (g_hs, g_cs), outs[:2])
        run: Any = LNLSTMBackward.forward if ctx.direct else LNLSTMBackward.apply
        res = run(g_hs, g_cs, *args, ctx.eps, *outs)
        grads = [r if a is not None else None for r, a in zip(res, args[:8])]
        return (*grads, None, None, None, None, None)


def ln_gru(
    gx: Tensor,
    w_hh: Tensor,
    g_hh: Tensor,
    b_hh: Tensor | None,
    h0: Tensor,
    g_x: Tensor | None,
    b_x: Tensor | None,
    mask_h: Tensor | None,
    keep_h: Tensor | None,
    lengths: Tensor | None,
    before: bool,
    eps: float,
) -> tuple[Tensor]:
    """hs (T+1, B, H): :class:`~rnnlab.cells.LayerNormGRUCell`'s recurrence on the input
    pre-activation x(t) = LN(gx(t); g_x, b_x) (gx = W x, the raw projection), or x(t) = gx(t)
    when ``g_x`` is None (already normalised), with hin = m ⊙ h(t-1) in the products, then
    zoneout and the length freeze."""
    H = h0.shape[-1]
    h, hs = h0, [h0]
    if g_x is not None:
        gx = F.layer_norm(gx, (3 * H,), g_x, b_x, eps)

    def part(k0: int, k1: int) -> tuple[Tensor, Tensor | None]:
        return g_hh[k0:k1], None if b_hh is None else b_hh[k0:k1]

    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        hin = h if mask_h is None else mask_h * h
        xr, xz, xn = gx[t].split(H, -1)
        if before:
            rz = F.layer_norm(F.linear(hin, w_hh[: 2 * H]), (2 * H,), *part(0, 2 * H), eps)
            r, z = torch.sigmoid(xr + rz[:, :H]), torch.sigmoid(xz + rz[:, H:])
            v = F.layer_norm(F.linear(r * hin, w_hh[2 * H :]), (H,), *part(2 * H, 3 * H), eps)
            n = torch.tanh(xn + v)
        else:
            gh = F.layer_norm(F.linear(hin, w_hh), (3 * H,), g_hh, b_hh, eps)
            r, z = torch.sigmoid(xr + gh[:, :H]), torch.sigmoid(xz + gh[:, H : 2 * H])
            n = torch.tanh(xn + r * gh[:, 2 * H :])
        h = _keep(m, _zone(keep_h, t, h, z * h + (1 - z) * n), h)
        hs.append(h)
    return (torch.stack(hs),)


class LNGRUBackward(torch.autograd.Function):
    """``rnnlab::ln_gru_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        g_hs, gx, w_hh, g_hh, b_hh, h0, g_x, b_x, mask_h, keep_h, lengths, before, eps, hs,
        gates, uhat, ru, q, xhat, rx,
    ):  # type: ignore[no-untyped-def,override]  # fmt: skip
        return op("ln_gru_backward")(
            g_hs, hs, gates, uhat, ru, q, w_hh, g_hh, b_hh, mask_h, keep_h, lengths, before,
            xhat, rx, g_x,
        )  # fmt: skip

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        args = inputs[1:13]  # ln_gru's arguments
        ctx.diff_at = tuple(i for i in range(7) if args[i] is not None)
        ctx.consts = {i: a for i, a in enumerate(args) if i not in ctx.diff_at}
        ctx.save_for_backward(inputs[0], *(args[i] for i in ctx.diff_at))

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        d_g, d_x = _second(ln_gru, ctx.consts, 1, ctx, tuple(cot[i] for i in ctx.diff_at))
        full: list[Any] = [None] * 7
        for i, d in zip(ctx.diff_at, d_x):
            full[i] = d
        return (*d_g, *full, *([None] * 12))


class LNGRU(torch.autograd.Function):
    """``rnnlab::ln_gru_forward`` with its gradients (``LNGRUBackward``): the arguments of
    :func:`ln_gru`. With ``g_x``, gx is the raw projection W x and the kernel normalises it
    (forward and backward, row by row inside the loop: one autograd node for the cell)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, g_hh, b_hh, h0, g_x, b_x, mask_h, keep_h, lengths, before, eps):  # type: ignore[no-untyped-def,override]
        return op("ln_gru_forward")(
            gx, w_hh, g_hh, b_hh, h0, mask_h, keep_h, lengths, before, eps, g_x, b_x
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.cfg = _save_forward(ctx, inputs, output, 10, 1)

    @staticmethod
    def backward(ctx: Any, g_hs: Tensor | None, *_: Any) -> Any:
        saved = ctx.saved_tensors
        args, outs = saved[:10], saved[10:]
        (g_hs,) = _lean_grads(ctx, (g_hs,), outs[:1])
        run: Any = LNGRUBackward.forward if ctx.direct else LNGRUBackward.apply
        res = run(g_hs, *args, *ctx.cfg, *outs)
        grads = [r if a is not None else None for r, a in zip(res, args[:7])]
        return (*grads, None, None, None, None, None)
