"""The adding problem, a long-memory benchmark.

Shapes: N examples, T steps; inputs (N, T, 2), targets (N, 1).

Two input channels: channel 0 holds random values, channel 1 marks two positions with 1 (0
elsewhere). The target, given only after the last step, is a function of the two marked values.
Lecture case 3 (time-varying input, target at the last step).

Variants:

* ``"le"`` (Le, Jaitly & Hinton 2015, "A simple way to initialize recurrent networks of
  rectified linear units"): values uniform on [0, 1], one marker uniform in each half of the
  sequence (the common implementation, e.g. Arjovsky et al. 2016), target X1 + X2.
  Trivial baseline: always predict 1 (the target's mean); its MSE is Var(X1 + X2) = 2/12 = 1/6.
* ``"hochreiter"`` (Hochreiter & Schmidhuber 1997, LSTM paper, experiment 4): values uniform on
  [-1, 1], the first marker among the first 10 steps, the second among the first T/2 - 1 steps
  (distinct), target 0.5 + (X1 + X2)/4. Baseline: always predict 0.5; its MSE is
  Var((X1 + X2)/4) = (2/3)/16 = 1/24. (The paper's -1 markers on the first and last step carry no
  information and are left out.)

With ``min_length`` the lengths are drawn uniformly from ``[min_length, length]`` (the paper's
variable-length version); items then carry ``"length"`` and batch with :func:`pad_collate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_int
from ._checks import make_rng, seed_value
from .base import SequenceTask

ADDING_VARIANTS = ("le", "hochreiter")


def adding_baseline_mse(variant: str = "le") -> float:
    """MSE of the constant predictor (1 for ``"le"``, 0.5 for ``"hochreiter"``) in expectation."""
    check_choice(variant, "variant", ADDING_VARIANTS)
    return 1.0 / 6.0 if variant == "le" else 1.0 / 24.0


class AddingProblem(SequenceTask):
    """The adding problem as a data set (see the module docstring for the variants).

    Args:
        n: number of examples N.
        length: T, the sequence length (the longest one with ``min_length``); ``"le"`` needs
            T >= 2, ``"hochreiter"`` T >= 6.
        variant: ``"le"`` (default) or ``"hochreiter"``.
        min_length: shortest length for variable-length sequences, or None for all of length T.
        seed: int or ``numpy.random.Generator``.

    Items: ``{"x": (T, 2) float32, "y": (1,) float32}`` (+ ``"length"`` with ``min_length``).

    Example:
        >>> task = AddingProblem(1000, 100, seed=0)
        >>> task.x.shape, task.y.shape, task.case
        (torch.Size([1000, 100, 2]), torch.Size([1000, 1]), 3)
    """

    case = 3
    loss = "mse"
    baseline = "constant prediction E[y] (1 for 'le', 0.5 for 'hochreiter')"

    def __init__(
        self,
        n: int,
        length: int,
        *,
        variant: str = "le",
        min_length: int | None = None,
        seed: Any = 0,
    ) -> None:
        n = check_int(n, "n", low=1)
        variant = check_choice(variant, "variant", ADDING_VARIANTS)
        shortest = 2 if variant == "le" else 6
        length = check_int(length, "length", low=shortest)
        if min_length is not None:
            min_length = check_int(min_length, "min_length", low=shortest, high=length)
        rng = make_rng(seed)

        lo = length if min_length is None else min_length
        lengths = rng.integers(lo, length + 1, size=n)  # (N,)
        if variant == "le":
            values = rng.uniform(0.0, 1.0, size=(n, length))
            half = lengths // 2
            first = (rng.random(n) * half).astype(np.int64)
            second = half + (rng.random(n) * (lengths - half)).astype(np.int64)
        else:
            values = rng.uniform(-1.0, 1.0, size=(n, length))
            span = lengths // 2 - 1  # the second marker lies in [0, T/2 - 1)
            first = (rng.random(n) * np.minimum(10, span)).astype(np.int64)
            # draw from span - 1 places and skip the first marker's place: distinct positions
            second = (rng.random(n) * (span - 1)).astype(np.int64)
            second = second + (second >= first)
        steps = np.arange(length)
        values = np.where(steps[None, :] < lengths[:, None], values, 0.0)  # zero the padding
        markers = np.zeros((n, length))
        rows = np.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        total = values[rows, first] + values[rows, second]
        target = total if variant == "le" else 0.5 + total / 4.0

        x = torch.from_numpy(np.stack([values, markers], axis=-1)).float()  # (N, T, 2)
        y = torch.from_numpy(target).float().unsqueeze(-1)  # (N, 1)
        params = {
            "task": "adding",
            "n": n,
            "length": length,
            "variant": variant,
            "min_length": min_length,
            "seed": seed_value(seed),
        }
        lens = None if min_length is None else torch.from_numpy(lengths).long()
        super().__init__(x, y, params, lens)
        self.variant = variant

    def baseline_prediction(self) -> Tensor:
        """The constant E[y]: 1 (``"le"``) or 0.5 (``"hochreiter"``), shape (N, 1)."""
        return torch.full_like(self.y, 1.0 if self.variant == "le" else 0.5)

    @property
    def expected_baseline_loss(self) -> float:
        return adding_baseline_mse(self.variant)
