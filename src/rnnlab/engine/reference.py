"""The engine ops' maths in plain, differentiable PyTorch: one function per compiled kernel.

Each function takes exactly the op's arguments (see :mod:`rnnlab.engine.ops`) and returns the
op's *differentiable* outputs, computed step by step as the C++ kernel does. They serve three
purposes: the second derivative of every op (``torch.func.vjp`` of these functions, so double
backward, ``jacrev(jacrev(...))`` and ``hessian`` are exact), the CPU implementation when the
C++ build is unavailable, and the reference the op tests compare against. The layers' own
reference loop (:func:`rnnlab.layers.recurrent.unroll`) is independent of this module.

Shapes: T time, B batch, H hidden, G·H gate blocks, P LSTM output, O Jordan output, NS·H the
full-gate-recurrence state (the sigmoid gates i, f, o that are present).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_ACTS: dict[int, Callable[[Tensor], Tensor]] = {
    0: lambda v: v,
    1: torch.tanh,
    2: torch.sigmoid,
    3: torch.relu,
    4: F.softsign,
    5: F.hardtanh,
    6: F.elu,
    # the kernel's softplus: log1p(exp(x)), linear above 20 (torch's threshold)
    7: F.softplus,
}


def activation(code: int) -> Callable[[Tensor], Tensor]:
    """The activation of a kernel code (``rnnlab.engine.kernels.ACT_CODES``)."""
    return _ACTS[int(code)]


def _masks(lengths: Tensor | None, steps: int, like: Tensor) -> list[Tensor | None]:
    """Per step t, a (B, 1) bool mask of the sequences still running (None: all of them)."""
    if lengths is None:
        return [None] * steps
    L = lengths.to(like.device).unsqueeze(1)  # (B, 1)
    return [L > t for t in range(steps)]


def _keep(m: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    return new if m is None else torch.where(m, new, old)


def _read(fed: tuple[Tensor, Tensor, bool] | None, t: int, own: Tensor) -> Tensor:
    """The state step t reads: under state feedback (``fed`` = (ref (S, B, n), mask (S, B),
    detach)) r(t-1) where ``mask[t]``, else the own y(t-1) (detached under ``detach``)."""
    if fed is None or t == 0:
        return own
    ref, mask, detach = fed
    return torch.where(mask[t].unsqueeze(1), ref[t - 1], own.detach() if detach else own)


def filled(
    ref: Callable[..., Any], tin: Sequence[Any], present: Sequence[int], cfg: Sequence[Any]
) -> Callable[..., Any]:
    """``ref`` as a function of the inputs at ``present`` only (the rest from ``tin``, then
    ``cfg``): what the vjps below differentiate."""

    def f(*xs: Tensor) -> Any:
        full = list(tin)
        for i, x in zip(present, xs):
            full[i] = x
        return ref(*full, *cfg)

    return f


def vjp_of(f: Callable[..., Any]) -> Callable[[Any, tuple[Tensor, ...]], Any]:
    """(gs, xs) -> the vjp of ``f`` at ``xs`` applied to ``gs``: the backward of ``f`` as a
    differentiable function of both (its own vjp is the second derivative, its jvp the tangent
    of the gradients)."""

    def pulled(gs: Any, xs: tuple[Tensor, ...]) -> Any:
        return torch.func.vjp(f, *xs)[1](gs)

    return pulled


def second_derivative(f: Callable[..., Any], grads: Any, xs: tuple[Tensor, ...], cot: Any) -> Any:
    """A backward op's own backward: the vjp of (grads, xs) -> vjp(f)(grads) with ``cot``;
    returns (d_grads, d_xs)."""
    with torch.enable_grad():
        return torch.func.vjp(vjp_of(f), grads, xs)[1](cot)


def elman(
    gx: Tensor, w_hh: Tensor, h0: Tensor, first: Tensor | None, lengths: Tensor | None, act: int
) -> tuple[Tensor]:
    """hs (T+1, B, H): h(t) = act(gx(t) + U h(t-1)) (+ ``first`` at step 0), frozen past each
    length."""
    f = activation(act)
    h, hs = h0, [h0]
    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        pre = gx[t] + F.linear(h, w_hh)
        if t == 0 and first is not None:
            pre = pre + first
        h = _keep(m, f(pre), h)
        hs.append(h)
    return (torch.stack(hs),)


def jordan(
    gx: Tensor,
    u: Tensor,
    wy: Tensor,
    by: Tensor | None,
    y0: Tensor,
    lengths: Tensor | None,
    act: int,
    oact: int,
) -> tuple[Tensor]:
    """ys (T+1, B, O): h(t) = act(gx(t) + U y(t-1)), y(t) = oact(W_y h(t) + b_y)."""
    f, g = activation(act), activation(oact)
    y, ys = y0, [y0]
    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        h = f(gx[t] + F.linear(y, u))
        y = _keep(m, g(F.linear(h, wy, by)), y)
        ys.append(y)
    return (torch.stack(ys),)


def gru(
    gx: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    h0: Tensor,
    lengths: Tensor | None,
    before: bool,
    act: int,
    store: bool = True,
    fed: tuple[Tensor, Tensor, bool] | None = None,
) -> tuple[Tensor]:
    """hs (T+1, B, H). Reset after: n = act(gx_n + r ⊙ (U_n h + b_hn)); reset before:
    n = act(gx_n + U_n (r ⊙ h)); h(t) = z ⊙ h(t-1) + (1 - z) ⊙ n. With ``fed`` (state
    feedback, :func:`_read`) the step reads s(t) in place of h(t-1)."""
    f = activation(act)
    H = h0.shape[-1]
    h, hs = h0, [h0]
    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        s = _read(fed, t, h)
        xr, xz, xn = gx[t].split(H, -1)
        if before:
            hr, hz = F.linear(s, w_hh[: 2 * H]).split(H, -1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = f(xn + F.linear(r * s, w_hh[2 * H :]))
        else:
            hr, hz, hn = F.linear(s, w_hh, b_hh).split(H, -1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = f(xn + r * hn)
        h = _keep(m, z * s + (1 - z) * n, h)
        hs.append(h)
    return (torch.stack(hs),)


def lstm(
    gx: Tensor,
    w_hh: Tensor,
    w_ci: Tensor | None,
    w_cf: Tensor | None,
    w_co: Tensor | None,
    w_hr: Tensor | None,
    w_gg: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    g0: Tensor | None,
    lengths: Tensor | None,
    blocks: Sequence[int],
    coupled: bool,
    act: int,
    cact: int,
    store: bool = True,
    fed: tuple[Tensor, Tensor, bool] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(ys (T+1, B, P), cs (T+1, B, H), gs (T+1, B, NS·H) or empty): every option of
    LSTMCell. ``blocks`` gives the block index of i, f, g, o in the gate layout (-1 absent).

        i = σ(a_i + w_ci ⊙ c(t-1) + R_i), f = σ(a_f + w_cf ⊙ c(t-1) + R_f), g = σ_h(a_g)
        c(t) = f ⊙ c(t-1) + i ⊙ g  (absent gates drop out; CIFG: f = 1 - i)
        o = σ(a_o + w_co ⊙ c(t) + R_o),  m = o ⊙ σ_y(c(t)),  y(t) = W_hr m (or m)
    with a = gx(t) + W_hh y(t-1) and R = W_gg [i, f, o](t-1) under full gate recurrence.
    With ``fed`` (state feedback, :func:`_read`) a reads s(t) in place of y(t-1); c carries on.
    """
    oi, of, og, oo = (int(b) for b in blocks)
    fa, fc = activation(act), activation(cact)
    H = c0.shape[-1]
    fgr = w_gg is not None
    # order of the present sigmoid gates in the FGR state
    names = [n for n, b in (("i", oi), ("f", of), ("o", oo)) if b >= 0]
    y, c = h0, c0
    gprev = g0 if fgr else None
    ys, cs = [h0], [c0]
    gs: list[Tensor] = [g0] if g0 is not None and fgr else []
    for t, m in enumerate(_masks(lengths, gx.shape[0], gx)):
        a = gx[t] + F.linear(_read(fed, t, y), w_hh)
        blk = a.split(H, -1)
        R: dict[str, Tensor] = {}
        if fgr:
            assert gprev is not None and w_gg is not None
            R = dict(zip(names, F.linear(gprev, w_gg).split(H, -1)))
        i = f_ = o = None
        if oi >= 0:
            p = blk[oi] + (w_ci * c if w_ci is not None else 0) + R.get("i", 0)
            i = torch.sigmoid(p)
        if of >= 0:
            p = blk[of] + (w_cf * c if w_cf is not None else 0) + R.get("f", 0)
            f_ = torch.sigmoid(p)
        g = fa(blk[og])
        if f_ is not None:
            c_new = f_ * c + (i * g if i is not None else g)
        elif i is not None and coupled:
            c_new = (1 - i) * c + i * g
        else:
            c_new = c + (i * g if i is not None else g)
        out = fc(c_new)
        if oo >= 0:
            p = blk[oo] + (w_co * c_new if w_co is not None else 0) + R.get("o", 0)
            o = torch.sigmoid(p)
            out = o * out
        y_new = F.linear(out, w_hr) if w_hr is not None else out
        y, c = _keep(m, y_new, y), _keep(m, c_new, c)
        ys.append(y)
        cs.append(c)
        if fgr:
            assert gprev is not None
            present = {"i": i, "f": f_, "o": o}
            gnew = torch.cat([present[n] for n in names], -1)  # type: ignore[misc]
            gprev = _keep(m, gnew, gprev)
            gs.append(gprev)
    g_out = torch.stack(gs) if fgr else gx.new_empty(0)
    return torch.stack(ys), torch.stack(cs), g_out


# the masked ops' references (rnnlab.engine.feedback_gated): arguments in schema order
def gru_fed(gx, w_hh, b_hh, h0, ref, mask, lengths, before, act, store, detach):  # type: ignore[no-untyped-def]
    return gru(gx, w_hh, b_hh, h0, lengths, before, act, store, (ref, mask, detach))


def lstm_fed(  # type: ignore[no-untyped-def]
    gx,
    w_hh,
    w_ci,
    w_cf,
    w_co,
    w_hr,
    w_gg,
    h0,
    c0,
    g0,
    ref,
    mask,
    lengths,
    blocks,
    coupled,
    act,
    cact,
    store,
    detach,
):
    return lstm(
        gx, w_hh, w_ci, w_cf, w_co, w_hr, w_gg, h0, c0, g0, lengths, blocks, coupled, act, cact,
        store, (ref, mask, detach),
    )  # fmt: skip
