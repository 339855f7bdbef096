"""Layer-normalised LSTM and GRU (Ba, Kiros & Hinton 2016, "Layer Normalization", Sec. 3.1/6.x).

Shapes: B batch, I input, H cells/hidden units, P projection (P = H without one).

Layer normalisation of a vector a (one row of the batch, n features), with gain g and bias b:

.. math::
    \\mathrm{LN}(a; g, b) = g \\odot \\frac{a - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + b, \\qquad
    \\mu = \\tfrac1n \\sum_j a_j, \\quad \\sigma^2 = \\tfrac1n \\sum_j (a_j - \\mu)^2

(the biased variance and ``eps`` inside the root, as ``torch.nn.LayerNorm``). As in the paper,
the input product W x and the recurrent product U h are normalised *separately*, each over its
whole gate vector (all gate blocks together), so their relative scale is learnt through the
gains; the LN biases take the place of the ordinary biases (``bias_ih``/``bias_hh`` are the β's).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_float
from .base import Cell, check_positive_int, check_proj_size
from .gru import GRUState
from .lstm import LSTMState

__all__ = ["LayerNormGRUCell", "LayerNormLSTMCell", "layer_norm_lstm_cell"]


def _reset_layer_norm_parameters(cell: nn.Module) -> None:
    """Gains 1, biases 0 (the normalisations start as the identity), weights U(-1/sqrt(H),
    1/sqrt(H)) as torch.nn's recurrent cells."""
    bound = 1.0 / math.sqrt(cell.hidden_size)  # type: ignore[arg-type]
    for name, p in cell.named_parameters():
        if name.startswith("gain"):
            nn.init.ones_(p)
        elif name.startswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.uniform_(p, -bound, bound)


