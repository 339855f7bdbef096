"""Gradients of the engine ops: one pair of autograd.Functions per kernel.

torch 2.13's torch.func needs an ``autograd.Function`` with ``setup_context`` (``register_
autograd`` alone fails func.grad and jacrev, pytorch#168393), so each kernel gets:

- ``Forward``: calls ``rnnlab::<cell>_forward``; its backward calls ``Backward``;
- ``Backward``: calls ``rnnlab::<cell>_backward`` (the hand-written BPTT); its own backward,
  the second derivative, is ``torch.func.vjp`` of the vector-Jacobian product of the
  differentiable reference (:mod:`.reference`), so double backward, ``jacrev(jacrev(...))`` and
  ``hessian`` are exact and no backward op is ever left without a formula (a missing one
  would give silently wrong second derivatives).

Both use ``generate_vmap_rule = True``: under vmap the ops' own rules (fold into B, or slice
by slice) apply. These classes have no ``jvp``: a ``jvp`` staticmethod stops Dynamo from
tracing a Function ("Unsupported custom jvp"). They are what compile and export see;
:mod:`.routes` picks a lean Function in plain eager mode and subclasses with forward mode
(jvp, jacfwd, hessian) under torch.func.

Every Function takes the op's arguments in schema order: ``n_in`` tensor-or-None arguments,
then the non-tensor configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import reference
from .ops import op


def _floating(t: Any) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point()


@dataclass(frozen=True)
class Spec:
    """How one kernel's op pair is differentiated.

    Attributes:
        cell: "elman", "jordan", "gru" or "lstm" (names the ops and the reference).
        n_in: the forward op's tensor-or-None arguments (the rest is configuration).
        n_out: the forward op's outputs.
        diff: indices of the differentiable outputs (the rest are buffers for the backward).
        backward_args: (grads of the diff outputs, tensor inputs, configuration, outputs) ->
            the backward op's arguments.
        backward_grads: (backward op's outputs, tensor inputs) -> one gradient (or None) per
            tensor input.
    """

    cell: str
    n_in: int
    n_out: int
    diff: tuple[int, ...]
    backward_args: Callable[[list[Tensor], list[Any], list[Any], list[Tensor]], list[Any]]
    backward_grads: Callable[[tuple[Tensor, ...], list[Any]], list[Tensor | None]]


# The Functions' bodies, shared; each kernel's classes below are written out at module level
# because Dynamo cannot trace an autograd.Function class created inside a function.
def _fwd(spec: Spec, args: tuple[Any, ...]) -> Any:
    out = op(f"{spec.cell}_forward")(*args)
    # always a tuple: Dynamo's autograd.Function tracing expects one (elman_forward has one)
    return out if isinstance(out, tuple) else (out,)


def _fwd_setup(spec: Spec, ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    outs = output if isinstance(output, tuple) else (output,)
    ctx.mark_non_differentiable(*(o for k, o in enumerate(outs) if k not in spec.diff))
    ctx.save_for_backward(*inputs[: spec.n_in], *outs)
    ctx.cfg = inputs[spec.n_in :]


def _fwd_backward(spec: Spec, backward: Any, ctx: Any, gouts: tuple[Tensor, ...]) -> Any:
    saved = ctx.saved_tensors
    tin, outs = list(saved[: spec.n_in]), list(saved[spec.n_in :])
    grads = [gouts[k] for k in spec.diff]
    res = backward.apply(*grads, *tin, *ctx.cfg, *outs)
    res = res if isinstance(res, tuple) else (res,)
    it = iter(res)
    g_in = [next(it) if _floating(t) else None for t in tin]
    return (*g_in, *([None] * len(ctx.cfg)))


def _bwd(spec: Spec, args: tuple[Any, ...]) -> Any:
    n_diff, n_in = len(spec.diff), spec.n_in
    grads, tin = list(args[:n_diff]), list(args[n_diff : n_diff + n_in])
    cfg, outs = list(args[n_diff + n_in : -spec.n_out]), list(args[-spec.n_out :])
    raw = op(f"{spec.cell}_backward")(*spec.backward_args(grads, tin, cfg, outs))
    res = spec.backward_grads(raw if isinstance(raw, tuple) else (raw,), tin)
    return tuple(g for g, t in zip(res, tin) if _floating(t))


def _bwd_setup(spec: Spec, ctx: Any, inputs: tuple[Any, ...]) -> None:
    n_diff, n_in = len(spec.diff), spec.n_in
    ctx.save_for_backward(*inputs[: n_diff + n_in])
    ctx.cfg = inputs[n_diff + n_in : -spec.n_out]
    ctx.n_args = len(inputs)


def _bwd_backward(spec: Spec, ctx: Any, cot: tuple[Tensor, ...]) -> Any:
    """The second derivative: the vjp of (grads, inputs) -> vjp(reference)(grads)."""
    n_diff = len(spec.diff)
    saved = ctx.saved_tensors
    grads, tin = saved[:n_diff], list(saved[n_diff:])
    cfg = ctx.cfg
    ref = getattr(reference, spec.cell)
    present = [i for i, t in enumerate(tin) if _floating(t)]

    xs = tuple(tin[i] for i in present)
    f = reference.filled(ref, tin, present, cfg)
    d_grads, d_xs = reference.second_derivative(f, tuple(grads), xs, tuple(cot))
    out: list[Any] = [None] * ctx.n_args
    out[:n_diff] = d_grads
    for i, d in zip(present, d_xs):
        out[n_diff + i] = d
    return tuple(out)


# --------------------------------------------------------------------------- the four ----
# Each forward op's tensor inputs (schema order) and how its backward op is called.

# elman_forward(gx, w_hh, h0, first?, lengths?, act) -> hs
_ELMAN = Spec(
    "elman",
    5,
    1,
    (0,),
    lambda g, tin, cfg, outs: [g[0], outs[0], tin[1], tin[4], *cfg],
    # `first` is added to step 0's pre-activation: its gradient is dgx(0)
    lambda r, tin: [r[0], r[1], r[2], r[0][0] if tin[3] is not None else None, None],
)

# jordan_forward(gx, u, wy, by?, y0, lengths?, act, oact) -> ys, hs
_JORDAN = Spec(
    "jordan",
    6,
    2,
    (0,),
    lambda g, tin, cfg, outs: [g[0], outs[0], outs[1], tin[1], tin[2], tin[5], *cfg],
    lambda r, tin: [r[0], r[1], r[2], r[3] if tin[3] is not None else None, r[4], None],
)

# gru_forward(gx, w_hh, b_hh?, h0, lengths?, before, act, store) -> hs, gates, aux
_GRU = Spec(
    "gru",
    5,
    3,
    (0,),
    lambda g, tin, cfg, outs: [g[0], outs[0], outs[1], outs[2], tin[1], tin[4], cfg[0], cfg[1]],
    lambda r, tin: [r[0], r[1], r[2] if tin[2] is not None else None, r[3], None],
)


# lstm_forward(gx, w_hh, w_ci?, w_cf?, w_co?, w_hr?, w_gg?, h0, c0, g0?, lengths?, blocks,
#              coupled, act, cact, store) -> ys, cs, gs, acts, ms
def _lstm_bwd_args(g: list[Tensor], tin: list[Any], cfg: list[Any], outs: list[Tensor]) -> Any:
    fgr = tin[6] is not None
    return [g[0], g[1], g[2] if fgr else None, *outs, *tin[1:7], tin[10], *cfg[:4]]


def _lstm_grads(r: tuple[Tensor, ...], tin: list[Any]) -> list[Tensor | None]:
    dgx, dwhh, dci, dcf, dco, dwhr, dwgg, dh0, dc0, dg0 = r
    opt = [d if t is not None else None for d, t in zip((dci, dcf, dco, dwhr, dwgg), tin[2:7])]
    return [dgx, dwhh, *opt, dh0, dc0, dg0 if tin[9] is not None else None, None]


_LSTM = Spec("lstm", 11, 5, (0, 1, 2), _lstm_bwd_args, _lstm_grads)


# Written out per kernel, with explicit parameters: Dynamo traces neither an autograd.Function
# class created inside a function nor a ``forward(*args)`` without gradients (it passes ctx).


class ElmanBackward(torch.autograd.Function):
    """``rnnlab::elman_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_hs, gx, w_hh, h0, first, lengths, act, hs):  # type: ignore[no-untyped-def,override]
        return _bwd(_ELMAN, (grad_hs, gx, w_hh, h0, first, lengths, act, hs))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _bwd_setup(_ELMAN, ctx, inputs)

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        return _bwd_backward(_ELMAN, ctx, cot)


