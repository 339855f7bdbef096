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
# Kernels for one device type ("cuda"), tried before the type's general kernel; see
# docs/design/0014-gpu-engine.md.
_DEVICE_KERNELS: dict[tuple[type, str], Kernel] = {}
_DISPATCH: dict[type, Kernel] = {}
_TEACHER_FORCED: dict[type, TeacherForcedKernel] = {}
# A masked kernel gets (cell, x, state, lengths, reference (B, T, n), mask (B, T) bool, detach)
# and runs the feedback mask inside its own time loop (rnnlab.engine.feedback), or returns None.
MaskedKernel = Callable[..., "tuple[Tensor, Any] | None"]
_MASKED: dict[type, MaskedKernel] = {}
_enabled = [True]


def register(cell_type: type, kernel: Kernel, *, device: str | None = None) -> None:
    """Use ``kernel`` for cells whose type is exactly ``cell_type``; with ``device`` (a device
    type such as ``"cuda"``) only for inputs on that device, before the general kernel (which
    still runs when the device kernel declines)."""
    if device is not None:
        _DEVICE_KERNELS[(cell_type, device)] = kernel
    elif isinstance(kernel, _ByDevice):
        # re-registering what lookup returned (wrap-and-restore): keep its general kernel
        _KERNELS[cell_type] = kernel.general  # type: ignore[assignment]
    else:
        _KERNELS[cell_type] = kernel
    devices = {d: k for (t, d), k in _DEVICE_KERNELS.items() if t is cell_type}
    if devices:
        _DISPATCH[cell_type] = _ByDevice(_KERNELS.get(cell_type), devices)


def _device_type(x: Tensor) -> str:
    return x.device.type


class _ByDevice:
    """What :func:`lookup` returns for a type with device kernels: the kernel for the input's
    device type first, the general kernel (captured when registered) if it declines or none
    exists. It captures the general kernel, so a caller that wraps ``lookup(cell)`` and
    registers the wrapper (a spy) gets no loop."""

    def __init__(self, general: Kernel | None, devices: dict[str, Kernel]) -> None:
        self.general = general
        self.devices = devices

    def __call__(self, cell: Any, x: Tensor, state: Any, lengths: Any) -> Any:
        kernel = self.devices.get(_device_type(x))
        if kernel is not None:
            res = kernel(cell, x, state, lengths)
            if res is not None:
                return res
        return None if self.general is None else self.general(cell, x, state, lengths)


def lookup(cell: Any) -> Kernel | None:
    """The kernel for ``type(cell)``, or None (also while :func:`disabled` is active)."""
    if not _enabled[-1]:
        return None
    return _DISPATCH.get(type(cell)) or _KERNELS.get(type(cell))


def register_teacher_forced(cell_type: type, kernel: TeacherForcedKernel) -> None:
    """Use ``kernel`` for fully teacher-forced runs of cells whose type is exactly ``cell_type``."""
    _TEACHER_FORCED[cell_type] = kernel


def lookup_teacher_forced(cell: Any) -> TeacherForcedKernel | None:
    if not _enabled[-1]:
        return None
    return _TEACHER_FORCED.get(type(cell))


def register_masked(cell_type: type, kernel: MaskedKernel) -> None:
    """Use ``kernel`` for runs under a feedback schedule (state feedback) of cells whose type is
    exactly ``cell_type``."""
    _MASKED[cell_type] = kernel


def lookup_masked(cell: Any) -> MaskedKernel | None:
    if not _enabled[-1]:
        return None
    return _MASKED.get(type(cell))


def active() -> bool:
    """False inside :func:`disabled`."""
    return _enabled[-1]


def clear() -> None:
    _KERNELS.clear()
    _TEACHER_FORCED.clear()
    _MASKED.clear()
    _DEVICE_KERNELS.clear()
    _DISPATCH.clear()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the reference loops only, e.g. to compare a fast path against them."""
    _enabled.append(False)
    try:
        yield
    finally:
        _enabled.pop()
