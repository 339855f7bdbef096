"""Fast paths for the regulariser wrappers of issue 18, by delegation to the wrapped cell's kernel.

Shapes: B batch, T time, I input.

A :class:`~rnnlab.cells.VariationalDropoutCell` whose recurrent mask is inactive (eval mode, or
``dropout_state=0``) is its inner cell run on m_x ⊙ x: the input mask is constant over time, so
it is applied to the whole (B, T, I) input once and the inner cell's kernel runs unchanged
(eval: no mask at all). With an active recurrent mask the kernel declines and the reference loop
runs (U (m_h ⊙ h) needs the mask inside the recurrence: not in the compiled kernels yet).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..cells.dropout import VariationalDropoutCell
from .registry import lookup, register


def variational_dropout_kernel(
    cell: VariationalDropoutCell, x: Tensor, state: Any, lengths: Tensor | None
) -> Any:
    active = cell.training
    if active and cell.dropout_state > 0:
        return None
    inner_kernel = lookup(cell.cell)
    if inner_kernel is None:
        return None
    k = len(state) - 2
    inner_state = cell.cell.State(*state[:k])
    x_in = x * state.mask_x.unsqueeze(1) if active and cell.dropout_input > 0 else x  # (B, T, I)
    res = inner_kernel(cell.cell, x_in, inner_state, lengths)
    if res is None:
        return None
    y, final = res
    return y, cell.State(*final, state.mask_x, state.mask_h)


def register_extra() -> None:
    register(VariationalDropoutCell, variational_dropout_kernel)
