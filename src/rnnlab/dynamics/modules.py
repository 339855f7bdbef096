r"""rnnlab modules as maps, through their own cells: the map *is* the module.

.. math:: h(t+1) = f(h(t), x(t)), \qquad f = \text{the module's own step}

:func:`module_map` turns an rnnlab layer or drop-in into a :class:`~rnnlab.dynamics.maps.Map`
whose step calls the very cells the module runs (``Recurrent.cell``, ``Stacked.layers[k].cell``,
the drop-ins' ``_cells``), so every option of a cell (GRU ``reset="before"``, peepholes, the
Greff variants with FGR's gate state, projections, any activation) is analysed as it is. The
torch-compatibility attribute ``mode`` of the drop-ins is never read here: it names torch's
closest mode, not the system the module computes. Genuine ``torch.nn`` modules go to
:class:`~rnnlab.dynamics.maps.TorchRNNMap` (torch's documented equations, one implementation).

A bidirectional layer is not a system forward in time (its backward half reads the future);
asking for its map is an error that says so and offers ``direction="forward"``: the forward
half alone, which *is* a causal system (one layer only: a deeper layer reads both halves).

Closed loop (:class:`ClosedLoopMap`): a model whose real-valued output is fed back as its next
input, x(t) = φ(y(t-1)), runs the autonomous map h → f(h, φ(g(h))), where g reads the output
from the state. That is the system ``generate`` runs.

Shapes: B batch, N flat state size, I input size, O output size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..cells.base import Cell
from ._map_base import _shape_of
from ._module_maps import _flatten_state, _spec_fields, _state_spec
from .maps import (
    CellMap,
    Map,
    StackedCellsMap,
    register_adapter,
)

DIRECTIONS = (None, "forward")


def _bidirectional_error(what: str, hint: str) -> ValueError:
    return ValueError(
        f"module: {what} is not a dynamic system forward in time (its backward direction reads "
        f"the future); expected a unidirectional module, got a bidirectional one. {hint}"
    )


class LayersMap(StackedCellsMap):
    r"""Cells as a :class:`~rnnlab.layers.Stacked` runs them, skip connections included.

    .. math::
        u_0 = x,\quad u_k = [y_{k-1}, x] \text{ (input\_skip)} \text{ or } y_{k-1};\quad
        (y_k', s_k') = \text{cell}_k(u_k, s_k);\quad y_k = y_k' + y_{k-1} \text{ (residual, } k>0)

    Dropout between layers is a training-time perturbation, not part of the system: the map is
    the module in eval mode.

    Example:
        >>> from rnnlab import GRUCell, Recurrent, Stacked
        >>> net = Stacked([Recurrent(GRUCell(2, 3)), Recurrent(GRUCell(3 + 2, 3))], input_skip=True)
        >>> module_map(net).fields
        {'0.h': 3, '1.h': 3}
    """

    def __init__(
        self, cells: Sequence[Cell], *, input_skip: bool = False, residual: bool = False
    ) -> None:
        cells = list(cells)
        if not input_skip:
            super().__init__(cells)
        else:
            # StackedCellsMap checks u_k = y_{k-1}; with the input skip u_k = [y_{k-1}, x].
            I = cells[0].input_size
            for k in range(1, len(cells)):
                want = cells[k - 1].output_size + I
                if cells[k].input_size != want:
                    raise ValueError(
                        f"cells[{k}]: expected input_size {want} (cell {k - 1}'s output + input "
                        f"{I}), got {cells[k].input_size}"
                    )
            self.module = nn.ModuleList(cells)
            self._spec = (
                tuple,
                [_state_spec(c.initial_state(1), f"cells[{k}]") for k, c in enumerate(cells)],
            )
            fields: dict[str, int] = {}
            _spec_fields(self._spec, "", fields, None)
            Map.__init__(self, sum(fields.values()), I, fields=fields, name="stack")
        self.input_skip, self.residual = bool(input_skip), bool(residual)

    def step_with_outputs(self, h: Tensor, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """One step: the new flat state and every layer's output y_k (B, O_k)."""
        states = self.unflatten(h)
        inp: Tensor = x
        outs: list[Tensor] = []
        new = []
        for k, (cell, s) in enumerate(zip(self.module, states)):  # type: ignore[call-overload]
            u = torch.cat([inp, x], dim=-1) if self.input_skip and k > 0 else inp
            y, s_new = _cell_step(cell)(u, s)
            if self.residual and k > 0:
                y = y + inp
            outs.append(y)
            new.append(s_new)
            inp = y
        return torch.cat(_flatten_state(tuple(new), self._spec, "new state"), dim=-1), outs

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        assert x is not None
        return self.step_with_outputs(h, x)[0]


