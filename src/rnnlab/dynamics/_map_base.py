"""The :class:`Map` base class and the maps that need no module: functions, linear systems,
iterates; and the Jacobian machinery they share (split from maps.py by job, issue 16).

The module maps (cells, stacks, torch.nn) live in _module_maps.py, which subclasses Map and
registers its constructors in :data:`_CONSTRUCTORS`, so that ``Map.from_cell`` and friends
need no import of it here (no import circle); maps.py, the public module, imports both.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._checks import check_int
from ..cells.base import Cell
from ._checks import as_tensor, check_finite, check_states
from ._jacobians import _batched_jacobian

if TYPE_CHECKING:
    from ._module_maps import CellMap, StackedCellsMap, TorchRNNMap

# "cell", "cells", "torch" -> the module map's class; filled by _module_maps on import.
_CONSTRUCTORS: dict[str, Callable[..., Map]] = {}


class Map:
    """A discrete dynamic system ``h(t+1) = f(h(t), x(t))`` on flat states (B, N).

    Subclasses implement ``_step(h, x)`` (unchecked; ``x`` is (B, I) or None when I = 0) and
    ``_convert(dtype, device)``. Rows of the batch must be independent (each row is one
    system), which every RNN step satisfies.

    Attributes:
        state_size: N.
        input_size: I (0: no input at all).
        fields: the state layout, field name -> size, in flattening order.
        input: the fixed input (I,) of an autonomous view, or None.
    """

    state_size: int
    input_size: int
    fields: dict[str, int]
    input: Tensor | None
    name: str

    def __init__(
        self,
        state_size: int,
        input_size: int = 0,
        *,
        fields: dict[str, int] | None = None,
        name: str = "map",
    ) -> None:
        self.state_size = check_int(state_size, "state_size", low=1)
        self.input_size = check_int(input_size, "input_size", low=0)
        self.fields = dict(fields) if fields is not None else {"h": self.state_size}
        self.input = None
        self.name = name

    # --- to implement -------------------------------------------------------------------------
    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _convert(self, dtype: torch.dtype | None, device: torch.device | None) -> Map:
        return copy.copy(self)

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype the map computes in (None: whatever dtype it is given)."""
        return None

    @property
    def device(self) -> torch.device | None:
        return None

    # --- construction -------------------------------------------------------------------------
    @staticmethod
    def from_function(
        fn: Callable[..., Tensor], state_size: int, input_size: int = 0, *, name: str = "function"
    ) -> FunctionMap:
        """Wrap ``fn(h) -> h_new`` (I = 0) or ``fn(h, x) -> h_new`` on (B, N) tensors."""
        return FunctionMap(fn, state_size, input_size, name=name)

    @staticmethod
    def linear(A: Any, b: Any = None, B: Any = None) -> LinearMap:
        """The linear system ``h' = A h + B x + b`` (closed-form fixed points and eigenvalues)."""
        return LinearMap(A, b, B)

    @staticmethod
    def from_cell(cell: Cell) -> CellMap:
        """An rnnlab cell's state update (the output is not part of the map)."""
        return _CONSTRUCTORS["cell"](cell)  # type: ignore[return-value]

    @staticmethod
    def from_cells(cells: Sequence[Cell]) -> StackedCellsMap:
        """A stack of cells: cell k reads cell k-1's output; the state is all of theirs."""
        return _CONSTRUCTORS["cells"](cells)  # type: ignore[return-value]

    @staticmethod
    def from_torch(module: nn.Module) -> TorchRNNMap:
        """A torch.nn RNN/LSTM/GRU (every layer) or RNNCell/LSTMCell/GRUCell, from its weights."""
        return _CONSTRUCTORS["torch"](module)  # type: ignore[return-value]

    # --- provided -----------------------------------------------------------------------------
    @property
    def autonomous(self) -> bool:
        """True without input or with a fixed input (h(t+1) = f(h(t)))."""
        return self.input_size == 0 or self.input is not None

    def with_input(self, x: Any) -> Map:
        """An autonomous view of this map with the constant input ``x`` (I,)."""
        if self.input_size == 0:
            raise ValueError(f"x: this map has no input (input_size=0), got {_shape_of(x)}")
        t = as_tensor(x, "x")
        if t.dim() == 2 and t.shape[0] == 1:
            t = t[0]
        if tuple(t.shape) != (self.input_size,):
            raise ValueError(f"x: expected shape ({self.input_size},), got {tuple(t.shape)}")
        check_finite(t, "x")
        out = copy.copy(self)
        out.input = t.detach()
        return out

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Map:
        """A copy computing in ``dtype`` on ``device`` (parameters copied and detached)."""
        dev = torch.device(device) if device is not None else None
        out = self._convert(dtype, dev)
        if self.input is not None:
            out.input = self.input.to(
                dtype=dtype or self.input.dtype, device=dev or self.input.device
            )
        return out

    def step(self, h: Tensor, x: Tensor | None = None) -> Tensor:
        """One unchecked step on flat states ``h`` (B, N); ``x`` (B, I) or None."""
        return self._step(h, self._resolve_input(h, x))

    def __call__(self, h: Any, x: Any = None) -> Tensor:
        """One checked step: ``h`` (B, N) or (N,), ``x`` (B, I) or (I,) or None."""
        h_t = check_states(h, self.state_size, "h")
        single = h_t.dim() == 1
        if single:
            h_t = h_t[None]
        if h_t.dim() != 2:
            raise ValueError(
                f"h: expected (B, {self.state_size}) or ({self.state_size},), "
                f"got {tuple(h_t.shape)}"
            )
        x_t = self.check_input(x, h_t.shape[0])
        if self.dtype is not None:
            h_t = h_t.to(self.dtype)
            x_t = None if x_t is None else x_t.to(self.dtype)
        out = self.step(h_t, x_t)
        check_output(out, h_t, self.name)
        return out[0] if single else out

    def check_input(self, x: Any, batch_size: int, argument: str = "x") -> Tensor | None:
        """Validate one step's input: (B, I) or (I,) (broadcast), None for the default."""
        if x is None:
            return None
        if self.input_size == 0:
            raise ValueError(
                f"{argument}: this map has no input (input_size=0), got {_shape_of(x)}"
            )
        t = check_states(x, self.input_size, argument)
        if t.dim() == 1:
            t = t.expand(batch_size, self.input_size)
        if t.dim() != 2 or t.shape[0] != batch_size:
            raise ValueError(
                f"{argument}: expected ({batch_size}, {self.input_size}) or ({self.input_size},), "
                f"got {tuple(t.shape)}"
            )
        return t

    def _resolve_input(self, h: Tensor, x: Tensor | None) -> Tensor | None:
        if self.input_size == 0:
            return None
        if x is not None:
            return x
        B = h.shape[0]
        if self.input is not None:
            return self.input.to(dtype=h.dtype, device=h.device).expand(B, self.input_size)
        return h.new_zeros(B, self.input_size)

    def flatten(self, state: Any) -> Tensor:
        """A state in the wrapped system's own format -> flat (B, N); flat tensors pass."""
        if isinstance(state, Tensor):
            return state
        raise TypeError(f"state: expected a tensor (B, {self.state_size}), got {_shape_of(state)}")

    def unflatten(self, h: Tensor) -> Any:
        """Flat (B, N) -> the wrapped system's own state format (a tensor for plain maps)."""
        return h

    def iterate(self, k: int) -> Map:
        """The k-fold composition F^k (its fixed points are the period-k points of F)."""
        check_int(k, "k", low=1)
        return self if k == 1 else IteratedMap(self, k)

    def simulate(self, h0: Any, steps: int | None = None, *, inputs: Any = None) -> Tensor:
        """Trajectories (B, T+1, N) from h0; see :func:`simulate`."""
        return simulate_map(self, h0, steps, inputs=inputs)

    def jacobian(self, h: Tensor, x: Tensor | None = None) -> Tensor:
        """∂f/∂h at each row of ``h`` (B, N): (B, N, N), unchecked, by forward-mode autodiff."""
        return _batched_jacobian(self._step, h, self._resolve_input(h, x), argnum=0)

    def input_jacobian(self, h: Tensor, x: Tensor | None = None) -> Tensor:
        """∂f/∂x at each row: (B, N, I), unchecked."""
        if self.input_size == 0:
            raise ValueError("f: this map has no input (input_size=0), so no input Jacobian")
        return _batched_jacobian(self._step, h, self._resolve_input(h, x), argnum=1)

    def __repr__(self) -> str:
        fixed = "" if self.input is None else f", input={self.input.tolist()}"
        return (
            f"{type(self).__name__}({self.name}, state_size={self.state_size}, "
            f"input_size={self.input_size}{fixed})"
        )


