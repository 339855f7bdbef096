"""State feedback on the engine: the feedback mask run inside the kernel's time loop.

Under a feedback schedule (teacher forcing, free running, alternating blocks, scheduled
sampling's coin, or a given mask: :mod:`rnnlab.layers.feedback`) the state a step reads is, per
sequence, the reference r(t-1) where the mask says so and the model's own output y(t-1)
elsewhere. ``rnnlab::fed_forward`` does that selection in C++ at every step (``csrc/feedback.h``),
so a whole chunk is **one** op call, for the cells whose state *is* their output:

- :class:`~rnnlab.cells.JordanCell` (state y): h(t) = act(gx(t) + U s(t)), y(t) = oact(W_y h(t)
  + b_y);
- :class:`~rnnlab.cells.ElmanCell` without an output layer (state h = y): h(t) = act(gx(t) +
  U s(t)).

The op follows the pattern of :mod:`.ops` and :mod:`.functions` (docs/design/0015): Python
schemas with fixed arity, a fake for compile and export, the compiled CPU kernel (or the
reference below when the build is unavailable), and a pair of ``autograd.Function``s with
``setup_context``: the forward's backward is the hand-written BPTT ``rnnlab::fed_backward``,
which honours ``detach`` (the fed-back own output carries no gradient); the backward's own
backward (second derivative) is ``torch.func.vjp`` of the differentiable reference
:func:`reference`. Under vmap the ops run slice by slice (per-sample gradients included).

Shapes: S steps of the chunk, B batch, I input, H hidden, O output (= the fed-back field).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import build
from .reference import activation, filled, second_derivative

_lib = torch.library.Library("rnnlab", "FRAGMENT")
SCHEMAS = {
    "fed_forward": "(Tensor gx, Tensor u, Tensor? wy, Tensor? by, Tensor y0, Tensor ref, "
    "Tensor mask, Tensor? lengths, int act, int oact) -> (Tensor, Tensor, Tensor)",
    "fed_backward": "(Tensor grad_ys, Tensor ys, Tensor hs, Tensor ss, Tensor mask, Tensor u, "
    "Tensor? wy, Tensor? lengths, int act, int oact, bool detach) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
}
for _name, _schema in SCHEMAS.items():
    _lib.define(_name + _schema)


def reference(
    gx: Tensor,
    u: Tensor,
    wy: Tensor | None,
    by: Tensor | None,
    y0: Tensor,
    ref: Tensor,
    mask: Tensor,
    lengths: Tensor | None,
    act: int,
    oact: int,
    detach: bool = False,
) -> tuple[Tensor]:
    """ys (S+1, B, O), the maths of ``fed_forward`` step by step in differentiable PyTorch
    (mask (S, B) bool; ``ref[t-1]`` is fed at step t where ``mask[t]``)."""
    f, g = activation(act), activation(oact)
    y, ys = y0, [y0]
    for t in range(gx.shape[0]):
        s = y
        if t > 0:
            own = y.detach() if detach else y
            s = torch.where(mask[t].unsqueeze(1), ref[t - 1], own)
        h = f(gx[t] + F.linear(s, u))
        new = h if wy is None else g(F.linear(h, wy, by))
        if lengths is not None:
            new = torch.where((lengths.to(y.device) > t).unsqueeze(1), new, y)
        y = new
        ys.append(y)
    return (torch.stack(ys),)


def _fwd_fake(gx, u, wy, by, y0, ref, mask, lengths, act, oact):  # type: ignore[no-untyped-def]
    S, B, H = gx.shape
    O = u.shape[1]
    hs = gx.new_empty(S, B, H) if wy is not None else gx.new_empty(0)
    return gx.new_empty(S + 1, B, O), hs, gx.new_empty(S, B, O)


def _bwd_fake(grad_ys, ys, hs, ss, mask, u, wy, lengths, act, oact, detach):  # type: ignore[no-untyped-def]
    S, B, O = ss.shape
    H = u.shape[0]
    n = ss.new_empty
    has = wy is not None
    return n(S, B, H), n(H, O), n(O, H) if has else n(0), n(O) if has else n(0), n(B, O), n(S, B, O)


_HALF = (torch.bfloat16, torch.float16)
_NO_LENGTHS = torch.empty(0, dtype=torch.int64)


def cpu_impl(name: str, primary: int, at: int, drop: int = 0) -> Any:
    """The compiled kernel behind the masked op ``name`` (``lengths`` at ``at``; the last
    ``drop`` arguments are the Functions' configuration only, not the kernel's); half
    precision is computed in float32 and returned in ``args[primary]``'s dtype."""

    def impl(*args: Any) -> Any:
        args = args[: len(args) - drop]
        kernels = build.ops()
        dtype = args[primary].dtype
        compute = dtype
        for a in args:
            if isinstance(a, Tensor) and a.is_floating_point():
                compute = torch.promote_types(compute, a.dtype)
        if compute in _HALF:
            compute = torch.float32
        if kernels is None:
            raise RuntimeError(
                f"torch.ops.rnnlab.{name}: the compiled kernels are unavailable "
                f"({build.status()['error']}); the layers run their reference loops instead"
            )
        empty = torch.empty(0, dtype=compute)
        cargs = []
        for i, a in enumerate(args):
            if a is None:
                cargs.append(_NO_LENGTHS if i == at else empty)
            elif isinstance(a, Tensor) and a.is_floating_point() and a.dtype != compute:
                cargs.append(a.to(compute))
            else:
                cargs.append(a)
        out = getattr(kernels, name)(*cargs)
        return tuple(o.to(dtype) if compute != dtype else o for o in out)

    return impl


