"""Seeds at the public boundary of :mod:`rnnlab.data`.

The argument checkers (ints, floats, choices) are the shared ones in :mod:`rnnlab._checks`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
