"""Where the input enters and where the loss sits: the lecture's unfolding cases.

Shapes: B batch, T time (q unfolding steps), I input, O output, C classes.

The lecture unfolds an RNN over q steps and names four cases (plus the encoder-decoder):

====== =========================================== ===============================
case   input                                       target
====== =========================================== ===============================
1      x at the first step only (zeros after)      r(t) at every step
2      one fixed x presented at every step         r at the last step (images)
3      time-varying x(t)                           r at the last step (sentences)
4      time-varying x(t)                           r(t) at every step (speech)
seq2seq an encoder reads x; a decoder emits y(t)   r(t) at every decoder step
====== =========================================== ===============================

Every case reduces to one form: a prediction y (B, T, ...) at every step, a target aligned with
it (B, T, ...), and a boolean *loss mask* (B, T), True where a target exists (every valid step
for cases 1, 4 and seq2seq; the last valid step of each sequence for cases 2 and 3). The loss is
the mean over masked positions (and output features, for MSE), so padded steps never count,
and truncated BPTT can split the same sum over windows (:class:`rnnlab.training.TruncatedBPTT`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_int
from .._sequences import length_mask

CASES: tuple[int | str, ...] = (1, 2, 3, 4, "seq2seq")
LOSSES = ("mse", "cross_entropy")
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index; pad_collate pads class targets so


def check_case(case: Any, argument: str = "case") -> int | str:
    return check_choice(case, argument, CASES)  # type: ignore[no-any-return]


def check_loss(loss: Any, argument: str = "loss") -> str:
    return str(check_choice(loss, argument, LOSSES))


def valid_steps(lengths: Tensor | None, batch_size: int, steps: int, device: Any) -> Tensor:
    """(B, T) bool, True where t < length (all True without lengths)."""
    if lengths is None:
        return torch.ones(batch_size, steps, dtype=torch.bool, device=device)
    return length_mask(lengths, steps, device)


def unfold_input(x: Tensor, case: int | str, steps: int | None) -> Tensor:
    """The input of every unfolded step, (B, T, I).

    Case 1 with a static ``x`` (B, I): x at step 0, zeros at steps 1..q-1. Case 2 with a static
    ``x`` (B, I): x at every one of the q steps. A (B, T, I) input is taken as already unfolded
    (e.g. :class:`rnnlab.data.MapSequences` in ``"initial"`` mode is case 1 laid out in time).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a tensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x
    if x.dim() != 2 or case not in (1, 2):
        want = "(B, T, I), or (B, I) for cases 1 and 2" if case in (1, 2) else "(B, T, I)"
        raise ValueError(f"x: expected {want} for case {case!r}, got {tuple(x.shape)}")
    what = f"the number of unfolding steps q >= 1 for a static input (case {case})"
    steps = check_int(steps, "steps", low=1, what=what)
    if case == 2:
        return x.unsqueeze(1).expand(-1, steps, -1)  # (B, q, I)
    out = x.new_zeros(x.shape[0], steps, x.shape[1])  # (B, q, I)
    out[:, 0] = x
    return out