def vmap_loop(name: str) -> Any:
    """Under vmap: the op slice by slice (weights may be vmapped too), results stacked."""

    def rule(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
        outs = []
        for v in range(info.batch_size):
            sl = [
                a.select(d, v) if d is not None and isinstance(a, Tensor) else a
                for a, d in zip(args, in_dims)
            ]
            outs.append(_op(name)(*sl))
        stacked = tuple(torch.stack(k) for k in zip(*outs))
        return stacked, (0,) * len(stacked)

    return rule


def _op(name: str) -> Any:
    return getattr(torch.ops.rnnlab, name).default


def register_op(lib: Any, name: str, fake: Any, impl: Any) -> None:
    """Fake, CPU kernel, autocast (float32) and vmap (slice by slice) of a masked op."""
    torch.library.register_fake(f"rnnlab::{name}", fake, lib=lib)
    lib.impl(name, impl, "CPU")
    torch.library.register_autocast(f"rnnlab::{name}", "cpu", torch.float32, lib=lib)
    torch.library.register_vmap(f"rnnlab::{name}", vmap_loop(name), lib=lib)


register_op(_lib, "fed_forward", _fwd_fake, cpu_impl("fed_forward", 0, 7))
register_op(_lib, "fed_backward", _bwd_fake, cpu_impl("fed_backward", 1, 7))


def _fl(t: Any) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point()


# inputs of FedForward: gx, u, wy?, by?, y0, ref, mask, lengths?, act, oact, detach
_N_IN = 8


class FedBackward(torch.autograd.Function):
    """``rnnlab::fed_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_ys, gx, u, wy, by, y0, ref, mask, lengths, act, oact, detach, ys, hs, ss):  # type: ignore[no-untyped-def,override]
        dgx, du, dwy, dby, dy0, dref = _op("fed_backward")(
            grad_ys, ys, hs, ss, mask, u, wy, lengths, act, oact, detach
        )
        out = [dgx, du]
        if wy is not None:
            out.append(dwy)
        if by is not None:
            out.append(dby)
        out.append(dy0)
        if _fl(ref):
            out.append(dref)
        return tuple(out)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(*inputs[: 1 + _N_IN])
        ctx.cfg = inputs[1 + _N_IN : 1 + _N_IN + 3]
        ctx.n_args = len(inputs)

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        saved = ctx.saved_tensors
        grad_ys, tin = saved[0], list(saved[1:])
        present = [i for i, t in enumerate(tin) if _fl(t)]

        ref = filled(reference, tin, present, ctx.cfg)
        xs = tuple(tin[i] for i in present)
        d_g, d_xs = second_derivative(lambda *a: ref(*a)[0], grad_ys, xs, tuple(cot))
        out: list[Any] = [None] * ctx.n_args
        out[0] = d_g
        for i, d in zip(present, d_xs):
            out[1 + i] = d
        return tuple(out)


class FedForward(torch.autograd.Function):
    """``rnnlab::fed_forward`` with its gradients: ``FedBackward`` (the op's BPTT)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, u, wy, by, y0, ref, mask, lengths, act, oact, detach):  # type: ignore[no-untyped-def,override]
        return _op("fed_forward")(gx, u, wy, by, y0, ref, mask, lengths, act, oact)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(*inputs[:_N_IN], *output)
        ctx.cfg = inputs[_N_IN:]

    @staticmethod
    def backward(ctx: Any, g_ys: Tensor, _g_hs: Any, _g_ss: Any) -> Any:
        saved = ctx.saved_tensors
        tin, outs = list(saved[:_N_IN]), list(saved[_N_IN:])
        res = iter(FedBackward.apply(g_ys, *tin, *ctx.cfg, *outs))
        grads = [next(res) if _fl(t) else None for t in tin]
        return (*grads, None, None, None)


def run(
    gx: Tensor,
    u: Tensor,
    wy: Tensor | None,
    by: Tensor | None,
    y0: Tensor,
    ref: Tensor,
    mask: Tensor,
    lengths: Tensor | None,
    act: int,
    oact: int,
    detach: bool,
) -> Tensor:
    """ys (S+1, B, O) of the fed recurrence (gx (S, B, H) time-major, ref (S, B, O), mask
    (S, B) bool), differentiable in every floating argument."""
    ys, _, _ = FedForward.apply(gx, u, wy, by, y0, ref, mask, lengths, act, oact, bool(detach))
    return ys


# ---------------------------------------------------------------------- the kernels ----
def prepare(cell: Any, x: Tensor, reference: Tensor, mask: Tensor, bias: Any = "summed") -> Any:
    """What every masked kernel does first: gx = x W_ihᵀ + b for all steps (time-major), the
    reference (S, B, n) in gx's dtype and the mask (S, B) bool; None when the compiled ops
    cannot run ``x`` (the kernel declines)."""
    from .kernels import _available, _summed_bias, _time_major_projection

    if not _available(x):
        return None
    b = _summed_bias(cell) if bias == "summed" else bias
    gx = _time_major_projection(x, cell.weight_ih, b)
    ref = reference.to(gx.dtype).transpose(0, 1).contiguous()
    m = mask.to(device=x.device, dtype=torch.bool).t().contiguous()
    return gx, ref, m


def read_out(seq: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """Outputs (B, T, n) zeroed past each length and the final states, off s[0..T]."""
    from .kernels import _read_out

    return _read_out(seq, lengths)


def _simple_masked(
    cell: Any, x: Tensor, y0: Tensor, lengths: Tensor | None, reference: Tensor, mask: Tensor,
    detach: bool, wy: Tensor | None, by: Tensor | None, oact_name: str | None,
) -> Any:  # fmt: skip
    from .kernels import ACT_CODES

    act = ACT_CODES.get(cell.activation_name or "")
    oact = ACT_CODES.get(oact_name or "") if wy is not None else 0
    if act is None or oact is None:
        return None
    ready = prepare(cell, x, reference, mask)
    if ready is None:
        return None
    gx, ref, m = ready
    ys = run(gx, cell.weight_hh, wy, by, y0, ref, m, lengths, act, oact, detach)
    return read_out(ys, lengths)


def jordan_masked(
    cell: Any,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    reference: Tensor,
    mask: Tensor,
    detach: bool,
) -> Any:
    """Jordan (state y) under a feedback mask (B, T): one ``fed_forward`` call for the chunk."""
    from ..cells.simple import JordanState

    res = _simple_masked(
        cell, x, state.y, lengths, reference, mask, detach, cell.weight_ho, cell.bias_ho,
        cell.output_activation_name,
    )  # fmt: skip
    return None if res is None else (res[0], JordanState(res[1]))


def elman_masked(
    cell: Any,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    reference: Tensor,
    mask: Tensor,
    detach: bool,
) -> Any:
    """Elman without an output layer (state h = y) under a feedback mask: one op call."""
    from ..cells.simple import ElmanState

    if cell.weight_ho is not None:
        return None
    res = _simple_masked(cell, x, state.h, lengths, reference, mask, detach, None, None, None)
    return None if res is None else (res[0], ElmanState(res[1]))


def register_feedback() -> None:
    """Register the masked kernels of the cells whose state is their output (Jordan, Elman
    with h = y); :mod:`.feedback_gated` registers GRU's, LSTM's and the dropout wrapper's."""
    from ..cells.simple import ElmanCell, JordanCell
    from .registry import register_masked

    register_masked(JordanCell, jordan_masked)
    register_masked(ElmanCell, elman_masked)
