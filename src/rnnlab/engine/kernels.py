"""Fast paths for the built-in cells, registered in the engine registry by exact cell type.

Each kernel hoists the input projection of all steps into one GEMM (autograd), runs the
recurrence through the engine's operators (``torch.ops.rnnlab.*``, :mod:`.ops`: compiled C++
with a hand-written BPTT, differentiated by the Functions of :mod:`.functions`, double backward
included), and reads outputs and final states off the returned state sequence with
differentiable indexing. The LSTM without options on float32/bf16 full-length batches, in eager
mode outside torch.func, calls torch's fused LSTM (oneDNN), the same maths; compiled, exported
or under a torch.func transform it runs the engine's own op (torch's RNN entry points do not
trace: pytorch#167275). See docs/design/0004-cpu-engine.md and 0015-engine-operators.md.

Shapes: B batch, T time, I input, H hidden, G gate blocks, P LSTM output, O Jordan output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._sequences import length_mask
from ..cells.gru import GRUCell, GRUState
from ..cells.lstm import LSTMCell, LSTMFGRState, LSTMState
from ..cells.simple import ElmanCell, ElmanState, JordanCell, JordanState
from . import build, dense, half
from .registry import register, register_teacher_forced
from .routes import GRU, LSTM, Elman, Jordan

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


def _needs_backward(*tensors: Tensor | None) -> bool:
    """Whether autograd will call the kernel's backward: then the forward keeps every step's
    gate buffers, else one step's."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _available(x: Tensor) -> bool:
    """The compiled ops run CPU tensors (other devices: their own kernels or the loop)."""
    return x.device.type == "cpu" and build.available()


def _summed_bias(cell: Any) -> Tensor | None:
    """b_ih + b_hh, for cells where both sit outside any product with the state, so that they
    fold into the input projection (None for a cell without biases)."""
    return None if cell.bias_ih is None else cell.bias_ih + cell.bias_hh


