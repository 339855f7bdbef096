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

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jacfwd, jacrev, vmap

from ..cells.base import Cell
from ._checks import as_tensor, check_finite, check_int, check_states

StepFn = Callable[[Tensor, "Tensor | None"], Tensor]

# Largest number of Jacobian entries built in one vectorised call (memory bound, ~32 MB f64).
_JAC_CHUNK_ENTRIES = 1 << 22
# Up to this many rows·outputs, Jacobians use one reverse pass on a replicated batch.
_SMALL_ROWS = 512


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
        self.state_size = check_int(state_size, "state_size")
        self.input_size = check_int(input_size, "input_size", minimum=0)
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
        return CellMap(cell)

    @staticmethod
    def from_cells(cells: Sequence[Cell]) -> StackedCellsMap:
        """A stack of cells: cell k reads cell k-1's output; the state is all of theirs."""
        return StackedCellsMap(cells)

    @staticmethod
    def from_torch(module: nn.Module) -> TorchRNNMap:
        """A torch.nn RNN/LSTM/GRU (every layer) or RNNCell/LSTMCell/GRUCell, from its weights."""
        return TorchRNNMap(module)

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
        check_int(k, "k")
        return self if k == 1 else IteratedMap(self, k)

    def simulate(self, h0: Any, steps: int | None = None, *, inputs: Any = None) -> Tensor:
        """Trajectories (B, T+1, N) from h0; see :func:`simulate`."""
        return simulate(self, h0, steps, inputs=inputs)

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


class _ModuleMap(Map):
    """A map whose step calls an ``nn.Module`` (parameters live, not copied)."""

    module: nn.Module

    @property
    def dtype(self) -> torch.dtype | None:
        for p in self.module.parameters():
            return p.dtype
        return None

    @property
    def device(self) -> torch.device | None:
        for p in self.module.parameters():
            return p.device
        return None

    def _convert(self, dtype: torch.dtype | None, device: torch.device | None) -> Map:
        out = copy.copy(self)
        module = copy.deepcopy(self.module)
        module.to(device=device, dtype=dtype)
        for p in module.parameters():
            p.requires_grad_(False)
        out.module = module
        return out


# --- nested NamedTuple states <-> flat vectors ------------------------------------------------
# A spec is ("leaf", size) or (tuple type, [child specs]); it is built from initial_state(1).
_Spec = tuple[Any, Any]


def _state_spec(state: Any, argument: str) -> _Spec:
    if isinstance(state, Tensor):
        if state.dim() != 2:
            raise TypeError(
                f"{argument}: expected (B, ·) tensors in the state, got {tuple(state.shape)}"
            )
        return ("leaf", int(state.shape[1]))
    if isinstance(state, tuple):
        return (type(state), [_state_spec(s, argument) for s in state])
    raise TypeError(f"{argument}: expected a (nested) tuple of tensors, got {type(state).__name__}")


def _spec_fields(
    spec: _Spec, prefix: str, out: dict[str, int], names: Sequence[str] | None
) -> None:
    kind, payload = spec
    if kind == "leaf":
        out[prefix or "h"] = payload
        return
    fields = getattr(kind, "_fields", None)
    for k, child in enumerate(payload):
        name = fields[k] if fields else (names[k] if names else str(k))
        _spec_fields(child, f"{prefix}.{name}" if prefix else name, out, None)


def _flatten_state(state: Any, spec: _Spec, argument: str) -> list[Tensor]:
    kind, payload = spec
    if kind == "leaf":
        if not isinstance(state, Tensor) or state.dim() != 2 or state.shape[1] != payload:
            raise ValueError(
                f"{argument}: expected a (B, {payload}) tensor, got {_shape_of(state)}"
            )
        return [state]
    if not isinstance(state, tuple) or len(state) != len(payload):
        raise TypeError(
            f"{argument}: expected {getattr(kind, '__name__', 'tuple')} of {len(payload)}, "
            f"got {_shape_of(state)}"
        )
    leaves: list[Tensor] = []
    for s, child in zip(state, payload):
        leaves.extend(_flatten_state(s, child, argument))
    return leaves


def _unflatten_state(leaves: list[Tensor], spec: _Spec) -> Any:
    kind, payload = spec
    if kind == "leaf":
        return leaves.pop(0)
    children = [_unflatten_state(leaves, c) for c in payload]
    return kind(*children) if hasattr(kind, "_fields") else kind(children)


