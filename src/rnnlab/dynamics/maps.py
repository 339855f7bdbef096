r"""One API for every discrete dynamic system of the lecture: :class:`Map`.

.. math:: h(t+1) = f(h(t), x(t))

A :class:`Map` acts on *flat* state vectors ``h`` (B, N): a cell's NamedTuple state (LSTM's
``(h, c)``, FGR's ``(h, c, gates)``, a stack's tuple of states) is concatenated field by field in
the cell's ``state_sizes()`` order, and :meth:`Map.unflatten` turns a vector back into the
cell's state. The same object wraps

* a Python function on tensors (:meth:`Map.from_function`),
* a linear system h' = A h + B x + b (:meth:`Map.linear`, with closed-form fixed points),
* an rnnlab cell or a stack of cells (:meth:`Map.from_cell`, :meth:`Map.from_cells`),
* a ``torch.nn`` RNN/LSTM/GRU (all layers) or RNNCell/LSTMCell/GRUCell (:meth:`Map.from_torch`),

and is *autonomous* when it has no input (I = 0) or its input is fixed (:meth:`Map.with_input`),
*input-driven* otherwise. A missing input of an input-driven map means "no input": zeros.

Shapes: B batch (seeds), T time, N flat state size, I input size.

Example:
    >>> f = Map.from_function(lambda h: 0.8 * h + 1, state_size=1)   # the lecture's system
    >>> simulate(f, torch.zeros(1, 1), steps=60)[0, -1].item()       # converges to h* = 5
    4.999...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..cells.base import Cell
from ._map_base import FunctionMap, IteratedMap, LinearMap, Map, simulate_map
from ._module_maps import CellMap, StackedCellsMap, TorchRNNMap

# Functions module -> Map | None, tried in order by as_map before the torch.nn and callable
# cases. rnnlab.dynamics.modules registers the rnnlab layers and drop-ins here (a registry, so
# this file needs no import of the layers and no import circle).
_ADAPTERS: list[Callable[..., Map | None]] = []


def register_adapter(fn: Callable[..., Map | None]) -> Callable[..., Map | None]:
    """Let :func:`as_map` turn more module types into maps: ``fn(obj, direction=...)``
    returns a Map, or None for objects it does not know."""
    if fn not in _ADAPTERS:
        _ADAPTERS.append(fn)
    return fn


def as_map(
    f: Any,
    *,
    input: Any = None,
    state_size: int | None = None,
    input_size: int = 0,
    direction: str | None = None,
    loop: str | None = None,
) -> Map:
    """Coerce ``f`` to a :class:`Map`; with ``input`` the result is autonomous.

    ``loop`` ("open" or "closed") chooses, for a model that feeds its output back as its next
    input (a training ``SequenceModel`` with feedback "input", or ``Recurrent(...,
    input_feedback=...)``), between the closed loop h -> f(h, φ(g(h))) and the open loop at a
    given input. None: closed for real-valued SequenceModels; a Recurrent with input feedback
    must say which (its feedback may be an argmax, which is no differentiable map).

    ``f`` may be a Map, an rnnlab Cell (through its own step), a list of Cells (a stack), an
    rnnlab module (the drop-ins of :mod:`rnnlab.nn` with every option, ``Recurrent``,
    ``Stacked``: through their own cells), a torch.nn RNN/LSTM/GRU or RNNCell/LSTMCell/GRUCell
    (torch's equations), or a callable on tensors (then ``state_size`` is required).
    ``direction="forward"`` takes the forward half of a one-layer bidirectional module (a
    bidirectional module is otherwise rejected: it is not a system forward in time).
    """
    m: Map | None = None
    if isinstance(f, Map):
        m = f
    elif isinstance(f, Cell):
        m = CellMap(f)
    elif isinstance(f, (list, tuple, nn.ModuleList)) and f and all(isinstance(c, Cell) for c in f):
        m = StackedCellsMap(list(f))  # type: ignore[arg-type]
    elif isinstance(f, (nn.RNNBase, nn.RNNCellBase)):
        m = TorchRNNMap(f, direction=direction)
    else:
        for adapter in _ADAPTERS:
            m = adapter(f, direction=direction, loop=loop)
            if m is not None:
                break
    if m is not None:
        pass
    elif isinstance(f, nn.Module):
        raise TypeError(
            "f: expected a Map, an rnnlab Cell, a list of Cells, an rnnlab layer or drop-in "
            f"(rnnlab.nn, Recurrent, Stacked) or a torch.nn RNN/LSTM/GRU, got {type(f).__name__}"
            "; to analyse its step as a plain function, wrap it with "
            "Map.from_function(fn, state_size=N)"
        )
    elif callable(f):
        if state_size is None:
            raise ValueError("state_size: required to wrap a plain function, got None")
        m = FunctionMap(f, state_size, input_size)
    else:
        raise TypeError(
            "f: expected a Map, an rnnlab Cell, a list of Cells, a torch.nn RNN/LSTM/GRU or a "
            f"callable, got {type(f).__name__}"
        )
    assert m is not None
    if input is not None:
        m = m.with_input(input)
    return m


def autonomous(m: Map, input: Any = None) -> Map:
    """``m`` with its input fixed: to ``input`` if given, else kept, else absent (zeros)."""
    if input is not None:
        return m.with_input(input)
    if m.autonomous:
        return m
    return m.with_input(torch.zeros(m.input_size, dtype=m.dtype or torch.get_default_dtype()))


def simulate(
    f: Any,
    h0: Any,
    steps: int | None = None,
    *,
    inputs: Any = None,
    input: Any = None,
    grad: bool = False,
) -> Tensor:
    """Trajectories of a map from a batch of initial states.

    Args:
        f: anything :func:`as_map` accepts.
        h0: initial states (B, N) or (N,) (flat; use ``Map.flatten`` for cell states).
        steps: T, for an autonomous map (or an input-driven one with its input absent).
        inputs: for input-driven maps, x(0..T-1): (T, I) shared by the batch or (B, T, I).
        input: a constant input (I,) for all steps (makes the map autonomous).
        grad: keep the autograd graph (off by default).

    Returns:
        (B, T+1, N): h(0) = h0, ..., h(T). Diverging trajectories are returned as they are
        (inf/NaN included): explosion is a result, not an error.
    """
    return simulate_map(as_map(f, input=input), h0, steps, inputs=inputs, grad=grad)


__all__ = [
    "CellMap",
    "FunctionMap",
    "IteratedMap",
    "LinearMap",
    "Map",
    "StackedCellsMap",
    "TorchRNNMap",
    "as_map",
    "autonomous",
    "register_adapter",
    "simulate",
]