def _time_major_projection(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """gx = x W_ihᵀ + b for all steps at once: (B, T, I) -> (T, B, G·H), contiguous."""
    return dense.linear(x.transpose(0, 1), weight, bias).contiguous()


def _zero_past(y: Tensor, lengths: Tensor | None) -> Tensor:
    """Batch-first outputs (B, T, n) with the steps past each sequence's length zeroed."""
    if lengths is None:
        return y
    valid = length_mask(lengths, y.shape[1], y.device)
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
def elman_kernel(cell: ElmanCell, x: Tensor, state: ElmanState, lengths: Tensor | None) -> Any:
    act = ACT_CODES.get(cell.activation_name or "")
    if act is None or cell.output_activation_name is None or not _available(x):
        return None
    b = _summed_bias(cell)
    gx = _time_major_projection(x, cell.weight_ih, b)
    (hs,) = Elman.apply(gx, cell.weight_hh, state.h, None, lengths, act)
    h_seq, h_final = _read_out(hs, lengths)
    if cell.weight_ho is None:
        return h_seq, ElmanState(h_final)
    y = cell.readout(h_seq)  # the output layer, hoisted out of the loop: one GEMM
    return _zero_past(y, lengths), ElmanState(h_final)


def recurrent_mlp_kernel(cell: Any, x: Tensor, state: Any, lengths: Tensor | None) -> Any:
    """The recurrent MLP layer's cell is Elman's maths with one bias: the same kernel."""
    from ..cells.conv import RecurrentMLPState

    act = ACT_CODES.get(cell.activation_name or "")
    if act is None or not _available(x):
        return None
    gx = _time_major_projection(x, cell.weight_ih, cell.bias)
    (hs,) = Elman.apply(gx, cell.weight_hh, state.h, None, lengths, act)
    h_seq, h_final = _read_out(hs, lengths)
    return h_seq, RecurrentMLPState(h_final)


# ------------------------------------------------------------------------------ Jordan ----
def jordan_kernel(cell: JordanCell, x: Tensor, state: JordanState, lengths: Tensor | None) -> Any:
    act = ACT_CODES.get(cell.activation_name or "")
    oact = ACT_CODES.get(cell.output_activation_name or "")
    if act is None or oact is None or not _available(x):
        return None
    b = _summed_bias(cell)
    if oact == ACT_CODES["identity"]:
        return _jordan_linear_output(cell, x, state, lengths, b, act)
    gx = _time_major_projection(x, cell.weight_ih, b)
    ys, _ = Jordan.apply(
        gx, cell.weight_hh, cell.weight_ho, cell.bias_ho, state.y, lengths, act, oact
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
    (hs,) = Elman.apply(gx, u @ wy, h0, first, lengths, act)
    y = _zero_past(cell.readout(hs[1:].transpose(0, 1)), lengths)  # one GEMM, (B, T, O)
    # the final state y(length) is the output of each sequence's last valid step
    last = y[:, -1] if lengths is None else y[torch.arange(y.shape[0]), lengths.to(y.device) - 1]
    return y, JordanState(last)


# --------------------------------------------------------------------------------- GRU ----
def gru_kernel(cell: GRUCell, x: Tensor, state: GRUState, lengths: Tensor | None) -> Any:
    act = ACT_CODES.get(cell.activation_name or "")
    if act is None or not _available(x):
        return None
    before = cell.reset == "before"
    if before:
        # every bias sits outside the reset product: fold them all into the projection
        b = _summed_bias(cell)
        b_hh = None
    else:
        b = cell.bias_ih
        b_hh = cell.bias_hh
    gx = _time_major_projection(x, cell.weight_ih, b)
    # without a backward to feed, the kernel keeps one step of gate buffers instead of T
    store = _needs_backward(gx, cell.weight_hh, b_hh, state.h)
    hs, _, _ = GRU.apply(gx, cell.weight_hh, b_hh, state.h, lengths, before, act, store)
    h_seq, h_final = _read_out(hs, lengths)
    return h_seq, GRUState(h_final)


# -------------------------------------------------------------------------------- LSTM ----
def _fused_ok(x: Tensor, weight: Tensor) -> bool:
    """torch's fused LSTM runs eager float32 or bfloat16 CPU (or CUDA) calls outside torch.func
    and forward-mode AD: it does not trace (compile, export), has no vmap rule and no jvp.
    bf16 weights: its oneDNN bf16 LSTM measured faster than the engine's bf16 path (0015)."""
    if torch.compiler.is_compiling() or torch.autograd.forward_ad._current_level >= 0:
        return False  # (nor a jvp: neither mkldnn_rnn_layer nor cuDNN's has one)
    if x.device.type == "cuda":
        return True
    bf16 = x.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )
    if bf16 and not half.native():
        # oneDNN has no bf16 LSTM on this CPU (AVX2 only: "could not create a primitive
        # descriptor"); the engine's own kernel runs it, its products in float32
        return False
    return (
        x.dtype in (torch.float32, torch.bfloat16)
        and weight.dtype == x.dtype
        and torch._C._functorch.peek_interpreter_stack() is None
    )


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
    if _torch_lstm_maths(cell) and lengths is None and _fused_ok(x, cell.weight_hh):
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
    if not _available(x):
        return None
    b = _summed_bias(cell)
    gx = _time_major_projection(x, cell.weight_ih, b)
    blocks = [cell.blocks.index(n) if n in cell.blocks else -1 for n in ("i", "f", "g", "o")]
    fgr = cell.weight_gg is not None
    tensors: tuple[Tensor | None, ...] = (
        gx,
        cell.weight_hh,
        cell.weight_ci,
        cell.weight_cf,
        cell.weight_co,
        cell.weight_hr,
        cell.weight_gg,
        state.h,
        state.c,
        state.gates if fgr else None,
    )
    # without a backward to feed, the kernel keeps one step of gate buffers instead of T
    store = _needs_backward(*tensors)
    ys, cs, gs, _, _ = LSTM.apply(*tensors, lengths, blocks, cell.coupled, act, cact, store)
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
