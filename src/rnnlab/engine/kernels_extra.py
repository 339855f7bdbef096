"""Fast paths for the regulariser wrappers of issue 18 (docs/design/0009).

Shapes: B batch, T time, I input, H hidden.

- :class:`~rnnlab.cells.VariationalDropoutCell`: the input mask is constant over time, so it
  multiplies the whole (B, T, I) input once, before the hoisted input GEMM. Without an active
  recurrent mask (eval, or ``dropout_state=0``) the inner cell's own kernel then runs
  unchanged; with one, an LSTM (torch's maths: no peepholes, projection or Greff variant), a
  GRU, an Elman cell, a Jordan cell or a layer-norm LSTM (no peepholes/projection) or GRU runs
  the regularised operators of :mod:`.regularised` / :mod:`.regularised_ln` /
  :mod:`.regularised_jordan` (the mask inside the loop). Other inner cells decline: the
  reference loop runs.
- :class:`~rnnlab.cells.ZoneoutCell` around such a cell (or a dropout wrapper of one):
  the per-step keep decisions the reference loop makes (one key per step from the cell's
  generator, Philox4x32-10 over the zoned fields; docs/design/0020) are made here for all
  steps at once (T keys in one draw, one call of ``rnnlab::zoneout_keep``) as (T, B, n) keep
  weights and passed in; eval passes the rates (the deterministic mixture).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells._philox import keep_draws, step_keys
from ..cells.dropout import VariationalDropoutCell
from ..cells.gru import GRUCell
from ..cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from ..cells.lstm import LSTMCell
from ..cells.simple import ElmanCell, JordanCell
from ..cells.zoneout import ZoneoutCell
from .kernels import (
    ACT_CODES,
    _available,
    _final,
    _read_out,
    _summed_bias,
    _time_major_projection,
    _zero_past,
)
from .registry import lookup, register


def _regularisable(cell: Any) -> bool:
    """Whether the regularised operators compute ``cell``'s maths."""
    if type(cell) is GRUCell:
        return cell.activation_name in ACT_CODES
    if type(cell) is LayerNormLSTMCell:
        return not cell.peephole and cell.proj_size == 0
    if type(cell) is LayerNormGRUCell:
        return True
    if type(cell) is ElmanCell:
        return cell.activation_name in ACT_CODES and cell.output_activation_name is not None
    if type(cell) is JordanCell:
        return cell.activation_name in ACT_CODES and cell.output_activation_name in ACT_CODES
    if type(cell) is LSTMCell:
        return (
            cell.variant == "NP"
            and not cell.peephole
            and cell.proj_size == 0
            and cell.weight_gg is None
            and cell.activation_name in ACT_CODES
            and cell.cell_activation_name in ACT_CODES
        )
    return False


def _run_regularised(
    cell: Any,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    mask_h: Tensor | None,
    keep: dict[str, Tensor],
) -> tuple[Tensor, list[Tensor]]:
    """Output (B, T, H) and the final (h, c) or (h) of ``cell`` with the masks inside."""
    from .regularised import ElmanReg, GRUReg, LSTMReg
    from .regularised_ln import LNGRU, LNLSTM

    if type(cell) is ElmanCell:
        gx = _time_major_projection(x, cell.weight_ih, _summed_bias(cell))
        hs, _ = ElmanReg.apply(
            gx, cell.weight_hh, state.h, mask_h, keep.get("h"), lengths,
            ACT_CODES[cell.activation_name or ""],
        )  # fmt: skip
        h_seq, h_final = _read_out(hs, lengths)
        if cell.weight_ho is not None:  # the output layer, hoisted out of the loop
            h_seq = _zero_past(cell.readout(h_seq), lengths)
        return h_seq, [h_final]
    if type(cell) is JordanCell:
        from .regularised_jordan import JordanReg

        gx = _time_major_projection(x, cell.weight_ih, _summed_bias(cell))
        ys, _, _ = JordanReg.apply(
            gx, cell.weight_hh, cell.weight_ho, cell.bias_ho, state.y, mask_h, keep.get("y"),
            lengths, ACT_CODES[cell.activation_name or ""],
            ACT_CODES[cell.output_activation_name or ""],
        )  # fmt: skip
        y, y_final = _read_out(ys, lengths)
        return y, [y_final]
    if type(cell) is LayerNormGRUCell:
        # W x (T, B, 3H); the kernel normalises it (g_x, b_x) inside its loop. F.linear, not
        # dense.linear: oneDNN measured slower here (quiet S2 A/B: 31.0 against 29.1 ms a step)
        wx = F.linear(x.transpose(0, 1), cell.weight_ih).contiguous()
        hs, *_ = LNGRU.apply(
            wx, cell.weight_hh, cell.gain_hh, cell.bias_hh, state.h, cell.gain_ih, cell.bias_ih,
            mask_h, keep.get("h"), lengths, cell.reset == "before", cell.eps,
        )  # fmt: skip
        y, h_final = _read_out(hs, lengths)
        return y, [h_final]

    if type(cell) is LayerNormLSTMCell:
        G = 4 * cell.hidden_size
        # the input normalisation of all steps at once, outside the loop: (T, B, 4H)
        wx = F.linear(x.transpose(0, 1), cell.weight_ih)
        gx = F.layer_norm(wx, (G,), cell.gain_ih, cell.bias_ih, cell.eps).contiguous()
        hs, cs, *_ = LNLSTM.apply(
            gx, cell.weight_hh, cell.gain_hh, cell.bias_hh, cell.gain_c, cell.bias_c, state.h,
            state.c, mask_h, keep.get("h"), keep.get("c"), lengths, cell.eps,
        )  # fmt: skip
        y, h_final = _read_out(hs, lengths)
        return y, [h_final, _final(cs, lengths)]
    if type(cell) is LSTMCell:
        gx = _time_major_projection(x, cell.weight_ih, _summed_bias(cell))
        acts = ACT_CODES[cell.activation_name or ""], ACT_CODES[cell.cell_activation_name or ""]
        hs, cs, _, _ = LSTMReg.apply(
            gx, cell.weight_hh, state.h, state.c, mask_h, keep.get("h"), keep.get("c"),
            lengths, *acts,
        )  # fmt: skip
        y, h_final = _read_out(hs, lengths)
        return y, [h_final, _final(cs, lengths)]
    before = cell.reset == "before"
    b, b_hh = (_summed_bias(cell), None) if before else (cell.bias_ih, cell.bias_hh)
    gx = _time_major_projection(x, cell.weight_ih, b)
    hs, _, _ = GRUReg.apply(
        gx, cell.weight_hh, b_hh, state.h, mask_h, keep.get("h"), lengths, before,
        ACT_CODES[cell.activation_name],
    )  # fmt: skip
    y, h_final = _read_out(hs, lengths)
    return y, [h_final]


