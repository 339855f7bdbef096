"""Simple recurrent cells of the lecture: Elman and Jordan networks.

Shapes: B batch, I input, H hidden, O output.

Both cells keep torch.nn.RNN's two biases (``bias_ih`` and ``bias_hh``); the lecture's single
b_h is their sum. This keeps ``rnnlab.nn.RNN`` load-compatible with ``torch.nn.RNN``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import ActivationSpec, resolve_activation
from .base import Cell, activation_config, check_positive_int


class ElmanState(NamedTuple):
    """State of an Elman cell: the hidden vector h(t-1), (B, H)."""

    h: Tensor


class JordanState(NamedTuple):
    """State of a Jordan cell: the previous output y(t-1), (B, O)."""

    y: Tensor


def _uniform_(cell: nn.Module, fan: int) -> None:
    bound = 1.0 / math.sqrt(fan)
    for p in cell.parameters():
        nn.init.uniform_(p, -bound, bound)


class ElmanCell(Cell):
    r"""Elman network, one step.

    .. math::
        h(t) = \sigma_h(W_h x(t) + U_h h(t-1) + b_h), \qquad y(t) = \sigma_y(W_y h(t) + b_y)

    Parameters (lecture symbol): ``weight_ih`` W_h (H, I); ``weight_hh`` U_h (H, H); ``bias_ih``
    + ``bias_hh`` = b_h; ``weight_ho`` W_y (O, H) and ``bias_ho`` b_y exist only with
    ``output_size``; without an output layer y(t) = h(t) (torch.nn.RNN's cell).

    Args:
        input_size: I.
        hidden_size: H.
        output_size: O, or None for y = h.
        activation: σ_h, a name (``"tanh"``, ``"relu"``, ``"sigmoid"``, ``"identity"``, ...) or a
            callable.
        output_activation: σ_y (default identity).
        bias: whether b_h (and b_y) exist.

    Example:
        >>> cell = ElmanCell(3, 5, output_size=2)
        >>> y, state = cell(torch.randn(4, 3), cell.initial_state(4))
        >>> y.shape, state.h.shape
        (torch.Size([4, 2]), torch.Size([4, 5]))

    Reference: J. L. Elman, "Finding structure in time", Cognitive Science 14 (1990).
    """

    State = ElmanState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int | None = None,
        *,
        activation: ActivationSpec = "tanh",
        output_activation: ActivationSpec = "identity",
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        if output_size is not None:
            check_positive_int(output_size, "output_size")
        self.has_output_layer = output_size is not None
        self.output_size = output_size if output_size is not None else hidden_size
        self.bias = bool(bias)
        self.activation, self.activation_name = resolve_activation(activation)
        self.output_activation, self.output_activation_name = resolve_activation(
            output_activation, argument="output_activation"
        )
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.weight_ho: nn.Parameter | None
        self.bias_ho: nn.Parameter | None
        if output_size is not None:
            self.weight_ho = nn.Parameter(torch.empty(output_size, hidden_size, **kw))
            self.bias_ho = nn.Parameter(torch.empty(output_size, **kw)) if bias else None
        else:
            self.weight_ho = None
            self.bias_ho = None
        # Without an output layer y(t) = h(t), so h(t-1) is the fed-back output.
        self.feedback_field = None if output_size is not None else "h"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_(self, self.hidden_size)

    def state_sizes(self) -> dict[str, int]:
        return {"h": self.hidden_size}

    def readout(self, h: Tensor) -> Tensor:
        """y = σ_y(W_y h + b_y), or h itself without an output layer."""
        if self.weight_ho is None:
            return h
        return self.output_activation(F.linear(h, self.weight_ho, self.bias_ho))

    def step(self, x: Tensor, state: ElmanState) -> tuple[Tensor, ElmanState]:
        pre = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(
            state.h, self.weight_hh, self.bias_hh
        )
        h = self.activation(pre)
        return self.readout(h), ElmanState(h)

    def config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "output_size": self.output_size if self.has_output_layer else None,
            "activation": activation_config(self.activation_name, "activation"),
            "output_activation": activation_config(
                self.output_activation_name, "output_activation"
            ),
            "bias": self.bias,
        }


class JordanCell(Cell):
    r"""Jordan network, one step: the state is the previous *output*.

    .. math::
        h(t) = \sigma_h(W_h x(t) + U_h y(t-1) + b_h), \qquad y(t) = \sigma_y(W_y h(t) + b_y)

    Parameters (lecture symbol): ``weight_ih`` W_h (H, I); ``weight_hh`` U_h (H, O), which maps
    y(t-1) to h; ``bias_ih`` + ``bias_hh`` = b_h; ``weight_ho`` W_y (O, H); ``bias_ho`` b_y.

    Because y(t-1) is the state (``feedback_field = "y"``), teacher forcing feeds the reference
    r(t-1) in its place (see :class:`rnnlab.layers.Recurrent`); with y compared to r the time
    steps decouple and training can be parallelised (the lecture's remark).

    Example:
        >>> cell = JordanCell(3, 8, 2)
        >>> y, state = cell(torch.randn(4, 3))
        >>> bool((state.y == y).all())
        True

    Reference: M. I. Jordan, "Serial order: a parallel distributed processing approach" (1986).
    """

    State = JordanState
    feedback_field = "y"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        activation: ActivationSpec = "tanh",
        output_activation: ActivationSpec = "identity",
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.output_size = check_positive_int(output_size, "output_size")
        self.bias = bool(bias)
        self.activation, self.activation_name = resolve_activation(activation)
        self.output_activation, self.output_activation_name = resolve_activation(
            output_activation, argument="output_activation"
        )
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, output_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.weight_ho = nn.Parameter(torch.empty(output_size, hidden_size, **kw))
        self.bias_ho = nn.Parameter(torch.empty(output_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_(self, self.hidden_size)

    def state_sizes(self) -> dict[str, int]:
        return {"y": self.output_size}

    def hidden(self, x: Tensor, y_prev: Tensor) -> Tensor:
        """h(t) from x(t) and the fed-back y(t-1) (or r(t-1) under teacher forcing)."""
        return self.activation(
            F.linear(x, self.weight_ih, self.bias_ih)
            + F.linear(y_prev, self.weight_hh, self.bias_hh)
        )

    def readout(self, h: Tensor) -> Tensor:
        return self.output_activation(F.linear(h, self.weight_ho, self.bias_ho))

    def step(self, x: Tensor, state: JordanState) -> tuple[Tensor, JordanState]:
        y = self.readout(self.hidden(x, state.y))
        return y, JordanState(y)

    def config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "output_size": self.output_size,
            "activation": activation_config(self.activation_name, "activation"),
            "output_activation": activation_config(
                self.output_activation_name, "output_activation"
            ),
            "bias": self.bias,
        }