class Elman(torch.autograd.Function):
    """``rnnlab::elman_forward`` with its gradients: ``ElmanBackward`` (the op's BPTT)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, h0, first, lengths, act):  # type: ignore[no-untyped-def,override]
        return _fwd(_ELMAN, (gx, w_hh, h0, first, lengths, act))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _fwd_setup(_ELMAN, ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *gouts: Tensor) -> Any:
        return _fwd_backward(_ELMAN, ElmanBackward, ctx, gouts)


class JordanBackward(torch.autograd.Function):
    """``rnnlab::jordan_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_ys, gx, u, wy, by, y0, lengths, act, oact, ys, hs):  # type: ignore[no-untyped-def,override]
        return _bwd(_JORDAN, (grad_ys, gx, u, wy, by, y0, lengths, act, oact, ys, hs))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _bwd_setup(_JORDAN, ctx, inputs)

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        return _bwd_backward(_JORDAN, ctx, cot)


class Jordan(torch.autograd.Function):
    """``rnnlab::jordan_forward`` with its gradients: ``JordanBackward`` (the op's BPTT)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, u, wy, by, y0, lengths, act, oact):  # type: ignore[no-untyped-def,override]
        return _fwd(_JORDAN, (gx, u, wy, by, y0, lengths, act, oact))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _fwd_setup(_JORDAN, ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *gouts: Tensor) -> Any:
        return _fwd_backward(_JORDAN, JordanBackward, ctx, gouts)


class GRUBackward(torch.autograd.Function):
    """``rnnlab::gru_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_hs, gx, w_hh, b_hh, h0, lengths, before, act, store, hs, gates, aux):  # type: ignore[no-untyped-def,override]
        return _bwd(
            _GRU, (grad_hs, gx, w_hh, b_hh, h0, lengths, before, act, store, hs, gates, aux)
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _bwd_setup(_GRU, ctx, inputs)

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        return _bwd_backward(_GRU, ctx, cot)


class GRU(torch.autograd.Function):
    """``rnnlab::gru_forward`` with its gradients: ``GRUBackward`` (the op's BPTT)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, b_hh, h0, lengths, before, act, store):  # type: ignore[no-untyped-def,override]
        return _fwd(_GRU, (gx, w_hh, b_hh, h0, lengths, before, act, store))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _fwd_setup(_GRU, ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *gouts: Tensor) -> Any:
        return _fwd_backward(_GRU, GRUBackward, ctx, gouts)


class LSTMBackward(torch.autograd.Function):
    """``rnnlab::lstm_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        grad_ys,
        grad_cs,
        grad_gs,
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
        lengths,
        blocks,
        coupled,
        act,
        cact,
        store,
        ys,
        cs,
        gs,
        acts,
        ms,
    ):  # type: ignore[no-untyped-def,override]
        return _bwd(
            _LSTM,
            (
                grad_ys,
                grad_cs,
                grad_gs,
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
                lengths,
                blocks,
                coupled,
                act,
                cact,
                store,
                ys,
                cs,
                gs,
                acts,
                ms,
            ),
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _bwd_setup(_LSTM, ctx, inputs)

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        return _bwd_backward(_LSTM, ctx, cot)


class LSTM(torch.autograd.Function):
    """``rnnlab::lstm_forward`` with its gradients: ``LSTMBackward`` (the op's BPTT)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
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
        lengths,
        blocks,
        coupled,
        act,
        cact,
        store,
    ):  # type: ignore[no-untyped-def,override]
        return _fwd(
            _LSTM,
            (
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
                lengths,
                blocks,
                coupled,
                act,
                cact,
                store,
            ),
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _fwd_setup(_LSTM, ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *gouts: Tensor) -> Any:
        return _fwd_backward(_LSTM, LSTMBackward, ctx, gouts)
