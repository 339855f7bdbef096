"""The cell contract: one step of a discrete dynamic system.

Shapes: B batch, I input features, H hidden units, O outputs.

A cell is an ``nn.Module`` with

* ``forward(x, state) -> (y, new_state)``: ``x`` is (B, I), ``state`` a NamedTuple of (B, ·)
  tensors, ``y`` is (B, O);
* ``initial_state(batch_size, *, device=None, dtype=None)``: the zero state.

Subclasses implement :meth:`Cell.step`, the unchecked step; :meth:`Cell.forward` validates its
arguments and then calls ``step``. Layers validate once per sequence and call ``step`` in their
loop. A subclass that overrides ``forward`` itself is always called through ``forward``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int


class Cell(nn.Module):
    """Base class of every rnnlab cell (see the module docstring for the contract).

    Attributes:
        input_size: I, features of ``x``.
        hidden_size: H, size of the cell's main state vector.
        output_size: O, features of ``y``.
        State: the NamedTuple type of the state.
        feedback_field: the state field that holds y(t-1) (a cell with output feedback, such as
            Jordan's), or None. Teacher forcing replaces this field with the reference r(t-1).
    """

    input_size: int
    hidden_size: int
    output_size: int
    State: type
    feedback_field: str | None = None

    # --- to implement -------------------------------------------------------------------------
    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_sizes(self) -> dict[str, int]:  # pragma: no cover - abstract
        """Feature size of every state field, in field order."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """JSON-serialisable constructor arguments (enough to rebuild the cell)."""
        raise NotImplementedError

    # --- provided -----------------------------------------------------------------------------
    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """One step: validate ``x`` (B, I) and ``state``, then return ``(y, new_state)``."""
        check_input(x, self.input_size, ndim=2, argument="x")
        ref = self._param_like()
        if ref is not None and ref.is_floating_point() and x.dtype != ref.dtype:
            # our message before torch's "mat1 and mat2 must have the same dtype"
            raise TypeError(
                f"x: expected dtype {ref.dtype} (the cell's parameters), got {x.dtype}; "
                f"convert the cell with cell.to({x.dtype}) or the input with x.to({ref.dtype})"
            )
        if state is None:
            state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        else:
            state = self.check_state(state, x.shape[0], x)
        return self.step(x, state)

    def _param_like(self) -> Tensor | None:
        for p in self.parameters():
            return p
        return None

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Any:
        """The zero state for ``batch_size`` sequences (the parameters' device and dtype).
        ``batch_size`` may be symbolic (a ``torch.SymInt`` under torch.export/compile)."""
        symbolic = isinstance(batch_size, torch.SymInt)
        if not symbolic:
            check_positive_int(batch_size, "batch_size")
        ref = self._param_like()
        device = device if device is not None else (ref.device if ref is not None else None)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else None)
        return self.State(
            *(
                torch.zeros(batch_size, n, device=device, dtype=dtype)
                for n in self.state_sizes().values()
            )
        )

    def check_state(
        self, state: Any, batch_size: int, like: Tensor, argument: str = "state"
    ) -> Any:
        """Validate a state against this cell; return it as the cell's NamedTuple type."""
        sizes = self.state_sizes()
        if isinstance(state, Tensor) and len(sizes) == 1:
            state = (state,)
        if not isinstance(state, tuple) or len(state) != len(sizes):
            raise TypeError(
                f"{argument}: expected {self.State.__name__}({', '.join(sizes)}) "
                f"with {len(sizes)} tensors, got {_describe(state)}"
            )
        for (name, size), value in zip(sizes.items(), state):
            where = f"{argument}.{name}"
            if not isinstance(value, Tensor):
                raise TypeError(f"{where}: expected a tensor, got {type(value).__name__}")
            if tuple(value.shape) != (batch_size, size):
                raise ValueError(
                    f"{where}: expected shape ({batch_size}, {size}), got {tuple(value.shape)}"
                )
            if value.dtype != like.dtype:
                raise TypeError(f"{where}: expected dtype {like.dtype} (as x), got {value.dtype}")
            if value.device != like.device:
                raise ValueError(
                    f"{where}: expected device {like.device} (as x), got {value.device}"
                )
        if type(state) is not self.State:
            state = self.State(*state)
        return state

    def extra_repr(self) -> str:
        # A user's cell need not define config(); its repr (and whatever prints it, such as
        # CompiledCell's cache key) must still work.
        try:
            config = self.config()
        except NotImplementedError:
            return ""
        return ", ".join(f"{k}={v!r}" for k, v in config.items() if not callable(v))


def check_input(x: Any, features: int, *, ndim: int, argument: str = "x") -> None:
    """Raise unless ``x`` is a floating tensor of rank ``ndim`` ending in ``features``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{argument}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{argument}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != ndim or x.shape[-1] != features:
        want = {2: f"(B, {features})", 3: f"(B, T, {features})"}.get(ndim, f"[..., {features}]")
        raise ValueError(f"{argument}: expected {want}, got {tuple(x.shape)}")


def check_positive_int(value: Any, argument: str, *, allow_zero: bool = False) -> int:
    kind = "a non-negative int" if allow_zero else "a positive int"
    if isinstance(value, Tensor) and value.dim() == 0 and value.dtype in _INT_DTYPES:
        value = int(value)  # a size under torch.jit.trace (x.shape[0]) is a 0-d int tensor
    return check_int(value, argument, low=0 if allow_zero else 1, what=kind)


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, tuple):
        return f"{type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def activation_config(name: str | None, argument: str) -> str:
    if name is None:
        raise ValueError(
            f"{argument}: a callable activation cannot be saved by name; "
            "use a named activation (tanh, sigmoid, relu, identity, ...) to save this cell"
        )
    return name


def check_proj_size(proj_size: Any, hidden_size: int) -> int:
    """An LSTM's projection size: 0 (none) or a positive int below ``hidden_size``."""
    proj_size = check_positive_int(proj_size, "proj_size", allow_zero=True)
    if proj_size >= hidden_size and proj_size > 0:
        raise ValueError(f"proj_size: expected < hidden_size={hidden_size}, got {proj_size}")
    return proj_size
