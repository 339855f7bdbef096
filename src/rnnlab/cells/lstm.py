"""LSTM as the lecture derives it, with peepholes, projection and Greff et al.'s variants.

Shapes: B batch, I input, H cells, P projection (P = H without one), G gate blocks present.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice
from .activations import ActivationSpec, resolve_activation
from .base import Cell, activation_config, check_positive_int, check_proj_size


class LSTMState(NamedTuple):
    """LSTM state: ``h`` the previous output y(t-1) (B, P) and ``c`` the cell c(t-1) (B, H)."""

    h: Tensor
    c: Tensor


class LSTMFGRState(NamedTuple):
    """State of the full-gate-recurrence variant (FGR): also the previous gate activations.

    ``gates`` is (B, 3H): i(t-1), f(t-1), o(t-1) side by side (zeros at t = 0); see
    docs/design/0002-lstm-fgr-state.md.
    """

    h: Tensor
    c: Tensor
    gates: Tensor


# Greff et al. 2015, "LSTM: A Search Space Odyssey", Table/Section 3. V is the vanilla LSTM
# *with* peepholes; NP ("no peepholes") is the default cell and torch.nn.LSTM's maths.
VARIANTS: dict[str, dict[str, Any]] = {
    "NP": {"peephole": False},
    "V": {"peephole": True},
    "NIG": {"peephole": True, "input_gate": False},
    "NFG": {"peephole": True, "forget_gate": False},
    "NOG": {"peephole": True, "output_gate": False},
    "NIAF": {"peephole": True, "activation": "identity"},
    "NOAF": {"peephole": True, "cell_activation": "identity"},
    "CIFG": {"peephole": True, "coupled": True},
    "FGR": {"peephole": True, "gate_recurrence": True},
}


class LSTMCell(Cell):
    r"""Long short-term memory, one step, in the lecture's notation.

    .. math::
        \tilde h(t) &= \sigma_h(W_h x(t) + U_h y(t-1) + b_h) \\
        i(t) &= \sigma(W_i x(t) + U_i y(t-1) + p_i \odot c(t-1) + b_i) \\
        f(t) &= \sigma(W_f x(t) + U_f y(t-1) + p_f \odot c(t-1) + b_f) \\
        c(t) &= f(t) \odot c(t-1) + i(t) \odot \tilde h(t) \\
        o(t) &= \sigma(W_o x(t) + U_o y(t-1) + p_o \odot c(t) + b_o) \\
        y(t) &= W_r\,(o(t) \odot \sigma_y(c(t)))

    The peephole terms p ⊙ c exist only with peepholes (Gers & Schmidhuber 2000: i and f see
    c(t-1), o sees c(t)); W_r only with ``proj_size > 0`` (LSTMP, Sak et al. 2014).

    Parameters (lecture symbol), gate blocks in torch's order i, f, g, o (absent gates left out):
    ``weight_ih`` [W_i; W_f; W_h; W_o] (G·H, I); ``weight_hh`` [U_i; U_f; U_h; U_o] (G·H, P);
    ``bias_ih`` + ``bias_hh`` the b's; ``weight_ci``, ``weight_cf``, ``weight_co`` the peepholes
    p_i, p_f, p_o (H,); ``weight_hr`` W_r (P, H); ``weight_gg`` (FGR only) the gate-to-gate
    recurrence (3H, 3H) acting on [i; f; o](t-1).

    The state's ``h`` is the lecture's y(t-1) (torch calls it the hidden state), so the LSTM is
    a cell with output feedback (``feedback_field = "h"``).

    Args:
        input_size: I.
        hidden_size: H, the number of memory cells.
        bias: whether the biases exist.
        proj_size: P > 0 adds the projection W_r.
        variant: one of Greff et al.'s variants: ``"NP"`` (default, no peepholes: torch.nn.LSTM),
            ``"V"`` (vanilla with peepholes), ``"NIG"``, ``"NFG"``, ``"NOG"`` (no input / forget /
            output gate: that gate is 1), ``"NIAF"``, ``"NOAF"`` (no input / output activation:
            σ_h / σ_y identity), ``"CIFG"`` (coupled: f = 1 - i), ``"FGR"`` (full gate recurrence).
        peephole: override the variant's peephole setting.
        activation: σ_h of the candidate (default tanh; identity for NIAF).
        cell_activation: σ_y applied to c (default tanh; identity for NOAF).
        forget_bias: if given, ``reset_parameters`` sets b_f to it (``bias_ih``'s f block; the
            ``bias_hh`` block to 0), e.g. 1.0 (Gers et al. 2000; Jozefowicz et al. 2015).

    Example:
        >>> cell = LSTMCell(3, 5, variant="V")
        >>> y, state = cell(torch.randn(2, 3))
        >>> y.shape, state.c.shape
        (torch.Size([2, 5]), torch.Size([2, 5]))

    References: Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000 (forget gate);
    Gers & Schmidhuber 2000 (peepholes); Greff et al. 2015 (variants); Sak et al. 2014 (LSTMP).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        proj_size: int = 0,
        variant: str = "NP",
        peephole: bool | None = None,
        activation: ActivationSpec | None = None,
        cell_activation: ActivationSpec | None = None,
        forget_bias: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.proj_size = check_proj_size(proj_size, self.hidden_size)
        check_choice(variant.upper() if isinstance(variant, str) else variant, "variant", VARIANTS)
        self.variant = variant.upper()
        spec = dict(VARIANTS[self.variant])
        self.peephole = bool(spec.get("peephole", False) if peephole is None else peephole)
        self.input_gate = spec.get("input_gate", True)
        self.forget_gate = spec.get("forget_gate", True)
        self.output_gate = spec.get("output_gate", True)
        self.coupled = spec.get("coupled", False)
        self.gate_recurrence = spec.get("gate_recurrence", False)
        for argname, given in (("activation", activation), ("cell_activation", cell_activation)):
            forced = spec.get(argname)
            if forced is not None and given is not None and given != forced:
                raise ValueError(
                    f"{argname}: variant {self.variant} fixes it to {forced!r}, got {given!r}"
                )
        act = activation if activation is not None else spec.get("activation", "tanh")
        cact = (
            cell_activation if cell_activation is not None else spec.get("cell_activation", "tanh")
        )
        self.activation, self.activation_name = resolve_activation(act)
        self.cell_activation, self.cell_activation_name = resolve_activation(
            cact, argument="cell_activation"
        )
        self.bias = bool(bias)
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        if self.forget_bias is not None and not (self.forget_gate and not self.coupled and bias):
            raise ValueError(
                f"forget_bias: variant {self.variant} (bias={bias}) has no forget-gate bias"
            )

        # Present gate blocks, in torch's order i, f, g, o.
        blocks = []
        if self.input_gate:
            blocks.append("i")
        if self.forget_gate and not self.coupled:
            blocks.append("f")
        blocks.append("g")
        if self.output_gate:
            blocks.append("o")
        self.blocks: tuple[str, ...] = tuple(blocks)
        self.sigmoid_gates: tuple[str, ...] = tuple(b for b in blocks if b != "g")
        H, P = hidden_size, (proj_size or hidden_size)
        self.output_size = P
        G = len(blocks)
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(G * H, P, **kw))
        self.bias_ih = nn.Parameter(torch.empty(G * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(G * H, **kw)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(P, H, **kw)) if proj_size else None
        self.weight_ci = (
            nn.Parameter(torch.empty(H, **kw)) if self.peephole and "i" in blocks else None
        )
        self.weight_cf = (
            nn.Parameter(torch.empty(H, **kw)) if self.peephole and "f" in blocks else None
        )
        self.weight_co = (
            nn.Parameter(torch.empty(H, **kw)) if self.peephole and "o" in blocks else None
        )
        self.weight_gg: nn.Parameter | None
        if self.gate_recurrence:
            n = len(self.sigmoid_gates) * H
            self.weight_gg = nn.Parameter(torch.empty(n, n, **kw))
            self.State = LSTMFGRState
        else:
            self.weight_gg = None
            self.State = LSTMState
        self.feedback_field = "h"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if self.forget_bias is not None:
            k = self.blocks.index("f")
            H = self.hidden_size
            with torch.no_grad():
                assert self.bias_ih is not None and self.bias_hh is not None
                self.bias_ih[k * H : (k + 1) * H] = self.forget_bias
                self.bias_hh[k * H : (k + 1) * H] = 0.0

    def state_sizes(self) -> dict[str, int]:
        sizes = {"h": self.output_size, "c": self.hidden_size}
        if self.gate_recurrence:
            sizes["gates"] = len(self.sigmoid_gates) * self.hidden_size
        return sizes

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        h_prev, c_prev = state.h, state.c
        pre = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(
            h_prev, self.weight_hh, self.bias_hh
        )  # (B, G*H)
        a = dict(zip(self.blocks, pre.chunk(len(self.blocks), dim=1)))
        if self.weight_gg is not None:
            rec = F.linear(state.gates, self.weight_gg).chunk(len(self.sigmoid_gates), dim=1)
            for name, r in zip(self.sigmoid_gates, rec):
                a[name] = a[name] + r
        f: Tensor | None  # an absent gate is the constant 1 (None)
        i = a.get("i")
        if i is not None:
            i = torch.sigmoid(i + self.weight_ci * c_prev if self.weight_ci is not None else i)
        if "f" in a:
            f = torch.sigmoid(
                a["f"] + self.weight_cf * c_prev if self.weight_cf is not None else a["f"]
            )
        elif self.coupled:
            assert i is not None
            f = 1.0 - i
        else:
            f = None
        g = self.activation(a["g"])
        c = (c_prev if f is None else f * c_prev) + (g if i is None else i * g)
        o = a.get("o")
        if o is not None:
            o = torch.sigmoid(o + self.weight_co * c if self.weight_co is not None else o)
        y = self.cell_activation(c)
        if o is not None:
            y = o * y
        if self.weight_hr is not None:
            y = F.linear(y, self.weight_hr)
        if self.weight_gg is not None:
            parts = {"i": i, "f": f, "o": o}
            gates = torch.cat([parts[n] for n in self.sigmoid_gates], dim=1)  # type: ignore[misc]
            return y, LSTMFGRState(y, c, gates)
        return y, LSTMState(y, c)

    def config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "bias": self.bias,
            "proj_size": self.proj_size,
            "variant": self.variant,
            "peephole": self.peephole,
            "activation": activation_config(self.activation_name, "activation"),
            "cell_activation": activation_config(self.cell_activation_name, "cell_activation"),
            "forget_bias": self.forget_bias,
        }