class FunctionMap(Map):
    """``fn(h)`` (no input) or ``fn(h, x)`` on (B, N) / (B, I) tensors, any dtype.

    Example:
        >>> logistic = Map.from_function(lambda h: 3.2 * h * (1 - h), state_size=1)
        >>> logistic(torch.tensor([0.5], dtype=torch.float64)).item()
        0.8
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        state_size: int,
        input_size: int = 0,
        *,
        name: str = "function",
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable h -> h_new, got {type(fn).__name__}")
        super().__init__(state_size, input_size, name=name)
        self.fn = fn

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        return self.fn(h) if self.input_size == 0 else self.fn(h, x)


class LinearMap(Map):
    r"""h' = A h + B x + b: ``A`` (N, N), ``b`` (N,), ``B`` (N, I).

    The lecture's h(t+1) = 0.8 h(t) + 1 is ``Map.linear([[0.8]], [1.0])``.
    """

    def __init__(self, A: Any, b: Any = None, B: Any = None) -> None:
        # plain numbers are taken in float64 (0.8 is not a float32 number)
        A_t = as_tensor(A, "A", dtype=None if isinstance(A, Tensor) else torch.float64)
        if A_t.dim() == 0:
            A_t = A_t.reshape(1, 1)
        if A_t.dim() != 2 or A_t.shape[0] != A_t.shape[1]:
            raise ValueError(f"A: expected a square matrix (N, N), got {tuple(A_t.shape)}")
        check_finite(A_t, "A")
        N = A_t.shape[0]
        b_t = (
            torch.zeros(N, dtype=A_t.dtype)
            if b is None
            else as_tensor(b, "b", dtype=A_t.dtype if not isinstance(b, Tensor) else None).to(A_t)
        )
        b_t = b_t.reshape(-1) if b_t.dim() == 0 else b_t
        if tuple(b_t.shape) != (N,):
            raise ValueError(f"b: expected shape ({N},), got {tuple(b_t.shape)}")
        check_finite(b_t, "b")
        I = 0
        B_t = None
        if B is not None:
            B_t = as_tensor(B, "B", dtype=A_t.dtype)
            if B_t.dim() == 1 and N == 1:
                B_t = B_t[None]
            if B_t.dim() != 2 or B_t.shape[0] != N:
                raise ValueError(f"B: expected shape ({N}, I), got {tuple(B_t.shape)}")
            check_finite(B_t, "B")
            I = B_t.shape[1]
        super().__init__(N, I, name="linear")
        self.A, self.b, self.B = A_t, b_t, B_t

    @property
    def dtype(self) -> torch.dtype:
        return self.A.dtype

    @property
    def device(self) -> torch.device:
        return self.A.device

    def offset(self) -> Tensor:
        """b + B x for the fixed (or absent = zero) input: the constant term of h' = A h + c."""
        if self.B is None or self.input is None:
            return self.b
        return self.b + self.B @ self.input.to(self.b)

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        out = h @ self.A.T + self.b
        if self.B is not None and x is not None:
            out = out + x @ self.B.T
        return out

    def _convert(self, dtype: torch.dtype | None, device: torch.device | None) -> Map:
        out = copy.copy(self)
        out.A = self.A.to(dtype=dtype or self.A.dtype, device=device or self.A.device)
        out.b = self.b.to(out.A)
        out.B = None if self.B is None else self.B.to(out.A)
        return out


