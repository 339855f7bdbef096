"""State feedback on the engine for the gated cells: ``rnnlab::gru_fed_*`` and
``rnnlab::lstm_fed_*``, the feedback mask inside the GRU's and the LSTM's own time loops.

As :mod:`.feedback` does for Jordan and Elman: under a schedule the state a step reads is,
per sequence, the reference r(t-1) where the mask says so and the model's own output y(t-1)
elsewhere; the C++ loops are the plain kernels' (``csrc/kernels.cpp``, ``csrc/lstm.h``) with a
``Fed`` that makes each step read that selection (``csrc/feedback.h``), so a chunk is **one**
op call:

- :class:`~rnnlab.cells.GRUCell`, both reset forms: s(t) replaces h(t-1) everywhere in the
  step (gates, candidate and the update z ⊙ s(t) + (1 - z) ⊙ n);
- :class:`~rnnlab.cells.LSTMCell`, every variant the engine's LSTM runs (peepholes,
  projection, absent gates, CIFG, FGR): only the output h is fed back, the cell c (and the FGR
  gate state) carries on, as :func:`rnnlab.layers.unroll` replaces the cell's
  ``feedback_field`` only. torch's fused (oneDNN) LSTM cannot take a mask, so a masked LSTM
  always runs the engine's own loop.

The ops follow :mod:`.functions`' pattern (docs/design/0015): Python schemas with fixed arity,
a fake for compile and export, the compiled kernel, and a pair of ``autograd.Function``s whose
second derivative is ``torch.func.vjp`` of the differentiable references
:func:`rnnlab.engine.reference.gru_fed` / ``lstm_fed`` (the plain references with a ``fed``
argument). ``detach`` rides along as the last argument of the forward op (unused by its
kernel) so that the Functions see it. Refused (the kernels decline, the dispatcher counts the
reference loop): a callable activation, a device without the compiled ops.

Shapes: S steps, B batch, H hidden, P LSTM output (= H without projection), G gate blocks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import functions as fn
from . import ops
from .feedback import cpu_impl, prepare, read_out, register_op

_lib = torch.library.Library("rnnlab", "FRAGMENT")
SCHEMAS = {
    "gru_fed_forward": "(Tensor gx, Tensor w_hh, Tensor? b_hh, Tensor h0, Tensor ref, "
    "Tensor mask, Tensor? lengths, bool before, int act, bool store, bool detach) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
    "gru_fed_backward": "(Tensor grad_hs, Tensor hs, Tensor gates, Tensor aux, Tensor ss, "
    "Tensor mask, Tensor w_hh, Tensor? lengths, bool before, int act, bool detach) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "lstm_fed_forward": "(Tensor gx, Tensor w_hh, Tensor? w_ci, Tensor? w_cf, Tensor? w_co, "
    "Tensor? w_hr, Tensor? w_gg, Tensor h0, Tensor c0, Tensor? g0, Tensor ref, Tensor mask, "
    "Tensor? lengths, int[] blocks, bool coupled, int act, int cact, bool store, bool detach) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "lstm_fed_backward": "(Tensor grad_ys, Tensor grad_cs, Tensor? grad_gs, Tensor ys, "
    "Tensor cs, Tensor gs, Tensor acts, Tensor ms, Tensor ss, Tensor mask, Tensor w_hh, "
    "Tensor? w_ci, Tensor? w_cf, Tensor? w_co, Tensor? w_hr, Tensor? w_gg, Tensor? lengths, "
    "int[] blocks, bool coupled, int act, int cact, bool detach) -> (Tensor, Tensor, Tensor, "
    "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
}
for _name, _schema in SCHEMAS.items():
    _lib.define(_name + _schema)


# ------------------------------------------------------------------------------- fakes ----
def _gru_fwd_fake(gx, w_hh, b_hh, h0, ref, mask, lengths, before, act, store, detach):  # type: ignore[no-untyped-def]
    hs, gates, aux = ops._gru_fwd_fake(gx, w_hh, b_hh, h0, lengths, before, act, store)
    S, B = gx.shape[0], gx.shape[1]
    return hs, gates, aux, gx.new_empty(S, B, h0.shape[-1])


def _gru_bwd_fake(grad_hs, hs, gates, aux, ss, mask, w_hh, lengths, before, act, detach):  # type: ignore[no-untyped-def]
    return (*ops._gru_bwd_fake(grad_hs, hs, gates, aux, w_hh, lengths, before, act),
            hs.new_empty(ss.shape))  # fmt: skip


def _lstm_fwd_fake(*a):  # type: ignore[no-untyped-def]
    gx, h0 = a[0], a[7]
    out = ops._lstm_fwd_fake(*a[:10], *a[12:18])
    return (*out, gx.new_empty(gx.shape[0], gx.shape[1], h0.shape[-1]))


def _lstm_bwd_fake(*a):  # type: ignore[no-untyped-def]
    ys, ss = a[3], a[8]
    out = ops._lstm_bwd_fake(*a[:8], *a[10:21])
    return (*out, ys.new_empty(ss.shape))


register_op(_lib, "gru_fed_forward", _gru_fwd_fake, cpu_impl("gru_fed_forward", 0, 6, drop=1))
register_op(_lib, "gru_fed_backward", _gru_bwd_fake, cpu_impl("gru_fed_backward", 1, 7))
register_op(_lib, "lstm_fed_forward", _lstm_fwd_fake, cpu_impl("lstm_fed_forward", 0, 12, drop=1))
register_op(_lib, "lstm_fed_backward", _lstm_bwd_fake, cpu_impl("lstm_fed_backward", 3, 16))


# ---------------------------------------------------------------------------- gradients ----
# gru_fed_forward(gx, w_hh, b_hh?, h0, ref, mask, lengths?, before, act, store, detach)
#   -> hs, gates, aux, ss
_GRU = fn.Spec(
    "gru_fed",
    7,
    4,
    (0,),
    lambda g, tin, cfg, outs: [g[0], *outs, tin[5], tin[1], tin[6], cfg[0], cfg[1], cfg[3]],
    lambda r, tin: [r[0], r[1], r[2] if tin[2] is not None else None, r[3], r[4], None, None],
)


# lstm_fed_forward(gx, w_hh, w_ci?, w_cf?, w_co?, w_hr?, w_gg?, h0, c0, g0?, ref, mask,
#                  lengths?, blocks, coupled, act, cact, store, detach) -> ys, cs, gs, acts, ms, ss
def _lstm_bwd_args(g: list[Tensor], tin: list[Any], cfg: list[Any], outs: list[Tensor]) -> Any:
    fgr = tin[6] is not None
    return [g[0], g[1], g[2] if fgr else None, *outs, tin[11], *tin[1:7], tin[12],
            *cfg[:4], cfg[5]]  # fmt: skip


def _lstm_grads(r: tuple[Tensor, ...], tin: list[Any]) -> list[Tensor | None]:
    return [*fn._lstm_grads(r[:10], tin[:10] + [None])[:10], r[10], None, None]


_LSTM = fn.Spec("lstm_fed", 13, 6, (0, 1, 2), _lstm_bwd_args, _lstm_grads)


class GRUFedBackward(torch.autograd.Function):
    """``rnnlab::gru_fed_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_hs, gx, w_hh, b_hh, h0, ref, mask, lengths, before, act, store, detach,  # type: ignore[no-untyped-def,override]
                hs, gates, aux, ss):  # fmt: skip
        return fn._bwd(_GRU, (grad_hs, gx, w_hh, b_hh, h0, ref, mask, lengths, before, act,
                              store, detach, hs, gates, aux, ss))  # fmt: skip

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        fn._bwd_setup(_GRU, ctx, inputs)

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        return fn._bwd_backward(_GRU, ctx, cot)


