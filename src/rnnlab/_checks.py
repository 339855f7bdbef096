"""One checker per kind of argument, shared by every part (docs/design/0016; issue 16).

Each raises before any work, naming the argument, what it expected and what it got. A value
of the wrong type raises :class:`ArgumentTypeError`, which is both a TypeError (Python's
convention) and a ValueError (what some of the checkers these replace raised), so callers
written against either keep working.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (both a TypeError and a ValueError)."""


def check_int(
    value: Any,
    argument: str,
    *,
    low: int | None = None,
    high: int | None = None,
    what: str | None = None,
) -> int:
    """``value`` as an int with ``low <= value <= high`` (bounds optional; bool is no int,
    NumPy integers are). ``what`` names the expectation in the message (default: from the
    bounds, e.g. "an int >= 1")."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        kind = what or "an int"
        raise ArgumentTypeError(
            f"{argument}: expected {kind}, got {type(value).__name__} {value!r}"
        )
    if what is None:
        if low is not None and high is not None:
            what = f"{low} <= {argument} <= {high}"
        elif low is not None:
            what = f"an int >= {low}"
        elif high is not None:
            what = f"an int <= {high}"
        else:
            what = "an int"
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{argument}: expected {what}, got {v}")
    return v


def check_probability(value: Any, argument: str, *, include_one: bool = False) -> float:
    """``value`` as a float in [0, 1) (or [0, 1] with ``include_one``); ValueError otherwise
    (an :class:`ArgumentTypeError` for a non-number)."""
    interval = "[0, 1]" if include_one else "[0, 1)"
    message = f"{argument}: expected a probability in {interval}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ArgumentTypeError(message)
    v = float(value)
    if not (0.0 <= v <= 1.0 if include_one else 0.0 <= v < 1.0):
        raise ValueError(message)
    return v
