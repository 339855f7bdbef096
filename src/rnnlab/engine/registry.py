"""The kernel registry, keyed by exact cell type."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor

# A kernel gets (cell, x (B, T, I) batch-first, state, lengths or None) and returns
# (output (B, T, O), final_state), or None to decline (then the reference loop runs).
Kernel = Callable[[Any, Tensor, Any, "Tensor | None"], "tuple[Tensor, Any] | None"]

# A teacher-forced kernel gets (cell, x, state, lengths, reference (B, T, n)) and runs all
# steps at once (every step is decoupled when r(t-1) replaces y(t-1)), or returns None.
TeacherForcedKernel = Callable[
    [Any, Tensor, Any, "Tensor | None", Tensor], "tuple[Tensor, Any] | None"
]

_KERNELS: dict[type, Kernel] = {}
_TEACHER_FORCED: dict[type, TeacherForcedKernel] = {}
_enabled = [True]


def register(cell_type: type, kernel: Kernel) -> None:
    """Use ``kernel`` for cells whose type is exactly ``cell_type``."""
    _KERNELS[cell_type] = kernel


def lookup(cell: Any) -> Kernel | None:
    """The kernel for ``type(cell)``, or None (also while :func:`disabled` is active)."""
    if not _enabled[-1]:
        return None
    return _KERNELS.get(type(cell))


def register_teacher_forced(cell_type: type, kernel: TeacherForcedKernel) -> None:
    """Use ``kernel`` for fully teacher-forced runs of cells whose type is exactly ``cell_type``."""
    _TEACHER_FORCED[cell_type] = kernel


def lookup_teacher_forced(cell: Any) -> TeacherForcedKernel | None:
    if not _enabled[-1]:
        return None
    return _TEACHER_FORCED.get(type(cell))


def clear() -> None:
    _KERNELS.clear()
    _TEACHER_FORCED.clear()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the reference loops only, e.g. to compare a fast path against them."""
    _enabled.append(False)
    try:
        yield
    finally:
        _enabled.pop()
