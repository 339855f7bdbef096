"""An opt-in compiled path for user-defined cells: ``torch.compile`` of the time loop in chunks.

The engine's hand-written kernels cover the built-in cells. A user's own cell runs on the
reference loop; wrapping it in :class:`CompiledCell` compiles ``chunk`` consecutive steps as one
graph (TorchInductor fuses each step's elementwise maths into generated C++ and the Python loop
pays its per-call overhead once per chunk instead of once per step), and a kernel registered for
CompiledCell runs the sequence chunk by chunk. The compile time grows with ``chunk`` and not
with T (the whole-loop compile took 37 s at T=100 here); ``rnnlab bench --extras`` measures the
first call and the speed-up. ``chunk=1`` compiles the step only: the reference loop then calls
the compiled step T times (cheapest compile, least gain). Gradients flow through AOTAutograd, so
training works; lengths are handled inside the compiled chunk by the reference loop's masking.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..cells.base import Cell


def _check_chunk(chunk: Any) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(
            f"chunk: expected an integer >= 1 (steps per compiled graph), got {chunk!r}"
        )
    return chunk


class CompiledCell(Cell):
    """Wrap ``cell`` so that its steps run compiled by ``torch.compile``, ``chunk`` at a time.

    Args:
        cell: any rnnlab cell (typically a user-defined one; built-in cells already have
            faster hand-written kernels).
        chunk: steps unrolled into one compiled graph (default 16). Larger chunks compile
            longer (about 2 s per step here, once; Inductor caches the result on disk) and run
            faster; ``chunk=1`` compiles one step. Steps left over when ``chunk`` does not
            divide T run uncompiled.
        **compile_kwargs: passed to ``torch.compile`` (e.g. ``mode="max-autotune-no-cudagraphs"``).

    Example:
        >>> from rnnlab import GeneralCell, Recurrent
        >>> lin = torch.nn.Linear(4 + 3, 4)
        >>> cell = GeneralCell(lambda h, x: torch.tanh(lin(torch.cat([h, x], 1))) * 0.5 + 0.5 * h,
        ...                    input_size=3, state_size=4)
        >>> fast = Recurrent(CompiledCell(cell, chunk=8))   # same maths, compiled 8 steps at a time
    """

    def __init__(self, cell: Cell, chunk: int = 16, **compile_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected an rnnlab Cell, got {type(cell).__name__}")
        self.chunk = _check_chunk(chunk)
        self.cell = cell
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.output_size = cell.output_size
        self.State = cell.State
        self.feedback_field = cell.feedback_field
        inner = cell.step if type(cell).forward is Cell.forward else cell.forward
        compile_kwargs.setdefault("dynamic", False)
        self._compiled = torch.compile(self._plain(inner, cell.State), **compile_kwargs)
        self._steps = self._unrolled(inner, cell.State)
        self._compiled_steps = torch.compile(self._steps, **compile_kwargs)

    @staticmethod
    def _plain(fn: Any, state_type: Any) -> Any:
        # Return the state as a plain tuple: compiled graphs return tuples, the wrapper
        # restores the NamedTuple type.
        def step(x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
            y, new = fn(x, state_type(*state))
            return (y, *new)

        return step

    @staticmethod
    def _unrolled(fn: Any, state_type: Any) -> Any:
        # xs (B, K, I), valid (B, K) bool or None: the reference loop's K steps, unrolled.
        def steps(xs: Tensor, valid: Tensor | None, *state: Tensor) -> tuple[Tensor, ...]:
            s = state_type(*state)
            ys = []
            for k in range(xs.shape[1]):
                y, new = fn(xs[:, k], s)
                if valid is not None:
                    m = valid[:, k : k + 1]
                    new = state_type(*(torch.where(m, n, o) for n, o in zip(new, s)))
                    y = torch.where(m, y, torch.zeros((), dtype=y.dtype, device=y.device))
                s = new
                ys.append(y)
            return (torch.stack(ys, 1), *s)

        return steps

    def state_sizes(self) -> dict[str, int]:
        return self.cell.state_sizes()

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        y, *new = self._compiled(x, *state)
        return y, self.State(*new)

    def config(self) -> dict[str, Any]:
        return self.cell.config()


def compiled_cell_kernel(
    cell: CompiledCell, x: Tensor, state: Any, lengths: Tensor | None
) -> tuple[Tensor, Any] | None:
    """Run ``x`` (B, T, I) through ``cell``'s compiled chunks; chunk=1 declines (the reference
    loop calls the compiled step)."""
    from ..layers._utils import valid_mask

    K, T = cell.chunk, x.shape[1]
    if K == 1:
        return None
    valid = valid_mask(lengths, T)
    s = tuple(state)
    ys = []
    for t0 in range(0, T, K):
        # a short last chunk would be another compile: it runs uncompiled
        run = cell._compiled_steps if t0 + K <= T else cell._steps
        y, *s = run(x[:, t0 : t0 + K], None if valid is None else valid[:, t0 : t0 + K], *s)
        ys.append(y)
    return torch.cat(ys, 1), cell.State(*s)
