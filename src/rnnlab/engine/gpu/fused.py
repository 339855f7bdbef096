"""The lecture's cells on the fused Triton ops: the kernel contract around ``ops``.

Each runner hoists the input projection of all T steps into one GEMM (autograd, cuBLAS), hands
the recurrence to one ``torch.ops.rnnlab_gpu`` op and reads outputs and final states off the
returned state sequence; Elman's output layer is hoisted out of the loop as one GEMM as well.

Mixed precision: under autocast the projection comes out in the autocast dtype (torch's rule
for ``linear``); the recurrent weights and the initial state are cast to that dtype, so the
whole recurrence stores fp16/bf16 while every kernel computes in float32, and gradients reach
the float32 parameters through the casts.

Shapes: B batch, T time, I input, H hidden, O Jordan output, G gate blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ...cells.gru import GRUCell, GRUState
from ...cells.lstm import LSTMCell, LSTMFGRState, LSTMState
from ...cells.simple import ElmanCell, ElmanState, JordanCell, JordanState
from ..kernels import ACT_CODES

_SUPPORTED = {k for k, v in ACT_CODES.items() if v in (0, 1, 2, 3)}


def _code(name: str | None) -> int | None:
    return ACT_CODES[name] if name in _SUPPORTED else None


def _act(name: str | None) -> int:
    """The code of an activation :func:`supports` has already accepted."""
    code = _code(name)
    if code is None:
        raise ValueError(f"activation: expected one of {sorted(_SUPPORTED)}, got {name!r}")
    return code


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


def _ops() -> Any:
    from . import ops

    return ops


def elman(cell: ElmanCell, x: Tensor, state: ElmanState) -> tuple[Tensor, ElmanState]:
    gx = _projection(x, cell.weight_ih, _summed_bias(cell))
    hs = _ops().elman_fwd(
        gx, _like(cell.weight_hh, gx), _like(state.h, gx), _act(cell.activation_name)
    )
    h_seq = hs[1:].transpose(0, 1)  # (B, T, H)
    return cell.readout(h_seq), ElmanState(hs[-1])


def jordan(cell: JordanCell, x: Tensor, state: JordanState) -> tuple[Tensor, JordanState]:
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
    return ys[1:].transpose(0, 1), JordanState(ys[-1])


def gru(cell: GRUCell, x: Tensor, state: GRUState) -> tuple[Tensor, GRUState]:
    # reset before: every bias sits outside the reset product and folds into the projection
    gx = _projection(x, cell.weight_ih, _summed_bias(cell))
    hs, _, _ = _ops().gru_fwd(
        gx, _like(cell.weight_hh, gx), _like(state.h, gx), _act(cell.activation_name)
    )
    return hs[1:].transpose(0, 1), GRUState(hs[-1])


def lstm_config(cell: LSTMCell) -> list[int]:
    """The block layout the LSTM kernels are specialised on (``ops._CFG_KEYS``)."""
    k = [cell.blocks.index(n) if n in cell.blocks else -1 for n in ("i", "f", "g", "o")]
    sig = cell.sigmoid_gates if cell.weight_gg is not None else ()
    s = [sig.index(n) if n in sig else -1 for n in ("i", "f", "o")]
    return [len(cell.blocks), *k, len(sig), *s, int(cell.coupled),
            _act(cell.activation_name), _act(cell.cell_activation_name)]  # fmt: skip


def lstm(cell: LSTMCell, x: Tensor, state: Any) -> tuple[Tensor, Any]:
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
    y = ys[1:].transpose(0, 1)  # (B, T, H)
    if fgr:
        return y, LSTMFGRState(ys[-1], cs[-1], gs[-1])
    return y, LSTMState(ys[-1], cs[-1])


RUNNERS: dict[type, Callable[..., tuple[Tensor, Any]]] = {
    ElmanCell: elman,
    JordanCell: jordan,
    GRUCell: gru,
    LSTMCell: lstm,
}
