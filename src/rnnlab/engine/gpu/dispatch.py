"""Which path a run on a CUDA tensor takes, and the kernel registered for it.

Order of preference for an exact cell type (never isinstance, as for every engine kernel):

1. ``"cudnn"``: the cell's maths is one torch.nn RNN/GRU/LSTM layer's (:func:`cudnn.torch_maths`),
   so torch's own fused function runs it, with or without ``lengths``;
2. ``"triton"``: a fused op exists for the cell (:func:`fused.supports`) and triton is
   installed, padded or not;
3. ``None``: the kernel declines and the reference loop runs (what CUDA ran before); also
   under ``RNNLAB_ENGINE=0``.

:func:`plan` is pure (no device needed), so the choice is tested on CPU; the registry calls
:func:`cuda_kernel` only for CUDA tensors (``registry.register(..., device="cuda")``).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from torch import Tensor

from .. import build
from . import cudnn, fused

CUDNN = "cudnn"
TRITON = "triton"


@functools.cache
def triton_available() -> bool:
    """Whether the optional ``rnnlab[gpu]`` extra (triton) is installed.

    Example:
        >>> isinstance(triton_available(), bool)
        True
    """
    return importlib.util.find_spec("triton") is not None


def plan(cell: Any, lengths: Tensor | None = None) -> str | None:
    """The path a CUDA run of ``cell`` takes: ``"cudnn"``, ``"triton"`` or None (the loop).

    Example:
        >>> from rnnlab.cells import GRUCell
        >>> plan(GRUCell(3, 4)), plan(GRUCell(3, 4, reset="before")) in ("triton", None)
        ('cudnn', True)
    """
    if not build.enabled():  # RNNLAB_ENGINE=0: every fast path off, as on CPU
        return None
    if cudnn.torch_maths(cell):
        return CUDNN
    if fused.supports(cell) and triton_available():
        return TRITON
    return None


def cuda_kernel(cell: Any, x: Tensor, state: Any, lengths: Tensor | None) -> Any:
    """The engine kernel for CUDA tensors (the registry's contract: ``(cell, x (B, T, I),
    state, lengths)`` -> ``(output (B, T, O), final_state)``, or None to decline). The registry
    calls it for CUDA tensors only; called directly on CPU tensors, the cuDNN path runs torch's
    CPU kernels (the tests use that).

    Example:
        >>> import torch
        >>> from rnnlab.cells import GRUCell
        >>> cell = GRUCell(3, 4)  # torch.nn.GRU's maths: torch.gru
        >>> y, state = cuda_kernel(cell, torch.randn(2, 5, 3), cell.initial_state(2), None)
        >>> y.shape, state.h.shape
        (torch.Size([2, 5, 4]), torch.Size([2, 4]))
    """
    path = plan(cell, lengths)
    if path == CUDNN:
        return cudnn.run(cell, x, state, lengths)
    if path == TRITON:
        return fused.RUNNERS[type(cell)](cell, x, state, lengths)
    return None
