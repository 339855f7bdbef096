"""The reference unroll: the one readable loop over time that every fast path must equal (on
outputs, final state and every gradient, initial state included). It dispatches nothing: the
choice of kernel, parallel path or this loop is :func:`rnnlab.layers.dispatch.run`'s.

Shapes: B batch, T time, I input, O output, n a state field's size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ..cells.base import Cell
from ._utils import reverse_padded, valid_mask
from .feedback import FeedbackSchedule


class RecurrentResult(NamedTuple):
    """What :meth:`Recurrent.run` returns.

    Attributes:
        output: y for every step, (B, T, O) (time-first if the layer is), or a PackedSequence.
        state: the final state: for each sequence, the state after its last valid step.
        states: with ``return_states=True``, the whole trajectory: the cell's state type with
            each field (B, T, n) (time-first if the layer is); past a sequence's end the state
            stays at its final value. Otherwise None.
    """

    output: Tensor | PackedSequence
    state: Any
    states: Any | None


def _stack_states(traj: list[Any], dim: int) -> Any:
    first = traj[0]
    return type(first)(*(torch.stack([s[k] for s in traj], dim) for k in range(len(first))))


def _rows(m: Tensor, like: Tensor) -> Tensor:
    # (B,) -> (B, 1, ...) against a (B, n) vector or a (B, F, H, W) feature map.
    return m.view(-1, *([1] * (like.dim() - 1)))


def unroll(
    cell: Cell,
    x: Tensor,
    state: Any,
    lengths: Tensor | None = None,
    *,
    reverse: bool = False,
    feedback: FeedbackSchedule | None = None,
    reference: Tensor | None = None,
    input_feedback: Callable[[Tensor], Tensor] | None = None,
    return_states: bool = False,
    generator: torch.Generator | None = None,
) -> RecurrentResult:
    """The reference loop over a batch-first, already validated ``x`` (B, T, I).

    The readable definition every fast path must equal; it dispatches nothing (the choice of
    kernel, parallel path or this loop is :func:`rnnlab.layers.dispatch.run`'s). ``reverse``
    runs each sequence backwards within its length and returns outputs in the original time
    order.
    """
    B, T = x.shape[0], x.shape[1]
    if reverse:
        x = reverse_padded(x, lengths)
        if reference is not None:
            reference = reverse_padded(reference, lengths)

    step: Callable[[Tensor, Any], tuple[Tensor, Any]]
    step = cell.step if type(cell).forward is Cell.forward else cell
    valid = valid_mask(lengths, T)
    teacher = None
    if feedback is not None:
        teacher = feedback.mask(B, T, device=x.device, generator=generator)
    field = cell.feedback_field
    outputs: list[Tensor] = []
    traj: list[Any] = []
    y_prev: Tensor | None = None
    for t in range(T):
        prev = state
        x_t = x[:, t]
        if teacher is not None and t > 0:
            use_ref = teacher[:, t : t + 1]  # (B, 1)
            assert y_prev is not None and feedback is not None
            if input_feedback is not None:
                own = y_prev.detach() if feedback.detach else y_prev
                x_t = torch.where(use_ref, x_t, input_feedback(own))
            else:
                assert reference is not None and field is not None
                own = getattr(state, field)
                own = own.detach() if feedback.detach else own
                state = state._replace(**{field: torch.where(use_ref, reference[:, t - 1], own)})
        y, new = step(x_t, state)
        if valid is not None:
            m = valid[:, t]  # (B,)
            new = type(new)(*(torch.where(_rows(m, n), n, o) for n, o in zip(new, prev)))
            y = torch.where(_rows(m, y), y, torch.zeros((), dtype=y.dtype, device=y.device))
        state = new
        y_prev = y
        outputs.append(y)
        if return_states:
            traj.append(state)
    out = torch.stack(outputs, 1)  # (B, T, O)
    states = _stack_states(traj, 1) if return_states else None
    if reverse:
        out = reverse_padded(out, lengths)
        if states is not None:
            states = type(states)(*(reverse_padded(s, lengths) for s in states))
    return RecurrentResult(out, state, states)
