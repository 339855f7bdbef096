"""Drop-in replacements for ``torch.nn.RNN``, ``LSTM`` and ``GRU``.

Same constructor arguments (each class its own, in torch's positional order), same forward
signature and return layout, same parameter names and order, so
``load_state_dict(torch_module.state_dict())`` works unchanged. With dropout 0 the outputs,
states and gradients equal torch.nn's. Extra keyword arguments switch on the lecture's options
(``peephole=True`` / ``variant=`` for LSTM, ``reset="before"`` for GRU, other activations); the
parameters these add come after torch's in each layer's group.

torch.nn's edges too (docs/design/0012-dropin-fidelity.md): its exception types and phrases
(after rnnlab's own message; an exception of both types where torch's and rnnlab's differ),
batch size 0, ``dtype``/``device`` names, and torch.nn.RNNBase's weight surface
(``_flat_weights``, ``_flat_weights_names``, ``all_weights``, ``flatten_parameters``,
``reset_parameters``), so that
weight_norm, spectral_norm, parametrize and prune work, on the engine.

Inside, each layer and direction is an rnnlab cell run by the reference unroll (or the engine's
kernel for it); the flags exist only here, at torch's boundary (DESIGN: composition over flags).

Shapes: L layers, D directions (1 or 2), B batch, T time, I input, H hidden, P projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._nn_base import _RNNBase, _SingleStateMixin
from ._nn_base import check_layer_norm as _check_layer_norm
from ._nn_base import check_recurrent_dropout as _check_recurrent_dropout
from ._nn_compat import ABSENT, check_hx, check_nonlinearity, refuse_proj_size
from .cells.base import Cell
from .cells.gru import GRUCell
from .cells.layernorm import LayerNormGRUCell, layer_norm_lstm_cell
from .cells.lstm import LSTMCell, LSTMFGRState, LSTMState
from .cells.simple import ElmanCell

__all__ = ["GRU", "LSTM", "RNN"]


class RNN(_SingleStateMixin, _RNNBase):
    """Elman RNN with torch.nn.RNN's interface; ``nonlinearity`` may be any rnnlab activation
    name (torch accepts only ``"tanh"`` and ``"relu"``). ``recurrent_dropout=p``: Keras-style
    variational dropout on h(t-1) in the recurrent product (one mask per sequence and call, the
    same at every step; training only; see :class:`rnnlab.cells.VariationalDropoutCell`).

    Example:
        >>> import rnnlab
        >>> rnn = rnnlab.nn.RNN(10, 20, 2)
        >>> out, h_n = rnn(torch.randn(5, 3, 10))
        >>> out.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        recurrent_dropout: float = 0.0,
        proj_size: Any = ABSENT,
    ) -> None:
        refuse_proj_size(proj_size)
        check_nonlinearity(nonlinearity)
        self.recurrent_dropout = _check_recurrent_dropout(recurrent_dropout)
        self.nonlinearity = nonlinearity
        self.mode = "RNN_" + nonlinearity.upper()
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            {"activation": nonlinearity},
        )

    def _make_cell(self, in_size: int, device: Any, dtype: Any, kw: dict[str, Any]) -> Cell:
        return ElmanCell(
            in_size, self.hidden_size, bias=self.bias, device=device, dtype=dtype, **kw
        )


class GRU(_SingleStateMixin, _RNNBase):
    """GRU with torch.nn.GRU's interface. Extra: ``reset="before"`` (the lecture's form) and
    ``activation`` (σ_h of the candidate). ``layer_norm=True``: each layer is a
    :class:`rnnlab.cells.LayerNormGRUCell`, with parameters ``weight_ih_l{k}``,
    ``weight_hh_l{k}``, ``bias_ih_l{k}``/``bias_hh_l{k}`` (the LN biases) and
    ``gain_ih_l{k}``/``gain_hh_l{k}`` (the LN gains). ``recurrent_dropout=p``: Keras-style
    variational dropout on h(t-1) in the recurrent products (one mask per sequence and call).

    Example:
        >>> import rnnlab
        >>> gru = rnnlab.nn.GRU(10, 20, batch_first=True, reset="before")
        >>> out, h_n = gru(torch.randn(3, 5, 10))
        >>> out.shape
        torch.Size([3, 5, 20])
    """

    mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        reset: str = "after",
        activation: str = "tanh",
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        proj_size: Any = ABSENT,
    ) -> None:
        refuse_proj_size(proj_size)
        self.layer_norm = _check_layer_norm(layer_norm)
        self.recurrent_dropout = _check_recurrent_dropout(recurrent_dropout)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            {"reset": reset, "activation": activation},
        )

    def _make_cell(self, in_size: int, device: Any, dtype: Any, kw: dict[str, Any]) -> Cell:
        if self.layer_norm:
            if kw["activation"] != "tanh":
                raise ValueError(
                    f"activation: layer_norm=True supports only 'tanh', got {kw['activation']!r}"
                )
            H, reset = self.hidden_size, kw["reset"]
            return LayerNormGRUCell(in_size, H, self.bias, reset=reset, device=device, dtype=dtype)
        return GRUCell(in_size, self.hidden_size, self.bias, device=device, dtype=dtype, **kw)