class CellMap(_ModuleMap):
    """An rnnlab cell's state update ``state' = cell.step(x, state)[1]`` on flat vectors.

    Example:
        >>> from rnnlab.cells import LSTMCell
        >>> f = Map.from_cell(LSTMCell(2, 4))
        >>> f.fields, f.state_size
        ({'h': 4, 'c': 4}, 8)
    """

    def __init__(self, cell: Cell) -> None:
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected an rnnlab Cell, got {type(cell).__name__}")
        self.module = cell
        try:
            state0 = cell.initial_state(1)
        except (TypeError, ValueError) as err:  # e.g. a convolutional state needs an image size
            raise TypeError(
                f"cell: expected a cell whose state is (B, ·) vectors, got {type(cell).__name__}, "
                f"whose initial_state(1) fails ({err}); a map acts on flat state vectors"
            ) from err
        self._spec = _state_spec(state0, "cell.initial_state(1)")
        fields: dict[str, int] = {}
        _spec_fields(self._spec, "", fields, None)
        super().__init__(
            sum(fields.values()), cell.input_size, fields=fields, name=type(cell).__name__
        )

    @property
    def cell(self) -> Cell:
        return self.module  # type: ignore[return-value]

    def flatten(self, state: Any) -> Tensor:
        if isinstance(state, Tensor) and state.dim() == 2 and state.shape[1] == self.state_size:
            return state
        if isinstance(state, Tensor) and len(self.fields) == 1:
            state = (state,)
        return torch.cat(_flatten_state(state, self._spec, "state"), dim=-1)  # (B, N)

    def unflatten(self, h: Tensor) -> Any:
        leaves = list(h.split(list(self.fields.values()), dim=-1))
        return _unflatten_state(leaves, self._spec)

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        assert x is not None  # cells always have an input (zeros when absent)
        cell = self.cell
        # As the reference unroll: a cell that overrides forward is called through it.
        step = cell.step if type(cell).forward is Cell.forward else cell
        _, new = step(x, self.unflatten(h))
        return torch.cat(_flatten_state(new, self._spec, "new state"), dim=-1)


class StackedCellsMap(_ModuleMap):
    """Cells on top of each other: cell k reads cell k-1's output y_{k-1}(t) at the same step.

    The state is the tuple of every cell's state (fields ``"0.h"``, ``"1.h"``, ``"1.c"``, ...).
    """

    def __init__(self, cells: Sequence[Cell]) -> None:
        cells = list(cells) if isinstance(cells, (list, tuple, nn.ModuleList)) else [cells]  # type: ignore[list-item]
        if not cells:
            raise ValueError("cells: expected at least one cell, got 0")
        for k, c in enumerate(cells):
            if not isinstance(c, Cell):
                raise TypeError(f"cells[{k}]: expected an rnnlab Cell, got {type(c).__name__}")
            if k and c.input_size != cells[k - 1].output_size:
                raise ValueError(
                    f"cells[{k}]: expected input_size {cells[k - 1].output_size} "
                    f"(cell {k - 1}'s output), got {c.input_size}"
                )
        self.module = nn.ModuleList(cells)
        self._spec = (
            tuple,
            [_state_spec(c.initial_state(1), f"cells[{k}]") for k, c in enumerate(cells)],
        )
        fields: dict[str, int] = {}
        _spec_fields(self._spec, "", fields, None)
        super().__init__(sum(fields.values()), cells[0].input_size, fields=fields, name="stack")

    def flatten(self, state: Any) -> Tensor:
        if isinstance(state, Tensor) and state.dim() == 2 and state.shape[1] == self.state_size:
            return state
        return torch.cat(_flatten_state(tuple(state), self._spec, "state"), dim=-1)

    def unflatten(self, h: Tensor) -> Any:
        return _unflatten_state(list(h.split(list(self.fields.values()), dim=-1)), self._spec)

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        states = self.unflatten(h)
        inp = x
        new = []
        for cell, s in zip(self.module, states):  # type: ignore[call-overload]
            step = cell.step if type(cell).forward is Cell.forward else cell
            inp, s_new = step(inp, s)
            new.append(s_new)
        return torch.cat(_flatten_state(tuple(new), self._spec, "new state"), dim=-1)


_TORCH_MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")


