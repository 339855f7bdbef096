"""The lecture's cells on the fused Triton ops: the kernel contract around ``ops``.

Each runner hoists the input projection of all T steps into one GEMM (autograd, cuBLAS), hands
the recurrence to one ``torch.ops.rnnlab_gpu`` op and reads outputs and final states off the
returned state sequence; Elman's output layer is hoisted out of the loop as one GEMM as well.

Padded batches (``lengths``): padding sits at the end of each sequence and the recurrence is
causal, so the ops run all T steps and the runner reads each sequence's outputs up to its length
(zero after) and its final state at s[length]; the padded steps' values reach neither, nor their
gradients. The reference loop's masking gives the same numbers (tests/test_gpu_kernels.py).

Mixed precision: under autocast the projection comes out in the autocast dtype (torch's rule
for ``linear``); the recurrent weights and the initial state are cast to that dtype, so the
whole recurrence stores fp16/bf16 while every kernel computes in float32, and gradients reach
the float32 parameters through the casts.

Shapes: B batch, T time, I input, H hidden, O Jordan output, G gate blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._checks import check_choice
from ..._sequences import length_mask
from ...cells.gru import GRUCell, GRUState
from ...cells.lstm import LSTMCell, LSTMFGRState, LSTMState
from ...cells.simple import ElmanCell, ElmanState, JordanCell, JordanState
from ..kernels import ACT_CODES

_SUPPORTED = {k for k, v in ACT_CODES.items() if v in (0, 1, 2, 3)}


def _code(name: str | None) -> int | None:
    return ACT_CODES[name] if name in _SUPPORTED else None


def _act(name: str | None) -> int:
    """The code of an activation :func:`supports` has already accepted."""
    return ACT_CODES[check_choice(name, "activation", sorted(_SUPPORTED))]


def supports(cell: Any) -> bool:
    """Whether a fused op exists for this cell (exact type, activations the kernels know)."""
    if type(cell) is ElmanCell:
        # the output layer runs in torch after the loop: any output activation is fine
        return _code(cell.activation_name) is not None
    if type(cell) is JordanCell:
        return None not in (_code(cell.activation_name), _code(cell.output_activation_name))
    if type(cell) is GRUCell:
        return cell.reset == "before" and _code(cell.activation_name) is not None
    if type(cell) is LSTMCell:
        return cell.proj_size == 0 and None not in (
            _code(cell.activation_name),
            _code(cell.cell_activation_name),
        )
    return False


def _summed_bias(cell: Any) -> Tensor | None:
    return None if cell.bias_ih is None else cell.bias_ih + cell.bias_hh


def _projection(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """gx = x W_ihᵀ + b for all steps: (B, T, I) -> (T, B, n), contiguous."""
    return F.linear(x.transpose(0, 1), weight, bias).contiguous()


def _like(t: Tensor | None, gx: Tensor) -> Tensor:
    """A weight or state in the recurrence's dtype (autocast's), or an empty placeholder."""
    return gx.new_empty(0) if t is None else t.to(gx.dtype)


def _zero_past(y: Tensor, lengths: Tensor | None) -> Tensor:
    """Batch-first outputs (B, T, n) with the steps past each sequence's length set to 0 (by
    ``where``, so whatever the padded steps computed never leaks, not even an inf)."""
    if lengths is None:
        return y
    valid = length_mask(lengths, y.shape[1], y.device)
    return torch.where(valid.unsqueeze(-1), y, torch.zeros((), dtype=y.dtype, device=y.device))


def _final(seq: Tensor, lengths: Tensor | None) -> Tensor:
    """The state after each sequence's last valid step, s[length] of s[0..T] (T+1, B, n)."""
    if lengths is None:
        return seq[-1]
    return seq[lengths.to(seq.device), torch.arange(seq.shape[1], device=seq.device)]


def _ops() -> Any:
    from . import ops

    return ops


def elman(
    cell: ElmanCell, x: Tensor, state: ElmanState, lengths: Tensor | None = None
) -> tuple[Tensor, ElmanState]:
    gx = _projection(x, cell.weight_ih, _summed_bias(cell))
    hs = _ops().elman_fwd(
        gx, _like(cell.weight_hh, gx), _like(state.h, gx), _act(cell.activation_name)
    )
    h_seq = hs[1:].transpose(0, 1)  # (B, T, H)
    return _zero_past(cell.readout(h_seq), lengths), ElmanState(_final(hs, lengths))


def jordan(
    cell: JordanCell, x: Tensor, state: JordanState, lengths: Tensor | None = None
) -> tuple[Tensor, JordanState]:
    gx = _projection(x, cell.weight_ih, _summed_bias(cell))
    ys, _ = _ops().jordan_fwd(
        gx,
        _like(cell.weight_hh, gx),
        _like(cell.weight_ho, gx),
        _like(cell.bias_ho, gx),
        _like(state.y, gx),
        _act(cell.activation_name),
        _act(cell.output_activation_name),
    )
    return _zero_past(ys[1:].transpose(0, 1), lengths), JordanState(_final(ys, lengths))


def gru(
    cell: GRUCell, x: Tensor, state: GRUState, lengths: Tensor | None = None
) -> tuple[Tensor, GRUState]:
    # reset before: every bias sits outside the reset product and folds into the projection
    gx = _projection(x, cell.weight_ih, _summed_bias(cell))
    hs, _, _ = _ops().gru_fwd(
        gx, _like(cell.weight_hh, gx), _like(state.h, gx), _act(cell.activation_name)
    )
    return _zero_past(hs[1:].transpose(0, 1), lengths), GRUState(_final(hs, lengths))


def lstm_config(cell: LSTMCell) -> list[int]:
    """The block layout the LSTM kernels are specialised on (``ops._CFG_KEYS``)."""
    k = [cell.blocks.index(n) if n in cell.blocks else -1 for n in ("i", "f", "g", "o")]
    sig = cell.sigmoid_gates if cell.weight_gg is not None else ()
    s = [sig.index(n) if n in sig else -1 for n in ("i", "f", "o")]
    return [len(cell.blocks), *k, len(sig), *s, int(cell.coupled),
            _act(cell.activation_name), _act(cell.cell_activation_name)]  # fmt: skip


def lstm(
    cell: LSTMCell, x: Tensor, state: Any, lengths: Tensor | None = None
) -> tuple[Tensor, Any]:
    gx = _projection(x, cell.weight_ih, _summed_bias(cell))
    fgr = cell.weight_gg is not None
    ys, cs, gs, _ = _ops().lstm_fwd(
        gx,
        _like(cell.weight_hh, gx),
        _like(cell.weight_ci, gx),
        _like(cell.weight_cf, gx),
        _like(cell.weight_co, gx),
        _like(cell.weight_gg, gx),
        _like(state.h, gx),
        _like(state.c, gx),
        _like(state.gates if fgr else None, gx),
        lstm_config(cell),
    )
    y = _zero_past(ys[1:].transpose(0, 1), lengths)  # (B, T, H)
    h, c = _final(ys, lengths), _final(cs, lengths)
    if fgr:
        return y, LSTMFGRState(h, c, _final(gs, lengths))
    return y, LSTMState(h, c)


RUNNERS: dict[type, Callable[..., tuple[Tensor, Any]]] = {
    ElmanCell: elman,
    JordanCell: jordan,
    GRUCell: gru,
    LSTMCell: lstm,
}