def _dropout_parts(cell: VariationalDropoutCell, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """x with the input mask applied (training), and the mask on h(t-1) or None."""
    if not cell.training:
        return x, None
    if cell.dropout_input > 0:
        x = x * state.mask_x.unsqueeze(1)  # (B, T, I): the same mask at every step
    return x, state.mask_h if cell.dropout_state > 0 else None


def variational_dropout_kernel(
    cell: VariationalDropoutCell, x: Tensor, state: Any, lengths: Tensor | None
) -> Any:
    x_in, mask_h = _dropout_parts(cell, x, state)
    k = len(state) - 2
    inner_state = cell.cell.State(*state[:k])
    if mask_h is None:
        inner_kernel = lookup(cell.cell)
        res = None if inner_kernel is None else inner_kernel(cell.cell, x_in, inner_state, lengths)
        if res is None:
            return None
        y, final = res
        return y, cell.State(*final, state.mask_x, state.mask_h)
    if not _regularisable(cell.cell) or not _available(x):
        return None
    y, final = _run_regularised(cell.cell, x_in, inner_state, lengths, mask_h, {})
    return y, cell.State(*final, state.mask_x, state.mask_h)


def zoneout_keep(cell: ZoneoutCell, x: Tensor, like: Any) -> dict[str, Tensor]:
    """Per zoned field, the (T, B, n) keep weights of a run over ``x`` (B, T, ...): the
    reference loop's draws in training, the rate in eval.

    The reference loop (ZoneoutCell.step) draws one key per step from the cell's generator
    and the step's keep decisions from Philox (docs/design/0020-zoneout-draws.md); here the
    T keys are one draw (the generator fills them element by element: exactly the T per-step
    draws, a test checks it) and all steps' decisions one call of the compiled kernel
    (``rnnlab::zoneout_keep``), written straight as the kernels' keep weights."""
    T = x.shape[1]
    zoned = [(f, p, getattr(like, f)) for f, p in cell.rates.items() if p > 0.0]
    if not cell.training:
        return {
            f: torch.full((T, *s.shape), p, dtype=s.dtype, device=s.device) for f, p, s in zoned
        }
    if not zoned:
        return {}
    first = zoned[0][2]
    keys = step_keys(T, cell.generator, first.device)
    drawn = keep_draws(
        keys, [s.numel() for _, _, s in zoned], [p for _, p, _ in zoned], first.dtype
    )
    return {f: d.to(s.dtype).view(T, *s.shape) for (f, _, s), d in zip(zoned, drawn)}


def zoneout_kernel(cell: ZoneoutCell, x: Tensor, state: Any, lengths: Tensor | None) -> Any:
    inner = cell.cell
    base = inner.cell if type(inner) is VariationalDropoutCell else inner
    if not _regularisable(base) or not _available(x):
        return None
    if any(p > 0.0 for f, p in cell.rates.items() if f.startswith("mask_")):
        return None
    if type(base) is ElmanCell and base.weight_ho is not None and cell.rates.get("h", 0.0) > 0:
        return None  # its output reads the un-zoned candidate h̃, which the op does not return
    x_in, mask_h = x, None
    if isinstance(inner, VariationalDropoutCell):
        x_in, mask_h = _dropout_parts(inner, x, state)
    keep = zoneout_keep(cell, x, state)
    k = len(base.state_sizes())
    y, final = _run_regularised(base, x_in, base.State(*state[:k]), lengths, mask_h, keep)
    if base is inner:
        return y, base.State(*final)
    return y, inner.State(*final, state.mask_x, state.mask_h)


def layer_norm_kernel(cell: Any, x: Tensor, state: Any, lengths: Tensor | None) -> Any:
    if not _regularisable(cell) or not _available(x):
        return None
    y, final = _run_regularised(cell, x, state, lengths, None, {})
    return y, cell.State(*final)


def register_extra() -> None:
    register(LayerNormLSTMCell, layer_norm_kernel)
    register(LayerNormGRUCell, layer_norm_kernel)
    register(VariationalDropoutCell, variational_dropout_kernel)
    register(ZoneoutCell, zoneout_kernel)
