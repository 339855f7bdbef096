"""What is fed back at each step: the reference (teacher forcing), the model's own output
(free running), or a mixture (the lecture's two: alternating blocks, or a random choice).

A schedule answers one question per step and sequence: feed the reference? It returns a
boolean mask (B, T), True where the reference r(t-1) is fed. Step 0 has no previous output and
uses the initial state (or the given input), so its column is ignored.

Fed-back *model* outputs are detached by default (Bengio et al. 2015 do not backpropagate
through their samples); ``detach=False`` keeps the gradient path through them.
See docs/design/0001-output-feedback.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_probability


@dataclass(frozen=True)
class FeedbackSchedule:
    """Base class; ``mask(batch_size, steps)`` -> bool (B, T), True = feed the reference."""

    detach: bool = field(default=True, kw_only=True)

    def mask(
        self,
        batch_size: int,
        steps: int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class TeacherForcing(FeedbackSchedule):
    """Always feed the reference r(t-1) (training with teacher forcing)."""

    def mask(self, batch_size, steps, *, device=None, generator=None):  # type: ignore[no-untyped-def]
        return torch.ones(batch_size, steps, dtype=torch.bool, device=device)


@dataclass(frozen=True)
class FreeRunning(FeedbackSchedule):
    """Always feed the model's own output y(t-1) (as at test time)."""

    def mask(self, batch_size, steps, *, device=None, generator=None):  # type: ignore[no-untyped-def]
        return torch.zeros(batch_size, steps, dtype=torch.bool, device=device)


@dataclass(frozen=True)
class Alternating(FeedbackSchedule):
    """Blocks of ``teacher`` teacher-forced steps followed by ``free`` free-running steps."""

    teacher: int = 1
    free: int = 1

    def __post_init__(self) -> None:
        for name in ("teacher", "free"):
            v = getattr(self, name)
            check_int(v, name, low=0, what="a non-negative int")
        if self.teacher + self.free == 0:
            raise ValueError("teacher, free: expected a positive block length, got 0 and 0")

    def mask(self, batch_size, steps, *, device=None, generator=None):  # type: ignore[no-untyped-def]
        t = torch.arange(steps, device=device)
        row = (t % (self.teacher + self.free)) < self.teacher
        return row.unsqueeze(0).expand(batch_size, steps).clone()


@dataclass(frozen=True)
class Mixed(FeedbackSchedule):
    """Feed the reference with probability ``p`` (scheduled sampling's coin, Bengio et al. 2015).

    ``per="step"`` flips a coin for every step of every sequence; ``per="sequence"`` one coin per
    sequence for all its steps.
    """

    p: float = 0.5
    per: str = "step"

    def __post_init__(self) -> None:
        check_probability(self.p, "p", include_one=True)
        check_choice(self.per, "per", ("step", "sequence"))

    def mask(self, batch_size, steps, *, device=None, generator=None):  # type: ignore[no-untyped-def]
        shape = (batch_size, steps) if self.per == "step" else (batch_size, 1)
        u = torch.rand(shape, generator=generator, device=generator.device if generator else device)
        m = (u < self.p).to(device)
        return m if self.per == "step" else m.expand(batch_size, steps).clone()


@dataclass(frozen=True, eq=False)
class GivenMask(FeedbackSchedule):
    """A mask drawn already: ``mask`` (B, T) bool, True where the reference r(t-1) is fed.

    The schedule for a mask that was drawn elsewhere, e.g. once over a whole sequence and then
    sliced into truncated-BPTT windows (the trainer does this), or written by hand. The
    dispatcher (:func:`rnnlab.layers.dispatch.run`), the engine's masked kernels and the
    parallel teacher-forced path accept it as they accept the other schedules; the mask is used
    as given (``batch_size`` and ``steps`` must match it), and its column 0 is ignored as for
    every schedule.

    Args:
        mask: (B, T) bool tensor.
        detach: the fed-back *own* output carries no gradient (the default, as for every
            schedule); the kernels' backward honours it.

    Example:
        >>> m = torch.tensor([[True, False, True]])
        >>> GivenMask(m, detach=False).mask(1, 3).tolist()
        [[True, False, True]]
    """

    given: Tensor = field(default_factory=lambda: torch.ones(0, 0, dtype=torch.bool))

    def __init__(self, mask: Tensor, detach: bool = True) -> None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask)
            raise ValueError(f"mask: expected a bool tensor (B, T), got {got}")
        if not isinstance(detach, bool):
            raise ValueError(f"detach: expected True or False, got {detach!r}")
        object.__setattr__(self, "given", mask)
        object.__setattr__(self, "detach", detach)

    def mask(self, batch_size, steps, *, device=None, generator=None):  # type: ignore[no-untyped-def]
        if tuple(self.given.shape) != (batch_size, steps):
            raise ValueError(
                f"mask: expected ({batch_size}, {steps}) for this input, got "
                f"{tuple(self.given.shape)}"
            )
        return self.given if device is None else self.given.to(device)

    def all_reference(self) -> bool:
        """Whether every step t >= 1 feeds the reference (then it is teacher forcing)."""
        return bool(self.given[:, 1:].all())
