"""Truncated backpropagation through time (Williams & Peng 1990).

Shapes: B batch, T time, I input, O output.

``TruncatedBPTT(k1, k2)``: every k1 steps, backpropagate the loss of those k1 new steps through
the last k2 steps (k2 >= k1), then update the parameters. Window n covers steps
[max(0, e - k2), e) with e = min(n k1, T); its loss sits on [(n-1) k1, e). The state at the
start of the next window is taken from this one (detached), so memory holds k2 steps whatever
T is; a long sequence is streamed in chunks with its state carried. For k2 > k1 the k2 - k1
older steps of each window are re-run from the carried state (they were run in the previous
window too) - the price of a simple, exact definition.

With k1 = k2 >= T there is one window: full BPTT (``tests/test_training_tbptt.py``).

Each window's loss is its masked loss sum divided by the whole batch's count of target
elements, so the window losses add up to the batch's mean loss.

Reference: R. J. Williams and J. Peng, "An efficient gradient-based algorithm for on-line
training of recurrent network trajectories", Neural Computation 2 (1990), BPTT(h; h').
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._checks import check_int
from .._sequences import detach_state
from .supervision import masked_loss_sum


class Window(NamedTuple):
    """One truncated-BPTT update: run [start, end), loss on [loss_start, end), and take the
    next window's starting state after ``carry`` steps (an absolute step index)."""

    start: int
    loss_start: int
    end: int
    carry: int


class WindowResult(NamedTuple):
    """Returned by :meth:`TruncatedBPTT.run` (values detached)."""

    loss: float  # sum of the window losses: the batch's mean loss
    window_losses: list[float]
    output: Tensor  # (B, T, O), each step from the window whose loss covers it
    state: Any  # the state after the last step, detached (carry it to the next chunk)
    last_output: Tensor  # y at the last step (B, O), detached


