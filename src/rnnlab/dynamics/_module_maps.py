"""Maps of modules through their weights: an rnnlab cell, a stack of cells, a torch.nn
RNN/LSTM/GRU or RNNCell/LSTMCell/GRUCell (split from maps.py by job, issue 16). Nested
NamedTuple states are flattened to vectors here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice
from ..cells.base import Cell
from ._map_base import _CONSTRUCTORS, Map, _shape_of


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
            hint = (
                " (its flat view for one frame size is: Map.from_cell(cell.flat((H, W))))"
                if callable(getattr(cell, "flat", None))
                else ""
            )
            raise TypeError(
                f"cell: expected a cell whose state is (B, ·) vectors, got {type(cell).__name__}, "
                f"whose initial_state(1) fails ({err}); a map acts on flat state vectors{hint}"
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
        check_choice(direction, "direction", (None, "forward"))
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


_CONSTRUCTORS.update(cell=CellMap, cells=StackedCellsMap, torch=TorchRNNMap)
