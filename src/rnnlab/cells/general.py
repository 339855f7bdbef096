"""The lecture's general recurrent system from two user functions, and wrapper cells.

Shapes: B batch, I input, H state, O output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .activations import ActivationSpec, resolve_activation
from .base import Cell, activation_config, check_positive_int


class GeneralState(NamedTuple):
    """State of a :class:`GeneralCell`: h, (B, H)."""

    h: Tensor


class GeneralCell(Cell):
    r"""h(t+1) = f(h(t), x(t)), y(t) = g(h(t), x(t)): any differentiable torch code.

    The lecture writes the general system with the output read from the state *before* the
    update. rnnlab's cells follow the Elman convention of the cell contract instead: one step
    consumes x(t) and h(t-1) and returns the new state and the output read from it,

    .. math:: h_{new} = f(h, x), \qquad y = g(h_{new}, x),

    so that a GeneralCell with ``f = tanh(W x + U h + b)`` and ``g = W_y h + b_y`` is exactly an
    Elman network. If ``f`` or ``g`` is an ``nn.Module`` its parameters belong to the cell.

    Args:
        f: ``(h (B, H), x (B, I)) -> h_new (B, H)``.
        g: ``(h_new (B, H), x (B, I)) -> y (B, O)``, or None for y = h_new.
        input_size: I.
        state_size: H.
        output_size: O (required with ``g``).

    Example:
        >>> lin = nn.Linear(1, 1)
        >>> cell = GeneralCell(lambda h, x: 0.8 * h + 1 + 0 * x, input_size=1, state_size=1)
        >>> y, s = cell(torch.zeros(1, 1), (torch.full((1, 1), 5.0),))
        >>> float(y)   # the lecture's fixed point h* = 5 of h(t+1) = 0.8 h(t) + 1
        5.0
    """

    State = GeneralState

    def __init__(
        self,
        f: Callable[[Tensor, Tensor], Tensor],
        g: Callable[[Tensor, Tensor], Tensor] | None = None,
        *,
        input_size: int,
        state_size: int,
        output_size: int | None = None,
    ) -> None:
        super().__init__()
        if not callable(f):
            raise TypeError(f"f: expected a callable (h, x) -> h_new, got {type(f).__name__}")
        if g is not None and not callable(g):
            raise TypeError(f"g: expected a callable (h, x) -> y or None, got {type(g).__name__}")
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(state_size, "state_size")
        if g is not None and output_size is None:
            raise ValueError("output_size: required when g is given, got None")
        if g is None and output_size is not None and output_size != state_size:
            raise ValueError(
                f"output_size: without g, y = h so expected {state_size}, got {output_size}"
            )
        self.output_size = check_positive_int(output_size, "output_size") if g else state_size
        self.f = f
        self.g = g
        self.feedback_field = None if g is not None else "h"

    def state_sizes(self) -> dict[str, int]:
        return {"h": self.hidden_size}

    def step(self, x: Tensor, state: GeneralState) -> tuple[Tensor, GeneralState]:
        h = self.f(state.h, x)
        if h.shape != state.h.shape:
            raise ValueError(
                f"f: expected to return shape {tuple(state.h.shape)}, got {tuple(h.shape)}"
            )
        y = h if self.g is None else self.g(h, x)
        return y, GeneralState(h)

    def config(self) -> dict[str, Any]:
        raise ValueError(
            "GeneralCell: holds user functions that cannot be saved by name; save its "
            "state_dict() and rebuild the cell in code"
        )

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, state_size={self.hidden_size}, "
            f"output_size={self.output_size}"
        )


def _mlp(sizes: Sequence[int], activation: ActivationSpec, final_activation: bool) -> nn.Sequential:
    fn, _ = resolve_activation(activation)
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or k < len(sizes) - 2:
            layers.append(_Act(fn))
    return nn.Sequential(*layers)


class _Act(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class DeepTransition(Cell):
    r"""Deep transition RNN (Pascanu et al. 2014): an MLP inside the recurrent step.

    .. math:: h(t) = \mathrm{MLP}(\mathrm{cell}_h(x(t), h(t-1)))

    The inner cell's new ``h`` passes through ``len(hidden_sizes)`` hidden layers and a last layer
    back to H, each followed by ``activation``; the result is the new state's ``h`` and the output.
    The inner cell must output its ``h`` (Elman without output layer, GRU, LSTM without
    projection).

    Example:
        >>> from rnnlab.cells import GRUCell
        >>> cell = DeepTransition(GRUCell(3, 8), hidden_sizes=[16])
        >>> y, s = cell(torch.randn(2, 3))
        >>> y.shape
        torch.Size([2, 8])
    """

    def __init__(
        self, cell: Cell, hidden_sizes: Sequence[int] = (), *, activation: ActivationSpec = "tanh"
    ) -> None:
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected an rnnlab Cell, got {type(cell).__name__}")
        sizes = cell.state_sizes()
        if "h" not in sizes or cell.output_size != sizes["h"] or cell.feedback_field != "h":
            raise ValueError(
                "cell: expected a cell whose output is its state h (y = h), got "
                f"{type(cell).__name__} "
                f"with output_size={cell.output_size} and state {dict(sizes)}"
            )
        for k, n in enumerate(hidden_sizes):
            check_positive_int(n, f"hidden_sizes[{k}]")
        self.cell = cell
        self.hidden_sizes = tuple(int(n) for n in hidden_sizes)
        _, self.activation_name = resolve_activation(activation)
        H = sizes["h"]
        self.transition = _mlp([H, *self.hidden_sizes, H], activation, final_activation=True)
        self.input_size, self.hidden_size, self.output_size = cell.input_size, cell.hidden_size, H
        self.State = cell.State
        self.feedback_field = "h"

    def state_sizes(self) -> dict[str, int]:
        return self.cell.state_sizes()

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        _, new = self.cell.step(x, state)
        h = self.transition(new.h)
        new = new._replace(h=h)
        return h, new

    def config(self) -> dict[str, Any]:
        from .registry import cell_to_config

        return {
            "cell": cell_to_config(self.cell),
            "hidden_sizes": list(self.hidden_sizes),
            "activation": activation_config(self.activation_name, "activation"),
        }


class DeepOutput(Cell):
    r"""Deep output RNN (Pascanu et al. 2014): an MLP between the recurrent state and y.

    .. math:: y(t) = \mathrm{MLP}(\mathrm{cell}_y(x(t), \text{state}))

    Hidden layers use ``activation``; the last layer (to ``output_size``) uses
    ``output_activation`` (default identity). The state is the inner cell's, unchanged.

    Example:
        >>> from rnnlab.cells import ElmanCell
        >>> cell = DeepOutput(ElmanCell(3, 8), [16], output_size=2)
        >>> cell(torch.randn(5, 3))[0].shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        cell: Cell,
        hidden_sizes: Sequence[int] = (),
        *,
        output_size: int,
        activation: ActivationSpec = "tanh",
        output_activation: ActivationSpec = "identity",
    ) -> None:
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected an rnnlab Cell, got {type(cell).__name__}")
        for k, n in enumerate(hidden_sizes):
            check_positive_int(n, f"hidden_sizes[{k}]")
        self.cell = cell
        self.hidden_sizes = tuple(int(n) for n in hidden_sizes)
        self.output_size = check_positive_int(output_size, "output_size")
        _, self.activation_name = resolve_activation(activation)
        self.output_activation, self.output_activation_name = resolve_activation(
            output_activation, argument="output_activation"
        )
        self.readout = _mlp([cell.output_size, *self.hidden_sizes, output_size], activation, False)
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.State = cell.State
        self.feedback_field = None

    def state_sizes(self) -> dict[str, int]:
        return self.cell.state_sizes()

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        y, new = self.cell.step(x, state)
        return self.output_activation(self.readout(y)), new

    def config(self) -> dict[str, Any]:
        from .registry import cell_to_config

        return {
            "cell": cell_to_config(self.cell),
            "hidden_sizes": list(self.hidden_sizes),
            "output_size": self.output_size,
            "activation": activation_config(self.activation_name, "activation"),
            "output_activation": activation_config(
                self.output_activation_name, "output_activation"
            ),
        }


__all__ = ["GeneralCell", "GeneralState", "DeepTransition", "DeepOutput"]
_ = torch  # torch is used in doctests
