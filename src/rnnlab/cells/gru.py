"""Gated recurrent unit in both reset forms.

Shapes: B batch, I input, H hidden.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice
from .activations import ActivationSpec, resolve_activation
from .base import Cell, activation_config, check_positive_int


class GRUState(NamedTuple):
    """GRU state: h(t-1), (B, H); the output is h as well."""

    h: Tensor


class GRUCell(Cell):
    r"""Gated recurrent unit, one step.

    .. math::
        z(t) &= \sigma(W_z x(t) + U_z h(t-1) + b_z), \quad
        r(t) = \sigma(W_r x(t) + U_r h(t-1) + b_r) \\
        \tilde h(t) &= \sigma_h(W_h x(t) + U_h (r(t) \odot h(t-1)) + b_h)
            \quad\text{(reset="before", the lecture; Cho et al. 2014 v3)} \\
        \tilde h(t) &= \sigma_h(W_h x(t) + b_{ih} + r(t) \odot (U_h h(t-1) + b_{hh}))
            \quad\text{(reset="after", cuDNN and torch.nn.GRU; Cho et al. 2014 v1)} \\
        h(t) &= z(t) \odot h(t-1) + (1 - z(t)) \odot \tilde h(t), \qquad y(t) = h(t)

    The two forms give *different* results on the same weights: "before" resets h before the
    product with U_h, "after" resets the product (which lets cuDNN do one GEMM for all three
    blocks). The lecture writes b_h once outside σ_h; inside is meant.

    Parameters (lecture symbol), torch's block order r, z, n: ``weight_ih`` [W_r; W_z; W_h]
    (3H, I); ``weight_hh`` [U_r; U_z; U_h] (3H, H); ``bias_ih`` and ``bias_hh`` (3H,), whose sums
    are b_r, b_z, b_h (in the "after" form b_hh's n block sits inside the reset product).

    Args:
        input_size: I.
        hidden_size: H.
        bias: whether the biases exist.
        reset: ``"after"`` (default, torch.nn.GRU's maths) or ``"before"`` (the lecture's).
        activation: σ_h of the candidate (default tanh).

    Example:
        >>> cell = GRUCell(3, 4, reset="before")
        >>> y, state = cell(torch.randn(2, 3))
        >>> bool((y == state.h).all())
        True
    """

    State = GRUState
    feedback_field = "h"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        reset: str = "after",
        activation: ActivationSpec = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.output_size = hidden_size
        check_choice(reset, "reset", ("after", "before"))
        self.reset = reset
        self.bias = bool(bias)
        self.activation, self.activation_name = resolve_activation(activation)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H, **kw))
        self.bias_ih = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def state_sizes(self) -> dict[str, int]:
        return {"h": self.hidden_size}

    def step(self, x: Tensor, state: GRUState) -> tuple[Tensor, GRUState]:
        H = self.hidden_size
        h_prev = state.h
        gi = F.linear(x, self.weight_ih, self.bias_ih)  # (B, 3H)
        if self.reset == "after":
            gh = F.linear(h_prev, self.weight_hh, self.bias_hh)  # (B, 3H)
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = self.activation(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        else:
            b_hh = self.bias_hh
            gh = F.linear(h_prev, self.weight_hh[: 2 * H], None if b_hh is None else b_hh[: 2 * H])
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H:])
            n = self.activation(
                gi[:, 2 * H :]
                + F.linear(
                    r * h_prev, self.weight_hh[2 * H :], None if b_hh is None else b_hh[2 * H :]
                )
            )
        h = z * h_prev + (1.0 - z) * n
        return h, GRUState(h)

    def config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "bias": self.bias,
            "reset": self.reset,
            "activation": activation_config(self.activation_name, "activation"),
        }