class LayerNormLSTMCell(Cell):
    r"""LSTM with layer normalisation, one step (Ba et al. 2016, eqs. 20-22).

    .. math::
        a(t) &= \mathrm{LN}(W x(t); g_x, b_x) + \mathrm{LN}(U y(t-1); g_h, b_h)
            \qquad [a_i; a_f; a_g; a_o] \in \mathbb R^{4H} \\
        i &= \sigma(a_i + p_i \odot c(t-1)), \quad f = \sigma(a_f + p_f \odot c(t-1)), \quad
        \tilde h = \tanh(a_g) \\
        c(t) &= f \odot c(t-1) + i \odot \tilde h, \qquad o = \sigma(a_o + p_o \odot c(t)) \\
        y(t) &= W_r\,\big(o \odot \tanh(\mathrm{LN}(c(t); g_c, b_c))\big)

    The state carries the *un-normalised* c(t) (the paper normalises c only where it enters
    tanh). How it combines with :class:`~rnnlab.cells.LSTMCell`'s options (the cell, and the
    drop-in ``rnnlab.nn.LSTM(..., layer_norm=True)``, which builds it through
    :func:`layer_norm_lstm_cell`), each tested against these equations or for its error
    (tests/test_layernorm_combinations.py):

    ==============================  ========================================================
    option                          with layer norm
    ==============================  ========================================================
    ``peephole=True``               works: p_i, p_f (on c(t-1)) and p_o (on the
                                    un-normalised c(t)) are added *after* the normalisation
                                    (they are not part of W x or U h)
    ``variant="V"`` (drop-in)       the same (``peephole=`` overrides the variant's setting)
    ``proj_size=P``                 works (LSTMP): y = W_r (o ⊙ tanh(LN(c))); U acts on the
                                    projected y(t-1) and U y(t-1) is normalised over its 4H
    peepholes and ``proj_size``     works, the two above together
    ``variant=`` NIG ... FGR        refused at construction (NIG, NFG, NOG, NIAF, NOAF, CIFG,
                                    FGR): ValueError "variant: layer_norm=True supports 'NP'
                                    and 'V' (peepholes), got 'CIFG'"
    ``[cell_]activation``           refused unless "tanh": ValueError "activation:
                                    layer_norm=True supports only 'tanh', got 'relu'"
    dropout, zoneout (wrappers)     work; on the engine without peepholes and projection,
                                    else on the reference loop
    ==============================  ========================================================

    Parameters (lecture symbol), gate blocks in torch's order i, f, g, o: ``weight_ih`` W
    (4H, I); ``weight_hh`` U (4H, P); ``bias_ih`` b_x and ``bias_hh`` b_h (4H,), the LN biases;
    ``gain_ih`` g_x and ``gain_hh`` g_h (4H,), the LN gains; ``gain_c`` g_c and ``bias_c`` b_c
    (H,) for c; ``weight_ci``/``weight_cf``/``weight_co`` the peepholes (H,); ``weight_hr`` W_r
    (P, H). Without ``bias`` no LN has a bias. Gains start at 1, LN biases at 0 (the paper),
    weights uniform(±1/√H) as torch.nn.LSTM.

    Args:
        input_size: I.
        hidden_size: H.
        bias: whether the LN biases exist.
        proj_size: P > 0 adds the projection W_r.
        peephole: add the peephole connections.
        forget_bias: if given, the f block of ``bias_ih`` starts at this value.
        eps: ε of every layer normalisation.

    Example:
        >>> cell = LayerNormLSTMCell(3, 5)
        >>> y, state = cell(torch.randn(2, 3))
        >>> y.shape, state.c.shape
        (torch.Size([2, 5]), torch.Size([2, 5]))

    Reference: J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer Normalization", arXiv:1607.06450.
    """

    State = LSTMState
    feedback_field = "h"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        proj_size: int = 0,
        peephole: bool = False,
        forget_bias: float | None = None,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.proj_size = check_proj_size(proj_size, self.hidden_size)
        if forget_bias is not None and not bias:
            raise ValueError("forget_bias: needs bias=True (it sets the f block of bias_ih)")
        self.bias = bool(bias)
        self.peephole = bool(peephole)
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        self.eps = check_float(eps, "eps", low=0.0, low_open=True)
        H, P = hidden_size, (proj_size or hidden_size)
        self.output_size = P
        # torch.nn.LSTM's four names first, so a drop-in keeps torch's parameter order.
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, P, **kw))
        self.bias_ih = nn.Parameter(torch.empty(4 * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * H, **kw)) if bias else None
        self.gain_ih = nn.Parameter(torch.empty(4 * H, **kw))
        self.gain_hh = nn.Parameter(torch.empty(4 * H, **kw))
        self.gain_c = nn.Parameter(torch.empty(H, **kw))
        self.bias_c = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(P, H, **kw)) if proj_size else None
        self.weight_ci = nn.Parameter(torch.empty(H, **kw)) if peephole else None
        self.weight_cf = nn.Parameter(torch.empty(H, **kw)) if peephole else None
        self.weight_co = nn.Parameter(torch.empty(H, **kw)) if peephole else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_layer_norm_parameters(self)
        if self.forget_bias is not None:
            H = self.hidden_size
            with torch.no_grad():
                assert self.bias_ih is not None
                self.bias_ih[H : 2 * H] = self.forget_bias

    def state_sizes(self) -> dict[str, int]:
        return {"h": self.output_size, "c": self.hidden_size}

    def gates(self, x: Tensor, y_prev: Tensor) -> Tensor:
        """a(t) = LN(W x) + LN(U y(t-1)), (B, 4H), before peepholes and nonlinearities."""
        n, eps = 4 * self.hidden_size, self.eps
        wx = F.layer_norm(F.linear(x, self.weight_ih), (n,), self.gain_ih, self.bias_ih, eps)
        uh = F.layer_norm(F.linear(y_prev, self.weight_hh), (n,), self.gain_hh, self.bias_hh, eps)
        return wx + uh

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, LSTMState]:
        c_prev = state.c
        a_i, a_f, a_g, a_o = self.gates(x, state.h).chunk(4, dim=1)  # (B, H) each
        if self.weight_ci is not None:
            a_i = a_i + self.weight_ci * c_prev
            a_f = a_f + self.weight_cf * c_prev
        c = torch.sigmoid(a_f) * c_prev + torch.sigmoid(a_i) * torch.tanh(a_g)
        if self.weight_co is not None:
            a_o = a_o + self.weight_co * c
        c_n = F.layer_norm(c, (self.hidden_size,), self.gain_c, self.bias_c, self.eps)
        y = torch.sigmoid(a_o) * torch.tanh(c_n)
        if self.weight_hr is not None:
            y = F.linear(y, self.weight_hr)
        return y, LSTMState(y, c)

    def config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "bias": self.bias,
            "proj_size": self.proj_size,
            "peephole": self.peephole,
            "forget_bias": self.forget_bias,
            "eps": self.eps,
        }


def layer_norm_lstm_cell(
    input_size: int,
    hidden_size: int,
    bias: bool = True,
    *,
    proj_size: int = 0,
    variant: str = "NP",
    peephole: bool | None = None,
    activation: str | None = None,
    cell_activation: str | None = None,
    forget_bias: float | None = None,
    device: Any = None,
    dtype: Any = None,
) -> LayerNormLSTMCell:
    """A :class:`LayerNormLSTMCell` from :class:`~rnnlab.cells.LSTMCell`'s arguments.

    Only the variants "NP" (default) and "V" (peepholes) combine with layer normalisation;
    the others (and non-tanh activations) raise ValueError instead of being silently ignored.
    """
    v = variant.upper() if isinstance(variant, str) else variant
    if v not in ("NP", "V"):
        raise ValueError(
            f"variant: layer_norm=True supports 'NP' and 'V' (peepholes), got {variant!r}"
        )
    for name, value in (("activation", activation), ("cell_activation", cell_activation)):
        if value not in (None, "tanh"):
            raise ValueError(f"{name}: layer_norm=True supports only 'tanh', got {value!r}")
    return LayerNormLSTMCell(
        input_size,
        hidden_size,
        bias,
        proj_size=proj_size,
        peephole=(v == "V") if peephole is None else bool(peephole),
        forget_bias=forget_bias,
        device=device,
        dtype=dtype,
    )