class TorchRNNMap(_ModuleMap):
    r"""A genuine ``torch.nn`` RNN/LSTM/GRU (all layers, from its weights) as a map.

    The flat state is, layer by layer, ``h_l`` (RNN, GRU) or ``h_l, c_l`` (LSTM, ``h_l`` of size
    ``proj_size`` with a projection); :meth:`flatten` takes torch's ``h_n`` (L, B, H) or
    ``(h_n, c_n)`` and :meth:`unflatten` gives them back. The maths is torch's documented one
    (GRU's reset after U_h; gate order i, f, g, o and r, z, n), written once here. Only
    ``torch.nn`` classes come here: rnnlab's drop-ins carry a ``mode`` for compatibility but
    run rnnlab cells, so they map through those (:mod:`rnnlab.dynamics.modules`).
    Bidirectional modules are rejected (their backward direction does not run forward in
    time) unless ``direction="forward"`` asks for the forward half of a one-layer module.
    """

    def __init__(self, module: nn.Module, *, direction: str | None = None) -> None:
        mode = getattr(module, "mode", None)
        if direction not in (None, "forward"):
            raise ValueError(f"direction: expected None or 'forward', got {direction!r}")
        if not isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            raise TypeError(
                "module: expected torch.nn.RNN/LSTM/GRU or RNNCell/LSTMCell/GRUCell, "
                f"got {type(module).__name__}"
            )
        if isinstance(module, nn.RNNCellBase):
            if isinstance(module, nn.LSTMCell):
                mode = "LSTM"
            elif isinstance(module, nn.GRUCell):
                mode = "GRU"
            else:
                mode = (
                    "RNN_TANH" if getattr(module, "nonlinearity", "tanh") == "tanh" else "RNN_RELU"
                )
            self.layers = 1
            self._suffix = [""]
        elif mode in _TORCH_MODES and hasattr(module, "weight_hh_l0"):
            self.layers = int(module.num_layers)  # type: ignore[arg-type]
            if getattr(module, "bidirectional", False):
                if direction != "forward":
                    raise ValueError(
                        "module: a bidirectional RNN is not a dynamic system forward in time "
                        "(its backward direction reads the future); expected "
                        "bidirectional=False, got True. Its forward direction is a causal "
                        "system: as_map(module, direction='forward') (one layer only)"
                    )
                if self.layers != 1:
                    raise ValueError(
                        "direction: the forward direction of a bidirectional module is a system "
                        "of its own only with one layer (layer 2 reads both directions); "
                        f"expected num_layers=1, got {self.layers}"
                    )
            self._suffix = [f"_l{k}" for k in range(self.layers)]
        else:
            raise TypeError(
                "module: expected torch.nn.RNN/LSTM/GRU or RNNCell/LSTMCell/GRUCell, "
                f"got {type(module).__name__}"
            )
        self.module = module
        self.mode = str(mode)
        H = int(module.hidden_size)  # type: ignore[arg-type]
        P = int(getattr(module, "proj_size", 0) or 0) or H
        self.hidden, self.out = H, P
        fields: dict[str, int] = {}
        for k in range(self.layers):
            fields[f"h{k}"] = P if self.mode == "LSTM" else H
            if self.mode == "LSTM":
                fields[f"c{k}"] = H
        super().__init__(
            sum(fields.values()),
            int(module.input_size),  # type: ignore[arg-type]
            fields=fields,
            name=type(module).__name__,
        )

    def _w(self, name: str, k: int) -> Tensor | None:
        return getattr(self.module, name + self._suffix[k], None)

    def flatten(self, state: Any) -> Tensor:
        if isinstance(state, Tensor) and state.dim() == 2 and state.shape[1] == self.state_size:
            return state
        parts = state if isinstance(state, tuple) else (state,)
        want = 2 if self.mode == "LSTM" else 1
        if len(parts) != want or not all(isinstance(p, Tensor) for p in parts):
            raise TypeError(
                f"state: expected {'(h_n, c_n)' if want == 2 else 'h_n'} (L, B, H) or a flat "
                f"(B, {self.state_size}) tensor, got {_shape_of(state)}"
            )
        if self.layers == 1 and parts[0].dim() == 2:
            parts = tuple(p[None] for p in parts)  # cells: (B, H) -> (1, B, H)
        cols = []
        for k in range(self.layers):
            for p in parts:
                cols.append(p[k])
        return torch.cat(cols, dim=-1)  # (B, N)

    def unflatten(self, h: Tensor) -> Any:
        chunks = h.split(list(self.fields.values()), dim=-1)
        if self.mode == "LSTM":
            return torch.stack(chunks[0::2]), torch.stack(chunks[1::2])  # (L, B, P), (L, B, H)
        return torch.stack(chunks)  # (L, B, H)

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        assert x is not None
        chunks = h.split(list(self.fields.values()), dim=-1)
        F = torch.nn.functional
        inp = x
        new: list[Tensor] = []
        for k in range(self.layers):
            w_ih, w_hh = self._w("weight_ih", k), self._w("weight_hh", k)
            b_ih, b_hh = self._w("bias_ih", k), self._w("bias_hh", k)
            assert w_ih is not None and w_hh is not None
            gi = F.linear(inp, w_ih, b_ih)
            if self.mode == "LSTM":
                h_prev, c_prev = chunks[2 * k], chunks[2 * k + 1]
                i, f, g, o = (gi + F.linear(h_prev, w_hh, b_hh)).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
                y = torch.sigmoid(o) * torch.tanh(c)
                w_hr = self._w("weight_hr", k)
                if w_hr is not None:
                    y = F.linear(y, w_hr)
                new += [y, c]
            elif self.mode == "GRU":
                h_prev = chunks[k]
                gh = F.linear(h_prev, w_hh, b_hh)
                H = self.hidden
                r = torch.sigmoid(gi[..., :H] + gh[..., :H])
                z = torch.sigmoid(gi[..., H : 2 * H] + gh[..., H : 2 * H])
                n = torch.tanh(gi[..., 2 * H :] + r * gh[..., 2 * H :])
                y = (1.0 - z) * n + z * h_prev
                new.append(y)
            else:
                pre = gi + F.linear(chunks[k], w_hh, b_hh)
                y = torch.tanh(pre) if self.mode == "RNN_TANH" else torch.relu(pre)
                new.append(y)
            inp = y
        return torch.cat(new, dim=-1)


