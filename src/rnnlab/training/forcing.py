"""What is fed back during training, and how that changes over training time.

The per-step choice (feed the reference r(t-1), or the model's own y(t-1)) is made by the
feedback schedules of :mod:`rnnlab.layers.feedback`: ``TeacherForcing``, ``FreeRunning``,
``Alternating(teacher=k, free=m)`` and ``Mixed(p, per=)``. This module adds the lecture's
"random choice at every step" with a probability ε_i that decays over training, *scheduled
sampling* (Bengio et al. 2015), where i counts training steps (default) or epochs:

* linear: ε_i = max(ε_min, k - c·i)
* exponential: ε_i = k^i (k < 1)
* inverse sigmoid: ε_i = k / (k + exp(i / k)) (k >= 1)

:func:`feed_mask` turns any of them into the boolean mask (B, T) the model uses, True where the
reference is fed. Step 0 has no previous output; its column only matters for a chunk that
continues a sequence (truncated BPTT windows).

Example:
    >>> ss = ScheduledSampling(InverseSigmoid(k=10.0), per="sequence")
    >>> round(ss.epsilon(0), 3), round(ss.epsilon(100), 3)
    (0.909, 0.0)
    >>> ss.at(step=0)  # the schedule used at training step 0
    Mixed(detach=True, p=0.9090909090909091, per='sequence')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._checks import check_choice, check_float, check_probability
from ..layers.feedback import FeedbackSchedule, Mixed


class Decay:
    """A schedule ε_i in [0, 1] over training time i (steps or epochs)."""

    def __call__(self, i: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Decay):
    """ε_i = p for every i."""

    p: float = 0.5

    def __post_init__(self) -> None:
        check_probability(self.p, "p", include_one=True)

    def __call__(self, i: int) -> float:
        return float(self.p)


@dataclass(frozen=True)
class Linear(Decay):
    """ε_i = max(ε_min, k - c·i) (Bengio et al. 2015, linear decay), clipped to [0, 1]."""

    k: float = 1.0
    c: float = 1e-3
    eps_min: float = 0.0

    def __post_init__(self) -> None:
        check_float(self.k, "k")
        check_float(self.c, "c", low=0.0)
        check_probability(self.eps_min, "eps_min", include_one=True)

    def __call__(self, i: int) -> float:
        return min(1.0, max(self.eps_min, self.k - self.c * i))


@dataclass(frozen=True)
class Exponential(Decay):
    """ε_i = k^i with 0 < k < 1 (Bengio et al. 2015, exponential decay)."""

    k: float = 0.999

    def __post_init__(self) -> None:
        what = "0 < k < 1 for exponential decay"
        check_float(self.k, "k", low=0.0, high=1.0, low_open=True, high_open=True, what=what)

    def __call__(self, i: int) -> float:
        return float(self.k**i)


@dataclass(frozen=True)
class InverseSigmoid(Decay):
    """ε_i = k / (k + exp(i / k)) with k >= 1 (Bengio et al. 2015, inverse sigmoid decay)."""

    k: float = 100.0

    def __post_init__(self) -> None:
        check_float(self.k, "k", low=1.0, what="k >= 1 for inverse sigmoid decay")

    def __call__(self, i: int) -> float:
        z = i / self.k
        if z > 700.0:  # exp overflows; ε is 0 to double precision long before
            return 0.0
        return float(self.k / (self.k + math.exp(z)))


DECAYS: dict[str, type[Decay]] = {
    "constant": Constant,
    "linear": Linear,
    "exponential": Exponential,
    "inverse_sigmoid": InverseSigmoid,
}


@dataclass(frozen=True)
class ScheduledSampling:
    """Scheduled sampling: at training time i, feed the reference with probability ε_i.

    Args:
        decay: a :class:`Decay` (``Linear``, ``Exponential``, ``InverseSigmoid``, ``Constant``).
        per: ``"step"`` flips a coin for every step of every sequence, ``"sequence"`` one coin
            per sequence.
        unit: ``"step"`` (i counts training steps, the default) or ``"epoch"``.
        detach: fed-back model outputs carry no gradient (default, as the paper).

    Reference: S. Bengio, O. Vinyals, N. Jaitly, N. Shazeer, "Scheduled sampling for sequence
    prediction with recurrent neural networks", NeurIPS 2015.
    """

    decay: Decay = field(default_factory=InverseSigmoid)
    per: str = "step"
    unit: str = "step"
    detach: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.decay, Decay):
            raise TypeError(
                f"decay: expected a Decay (Linear, Exponential, InverseSigmoid, Constant), "
                f"got {type(self.decay).__name__}"
            )
        check_choice(self.per, "per", ("step", "sequence"))
        check_choice(self.unit, "unit", ("step", "epoch"))

    def epsilon(self, i: int) -> float:
        """ε_i, the probability of feeding the reference at training time i."""
        return self.decay(i)

    def at(self, step: int, epoch: int = 0) -> Mixed:
        """The per-step schedule at this point of training: ``Mixed(ε_i, per=...)``."""
        i = step if self.unit == "step" else epoch
        return Mixed(self.epsilon(i), per=self.per, detach=self.detach)


Forcing = FeedbackSchedule | ScheduledSampling


def schedule_at(forcing: Forcing | None, step: int, epoch: int = 0) -> FeedbackSchedule | None:
    """The feedback schedule in force at a training step (fixed schedules are returned as is)."""
    if forcing is None or isinstance(forcing, FeedbackSchedule):
        return forcing
    if isinstance(forcing, ScheduledSampling):
        return forcing.at(step, epoch)
    raise TypeError(
        "forcing: expected a FeedbackSchedule (TeacherForcing(), FreeRunning(), "
        f"Alternating(k, m), Mixed(p)) or ScheduledSampling, got {type(forcing).__name__}"
    )


def teacher_probability(schedule: FeedbackSchedule | None) -> float | None:
    """The share of steps fed from the reference in expectation (None: no feedback)."""
    if schedule is None:
        return None
    if isinstance(schedule, Mixed):
        return float(schedule.p)
    m = schedule.mask(1, 1000)
    return float(m.float().mean())


def feed_mask(
    schedule: FeedbackSchedule | None,
    batch_size: int,
    steps: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor | None:
    """The schedule's (B, T) bool mask, True = feed the reference; None without a schedule."""
    if schedule is None:
        return None
    if not isinstance(schedule, FeedbackSchedule):
        raise TypeError(f"schedule: expected a FeedbackSchedule, got {type(schedule).__name__}")
    m = schedule.mask(batch_size, steps, device="cpu", generator=generator)
    return m.to(device) if device is not None else m
