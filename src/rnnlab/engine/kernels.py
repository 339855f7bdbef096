"""Fast paths for the built-in cells, registered in the engine registry by exact cell type.

Each kernel hoists the input projection of all steps into one GEMM (autograd), runs the
recurrence in compiled C++ with a hand-written BPTT (``csrc/``), and reads outputs and final
states off the returned state sequence with differentiable indexing. The LSTM without options
on float32 full-length batches dispatches to torch's fused LSTM (oneDNN), the same maths.

Second-order gradients: the compiled backward is not itself differentiable. Differentiating
it again raises a clear error; run such code under ``rnnlab.engine.disabled()`` (the reference
loop, fully differentiable). See docs/design/0004-cpu-engine.md.

Shapes: B batch, T time, I input, H hidden, G gate blocks, P LSTM output, O Jordan output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells.gru import GRUCell, GRUState
from ..cells.lstm import LSTMCell, LSTMFGRState, LSTMState
from ..cells.simple import ElmanCell, ElmanState, JordanCell, JordanState
from . import build
from .registry import register, register_teacher_forced

ACT_CODES = {
    "identity": 0,
    "tanh": 1,
    "sigmoid": 2,
    "relu": 3,
    "softsign": 4,
    "hardtanh": 5,
    "elu": 6,
    "softplus": 7,
}

_SECOND_ORDER = (
    "rnnlab.engine: second-order gradients through a compiled kernel are not supported; "
    "run this code under `with rnnlab.engine.disabled():` to use the differentiable "
    "reference loop"
)

_EMPTY: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _empty(like: Tensor) -> Tensor:
    key = (like.dtype, like.device)
    if key not in _EMPTY:
        _EMPTY[key] = torch.empty(0, dtype=like.dtype, device=like.device)
    return _EMPTY[key]


def _lengths_arg(lengths: Tensor | None) -> Tensor:
    return torch.empty(0, dtype=torch.int64) if lengths is None else lengths.cpu()


def _zeros_if_none(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


def _needs_backward(*tensors: Tensor) -> bool:
    """Whether autograd will call the kernel's backward (inside Function.forward grad mode is
    off and ctx.needs_input_grad ignores torch.no_grad, so this is asked before apply)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _check_first_order() -> None:
    if torch.is_grad_enabled():
        raise RuntimeError(_SECOND_ORDER)


def _summed_bias(cell: Any) -> Tensor | None:
    """b_ih + b_hh, for cells where both sit outside any product with the state, so that they
    fold into the input projection (None for a cell without biases)."""
    return None if cell.bias_ih is None else cell.bias_ih + cell.bias_hh


