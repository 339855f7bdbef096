"""One checker per kind of argument, shared by every part (docs/design/0016; issue 16).

Each raises before any work, naming the argument, what it expected and what it got. A value
of the wrong type raises :class:`ArgumentTypeError`, which is both a TypeError (Python's
convention) and a ValueError (what some of the checkers these replace raised), so callers
written against either keep working.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
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


def check_float(
    value: Any,
    argument: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    what: str | None = None,
) -> float:
    """``value`` as a float, finite (unless ``finite=False``; NaN is always refused) and within
    the given bounds, each closed unless ``low_open`` / ``high_open``. bool is no number; NumPy
    numbers are. ``what`` names the expectation in every message (default: a real number, a
    finite number, or the bounds written out, e.g. "0.0 < p <= 1.0")."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ArgumentTypeError(
            f"{argument}: expected {what or 'a real number'}, got {type(value).__name__} {value!r}"
        )
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{argument}: expected {what or 'a finite number'}, got {v}")
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        if what is None:
            left = "" if low is None else f"{low} {'<' if low_open else '<='} "
            right = "" if high is None else f" {'<' if high_open else '<='} {high}"
            what = f"{left}{argument}{right}"
        raise ValueError(f"{argument}: expected {what}, got {v}")
    return v


def check_choice(value: Any, argument: str, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (for string choices only a str is, and a
    bool only where a choice is one); ValueError
    otherwise (an :class:`ArgumentTypeError` for a non-str among string choices), listing the
    choices in the order given, e.g. "mode: expected one of 'a', 'b', got 'c'"."""
    options = tuple(choices)
    wrong_type = (all(isinstance(c, str) for c in options) and not isinstance(value, str)) or (
        isinstance(value, bool) and not any(isinstance(c, bool) for c in options)
    )
    try:
        ok = not wrong_type and value in options
    except TypeError:  # e.g. a tensor compared with strings
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in options)
        error = ArgumentTypeError if wrong_type else ValueError
        raise error(f"{argument}: expected one of {listed}, got {value!r}")
    return value