def _cell_step(cell: Cell) -> Callable[[Tensor, Any], tuple[Tensor, Any]]:
    # As the reference unroll does: a cell that overrides forward is called through it.
    return cell.step if type(cell).forward is Cell.forward else cell


class DropInMap(LayersMap):
    r"""An rnnlab.nn drop-in (RNN, GRU, LSTM, every option) through its own cells.

    The flat state is every layer's cell state, field by field (``"0.h"``, ``"0.c"``, and for
    FGR ``"0.gates"``, the previous gate activations that FGR's recurrences read: they are part
    of the system's state, so they are part of the map's). :meth:`flatten` also takes torch's
    ``h_n`` (L, B, H) or ``(h_n, c_n)``; FGR's gates then start at zero, as the module does.

    Example:
        >>> import rnnlab
        >>> f = module_map(rnnlab.nn.GRU(2, 3, num_layers=2, reset="before"))
        >>> f.fields
        {'0.h': 3, '1.h': 3}
    """

    def __init__(self, module: nn.Module) -> None:
        module._sync()  # type: ignore[operator]  # the cells must hold the module's parameters
        super().__init__(list(module._cells))  # type: ignore[arg-type]
        self._owner: nn.Module | None = module
        self.name = type(module).__name__
        self.layers = int(module.num_layers)  # type: ignore[arg-type]

    def _sync(self) -> None:
        if self._owner is not None:
            self._owner._sync()  # type: ignore[operator]

    @property
    def dtype(self) -> torch.dtype | None:
        self._sync()
        return super().dtype

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        self._sync()  # .to() or load_state_dict(assign=True) may have replaced the parameters
        return super()._step(h, x)

    def _convert(self, dtype: torch.dtype | None, device: torch.device | None) -> Map:
        self._sync()
        out = super()._convert(dtype, device)
        out._owner = None  # type: ignore[attr-defined]  # the copy owns its cells
        return out

    def flatten(self, state: Any) -> Tensor:
        if isinstance(state, Tensor) and state.dim() == 2 and state.shape[1] == self.state_size:
            return state
        parts = state if isinstance(state, tuple) else (state,)
        if parts and all(isinstance(p, Tensor) and p.dim() == 3 for p in parts):
            return self._from_torch_layout(parts)
        return super().flatten(state)

    def _from_torch_layout(self, parts: tuple[Tensor, ...]) -> Tensor:
        cells = list(self.module)  # type: ignore[call-overload]
        want = 2 if "c" in cells[0].state_sizes() else 1
        if len(parts) != want or parts[0].shape[0] != len(cells):
            raise TypeError(
                f"state: expected {'(h_n, c_n)' if want == 2 else 'h_n'} with {len(cells)} "
                f"layers, or a flat (B, {self.state_size}) tensor, got {_shape_of(parts)}"
            )
        cols = []
        for k, cell in enumerate(cells):
            sizes = cell.state_sizes()
            for j, name in enumerate(sizes):
                if j < len(parts):
                    cols.append(parts[j][k])
                else:  # FGR's previous gates: zero at the start, as in the module
                    cols.append(parts[0].new_zeros(parts[0].shape[1], sizes[name]))
        return torch.cat(cols, dim=-1)  # (B, N)


LOOPS = (None, "open", "closed")


def _model_map(model: Any, loop: str | None) -> Map:
    """A training SequenceModel (duck-typed: core, readout, feedback, tokens, seq2seq)."""
    core = module_map(model.core)
    assert core is not None
    real = model.feedback == "input" and not model.tokens and not model.seq2seq
    if loop == "open" or (loop is None and not real):
        return core
    if not real:
        why = (
            "its tokens are fed back by argmax or sampling, which is not a differentiable map"
            if model.feedback == "input"
            else f"its output is not fed back as its input (feedback {model.feedback!r})"
        )
        raise ValueError(f"loop: 'closed' needs a real-valued output fed back as input; {why}")
    return ClosedLoopMap(
        core, model.readout, output_skip=bool(getattr(model.core, "output_skip", False))
    )