def _time_major_projection(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """gx = x W_ihᵀ + b for all steps at once: (B, T, I) -> (T, B, G·H), contiguous."""
    return F.linear(x.transpose(0, 1), weight, bias).contiguous()


def _zero_past(y: Tensor, lengths: Tensor | None) -> Tensor:
    """Batch-first outputs (B, T, n) with the steps past each sequence's length zeroed."""
    if lengths is None:
        return y
    valid = torch.arange(y.shape[1], device=y.device) < lengths.to(y.device).unsqueeze(1)
    return y * valid.unsqueeze(-1).to(y.dtype)


def _final(seq: Tensor, lengths: Tensor | None) -> Tensor:
    """The state after each sequence's last valid step: s[length] of s[0..T] (T+1, B, n)."""
    if lengths is None:
        return seq[-1]
    return seq[lengths.to(seq.device), torch.arange(seq.shape[1], device=seq.device)]


def _read_out(seq: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """From a state sequence s[0..T] (T+1, B, n): outputs s[1..T] as (B, T, n) zeroed past each
    length, and the final states s[length] (B, n)."""
    return _zero_past(seq[1:].transpose(0, 1), lengths), _final(seq, lengths)


# ------------------------------------------------------------------------------- Elman ----
class _ElmanFn(torch.autograd.Function):
    # first: (B, H) added to step 0's pre-activation, or empty
    @staticmethod
    def forward(
        ctx: Any, gx: Tensor, w_hh: Tensor, h0: Tensor, first: Tensor, lengths: Tensor, act: int
    ) -> Tensor:
        (hs,) = build.ops().elman_forward(gx, w_hh, h0, first, lengths, act)  # type: ignore[union-attr]
        ctx.save_for_backward(hs, w_hh, lengths)
        ctx.act = act
        ctx.has_first = first.numel() > 0
        return hs

    @staticmethod
    def backward(ctx: Any, grad_hs: Tensor) -> Any:
        _check_first_order()
        hs, w_hh, lengths = ctx.saved_tensors
        dgx, dw, dh0 = build.ops().elman_backward(  # type: ignore[union-attr]
            _zeros_if_none(grad_hs, hs), hs, w_hh, lengths, ctx.act
        )
        return dgx, dw, dh0, dgx[0] if ctx.has_first else None, None, None


def _cpu_ops(x: Tensor) -> Any:
    """The compiled ops for a CPU tensor, else None (CUDA runs torch's kernels or the loop)."""
    return build.ops() if x.device.type == "cpu" else None


def elman_kernel(cell: ElmanCell, x: Tensor, state: ElmanState, lengths: Tensor | None) -> Any:
    act = ACT_CODES.get(cell.activation_name or "")
    if act is None or cell.output_activation_name is None or _cpu_ops(x) is None:
        return None
    b = _summed_bias(cell)
    gx = _time_major_projection(x, cell.weight_ih, b)
    hs = _ElmanFn.apply(gx, cell.weight_hh, state.h, _empty(x), _lengths_arg(lengths), act)
    h_seq, h_final = _read_out(hs, lengths)
    if cell.weight_ho is None:
        return h_seq, ElmanState(h_final)
    y = cell.readout(h_seq)  # the output layer, hoisted out of the loop: one GEMM
    return _zero_past(y, lengths), ElmanState(h_final)


def recurrent_mlp_kernel(cell: Any, x: Tensor, state: Any, lengths: Tensor | None) -> Any:
    """The recurrent MLP layer's cell is Elman's maths with one bias: the same kernel."""
    from ..cells.conv import RecurrentMLPState

    act = ACT_CODES.get(cell.activation_name or "")
    if act is None or _cpu_ops(x) is None:
        return None
    gx = _time_major_projection(x, cell.weight_ih, cell.bias)
    hs = _ElmanFn.apply(gx, cell.weight_hh, state.h, _empty(x), _lengths_arg(lengths), act)
    h_seq, h_final = _read_out(hs, lengths)
    return h_seq, RecurrentMLPState(h_final)


# ------------------------------------------------------------------------------ Jordan ----
class _JordanFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        gx: Tensor,
        u: Tensor,
        wy: Tensor,
        by: Tensor,
        y0: Tensor,
        lengths: Tensor,
        act: int,
        oact: int,
    ) -> Tensor:
        ys, hs = build.ops().jordan_forward(gx, u, wy, by, y0, lengths, act, oact)  # type: ignore[union-attr]
        ctx.save_for_backward(ys, hs, u, wy, lengths)
        ctx.codes = (act, oact)
        ctx.has_bias = by.numel() > 0
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: Tensor) -> Any:
        _check_first_order()
        ys, hs, u, wy, lengths = ctx.saved_tensors
        dgx, du, dwy, dby, dy0 = build.ops().jordan_backward(  # type: ignore[union-attr]
            _zeros_if_none(grad_ys, ys), ys, hs, u, wy, lengths, *ctx.codes
        )
        return dgx, du, dwy, dby if ctx.has_bias else None, dy0, None, None, None


def jordan_kernel(cell: JordanCell, x: Tensor, state: JordanState, lengths: Tensor | None) -> Any:
    act = ACT_CODES.get(cell.activation_name or "")
    oact = ACT_CODES.get(cell.output_activation_name or "")
    if act is None or oact is None or _cpu_ops(x) is None:
        return None
    b = _summed_bias(cell)
    if oact == ACT_CODES["identity"]:
        return _jordan_linear_output(cell, x, state, lengths, b, act)
    gx = _time_major_projection(x, cell.weight_ih, b)
    by = cell.bias_ho if cell.bias_ho is not None else _empty(x)
    ys = _JordanFn.apply(
        gx, cell.weight_hh, cell.weight_ho, by, state.y, _lengths_arg(lengths), act, oact
    )
    y, y_final = _read_out(ys, lengths)
    return y, JordanState(y_final)


def _jordan_linear_output(
    cell: JordanCell,
    x: Tensor,
    state: JordanState,
    lengths: Tensor | None,
    b: Tensor | None,
    act: int,
) -> Any:
    """Jordan with a linear output layer is Elman's recurrence in h: U y(t-1) = (U W_y) h(t-1)
    + U b_y. One GEMM per step with M = U W_y (H x H) instead of two dependent ones, and the
    output layer hoisted out of the loop as for Elman. Step 1 feeds back y(0) instead of
    W_y h(0) + b_y, so it gets U (y(0) - b_y) added (the kernel's `first`) and starts from
    h(0) = 0."""
    u, wy, by = cell.weight_hh, cell.weight_ho, cell.bias_ho
    if by is not None:
        ub = F.linear(by, u)
        b = ub if b is None else b + ub
    gx = _time_major_projection(x, cell.weight_ih, b)
    first = F.linear(state.y if by is None else state.y - by, u)
    h0 = torch.zeros(x.shape[0], cell.hidden_size, dtype=x.dtype, device=x.device)
    hs = _ElmanFn.apply(gx, u @ wy, h0, first, _lengths_arg(lengths), act)
    y = _zero_past(cell.readout(hs[1:].transpose(0, 1)), lengths)  # one GEMM, (B, T, O)
    # the final state y(length) is the output of each sequence's last valid step
    last = y[:, -1] if lengths is None else y[torch.arange(y.shape[0]), lengths.to(y.device) - 1]
    return y, JordanState(last)


