"""Running a cell over time: :class:`Recurrent`, the layer.

Shapes: B batch, T time, I input, O output, n a state field's size.

:func:`unroll` (:mod:`.loop`) is the one readable loop that every fast path must equal (on
outputs, final state and every gradient, initial state included); :class:`Recurrent` runs a
cell through :func:`rnnlab.layers.dispatch.run`, which picks a kernel or that loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .._checks import check_int
from ..cells.base import Cell
from ..cells.dropout import VariationalDropoutCell
from ._utils import (
    check_against_parameters,
    check_lengths,
    check_sequence,
    repack,
    unpack,
)
from .dispatch import run
from .feedback import FeedbackSchedule
from .loop import RecurrentResult, unroll

__all__ = ["Recurrent", "RecurrentResult", "unroll"]


class Recurrent(nn.Module):
    """Runs a cell over time.

    Args:
        cell: any :class:`rnnlab.cells.Cell`.
        batch_first: inputs and outputs are (B, T, ·) (default) or (T, B, ·).
        reverse: run each sequence from its last valid step to its first (the backward half of
            a bidirectional RNN); outputs come back in the original time order.
        learn_initial_state: make the initial state a trainable parameter (one vector per state
            field, shared by the batch) instead of zeros.
        input_feedback: make the layer autoregressive: a function from y(t-1) (B, O) to the next
            input x(t) (B, I), e.g. ``lambda y: y`` for real values or a one-hot of the argmax for
            tokens. Feedback schedules then choose, per step, between the given x(t) (the
            reference) and ``input_feedback(y(t-1))``; :meth:`generate` runs free.
        dropout_input, dropout_state: variational recurrent dropout (Gal & Ghahramani 2016):
            one mask per sequence on x and one on h(t-1) in the recurrent products, the same at
            every step; the layer's cell becomes ``VariationalDropoutCell(cell, ...)`` and its
            state carries the masks (``mask_x``, ``mask_h``), drawn from the ``generator`` given
            to :meth:`forward` (or torch's RNG) when no state is given. Off in eval().

    Output feedback into the *state* (Jordan: y(t-1); LSTM/GRU: h(t-1)) needs no
    ``input_feedback``: pass ``feedback=TeacherForcing()`` and ``reference`` r (B, T, O) to
    :meth:`forward`; see docs/design/0001-output-feedback.md.

    Example:
        >>> from rnnlab import LSTMCell, Recurrent
        >>> layer = Recurrent(LSTMCell(3, 8))
        >>> y, state = layer(torch.randn(4, 10, 3), lengths=torch.tensor([10, 7, 3, 1]))
        >>> y.shape, state.h.shape
        (torch.Size([4, 10, 8]), torch.Size([4, 8]))
    """

    def __init__(
        self,
        cell: Cell,
        *,
        batch_first: bool = True,
        reverse: bool = False,
        learn_initial_state: bool = False,
        input_feedback: Callable[[Tensor], Tensor] | None = None,
        dropout_input: float = 0.0,
        dropout_state: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected an rnnlab Cell, got {type(cell).__name__}")
        if dropout_input or dropout_state:
            cell = VariationalDropoutCell(cell, dropout_input, dropout_state)
        if learn_initial_state and getattr(cell, "input_shape", None) is not None:
            raise ValueError(
                "learn_initial_state: not supported for cells with a declared input_shape "
                f"({type(cell).__name__}: its state has a spatial size)"
            )
        if learn_initial_state and getattr(cell, "stochastic_state", False):
            raise ValueError(
                "learn_initial_state: not supported with variational dropout (its state holds "
                "the dropout masks, which are drawn, not learnt)"
            )
        if input_feedback is not None and not callable(input_feedback):
            raise TypeError(
                "input_feedback: expected a callable y -> x or None, got "
                f"{type(input_feedback).__name__}"
            )
        self.cell = cell
        self.batch_first = bool(batch_first)
        self.reverse = bool(reverse)
        self.input_feedback = input_feedback
        self.initial: nn.ParameterDict | None = None
        if learn_initial_state:
            ref = next(iter(cell.parameters()), None)
            kw: dict[str, Any] = {}
            if ref is not None:
                kw = {"device": ref.device, "dtype": ref.dtype}
            self.initial = nn.ParameterDict(
                {k: nn.Parameter(torch.zeros(n, **kw)) for k, n in cell.state_sizes().items()}
            )

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **draw: Any,
    ) -> Any:
        """The learned initial state (expanded to the batch) or the cell's zero state.

        ``draw`` goes to the cell: ``generator=`` for a state holding random draws (dropout),
        ``spatial_size=`` for a cell with a declared ``input_shape`` (ConvLSTM).
        """
        if self.initial is None:
            return self.cell.initial_state(batch_size, device=device, dtype=dtype, **draw)
        return self.cell.State(
            *(
                p.to(device=device, dtype=dtype).unsqueeze(0).expand(batch_size, -1)
                for p in self.initial.values()
            )
        )

    def forward(
        self,
        x: Tensor | PackedSequence,
        state: Any = None,
        *,
        lengths: Tensor | None = None,
        feedback: FeedbackSchedule | None = None,
        reference: Tensor | None = None,
        reverse: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor | PackedSequence, Any]:
        """Run the cell over ``x``; return ``(output, final_state)``.

        Args:
            x: (B, T, I) (or (T, B, I) if not batch-first), or a PackedSequence.
            state: initial state (the cell's NamedTuple of (B, n) tensors); default
                :meth:`initial_state`.
            lengths: (B,) integer tensor on any device, 1 <= length <= T. Outputs past a
                sequence's end are zero and its final state is the state at its last valid step.
            feedback: a feedback schedule (TeacherForcing, FreeRunning, Alternating, Mixed).
            reference: r (B, T, n) for feedback into the state: r(t-1) replaces the cell's
                ``feedback_field`` at step t where the schedule says so.
            reverse: override the layer's direction for this call.
            generator: random generator for stochastic schedules and dropout masks.
        """
        res = self.run(
            x,
            state,
            lengths=lengths,
            feedback=feedback,
            reference=reference,
            reverse=reverse,
            generator=generator,
        )
        return res.output, res.state

    def run(
        self,
        x: Tensor | PackedSequence,
        state: Any = None,
        *,
        lengths: Tensor | None = None,
        feedback: FeedbackSchedule | None = None,
        reference: Tensor | None = None,
        reverse: bool | None = None,
        return_states: bool = False,
        generator: torch.Generator | None = None,
    ) -> RecurrentResult:
        """Like :meth:`forward`, returning a :class:`RecurrentResult` (and the trajectory)."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator or None, got {type(generator).__name__}"
            )
        packed = x if isinstance(x, PackedSequence) else None
        trailing = getattr(self.cell, "input_shape", None)
        if packed is not None and trailing is not None:
            raise TypeError(f"x: {type(self.cell).__name__} takes a padded tensor, not packed")
        if packed is not None:
            if lengths is not None:
                raise ValueError("lengths: a PackedSequence carries its own lengths; got both")
            xb, lengths_t = unpack(packed)  # (B, T, I)
            check_sequence(xb, self.cell.input_size, batch_first=True)
        else:
            check_sequence(x, self.cell.input_size, batch_first=self.batch_first, trailing=trailing)
            assert isinstance(x, Tensor)
            xb = x if self.batch_first else x.transpose(0, 1)  # (B, T, I)
        check_against_parameters(xb, self.cell)
        B, T = xb.shape[0], xb.shape[1]
        lengths_v = check_lengths(lengths_t if packed is not None else lengths, B, T, xb.device)
        draw: dict[str, Any] = (
            {"generator": generator} if getattr(self.cell, "stochastic_state", False) else {}
        )
        if state is None:
            if trailing is not None:  # the cell's state takes the frame size from x
                draw["spatial_size"] = tuple(xb.shape[3:])
            state = self.initial_state(B, device=xb.device, dtype=xb.dtype, **draw)
        else:
            state = self.cell.check_state(state, B, xb, **draw)
        ref_b = self._check_feedback(feedback, reference, packed is not None, B, T, xb)
        res = run(
            self.cell,
            xb,
            state,
            lengths_v,
            reverse=self.reverse if reverse is None else bool(reverse),
            feedback=feedback,
            reference=ref_b,
            input_feedback=self.input_feedback,
            return_states=return_states,
            generator=generator,
        )
        out: Tensor | PackedSequence = res.output
        states = res.states
        if packed is not None:
            assert lengths_v is not None
            out = repack(res.output, lengths_v, packed)  # type: ignore[arg-type]
        elif not self.batch_first:
            out = res.output.transpose(0, 1)  # type: ignore[union-attr]
            if states is not None:
                states = type(states)(*(s.transpose(0, 1) for s in states))
        return RecurrentResult(out, res.state, states)

    def _check_feedback(
        self,
        feedback: FeedbackSchedule | None,
        reference: Tensor | None,
        packed: bool,
        B: int,
        T: int,
        x: Tensor,
    ) -> Tensor | None:
        if feedback is None:
            if reference is not None:
                raise ValueError("reference: given without a feedback schedule (feedback=None)")
            return None
        if not isinstance(feedback, FeedbackSchedule):
            raise TypeError(
                f"feedback: expected a FeedbackSchedule (TeacherForcing(), FreeRunning(), "
                f"Alternating(k, m), Mixed(p)), got {type(feedback).__name__}"
            )
        if self.input_feedback is not None:
            if reference is not None:
                raise ValueError(
                    "reference: an autoregressive layer (input_feedback) takes its reference "
                    "from x itself; pass reference=None"
                )
            return None
        field = self.cell.feedback_field
        if field is None:
            raise ValueError(
                f"feedback: {type(self.cell).__name__} has no output feedback (its state does not "
                "hold y(t-1)); use a cell such as JordanCell, or Recurrent(..., input_feedback=...)"
            )
        if reference is None:
            raise ValueError("reference: required with feedback (the reference r, (B, T, n))")
        n = self.cell.state_sizes()[field]
        if packed:
            raise ValueError(
                "reference: feedback with a PackedSequence input is not supported; "
                "pass a padded x and lengths"
            )
        if not isinstance(reference, Tensor):
            raise TypeError(f"reference: expected a tensor, got {type(reference).__name__}")
        want = (B, T, n) if self.batch_first else (T, B, n)
        if tuple(reference.shape) != want:
            raise ValueError(f"reference: expected shape {want}, got {tuple(reference.shape)}")
        if reference.dtype != x.dtype or reference.device != x.device:
            raise TypeError(
                f"reference: expected dtype {x.dtype} on {x.device} (as x), "
                f"got {reference.dtype} on {reference.device}"
            )
        return reference if self.batch_first else reference.transpose(0, 1)

    @torch.no_grad()
    def generate(self, steps: int, x0: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Free-running generation of an autoregressive layer: x(0) = ``x0`` (B, I), then
        x(t) = input_feedback(y(t-1)). Returns y (B, steps, O) (time-first if the layer is) and
        the final state. Runs without gradients.
        """
        if self.input_feedback is None:
            raise ValueError(
                "input_feedback: generate() needs an autoregressive layer (Recurrent(cell, "
                "input_feedback=...)); for a Jordan cell run forward() on the inputs"
            )
        check_int(steps, "steps", low=1, what="a positive int")
        if not isinstance(x0, Tensor) or x0.dim() != 2 or x0.shape[1] != self.cell.input_size:
            got = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
            raise ValueError(f"x0: expected (B, {self.cell.input_size}), got {got}")
        B = x0.shape[0]
        state = (
            self.initial_state(B, device=x0.device, dtype=x0.dtype)
            if state is None
            else self.cell.check_state(state, B, x0)
        )
        x_t, ys = x0, []
        for _ in range(steps):
            y, state = self.cell(x_t, state)
            ys.append(y)
            x_t = self.input_feedback(y)
        out = torch.stack(ys, 1 if self.batch_first else 0)
        return out, state

    def extra_repr(self) -> str:
        parts = [f"batch_first={self.batch_first}"]
        if self.reverse:
            parts.append("reverse=True")
        if self.initial is not None:
            parts.append("learn_initial_state=True")
        if self.input_feedback is not None:
            parts.append("autoregressive")
        return ", ".join(parts)