def step_targets(
    y: Tensor, case: int | str, steps: int, lengths: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Align targets with the T unfolded steps; return ``(target (B, T, ...), mask (B, T))``.

    Cases 1, 4 and seq2seq: ``y`` is (B, T, ...) (a target at every step), the mask the valid
    steps. Cases 2 and 3: ``y`` is (B, ...) (one target per sequence), placed at each sequence's
    last valid step; the mask is True there only. Class targets equal to -100 are masked out.
    """
    B = y.shape[0]
    if case in (2, 3):
        target = y.unsqueeze(1).expand(B, steps, *y.shape[1:])  # (B, T, ...)
        last = (lengths.to(y.device) - 1) if lengths is not None else None
        mask = torch.zeros(B, steps, dtype=torch.bool, device=y.device)
        if last is None:
            mask[:, -1] = True
        else:
            mask[torch.arange(B, device=y.device), last] = True
    else:
        if y.dim() < 2 or y.shape[1] != steps:
            raise ValueError(
                f"y: expected targets at every step, (B, T={steps}, ...) for case {case!r}, "
                f"got {tuple(y.shape)}"
            )
        target = y
        mask = valid_steps(lengths, B, steps, y.device)
    if not target.is_floating_point():
        mask = mask & (target != IGNORE_INDEX).reshape(B, steps, -1).all(-1)
    return target, mask


def masked_loss_sum(
    prediction: Tensor, target: Tensor, mask: Tensor, kind: str
) -> tuple[Tensor, int]:
    """``(sum of the loss over masked elements, number of elements)``.

    MSE counts every output feature of a masked step; cross-entropy counts masked steps.

    Args:
        prediction: (B, T, O) values (MSE) or logits (B, T, C) (cross-entropy).
        target: (B, T, O) values or (B, T) class indices.
        mask: (B, T) bool.
        kind: ``"mse"`` or ``"cross_entropy"``.
    """
    check_loss(kind, "kind")
    if kind == "mse":
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction: expected shape {tuple(target.shape)} (as target), "
                f"got {tuple(prediction.shape)}"
            )
        err = (prediction - target.to(prediction.dtype)) ** 2  # (B, T, O)
        per = err.shape[2:].numel()
        m = mask.reshape(*mask.shape, *([1] * (err.dim() - 2)))
        total = torch.where(m, err, torch.zeros((), dtype=err.dtype, device=err.device)).sum()
        return total, int(mask.sum()) * per
    if prediction.shape[:-1] != target.shape:
        raise ValueError(
            f"prediction: expected logits of shape {tuple(target.shape)} + (C,), "
            f"got {tuple(prediction.shape)}"
        )
    tgt = target.long().masked_fill(~mask, IGNORE_INDEX)
    total = F.cross_entropy(
        prediction.reshape(-1, prediction.shape[-1]),
        tgt.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total, int(mask.sum())


def masked_accuracy(prediction: Tensor, target: Tensor, mask: Tensor) -> tuple[int, int]:
    """``(correct, labelled)``: how many masked steps have ``argmax(prediction) == target``, of
    how many masked steps (class targets; -100 counts as unlabelled).

    Args:
        prediction: logits (B, T, C).
        target: (B, T) class indices.
        mask: (B, T) bool.

    Example:
        >>> y = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]])  # argmax 0, 1, 0
        >>> masked_accuracy(y, torch.tensor([[0, 0, 0]]), torch.tensor([[True, True, False]]))
        (1, 2)
    """
    if prediction.shape[:-1] != target.shape or mask.shape != target.shape:
        raise ValueError(
            f"prediction, target, mask: expected (B, T, C), (B, T), (B, T), got "
            f"{tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}"
        )
    m = mask & (target != IGNORE_INDEX)
    hit = (prediction.argmax(-1) == target) & m
    return int(hit.sum()), int(m.sum())


def masked_loss(
    prediction: Tensor,
    target: Tensor,
    kind: str,
    *,
    mask: Tensor | None = None,
    lengths: Tensor | None = None,
) -> Tensor:
    """Mean loss over the steps where ``mask`` (or ``t < lengths``) holds; (B, T, ...) inputs."""
    if mask is None:
        mask = valid_steps(lengths, target.shape[0], target.shape[1], target.device)
    total, count = masked_loss_sum(prediction, target, mask, kind)
    return total / max(count, 1)


@dataclass(frozen=True)
class Supervision:
    """One of the lecture's unfolding cases with its loss (see the module docstring).

    Args:
        case: 1, 2, 3, 4 or ``"seq2seq"``.
        loss: ``"mse"`` or ``"cross_entropy"`` (targets are then class indices).
        steps: q, the unfolding steps for a static input (B, I) in cases 1 and 2.

    Example:
        >>> sup = Supervision(case=3, loss="mse")
        >>> target, mask = sup.targets(torch.ones(2, 1), steps=5, lengths=torch.tensor([5, 2]))
        >>> mask.int().tolist()
        [[0, 0, 0, 0, 1], [0, 1, 0, 0, 0]]
    """

    case: int | str = 4
    loss: str = "mse"
    steps: int | None = None

    def __post_init__(self) -> None:
        check_case(self.case)
        check_loss(self.loss)
        if self.steps is not None:
            check_int(self.steps, "steps", low=1, what="a positive int or None")

    @property
    def every_step(self) -> bool:
        """Whether there is a target at every step (cases 1, 4, seq2seq)."""
        return self.case not in (2, 3)

    def inputs(self, x: Tensor) -> Tensor:
        """The input at every unfolded step, (B, T, I) (see :func:`unfold_input`)."""
        return unfold_input(x, self.case, self.steps)

    def targets(
        self, y: Tensor, steps: int, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(target (B, T, ...), loss mask (B, T))`` (see :func:`step_targets`)."""
        return step_targets(y, self.case, steps, lengths)

    def __call__(self, prediction: Tensor, y: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The mean loss of per-step predictions (B, T, ...) against the case's targets."""
        target, mask = self.targets(y, prediction.shape[1], lengths)
        return masked_loss(prediction, target, self.loss, mask=mask)