class LayerNormGRUCell(Cell):
    r"""GRU with layer normalisation, one step, in both reset forms.

    .. math::
        [a^x_r; a^x_z; a^x_n] &= \mathrm{LN}(W x(t); g_x, b_x) \\
        \text{reset="after":}\quad [a^h_r; a^h_z; a^h_n] &= \mathrm{LN}(U h(t-1); g_h, b_h), \\
        r = \sigma(a^x_r + a^h_r),\ z &= \sigma(a^x_z + a^h_z),\
        \tilde h = \tanh(a^x_n + r \odot a^h_n) \\
        \text{reset="before":}\quad [a^h_r; a^h_z] &= \mathrm{LN}([U_r; U_z] h(t-1);
            g_h^{rz}, b_h^{rz}), \\
        \tilde h &= \tanh\big(a^x_n + \mathrm{LN}(U_h (r \odot h(t-1)); g_h^n, b_h^n)\big) \\
        h(t) &= z \odot h(t-1) + (1 - z) \odot \tilde h

    Where the reset enters: in the "after" form (torch.nn.GRU's, Cho et al. v1) the whole
    recurrent product U h is one vector of 3H, normalised once, and r multiplies its
    *normalised* n block (LN bias included, as torch's b_hn sits inside the reset). In the
    "before" form (the lecture's, Cho et al. v3) U_h acts on r ⊙ h(t-1), which needs r first,
    so the recurrent product is normalised in two pieces: the r and z blocks together (2H) and
    the candidate's block U_h (r ⊙ h) on its own (H); ``gain_hh``/``bias_hh`` hold both pieces
    side by side.

    Parameters, torch's block order r, z, n: ``weight_ih`` W (3H, I); ``weight_hh`` U (3H, H);
    ``bias_ih``/``bias_hh`` (3H,) the LN biases; ``gain_ih``/``gain_hh`` (3H,) the LN gains.

    Args:
        input_size: I.
        hidden_size: H.
        bias: whether the LN biases exist.
        reset: ``"after"`` (default) or ``"before"``.
        eps: ε of every layer normalisation.

    Example:
        >>> cell = LayerNormGRUCell(3, 4, reset="before")
        >>> y, state = cell(torch.randn(2, 3))
        >>> y.shape
        torch.Size([2, 4])
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
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.output_size = hidden_size
        if reset not in ("after", "before"):
            raise ValueError(f"reset: expected 'after' or 'before', got {reset!r}")
        self.reset = reset
        self.bias = bool(bias)
        self.eps = check_float(eps, "eps", low=0.0, low_open=True)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H, **kw))
        self.bias_ih = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.gain_ih = nn.Parameter(torch.empty(3 * H, **kw))
        self.gain_hh = nn.Parameter(torch.empty(3 * H, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_layer_norm_parameters(self)

    def state_sizes(self) -> dict[str, int]:
        return {"h": self.hidden_size}

    def step(self, x: Tensor, state: GRUState) -> tuple[Tensor, GRUState]:
        return self.step_with_recurrent_input(x, state.h, state.h)

    def step_with_recurrent_input(
        self, x: Tensor, h_prev: Tensor, h_in: Tensor
    ) -> tuple[Tensor, GRUState]:
        """The step with ``h_in`` in the products U h and ``h_prev`` in the interpolation.

        They differ under variational dropout (h_in = m ⊙ h(t-1): Gal & Ghahramani drop the
        recurrent connections, not the carried state); :meth:`step` passes h(t-1) twice.
        """
        H, eps = self.hidden_size, self.eps
        b_ih, b_hh = self.bias_ih, self.bias_hh
        gi = F.layer_norm(F.linear(x, self.weight_ih), (3 * H,), self.gain_ih, b_ih, eps)
        if self.reset == "after":
            gh = F.layer_norm(F.linear(h_in, self.weight_hh), (3 * H,), self.gain_hh, b_hh, eps)
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
            n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        else:
            rz = F.layer_norm(
                F.linear(h_in, self.weight_hh[: 2 * H]),
                (2 * H,),
                self.gain_hh[: 2 * H],
                None if b_hh is None else b_hh[: 2 * H],
                eps,
            )
            r = torch.sigmoid(gi[:, :H] + rz[:, :H])
            z = torch.sigmoid(gi[:, H : 2 * H] + rz[:, H:])
            hn = F.layer_norm(
                F.linear(r * h_in, self.weight_hh[2 * H :]),
                (H,),
                self.gain_hh[2 * H :],
                None if b_hh is None else b_hh[2 * H :],
                eps,
            )
            n = torch.tanh(gi[:, 2 * H :] + hn)
        h = z * h_prev + (1.0 - z) * n
        return h, GRUState(h)

    def config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "bias": self.bias,
            "reset": self.reset,
            "eps": self.eps,
        }