# --------------------------------------------------------------------------------- GRU ----
class _GRUFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        gx: Tensor,
        w_hh: Tensor,
        b_hh: Tensor,
        h0: Tensor,
        lengths: Tensor,
        before: bool,
        act: int,
        store: bool,
    ) -> Tensor:
        hs, gates, aux = build.ops().gru_forward(  # type: ignore[union-attr]
            gx, w_hh, b_hh, h0, lengths, before, act, store
        )
        ctx.save_for_backward(hs, gates, aux, w_hh, lengths)
        ctx.cfg = (before, act)
        ctx.has_bias = b_hh.numel() > 0
        return hs

    @staticmethod
    def backward(ctx: Any, grad_hs: Tensor) -> Any:
        _check_first_order()
        hs, gates, aux, w_hh, lengths = ctx.saved_tensors
        dgx, dw, db, dh0 = build.ops().gru_backward(  # type: ignore[union-attr]
            _zeros_if_none(grad_hs, hs), hs, gates, aux, w_hh, lengths, *ctx.cfg
        )
        return dgx, dw, db if ctx.has_bias else None, dh0, None, None, None, None


def gru_kernel(cell: GRUCell, x: Tensor, state: GRUState, lengths: Tensor | None) -> Any:
    act = ACT_CODES.get(cell.activation_name or "")
    if act is None or _cpu_ops(x) is None:
        return None
    before = cell.reset == "before"
    if before:
        # every bias sits outside the reset product: fold them all into the projection
        b = _summed_bias(cell)
        b_hh = _empty(x)
    else:
        b = cell.bias_ih
        b_hh = cell.bias_hh if cell.bias_hh is not None else _empty(x)
    gx = _time_major_projection(x, cell.weight_ih, b)
    # without a backward to feed, the kernel keeps one step of gate buffers instead of T
    store = _needs_backward(gx, cell.weight_hh, b_hh, state.h)
    hs = _GRUFn.apply(gx, cell.weight_hh, b_hh, state.h, _lengths_arg(lengths), before, act, store)
    h_seq, h_final = _read_out(hs, lengths)
    return h_seq, GRUState(h_final)


# -------------------------------------------------------------------------------- LSTM ----
class _LSTMFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        gx: Tensor,
        w_hh: Tensor,
        w_ci: Tensor,
        w_cf: Tensor,
        w_co: Tensor,
        w_hr: Tensor,
        w_gg: Tensor,
        h0: Tensor,
        c0: Tensor,
        g0: Tensor,
        lengths: Tensor,
        blocks: list[int],
        coupled: bool,
        act: int,
        cact: int,
        store: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        ys, cs, gs, acts, ms = build.ops().lstm_forward(  # type: ignore[union-attr]
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
        )
        ctx.save_for_backward(ys, cs, gs, acts, ms, w_hh, w_ci, w_cf, w_co, w_hr, w_gg, lengths)
        ctx.cfg = (blocks, coupled, act, cact)
        ctx.present = [t.numel() > 0 for t in (w_ci, w_cf, w_co, w_hr, w_gg)]
        return ys, cs, gs

    @staticmethod
    def backward(ctx: Any, gys: Tensor, gcs: Tensor, ggs: Tensor) -> Any:
        _check_first_order()
        ys, cs, gs, acts, ms, w_hh, w_ci, w_cf, w_co, w_hr, w_gg, lengths = ctx.saved_tensors
        out = build.ops().lstm_backward(  # type: ignore[union-attr]
            _zeros_if_none(gys, ys),
            _zeros_if_none(gcs, cs),
            _zeros_if_none(ggs, gs),
            ys,
            cs,
            gs,
            acts,
            ms,
            w_hh,
            w_ci,
            w_cf,
            w_co,
            w_hr,
            w_gg,
            lengths,
            *ctx.cfg,
        )
        dgx, dwhh, dci, dcf, dco, dwhr, dwgg, dh0, dc0, dg0 = out
        opt = [g if p else None for g, p in zip((dci, dcf, dco, dwhr, dwgg), ctx.present)]
        dg0_out = dg0 if ctx.present[4] else None
        return (dgx, dwhh, *opt, dh0, dc0, dg0_out, None, None, None, None, None, None)