class IteratedMap(Map):
    """F^k: ``k`` steps of ``base`` with the same (fixed or absent) input."""

    def __init__(self, base: Map, k: int) -> None:
        super().__init__(
            base.state_size, base.input_size, fields=base.fields, name=f"{base.name}^{k}"
        )
        self.base, self.k = base, check_int(k, "k", low=1)
        self.input = base.input

    @property
    def dtype(self) -> torch.dtype | None:
        return self.base.dtype

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        for _ in range(self.k):
            h = self.base._step(h, x)
        return h

    def _convert(self, dtype: torch.dtype | None, device: torch.device | None) -> Map:
        out = copy.copy(self)
        out.base = self.base.to(dtype, device)
        return out

    def flatten(self, state: Any) -> Tensor:
        return self.base.flatten(state)

    def unflatten(self, h: Tensor) -> Any:
        return self.base.unflatten(h)


def check_output(out: Any, h: Tensor, name: str) -> None:
    """The map's output must be a tensor of the input's shape."""
    if not isinstance(out, Tensor):
        raise TypeError(f"f ({name}): expected to return a tensor, got {type(out).__name__}")
    if out.shape != h.shape:
        raise ValueError(
            f"f ({name}): expected output of the state's shape {tuple(h.shape)}, "
            f"got {tuple(out.shape)}"
        )