class GRUFed(torch.autograd.Function):
    """``rnnlab::gru_fed_forward`` with its gradients: ``GRUFedBackward`` (the op's BPTT)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, b_hh, h0, ref, mask, lengths, before, act, store, detach):  # type: ignore[no-untyped-def,override]
        return fn._fwd(_GRU, (gx, w_hh, b_hh, h0, ref, mask, lengths, before, act, store, detach))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        fn._fwd_setup(_GRU, ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *gouts: Tensor) -> Any:
        return fn._fwd_backward(_GRU, GRUFedBackward, ctx, gouts)


class LSTMFedBackward(torch.autograd.Function):
    """``rnnlab::lstm_fed_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_ys, grad_cs, grad_gs, gx, w_hh, w_ci, w_cf, w_co, w_hr, w_gg, h0, c0, g0,  # type: ignore[no-untyped-def,override]
                ref, mask, lengths, blocks, coupled, act, cact, store, detach,
                ys, cs, gs, acts, ms, ss):  # fmt: skip
        return fn._bwd(_LSTM, (grad_ys, grad_cs, grad_gs, gx, w_hh, w_ci, w_cf, w_co, w_hr, w_gg,
                               h0, c0, g0, ref, mask, lengths, blocks, coupled, act, cact, store,
                               detach, ys, cs, gs, acts, ms, ss))  # fmt: skip

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        fn._bwd_setup(_LSTM, ctx, inputs)

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        return fn._bwd_backward(_LSTM, ctx, cot)