class IteratedMap(Map):
    """F^k: ``k`` steps of ``base`` with the same (fixed or absent) input."""

    def __init__(self, base: Map, k: int) -> None:
        super().__init__(
            base.state_size, base.input_size, fields=base.fields, name=f"{base.name}^{k}"
        )
        self.base, self.k = base, check_int(k, "k")
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
    m = as_map(f, input=input)
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
        T = check_int(steps, "steps", minimum=0)
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


def check_output(out: Any, h: Tensor, name: str) -> None:
    """The map's output must be a tensor of the input's shape."""
    if not isinstance(out, Tensor):
        raise TypeError(f"f ({name}): expected to return a tensor, got {type(out).__name__}")
    if out.shape != h.shape:
        raise ValueError(
            f"f ({name}): expected output of the state's shape {tuple(h.shape)}, "
            f"got {tuple(out.shape)}"
        )


def _batched_jacobian(step: StepFn, h: Tensor, x: Tensor | None, argnum: int) -> Tensor:
    """Per-row Jacobians of a row-independent map, in chunks.

    Forward mode under ``vmap`` (torch.func) in general; for tiny problems, where torch.func's
    per-call overhead dominates, reverse mode on a replicated batch (row b·n + i carries the
    cotangent e_i), one backward pass for all rows.
    """
    B, N = h.shape
    n_in = N if argnum == 0 else (x.shape[1] if x is not None else 0)
    if B * N <= _SMALL_ROWS and h.requires_grad is False:
        return _replicated_jacobian(step, h, x, argnum)

    def single(h1: Tensor, x1: Tensor | None) -> Tensor:
        return step(h1[None], None if x1 is None else x1[None])[0]

    chunk = max(1, _JAC_CHUNK_ENTRIES // max(1, N * max(n_in, 1)))
    in_dims = (0, 0 if x is not None else None)
    parts = []
    for start in range(0, B, chunk):
        hs = h[start : start + chunk]
        xs = None if x is None else x[start : start + chunk]
        try:
            parts.append(vmap(jacfwd(single, argnums=argnum), in_dims=in_dims)(hs, xs))
        except (RuntimeError, NotImplementedError):
            # some user ops lack forward-mode rules; reverse mode then
            parts.append(vmap(jacrev(single, argnums=argnum), in_dims=in_dims)(hs, xs))
    if not parts:
        return h.new_zeros(0, N, n_in)
    return torch.cat(parts)  # (B, N, N) or (B, N, I)


def _replicated_jacobian(step: StepFn, h: Tensor, x: Tensor | None, argnum: int) -> Tensor:
    B, N = h.shape
    hr = h.detach().repeat_interleave(N, 0)  # (B·N, N): row b·N + i belongs to output i
    xr = None if x is None else x.detach().repeat_interleave(N, 0)
    wrt = hr if argnum == 0 else xr
    assert wrt is not None
    wrt.requires_grad_(True)
    cot = torch.eye(N, dtype=h.dtype, device=h.device).repeat(B, 1)  # (B·N, N)
    with torch.enable_grad():
        out = step(hr, xr)
        (g,) = torch.autograd.grad(out, wrt, cot, allow_unused=True)
    if g is None:
        g = torch.zeros_like(wrt)
    return g.reshape(B, N, wrt.shape[1])  # rows: outputs, columns: inputs


def _shape_of(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, tuple):
        return f"{type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


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
