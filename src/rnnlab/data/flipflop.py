"""The 3-bit flip-flop (Sussillo & Barak 2013, "Opening the black box").

Shapes: N examples, T steps, K channels (3 by default); inputs and targets (N, T, K).

Each input channel is 0 except for sparse pulses of +1 or -1 (at each step a channel pulses with
probability ``pulse_prob``, with a random sign). Each output channel holds the sign of the last
pulse seen on its input channel, that step included, and 0 before the first pulse. The trained
network has 2^K stable fixed points, one per memory state. Lecture case 4 (time-varying input,
target at every step), loss MSE.

Trivial baseline: always predict 0 (the targets' mean, by symmetry). A target is nonzero from a
channel's first pulse on, so with p = ``pulse_prob`` its MSE in expectation is
1 - (1/T) * sum_{t=0}^{T-1} (1 - p)^(t + 1) = 1 - (1 - p)(1 - (1 - p)^T) / (p T).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_float, check_int
from ._checks import make_rng, seed_value
from .base import SequenceTask


def flipflop_baseline_mse(length: int, pulse_prob: float) -> float:
    """MSE of the zero predictor in expectation (see the module docstring)."""
    length = check_int(length, "length", low=1)
    p = check_float(pulse_prob, "pulse_prob", low=0.0, high=1.0, low_open=True)
    return 1.0 - (1.0 - p) * (1.0 - (1.0 - p) ** length) / (p * length)


def flipflop_targets(pulses: Tensor) -> Tensor:
    """Hold the last nonzero value of each channel: (N, T, K) pulses -> (N, T, K) targets."""
    if not isinstance(pulses, Tensor) or pulses.dim() != 3:
        got = tuple(pulses.shape) if isinstance(pulses, Tensor) else type(pulses).__name__
        raise ValueError(f"pulses: expected a tensor (N, T, K), got {got}")
    n, t, k = pulses.shape
    out = torch.zeros_like(pulses)
    held = torch.zeros(n, k, dtype=pulses.dtype)
    for step in range(t):
        p = pulses[:, step]
        held = torch.where(p != 0, torch.sign(p), held)
        out[:, step] = held
    return out


class FlipFlop(SequenceTask):
    """The K-bit flip-flop as a data set (see the module docstring).

    Args:
        n: number of examples N.
        length: T steps.
        n_bits: K channels (default 3).
        pulse_prob: probability p that a channel pulses at a step (default 0.05).
        seed: int or ``numpy.random.Generator``.

    Items: ``{"x": (T, K), "y": (T, K)}`` float32 in {-1, 0, 1}.
    """

    case = 4
    loss = "mse"
    baseline = "constant 0"

    def __init__(
        self,
        n: int,
        length: int,
        *,
        n_bits: int = 3,
        pulse_prob: float = 0.05,
        seed: Any = 0,
    ) -> None:
        n = check_int(n, "n", low=1)
        length = check_int(length, "length", low=1)
        n_bits = check_int(n_bits, "n_bits", low=1)
        pulse_prob = check_float(pulse_prob, "pulse_prob", low=0.0, high=1.0, low_open=True)
        rng = make_rng(seed)
        fire = rng.random((n, length, n_bits)) < pulse_prob
        sign = np.where(rng.random((n, length, n_bits)) < 0.5, -1.0, 1.0)
        pulses = torch.from_numpy(np.where(fire, sign, 0.0)).float()  # (N, T, K)
        params = {
            "task": "flipflop",
            "n": n,
            "length": length,
            "n_bits": n_bits,
            "pulse_prob": pulse_prob,
            "seed": seed_value(seed),
        }
        super().__init__(pulses, flipflop_targets(pulses), params)
        self.pulse_prob = pulse_prob

    def baseline_prediction(self) -> Tensor:
        return torch.zeros_like(self.y)

    @property
    def expected_baseline_loss(self) -> float:
        return flipflop_baseline_mse(int(self.y.shape[1]), self.pulse_prob)