def _torch_lstm_maths(cell: LSTMCell) -> bool:
    return (
        cell.variant == "NP"
        and not cell.peephole
        and cell.activation_name == "tanh"
        and cell.cell_activation_name == "tanh"
        and cell.proj_size == 0
    )


def lstm_kernel(cell: LSTMCell, x: Tensor, state: Any, lengths: Tensor | None) -> Any:
    act = ACT_CODES.get(cell.activation_name or "")
    cact = ACT_CODES.get(cell.cell_activation_name or "")
    if act is None or cact is None:
        return None
    fused_ok = x.dtype == torch.float32 or x.device.type == "cuda"
    if _torch_lstm_maths(cell) and lengths is None and fused_ok:
        # torch's fused LSTM (oneDNN on CPU, cuDNN on CUDA) computes exactly this cell.
        weights: list[Tensor] = [cell.weight_ih, cell.weight_hh]
        if cell.bias_ih is not None:
            weights += [cell.bias_ih, cell.bias_hh]  # type: ignore[list-item]
        out, h_n, c_n = torch.lstm(
            x,
            (state.h.unsqueeze(0), state.c.unsqueeze(0)),
            weights,
            cell.bias_ih is not None,
            1,
            0.0,
            False,
            False,
            True,
        )
        return out, LSTMState(h_n[0], c_n[0])
    if _cpu_ops(x) is None:
        return None
    b = _summed_bias(cell)
    gx = _time_major_projection(x, cell.weight_ih, b)
    e = _empty(x)
    blocks = [cell.blocks.index(n) if n in cell.blocks else -1 for n in ("i", "f", "g", "o")]
    fgr = cell.weight_gg is not None
    tensors: tuple[Tensor, ...] = (
        gx,
        cell.weight_hh,
        cell.weight_ci if cell.weight_ci is not None else e,
        cell.weight_cf if cell.weight_cf is not None else e,
        cell.weight_co if cell.weight_co is not None else e,
        cell.weight_hr if cell.weight_hr is not None else e,
        cell.weight_gg if cell.weight_gg is not None else e,
        state.h,
        state.c,
        state.gates if fgr else e,
    )
    # without a backward to feed, the kernel keeps one step of gate buffers instead of T
    store = _needs_backward(*tensors)
    ys, cs, gs = _LSTMFn.apply(
        *tensors, _lengths_arg(lengths), blocks, cell.coupled, act, cact, store
    )
    y, h_final = _read_out(ys, lengths)
    c_final = _final(cs, lengths)
    if fgr:
        return y, LSTMFGRState(h_final, c_final, _final(gs, lengths))
    return y, LSTMState(h_final, c_final)


def jordan_teacher_forced(
    cell: JordanCell, x: Tensor, state: JordanState, lengths: Tensor | None, reference: Tensor
) -> Any:
    """The lecture's remark made real: under teacher forcing y(t) depends only on x(t) and
    r(t-1), so all T steps are one batched computation (two large GEMMs), no time loop."""
    B, T = x.shape[0], x.shape[1]
    y_prev = torch.cat([state.y.unsqueeze(1), reference[:, :-1]], dim=1)  # (B, T, O)
    b = _summed_bias(cell)
    # h = act(x W_ihᵀ + y_prev W_hhᵀ + b): the second product accumulates into the first
    # (addmm, beta = 1) instead of a separate sum over all T·B·H values
    pre = F.linear(x.reshape(B * T, -1), cell.weight_ih, b)
    pre = torch.addmm(pre, y_prev.reshape(B * T, -1), cell.weight_hh.t())
    y = cell.readout(cell.activation(pre)).reshape(B, T, -1)  # (B, T, O)
    # y(t) is the state after step t: the final state is y at each sequence's last valid step
    final = _final(torch.cat([state.y.unsqueeze(0), y.transpose(0, 1)]), lengths)
    return _zero_past(y, lengths), JordanState(final)


def register_all() -> None:
    from ..cells.conv import RecurrentMLPCell
    from .compiled import CompiledCell, compiled_cell_kernel

    register(RecurrentMLPCell, recurrent_mlp_kernel)
    register(CompiledCell, compiled_cell_kernel)
    register_teacher_forced(JordanCell, jordan_teacher_forced)
    register(ElmanCell, elman_kernel)
    register(JordanCell, jordan_kernel)
    register(GRUCell, gru_kernel)
    register(LSTMCell, lstm_kernel)