@dataclass(frozen=True)
class TruncatedBPTT:
    """Every ``k1`` steps, backpropagate through the last ``k2`` steps (module docstring).

    Args:
        k1: steps between updates (>= 1).
        k2: steps backpropagated through (>= k1; default k1).

    Example:
        >>> [tuple(w) for w in TruncatedBPTT(2, 3).windows(5)]
        [(0, 0, 2, 1), (1, 2, 4, 2), (2, 4, 5, 5)]
    """

    k1: int
    k2: int | None = None

    def __post_init__(self) -> None:
        check_int(self.k1, "k1", low=1, what="a positive int")
        if self.k2 is not None:
            what = f"an int >= k1={self.k1} (or None for k1)"
            check_int(self.k2, "k2", low=self.k1, what=what)

    @property
    def depth(self) -> int:
        """k2, the steps each update backpropagates through."""
        return self.k1 if self.k2 is None else self.k2

    @classmethod
    def full(cls, steps: int) -> TruncatedBPTT:
        """Full BPTT over ``steps`` steps: a single window."""
        return cls(max(1, steps), max(1, steps))

    def windows(self, steps: int) -> list[Window]:
        """The updates over a sequence of ``steps`` steps."""
        check_int(steps, "steps", low=1, what="a positive int")
        k1, k2 = self.k1, self.depth
        ends = list(range(k1, steps, k1)) + [steps]
        out = []
        for n, e in enumerate(ends):
            carry = max(0, ends[n + 1] - k2) if n + 1 < len(ends) else e
            out.append(Window(max(0, e - k2), ends[n - 1] if n else 0, e, carry))
        return out

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        target: Tensor,
        mask: Tensor,
        *,
        loss: str | Callable[[Tensor, Tensor, Tensor], Tensor],
        state: Any = None,
        lengths: Tensor | None = None,
        feed_mask: Tensor | None = None,
        detach: bool = True,
        reference: Tensor | None = None,
        prev_output: Tensor | None = None,
        prev_reference: Tensor | None = None,
        normalizer: float | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
        after_backward: Callable[[int, Tensor], None] | None = None,
        reduce_loss: Callable[[Tensor], Tensor] | None = None,
        before_forward: Callable[[Window], None] | None = None,
    ) -> WindowResult:
        """Train on one batch: a forward and backward per window, ``after_backward`` after each.

        Args:
            model: a :class:`~rnnlab.training.SequenceModel` (or a DDP wrapper of one).
            x: inputs (B, T, I); target (B, T, ...) and mask (B, T) from
                :meth:`Supervision.targets`.
            loss: ``"mse"`` or ``"cross_entropy"``, or a function ``loss(prediction, target,
                mask)`` returning the loss summed over the masked steps (then ``normalizer``
                must be given).
            state: the state carried from the previous chunk of a stream (or None).
            lengths, feed_mask, detach, reference, sample, generator: as
                :meth:`SequenceModel.forward`, over the whole T steps (sliced per window).
            prev_output, prev_reference: y and r at the step before ``x`` (streams).
            normalizer: divide each window's loss sum by this (default: the batch's count of
                target elements, so the windows add up to the mean).
            after_backward: ``(window_index, loss)`` after each backward; typically clips the
                gradients and steps the optimizer (and zeroes the gradients).
            reduce_loss: maps a window's loss to the value that is checked and reported (e.g. a
                sum over processes); default identity.
            before_forward: called with each window before its forward.

        Raises:
            FloatingPointError: a window's (reduced) loss is NaN or infinite; raised before its
                backward, so the parameters are those after the last good update.
        """
        B, T = x.shape[0], x.shape[1]
        if normalizer is None:
            if callable(loss):
                raise ValueError("normalizer: expected a number with a loss function, got None")
            normalizer = float(_count(target, mask, loss))
        normalizer = max(float(normalizer), 1e-12)
        out_chunks: list[Tensor] = []
        window_losses: list[float] = []
        carry = state
        # the carried state in the parameters' dtype: under bf16 autocast a window's final
        # state may be bfloat16 (a readout inside the cell), the next window's cells check it
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        prev_y = prev_output
        prev_win_out: Tensor | None = None
        prev_win_start = 0
        final_state: Any = None
        windows = self.windows(T)
        for n, w in enumerate(windows):
            if before_forward is not None:
                before_forward(w)
            if w.start > 0:
                assert prev_win_out is not None
                prev_y = prev_win_out[:, w.start - 1 - prev_win_start].detach()
            p_ref = None
            if reference is not None:
                p_ref = reference[:, w.start - 1] if w.start > 0 else prev_reference
            L = None if lengths is None else (lengths - w.start).clamp(0, w.end - w.start)
            res = model(
                x[:, w.start : w.end],
                carry,
                lengths=L,
                feed_mask=None if feed_mask is None else feed_mask[:, w.start : w.end],
                detach=detach,
                reference=None if reference is None else reference[:, w.start : w.end],
                prev_reference=p_ref,
                prev_output=prev_y,
                split=w.carry - w.start,
                sample=sample,
                generator=generator,
            )
            y = res.output  # (B, end - start, O)
            a = w.loss_start - w.start
            tgt, m = target[:, w.loss_start : w.end], mask[:, w.loss_start : w.end]
            if callable(loss):
                total = loss(y[:, a:], tgt, m)
            else:
                total, _ = masked_loss_sum(y[:, a:], tgt, m, loss)
            value = total / normalizer
            shown = value.detach() if reduce_loss is None else reduce_loss(value.detach())
            if not bool(torch.isfinite(shown).all()):
                raise FloatingPointError(
                    f"loss is {float(shown)} in truncated-BPTT window {n} (steps "
                    f"{w.start}..{w.end - 1}); the parameters are those of the last good update"
                )
            value.backward()
            if after_backward is not None:
                after_backward(n, shown)
            window_losses.append(float(shown))
            out_chunks.append(y[:, a:].detach())
            prev_win_out, prev_win_start = y.detach(), w.start
            carry = detach_state(res.split_state, dtype)
            final_state = res.state
        outputs = torch.cat(out_chunks, 1)
        assert outputs.shape[:2] == (B, T)
        return WindowResult(
            sum(window_losses),
            window_losses,
            outputs,
            detach_state(final_state, dtype),
            outputs[:, -1],
        )


def _count(target: Tensor, mask: Tensor, loss: str) -> int:
    per = target.shape[2:].numel() if loss == "mse" else 1
    return int(mask.sum()) * per