def module_map(module: Any, *, direction: str | None = None, loop: str | None = None) -> Map | None:
    """The map of an rnnlab module (drop-in, Recurrent, Stacked, Bidirectional, a training
    SequenceModel), or None.

    Args:
        module: the module.
        direction: ``"forward"`` analyses the forward half of a one-layer bidirectional module
            (the only causal part of it); None (default) rejects bidirectional modules.
        loop: for modules that feed their output back as their next input: "closed" (the
            autonomous loop), "open" (the map at a given input) or None (see :func:`as_map`).

    Returns:
        The map, or None when ``module`` is not an rnnlab module (the caller tries others).
    """
    from ..layers import Bidirectional, Recurrent, Stacked
    from ..nn import _RNNBase

    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected None or 'forward', got {direction!r}")
    if loop not in LOOPS:
        raise ValueError(f"loop: expected None, 'open' or 'closed', got {loop!r}")
    if all(hasattr(module, a) for a in ("core", "readout", "feedback", "tokens", "seq2seq")):
        return _model_map(module, loop)
    if isinstance(module, _RNNBase):
        if module.bidirectional:
            if direction != "forward":
                raise _bidirectional_error(
                    f"{type(module).__name__}(bidirectional=True)",
                    "Its forward direction is a causal system: as_map(module, "
                    "direction='forward')" + (" (one layer only)" if module.num_layers > 1 else ""),
                )
            if module.num_layers != 1:
                raise ValueError(
                    "direction: the forward direction of a bidirectional module is a system of its "
                    "own only with one layer (layer 2 reads both directions); expected "
                    f"num_layers=1, got {module.num_layers}"
                )
            module._sync()
            return CellMap(module._cells[0])
        return DropInMap(module)
    if isinstance(module, Bidirectional):
        if direction != "forward":
            raise _bidirectional_error(
                "Bidirectional",
                "Its forward direction is a causal system: as_map(layer.forward_layer) or "
                "as_map(layer, direction='forward')",
            )
        return CellMap(module.forward_layer.cell)
    if isinstance(module, Recurrent):
        base = CellMap(module.cell)
        if module.input_feedback is None:
            if loop == "closed":
                raise ValueError(
                    "loop: 'closed' needs a layer that feeds its output back "
                    "(Recurrent(..., input_feedback=fn)); this one has none"
                )
            return base
        if loop is None:
            raise ValueError(
                "loop: this layer feeds its output back as its next input (input_feedback), so "
                "say which system to analyse: loop='closed' (h -> f(h, fn(y(h))); fn must be "
                "differentiable, not an argmax) or loop='open' (a given input)"
            )
        return base if loop == "open" else ClosedLoopMap(base, feed=module.input_feedback)
    if isinstance(module, Stacked):
        cells = []
        for k, layer in enumerate(module.layers):
            if isinstance(layer, Bidirectional):
                raise _bidirectional_error(
                    f"Stacked with a Bidirectional layer {k}",
                    "Analyse a stack of Recurrent layers, or one forward layer.",
                )
            if not isinstance(layer, Recurrent):
                raise TypeError(
                    f"module.layers[{k}]: expected a Recurrent layer to read its cell from, "
                    f"got {type(layer).__name__}"
                )
            cells.append(layer.cell)
        return LayersMap(cells, input_skip=module.input_skip, residual=module.residual)
    if direction is not None:
        raise ValueError(
            f"direction: only bidirectional rnnlab modules take a direction, got {direction!r} "
            f"for {type(module).__name__}"
        )
    return None


register_adapter(module_map)


