"""The one place that chooses how a cell runs over time: engine kernel, parallel
teacher-forced path, or the reference loop.

:func:`rnnlab.layers.unroll` (in :mod:`.loop`) is the reference and dispatches nothing;
every layer that runs a cell over time (:class:`Recurrent`, and through it :class:`Stacked` and
:class:`Bidirectional`; the torch.nn drop-ins in :mod:`rnnlab.nn`) calls :func:`run` instead.

The order of choice, first match wins:

1. fast paths switched off (``RNNLAB_ENGINE=0`` or ``with rnnlab.engine.disabled():``): the
   reference loop. This switches off *every* fast path, torch's fused LSTM included;
2. a plain run (no feedback schedule, no trajectory) with a kernel registered for exactly
   ``type(cell)``: the kernel (it may decline, e.g. for a callable activation or a device
   without kernels);
3. full teacher forcing with a parallel path for ``type(cell)``: all steps at once;
4. the reference loop.

The decision uses only Python-level facts (types, flags, dtypes, devices), never tensor values,
so under torch.compile it is made once at trace time and costs nothing per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import engine
from ..cells.base import Cell
from ..engine import build
from ._utils import reverse_padded
from .feedback import FeedbackSchedule, TeacherForcing
from .loop import RecurrentResult, unroll


def fast_paths_enabled() -> bool:
    """False under ``RNNLAB_ENGINE=0`` or inside ``rnnlab.engine.disabled()``."""
    return build.enabled() and engine.registry.active()


def run(
    cell: Cell,
    x: Tensor,
    state: Any,
    lengths: Tensor | None = None,
    *,
    reverse: bool = False,
    feedback: FeedbackSchedule | None = None,
    reference: Tensor | None = None,
    input_feedback: Callable[[Tensor], Tensor] | None = None,
    return_states: bool = False,
    generator: torch.Generator | None = None,
) -> RecurrentResult:
    """Run ``cell`` over the batch-first, validated ``x`` (B, T, I) by the fastest path that
    equals :func:`unroll` (same arguments and result)."""
    if fast_paths_enabled() and not return_states:
        res = None
        if feedback is None:
            kernel = engine.lookup(cell)
            if kernel is not None:
                xr = reverse_padded(x, lengths) if reverse else x
                res = kernel(cell, xr, state, lengths)
        elif isinstance(feedback, TeacherForcing) and reference is not None:
            parallel = engine.lookup_teacher_forced(cell)
            if parallel is not None:
                xr, rr = x, reference
                if reverse:
                    xr, rr = reverse_padded(x, lengths), reverse_padded(reference, lengths)
                res = parallel(cell, xr, state, lengths, rr)
        if res is not None:
            y, final = res
            return RecurrentResult(reverse_padded(y, lengths) if reverse else y, final, None)
    return unroll(
        cell,
        x,
        state,
        lengths,
        reverse=reverse,
        feedback=feedback,
        reference=reference,
        input_feedback=input_feedback,
        return_states=return_states,
        generator=generator,
    )