class LSTMFed(torch.autograd.Function):
    """``rnnlab::lstm_fed_forward`` with its gradients: ``LSTMFedBackward`` (the op's BPTT)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, w_hh, w_ci, w_cf, w_co, w_hr, w_gg, h0, c0, g0, ref, mask, lengths,  # type: ignore[no-untyped-def,override]
                blocks, coupled, act, cact, store, detach):  # fmt: skip
        return fn._fwd(_LSTM, (gx, w_hh, w_ci, w_cf, w_co, w_hr, w_gg, h0, c0, g0, ref, mask,
                               lengths, blocks, coupled, act, cact, store, detach))  # fmt: skip

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        fn._fwd_setup(_LSTM, ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *gouts: Tensor) -> Any:
        return fn._fwd_backward(_LSTM, LSTMFedBackward, ctx, gouts)


# ------------------------------------------------------------------------------ kernels ----
def gru_masked(
    cell: Any,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    reference: Tensor,
    mask: Tensor,
    detach: bool,
) -> Any:
    """GRU (state h = y) under a feedback mask (B, T): one ``gru_fed_forward`` call."""
    from ..cells.gru import GRUState
    from .kernels import ACT_CODES, _needs_backward

    act = ACT_CODES.get(cell.activation_name or "")
    before = cell.reset == "before"
    # reset before: every bias sits outside the reset product and folds into the projection
    ready = None if act is None else prepare(cell, x, reference, mask, "summed" if before
                                             else cell.bias_ih)  # fmt: skip
    if ready is None:
        return None
    gx, ref, m = ready
    b_hh = None if before else cell.bias_hh
    store = _needs_backward(gx, cell.weight_hh, b_hh, state.h, ref)
    hs = GRUFed.apply(gx, cell.weight_hh, b_hh, state.h, ref, m, lengths, before, act, store,
                      bool(detach))[0]  # fmt: skip
    y, final = read_out(hs, lengths)
    return y, GRUState(final)


def lstm_masked(
    cell: Any,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    reference: Tensor,
    mask: Tensor,
    detach: bool,
) -> Any:
    """LSTM under a feedback mask (B, T), only h fed back: one ``lstm_fed_forward`` call."""
    from ..cells.lstm import LSTMFGRState, LSTMState
    from .kernels import ACT_CODES, _final, _needs_backward

    act = ACT_CODES.get(cell.activation_name or "")
    cact = ACT_CODES.get(cell.cell_activation_name or "")
    ready = None if act is None or cact is None else prepare(cell, x, reference, mask)
    if ready is None:
        return None
    gx, ref, m = ready
    blocks = [cell.blocks.index(n) if n in cell.blocks else -1 for n in ("i", "f", "g", "o")]
    fgr = cell.weight_gg is not None
    tensors = (gx, cell.weight_hh, cell.weight_ci, cell.weight_cf, cell.weight_co,
               cell.weight_hr, cell.weight_gg, state.h, state.c, state.gates if fgr else None,
               ref)  # fmt: skip
    store = _needs_backward(*tensors)
    ys, cs, gs, *_ = LSTMFed.apply(*tensors, m, lengths, blocks, cell.coupled, act, cact, store,
                                   bool(detach))  # fmt: skip
    y, h_final = read_out(ys, lengths)
    c_final = _final(cs, lengths)
    if fgr:
        return y, LSTMFGRState(h_final, c_final, _final(gs, lengths))
    return y, LSTMState(h_final, c_final)


# ------------------------------------------------------------------------------ wrappers ----
def dropout_masked(
    cell: Any,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    reference: Tensor,
    mask: Tensor,
    detach: bool,
) -> Any:
    """:class:`~rnnlab.cells.VariationalDropoutCell` without an active recurrent mask (eval,
    or ``dropout_state=0``): the input mask applied to x once, then the inner cell's masked
    kernel. With an active one it declines, and so does a :class:`~rnnlab.cells.ZoneoutCell`
    (no masked kernel registered): the regularised kernels (``csrc/regularised.h``) have no
    feedback mask, so these run the reference loop, counted by the dispatcher."""
    from .kernels_extra import _dropout_parts
    from .registry import lookup_masked

    x_in, mask_h = _dropout_parts(cell, x, state)
    inner = lookup_masked(cell.cell)
    if mask_h is not None or inner is None:
        return None
    k = len(state) - 2
    res = inner(cell.cell, x_in, cell.cell.State(*state[:k]), lengths, reference, mask, detach)
    if res is None:
        return None
    y, final = res
    return y, cell.State(*final, state.mask_x, state.mask_h)


def register_gated() -> None:
    """Register the masked kernels of GRUCell, LSTMCell and VariationalDropoutCell."""
    from ..cells.dropout import VariationalDropoutCell
    from ..cells.gru import GRUCell
    from ..cells.lstm import LSTMCell
    from .registry import register_masked

    register_masked(GRUCell, gru_masked)
    register_masked(LSTMCell, lstm_masked)
    register_masked(VariationalDropoutCell, dropout_masked)