class LSTM(_RNNBase):
    """LSTM with torch.nn.LSTM's interface (``proj_size`` included). Extra: ``variant`` (Greff
    et al.: "V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "CIFG", "FGR"; default "NP" is torch's),
    ``peephole``, ``activation``, ``cell_activation``, ``forget_bias``. With ``variant="FGR"`` the
    previous gate activations start at zero and are not part of ``(h_n, c_n)``.

    ``layer_norm=True``: each layer is a :class:`rnnlab.cells.LayerNormLSTMCell` (Ba et al.
    2016), with parameters ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (the LN biases of W x and U h), ``gain_ih_l{k}``, ``gain_hh_l{k}`` (their LN
    gains), ``gain_c_l{k}``, ``bias_c_l{k}`` (LN of c), then ``weight_hr_l{k}`` and the
    peepholes where present; it combines with ``proj_size`` and ``variant="V"``/``peephole``,
    and refuses the other variants. ``recurrent_dropout=p``: Keras-style variational dropout
    on h(t-1) in the recurrent products (one mask per sequence and call, the same at every
    step; training only). To keep a mask across truncated-BPTT windows use
    ``Recurrent(cell, dropout_state=p)``, whose state carries it.

    Example:
        >>> import rnnlab
        >>> lstm = rnnlab.nn.LSTM(10, 20, 2, bidirectional=True, peephole=True)
        >>> out, (h_n, c_n) = lstm(torch.randn(5, 3, 10))
        >>> out.shape, h_n.shape
        (torch.Size([5, 3, 40]), torch.Size([4, 3, 20]))
    """

    mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        *,
        variant: str = "NP",
        peephole: bool | None = None,
        activation: str | None = None,
        cell_activation: str | None = None,
        forget_bias: float | None = None,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
    ) -> None:
        self.layer_norm = _check_layer_norm(layer_norm)
        self.recurrent_dropout = _check_recurrent_dropout(recurrent_dropout)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            {
                "variant": variant,
                "peephole": peephole,
                "activation": activation,
                "cell_activation": cell_activation,
                "forget_bias": forget_bias,
            },
        )

    def _make_cell(self, in_size: int, device: Any, dtype: Any, kw: dict[str, Any]) -> Cell:
        if self.layer_norm:
            return layer_norm_lstm_cell(
                in_size, self.hidden_size, self.bias, proj_size=self.proj_size,
                device=device, dtype=dtype, **kw,
            )  # fmt: skip
        return LSTMCell(
            in_size,
            self.hidden_size,
            self.bias,
            proj_size=self.proj_size,
            device=device,
            dtype=dtype,
            **kw,
        )

    def _validate_hx(self, hx: Any, B: int, x: Tensor) -> None:
        check_hx(self, hx[0], B, self._out, x, "hx[0] (h_0)", "hidden[0]")
        check_hx(self, hx[1], B, self.hidden_size, x, "hx[1] (c_0)", "hidden[1]")

    def _initial(self, hx: Any, B: int, x: Tensor) -> list[Any]:
        if hx is None:
            return [c.initial_state(B, device=x.device, dtype=x.dtype) for c in self._cells]
        h0, c0 = hx
        states: list[Any] = []
        for k, cell in enumerate(self._cells):
            if cell.State is LSTMFGRState:
                g = torch.zeros(B, cell.state_sizes()["gates"], dtype=x.dtype, device=x.device)
                states.append(LSTMFGRState(h0[k], c0[k], g))
            else:
                states.append(LSTMState(h0[k], c0[k]))
        return states

    def _final(self, states: list[Any]) -> Any:
        return torch.stack([s.h for s in states], 0), torch.stack([s.c for s in states], 0)
