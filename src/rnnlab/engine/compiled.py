"""An opt-in compiled path for user-defined cells: ``torch.compile`` of one step.

The engine's hand-written kernels cover the built-in cells. A user's own cell runs on the
reference loop; wrapping it in :class:`CompiledCell` compiles its ``step`` once (TorchInductor
fuses the step's elementwise maths into generated C++), and the reference loop then calls the
compiled step T times. Compiling the step rather than the unrolled loop keeps the compile time
independent of T (the whole-loop compile took 37 s at T=100 here). The first call compiles
(seconds; measured by ``rnnlab bench --user-cell``); later calls reuse the compiled code.
Gradients flow through AOTAutograd as usual, so training works.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..cells.base import Cell


class CompiledCell(Cell):
    """Wrap ``cell`` so that its step runs compiled by ``torch.compile``.

    Args:
        cell: any rnnlab cell (typically a user-defined one; built-in cells already have
            faster hand-written kernels).
        **compile_kwargs: passed to ``torch.compile`` (e.g. ``mode="max-autotune-no-cudagraphs"``).

    Example:
        >>> from rnnlab import GeneralCell, Recurrent
        >>> lin = torch.nn.Linear(4 + 3, 4)
        >>> cell = GeneralCell(lambda h, x: torch.tanh(lin(torch.cat([h, x], 1))) * 0.5 + 0.5 * h,
        ...                    input_size=3, state_size=4)
        >>> fast = Recurrent(CompiledCell(cell))   # same maths, compiled step
    """

    def __init__(self, cell: Cell, **compile_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected an rnnlab Cell, got {type(cell).__name__}")
        self.cell = cell
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.output_size = cell.output_size
        self.State = cell.State
        self.feedback_field = cell.feedback_field
        inner = cell.step if type(cell).forward is Cell.forward else cell.forward
        compile_kwargs.setdefault("dynamic", False)
        self._compiled = torch.compile(self._plain(inner, cell.State), **compile_kwargs)

    @staticmethod
    def _plain(fn: Any, state_type: Any) -> Any:
        # Return the state as a plain tuple: compiled graphs return tuples, the wrapper
        # restores the NamedTuple type.
        def step(x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
            y, new = fn(x, state_type(*state))
            return (y, *new)

        return step

    def state_sizes(self) -> dict[str, int]:
        return self.cell.state_sizes()

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        y, *new = self._compiled(x, *state)
        return y, self.State(*new)

    def config(self) -> dict[str, Any]:
        return self.cell.config()
