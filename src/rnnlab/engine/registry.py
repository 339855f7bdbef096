"""The kernel registry, keyed by exact cell type."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor

# A kernel gets (cell, x (B, T, I) batch-first, state, lengths or None) and returns
# (output (B, T, O), final_state), or None to decline (then the reference loop runs).
Kernel = Callable[[Any, Tensor, Any, "Tensor | None"], "tuple[Tensor, Any] | None"]

_KERNELS: dict[type, Kernel] = {}
_enabled = [True]


def register(cell_type: type, kernel: Kernel) -> None:
    """Use ``kernel`` for cells whose type is exactly ``cell_type``."""
    _KERNELS[cell_type] = kernel


def lookup(cell: Any) -> Kernel | None:
    """The kernel for ``type(cell)``, or None (also while :func:`disabled` is active)."""
    if not _enabled[-1]:
        return None
    return _KERNELS.get(type(cell))


def clear() -> None:
    _KERNELS.clear()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the reference loops only, e.g. to compare a fast path against them."""
    _enabled.append(False)
    try:
        yield
    finally:
        _enabled.pop()
