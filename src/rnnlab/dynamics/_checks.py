"""Validation at the public boundary of :mod:`rnnlab.dynamics` (private).

Every error names the argument, what was expected and what was received. Tensors and
states are checked here; ints, floats and choices by the shared :mod:`rnnlab._checks`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


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
