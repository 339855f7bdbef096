"""Validation at the public boundary of :mod:`rnnlab.dynamics` (private).

Every error names the argument, what was expected and what was received.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int as _check_int


def as_tensor(value: Any, argument: str, *, dtype: torch.dtype | None = None) -> Tensor:
    """A floating tensor from a tensor, number or nested sequence."""
    if isinstance(value, Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value, dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{argument}: expected a tensor (or numbers), got {type(value).__name__}"
            ) from None
    if not (t.is_floating_point() or t.is_complex()):
        t = t.to(torch.get_default_dtype())
    if dtype is not None:
        t = t.to(dtype)
    return t


def check_finite(t: Tensor, argument: str) -> Tensor:
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"{argument}: expected finite values, got {bad} non-finite entr"
            f"{'y' if bad == 1 else 'ies'} (NaN or inf)"
        )
    return t


def check_states(value: Any, size: int, argument: str) -> Tensor:
    """States ``(..., N)`` as a floating tensor with finite entries; a 0-d value if N = 1."""
    t = as_tensor(value, argument)
    if t.dim() == 0 and size == 1:
        t = t.reshape(1)
    if t.dim() == 0 or t.shape[-1] != size:
        raise ValueError(f"{argument}: expected shape (..., {size}), got {tuple(t.shape)}")
    return check_finite(t, argument)


def check_tolerance(
    value: Any,
    argument: str,
    *,
    low: float = 0.0,
    high: float = math.inf,
    inclusive_low: bool = True,
) -> float:
    """A real number in [low, high) (or (low, high) without ``inclusive_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument}: expected a real number, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v) and (v >= low if inclusive_low else v > low) and v < high
    if not ok:
        lo = "[" if inclusive_low else "("
        hi = "inf)" if math.isinf(high) else f"{high})"
        raise ValueError(f"{argument}: expected a value in {lo}{low}, {hi}, got {value!r}")
    return v


def check_fraction(value: Any, argument: str) -> float:
    """A real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument}: expected a real number in [0, 1], got {type(value).__name__}")
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{argument}: expected a value in [0, 1], got {value!r}")
    return v


def check_int(value: Any, argument: str, *, minimum: int = 1) -> int:
    return _check_int(value, argument, low=minimum)


def check_choice(value: Any, argument: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{argument}: expected one of {list(choices)}, got {value!r}")
    return str(value)
