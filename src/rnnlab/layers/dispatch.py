"""The one place that chooses how a cell runs over time: engine kernel, masked kernel,
parallel teacher-forced path, or the reference loop.

:func:`rnnlab.layers.unroll` (in :mod:`.loop`) is the reference and dispatches nothing;
every layer that runs a cell over time (:class:`Recurrent`, and through it :class:`Stacked` and
:class:`Bidirectional`; the torch.nn drop-ins in :mod:`rnnlab.nn`) calls :func:`run` instead.

The order of choice, first match wins:

1. fast paths switched off (``RNNLAB_ENGINE=0`` or ``with rnnlab.engine.disabled():``): the
   reference loop. This switches off *every* fast path, torch's fused LSTM included;
2. ``return_states=True``: for cells whose one state field is their output (GRU, Jordan,
   Elman without an output layer) the trajectory is read off the fast path's outputs; for the
   others the reference loop (counted, see :data:`FALLBACKS`);
3. a plain run (no feedback schedule) with a kernel registered for exactly ``type(cell)``: the
   kernel (it may decline, e.g. for a callable activation or a device without kernels);
4. state feedback (a schedule and a reference, no ``input_feedback``):

   a. :class:`TeacherForcing`, or a :class:`GivenMask` that feeds the reference at every step
      (``all_reference``, checked outside compiled code only), with a parallel path for
      ``type(cell)``: all steps at once;
   b. a masked kernel for ``type(cell)`` (:func:`rnnlab.engine.lookup_masked`): the schedule's
      mask, drawn here exactly as :func:`unroll` draws it, runs inside the kernel's time loop
      (one call per chunk, every schedule, ``detach`` honoured by its backward). Registered
      for Jordan, Elman without an output layer, GRU, LSTM (only h fed back) and the dropout
      wrapper without an active recurrent mask; zoneout and state dropout are counted
      fallbacks (docs/design/0003);

5. the reference loop. Input feedback through a user function (``input_feedback=fn``) always
   lands here: the engine cannot call Python per step. :data:`FALLBACKS` counts these runs.

The decision uses only Python-level facts (types, flags, dtypes, devices), never tensor values
(4a's ``all_reference`` is skipped while compiling), so under torch.compile it is made once at
trace time and costs nothing per call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import engine
from ..cells.base import Cell
from ..engine import build
from ._utils import reverse_padded, valid_mask
from .feedback import FeedbackSchedule, GivenMask, TeacherForcing
from .loop import RecurrentResult, unroll

#: Runs that the fast paths could not take although they were on, by reason
#: (``"return_states"``, ``"input_feedback"``, ``"no masked kernel"``, ...): the documented,
#: counted fallbacks. Read it, or ``clear()`` it, in a test or a benchmark.
FALLBACKS: Counter[str] = Counter()


def _teacher_forced(feedback: FeedbackSchedule) -> bool:
    if isinstance(feedback, TeacherForcing):
        return True
    if isinstance(feedback, GivenMask) and not torch.compiler.is_compiling():
        return feedback.all_reference()
    return False


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
    if fast_paths_enabled():
        res, feedback = _fast(
            cell, x, state, lengths, reverse, feedback, reference, input_feedback,
            return_states, generator,
        )  # fmt: skip
        if res is not None:
            return res
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


def _fast(
    cell: Cell,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    reverse: bool,
    feedback: FeedbackSchedule | None,
    reference: Tensor | None,
    input_feedback: Callable[[Tensor], Tensor] | None,
    return_states: bool,
    generator: torch.Generator | None,
) -> tuple[RecurrentResult | None, FeedbackSchedule | None]:
    """The fast result, or None; and the schedule the reference loop must use then (a drawn
    random mask is handed on as a :class:`GivenMask`, so the fallback sees the same draw)."""
    if return_states and not _output_is_state(cell):
        FALLBACKS["return_states"] += 1
        return None, feedback
    res = None
    if feedback is None:
        kernel = engine.lookup(cell)
        if kernel is not None:
            xr = reverse_padded(x, lengths) if reverse else x
            res = kernel(cell, xr, state, lengths)
    elif input_feedback is not None:
        FALLBACKS["input_feedback"] += 1
        return None, feedback
    elif reference is not None:
        xr, rr = x, reference
        if reverse:
            xr, rr = reverse_padded(x, lengths), reverse_padded(reference, lengths)
        parallel = engine.lookup_teacher_forced(cell)
        if parallel is not None and _teacher_forced(feedback):
            res = parallel(cell, xr, state, lengths, rr)
        if res is None:
            masked = engine.lookup_masked(cell)
            if masked is None:
                FALLBACKS[f"no masked kernel for {type(cell).__name__}"] += 1
                return None, feedback
            # drawn as unroll draws it: same generator, same numbers
            m = feedback.mask(x.shape[0], x.shape[1], device=x.device, generator=generator)
            res = masked(cell, xr, state, lengths, rr, m, feedback.detach)
            if res is None:
                FALLBACKS[f"masked kernel declined for {type(cell).__name__}"] += 1
                return None, GivenMask(m, feedback.detach)
    if res is None:
        return None, feedback
    y, final = res
    y = reverse_padded(y, lengths) if reverse else y
    states = _trajectory(y, final, lengths) if return_states else None
    return RecurrentResult(y, final, states), feedback


def _output_is_state(cell: Cell) -> bool:
    """Cells whose one state field *is* their output: the trajectory is read off the outputs."""
    from ..cells.gru import GRUCell
    from ..cells.simple import ElmanCell, JordanCell

    t = type(cell)
    return t is GRUCell or t is JordanCell or (t is ElmanCell and cell.weight_ho is None)


def _trajectory(y: Tensor, final: Any, lengths: Tensor | None) -> Any:
    """The state after every step, (B, T, n): the output while a sequence runs, its final
    state past its end (as :func:`unroll` holds it), in the outputs' time order."""
    (f,) = final
    valid = valid_mask(lengths, y.shape[1])
    s = y if valid is None else torch.where(valid.unsqueeze(-1), y, f.unsqueeze(1))
    return type(final)(s)