def _shape_of(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, tuple):
        return f"{type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def simulate_map(
    m: Map, h0: Any, steps: int | None = None, *, inputs: Any = None, grad: bool = False
) -> Tensor:
    """:func:`rnnlab.dynamics.simulate` on a Map (the arguments are checked here)."""
    h = check_states(h0, m.state_size, "h0")
    single = h.dim() == 1
    if single:
        h = h[None]
    if h.dim() != 2:
        raise ValueError(
            f"h0: expected (B, {m.state_size}) or ({m.state_size},), got {tuple(h.shape)}"
        )
    if m.dtype is not None:
        h = h.to(m.dtype)
    B = h.shape[0]
    xs: Tensor | None = None
    if inputs is not None:
        xs = check_sequence_inputs(m, inputs, B)
        T = xs.shape[1]
        if steps is not None and steps != T:
            raise ValueError(f"steps: expected None or {T} (the length of inputs), got {steps}")
    else:
        if steps is None:
            raise ValueError("steps: expected an int >= 0 for a map without inputs, got None")
        T = check_int(steps, "steps", low=0)
    if xs is not None:
        xs = xs.to(h.dtype)
    out = [h]
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        for t in range(T):
            h = m.step(h, None if xs is None else xs[:, t])
            if t == 0:
                check_output(h, out[0], m.name)
            out.append(h)
    traj = torch.stack(out, dim=1)  # (B, T+1, N)
    return traj[0] if single else traj


def check_sequence_inputs(m: Map, inputs: Any, batch_size: int, argument: str = "inputs") -> Tensor:
    """Inputs (T, I) or (B, T, I) -> (B, T, I), finite."""
    if m.input_size == 0:
        raise ValueError(
            f"{argument}: this map has no input (input_size=0), got {_shape_of(inputs)}"
        )
    xs = check_states(inputs, m.input_size, argument)
    if xs.dim() == 2:
        xs = xs[None].expand(batch_size, *xs.shape)
    if xs.dim() != 3 or xs.shape[0] != batch_size:
        raise ValueError(
            f"{argument}: expected (T, {m.input_size}) or ({batch_size}, T, {m.input_size}), "
            f"got {tuple(xs.shape)}"
        )
    return xs