class ClosedLoopMap(Map):
    r"""The autonomous closed loop of a model that feeds its output back as its next input.

    .. math:: h(t+1) = f\big(h(t),\ x = \varphi(\mathrm{readout}(g(h(t))))\big)

    ``g`` reads the core's output y(t) from the state (the last layer's output field, e.g.
    GRU's h or LSTM's h; with residual or output-skip stacks, the sum or concatenation the
    stack computes), ``readout`` is the model's output layer and φ the feedback (identity for
    real values). This is exactly what ``generate`` runs after priming: there, the output
    computed at step t is the input of step t+1.

    Args:
        base: the open-loop map of the core (:class:`LayersMap` or :class:`CellMap`).
        readout: y -> model output (B, O); None for identity.
        output_skip: the core's output is every layer's output concatenated.
        feed: φ, model output -> next input; None for identity.

    Raises:
        ValueError: if a layer's output is not one of its state fields (then y(t) is not a
            function of h(t) alone and the loop has no map on h).

    Example:
        >>> from rnnlab import GRUCell
        >>> f = ClosedLoopMap(CellMap(GRUCell(1, 4)), readout=nn.Linear(4, 1))
        >>> f.state_size, f.input_size, f.system
        (4, 0, 'closed loop')
    """

    system = "closed loop"

    def __init__(
        self,
        base: Map,
        readout: Callable[[Tensor], Tensor] | None = None,
        *,
        output_skip: bool = False,
        feed: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if isinstance(base, LayersMap):
            cells = list(base.module)  # type: ignore[call-overload]
            self._residual = base.residual
        elif isinstance(base, CellMap):
            cells = [base.cell]
            self._residual = False
        else:
            raise TypeError(
                f"base: expected a CellMap or LayersMap of the core, got {type(base).__name__}"
            )
        super().__init__(base.state_size, 0, fields=base.fields, name=f"closed loop({base.name})")
        self.base: Map = base
        self.readout, self.feed = readout, feed
        self.output_skip = bool(output_skip)
        self._slices = _output_slices(cells, base.fields)
        self._check_sizes()

    def _check_sizes(self) -> None:
        h = torch.zeros(1, self.state_size, dtype=self.base.dtype or torch.float32)
        with torch.no_grad():
            x = self._fed(h)
        if x.shape != (1, self.base.input_size):
            raise ValueError(
                f"readout: the fed-back output must be the next input ({self.base.input_size} "
                f"features), got {tuple(x.shape)[1:]}"
            )

    @property
    def dtype(self) -> torch.dtype | None:
        return self.base.dtype

    @property
    def device(self) -> torch.device | None:
        return self.base.device

    def outputs(self, h: Tensor) -> Tensor:
        """g(h): the core's output y (B, ·) read from the flat state."""
        ys: list[Tensor] = []
        for k, (a, b) in enumerate(self._slices):
            y = h[:, a:b]
            if self._residual and k > 0:
                y = y + ys[-1]
            ys.append(y)
        return torch.cat(ys, dim=-1) if self.output_skip else ys[-1]

    def _fed(self, h: Tensor) -> Tensor:
        y = self.outputs(h)
        y = y if self.readout is None else self.readout(y)
        return y if self.feed is None else self.feed(y)

    def _step(self, h: Tensor, x: Tensor | None) -> Tensor:
        return self.base._step(h, self._fed(h))

    def _convert(self, dtype: torch.dtype | None, device: torch.device | None) -> Map:
        out = copy.copy(self)
        out.base = self.base.to(dtype, device)
        if isinstance(self.readout, nn.Module):
            r = copy.deepcopy(self.readout).to(device=device, dtype=dtype)
            for p in r.parameters():
                p.requires_grad_(False)
            out.readout = r
        return out

    def flatten(self, state: Any) -> Tensor:
        return self.base.flatten(state)

    def unflatten(self, h: Tensor) -> Any:
        return self.base.unflatten(h)


def _output_slices(cells: Sequence[Cell], fields: dict[str, int]) -> list[tuple[int, int]]:
    """Where each cell's output y sits in the flat state: (start, stop) of the field equal to y.

    Found by running each cell once on random input and state in float64 (no table per cell
    type, so user cells work too); a cell whose y is no state field (e.g. an Elman cell with a
    separate output layer) makes the loop's map on h undefined: an error, not a guess.
    """
    offsets: list[tuple[int, int]] = []
    start = 0
    names = list(fields)
    sizes = list(fields.values())
    pos = 0
    for k, cell in enumerate(cells):
        n_fields = len(cell.state_sizes())
        mine = list(zip(names[pos : pos + n_fields], sizes[pos : pos + n_fields]))
        probe = copy.deepcopy(cell).to(torch.float64)
        g = torch.Generator().manual_seed(k)
        x = torch.randn(2, cell.input_size, generator=g, dtype=torch.float64)
        sizes_k = cell.state_sizes().values()
        state = probe.State(*(torch.randn(2, n, generator=g, dtype=torch.float64) for n in sizes_k))
        with torch.no_grad():
            y, new = _cell_step(probe)(x, state)
        found = None
        off = start
        for (_name, n), value in zip(mine, new):
            if value.shape == y.shape and torch.equal(value, y):
                found = (off, off + n)
                break
            off += n
        if found is None:
            raise ValueError(
                f"model: layer {k} ({type(cell).__name__}) has an output y that is not one of its "
                "state fields, so y(t) is not a function of the state h(t) and the closed loop "
                "has no map on h; analyse the open loop (loop='open') at a given input"
            )
        offsets.append(found)
        start += sum(n for _, n in mine)
        pos += n_fields
    return offsets


__all__ = ["ClosedLoopMap", "DropInMap", "LayersMap", "module_map"]
