"""Validation helpers for the public boundary of :mod:`rnnlab.data`.

Every message names the argument, what was expected and what was received, e.g.
``"horizon: expected 1 <= horizon <= 49, got 80"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._checks import check_int as check_int  # the one integer checker, re-exported


def check_float(
    value: Any,
    argument: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float within the given (closed or open) bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{argument}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{argument}: expected a finite number, got {value}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        left = "" if low is None else f"{low} {'<' if low_open else '<='} "
        right = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise ValueError(f"{argument}: expected {left}{argument}{right}, got {value}")
    return value


def check_choice(value: Any, argument: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{argument}: expected one of {options}, got {value!r}")
    return value


def make_rng(seed: Any, argument: str = "seed") -> np.random.Generator:
    """A NumPy Generator from an int seed (or a Generator, used as is); never the global RNG."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(
            f"{argument}: expected a non-negative int or a numpy.random.Generator, "
            f"got {type(seed).__name__} {seed!r}"
        )
    if seed < 0:
        raise ValueError(f"{argument}: expected a non-negative int, got {seed}")
    return np.random.default_rng(int(seed))


def seed_value(seed: Any) -> int | str:
    """What to store in ``params`` for a seed (the int, or a note that a Generator was given)."""
    return int(seed) if isinstance(seed, int | np.integer) else "numpy.random.Generator"
