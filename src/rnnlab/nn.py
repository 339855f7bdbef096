"""Drop-in replacements for ``torch.nn.RNN``, ``LSTM`` and ``GRU``.

Same constructor arguments (each class its own, in torch's positional order), same forward
signature and return layout, same parameter names and order, so
``load_state_dict(torch_module.state_dict())`` works unchanged. With dropout 0 the outputs,
states and gradients equal torch.nn's. Extra keyword arguments switch on the lecture's options
(``peephole=True`` / ``variant=`` for LSTM, ``reset="before"`` for GRU, other activations); the
parameters these add come after torch's in each layer's group.

Inside, each layer and direction is an rnnlab cell run by the reference unroll (or the engine's
kernel for it); the flags exist only here, at torch's boundary (DESIGN: composition over flags).

Shapes: L layers, D directions (1 or 2), B batch, T time, I input, H hidden, P projection.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch import nn as tnn
from torch.nn.utils.rnn import PackedSequence

from .cells.base import Cell, check_positive_int
from .cells.dropout import VariationalDropoutCell
from .cells.gru import GRUCell
from .cells.layernorm import LayerNormGRUCell, layer_norm_lstm_cell
from .cells.lstm import LSTMCell, LSTMFGRState, LSTMState
from .cells.simple import ElmanCell
from .layers._utils import check_against_parameters, check_lengths, repack, unpack
from .layers.recurrent import unroll

__all__ = ["GRU", "LSTM", "RNN"]


class _RNNBase(tnn.Module):
    mode: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        proj_size: int,
        device: Any,
        dtype: Any,
        cell_kwargs: dict[str, Any],
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.num_layers = check_positive_int(num_layers, "num_layers")
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout <= 1
        ):
            raise ValueError(f"dropout: expected a number in [0, 1], got {dropout!r}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = check_positive_int(proj_size, "proj_size", allow_zero=True)
        num_dir = 2 if bidirectional else 1
        out = proj_size if proj_size > 0 else hidden_size
        self._cells: list[Cell] = []
        self._names: list[list[tuple[str, str]]] = []
        for layer in range(num_layers):
            for d in range(num_dir):
                in_size = input_size if layer == 0 else out * num_dir
                cell = self._make_cell(in_size, device, dtype, cell_kwargs)
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                names = []
                for pname, p in cell.named_parameters():
                    self.register_parameter(pname + suffix, p)
                    names.append((pname, pname + suffix))
                self._cells.append(cell)
                self._names.append(names)

    def _make_cell(self, in_size: int, device: Any, dtype: Any, kw: dict[str, Any]) -> Cell:
        raise NotImplementedError  # pragma: no cover

    def _sync(self) -> None:
        # The cells are not submodules (the parameter names must be torch's); re-point them at
        # this module's parameters in case .to(), load_state_dict(assign=True) or similar
        # replaced the Parameter objects.
        for cell, names in zip(self._cells, self._names):
            for pname, name in names:
                p = self._parameters[name]
                if cell._parameters[pname] is not p:
                    cell._parameters[pname] = p

    def flatten_parameters(self) -> None:
        """No-op, for compatibility with code written for cuDNN."""

    @property
    def _num_dir(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _out(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def _check_hx(self, hx: Tensor, B: int, size: int, x: Tensor, name: str) -> None:
        want = (self.num_layers * self._num_dir, B, size)
        if not isinstance(hx, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(hx).__name__}")
        if tuple(hx.shape) != want:
            raise ValueError(f"{name}: expected shape {want}, got {tuple(hx.shape)}")
        if hx.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (as input), got {hx.dtype}")
        if hx.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (as input), got {hx.device}")

    def _initial(self, hx: Any, B: int, x: Tensor) -> list[Any]:
        raise NotImplementedError  # pragma: no cover

    def _final(self, states: list[Any]) -> Any:
        raise NotImplementedError  # pragma: no cover

    def forward(self, input: Tensor | PackedSequence, hx: Any = None) -> tuple[Any, Any]:
        """As torch.nn's: ``input`` (T, B, I) / (B, T, I) / (T, I) or a PackedSequence."""
        self._sync()
        packed = input if isinstance(input, PackedSequence) else None
        unbatched = False
        lengths = None
        if packed is not None:
            x, lengths_cpu = unpack(packed)  # (B, T, I), original order
        else:
            if not isinstance(input, Tensor):
                raise TypeError(
                    f"input: expected a Tensor or PackedSequence, got {type(input).__name__}"
                )
            if input.dim() == 2:
                unbatched = True
                x = input.unsqueeze(0)  # (1, T, I)
            elif input.dim() == 3:
                x = input if self.batch_first else input.transpose(0, 1)  # (B, T, I)
            else:
                layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
                raise ValueError(
                    f"input: expected {layout} or unbatched (T, I) with I={self.input_size}, "
                    f"got {tuple(input.shape)}"
                )
        if not x.is_floating_point():
            raise TypeError(f"input: expected a floating-point tensor, got dtype {x.dtype}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input: expected {self.input_size} features, got {x.shape[-1]}")
        if x.shape[1] < 1:
            raise ValueError(f"input: expected at least one time step, got {tuple(x.shape)}")
        check_against_parameters(x, self, "input")
        B, T = x.shape[0], x.shape[1]
        if packed is not None:
            lengths = check_lengths(lengths_cpu, B, T, x.device)
        if unbatched and hx is not None:
            hx = tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
        states = self._initial(hx, B, x)
        D = self._num_dir
        layer_in = x
        finals: list[Any] = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                cell, s0 = self._cells[k], states[k]
                p_rec: float = getattr(self, "recurrent_dropout", 0.0)
                if p_rec > 0 and self.training:
                    # Keras's recurrent_dropout: a fresh mask on h(t-1) per call (sequence).
                    cell = VariationalDropoutCell(cell, 0.0, p_rec)
                    s0 = cell.with_masks(s0)
                res = unroll(cell, layer_in, s0, lengths, reverse=d == 1)
                outs.append(cast(Tensor, res.output))
                finals.append(res.state)
            layer_out = outs[0] if D == 1 else torch.cat(outs, dim=-1)  # (B, T, D*out)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_out = tnn.functional.dropout(layer_out, self.dropout, True)
            layer_in = layer_out
        h_n = self._final(finals)
        if packed is not None:
            assert lengths is not None
            return repack(layer_in, lengths, packed), h_n
        if unbatched:
            h_n = tuple(h.squeeze(1) for h in h_n) if isinstance(h_n, tuple) else h_n.squeeze(1)
            return layer_in.squeeze(0), h_n
        out = layer_in if self.batch_first else layer_in.transpose(0, 1)
        return out, h_n

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s


class _SingleStateMixin:
    def _initial(self, hx: Any, B: int, x: Tensor) -> list[Any]:
        n = self.num_layers * self._num_dir  # type: ignore[attr-defined]
        if hx is None:
            return [c.initial_state(B, device=x.device, dtype=x.dtype) for c in self._cells]  # type: ignore[attr-defined]
        self._check_hx(hx, B, self.hidden_size, x, "hx")  # type: ignore[attr-defined]
        return [self._cells[k].State(hx[k]) for k in range(n)]  # type: ignore[attr-defined]

    def _final(self, states: list[Any]) -> Any:
        return torch.stack([s.h for s in states], 0)


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
    ) -> None:
        self.recurrent_dropout = _check_recurrent_dropout(recurrent_dropout)
        self.nonlinearity = nonlinearity
        self.mode = "RNN_" + str(nonlinearity).upper()
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
    ) -> None:
        self.layer_norm = bool(layer_norm)
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
        self.layer_norm = bool(layer_norm)
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

    def _initial(self, hx: Any, B: int, x: Tensor) -> list[Any]:
        if hx is None:
            return [c.initial_state(B, device=x.device, dtype=x.dtype) for c in self._cells]
        if not isinstance(hx, tuple) or len(hx) != 2:
            raise TypeError(f"hx: expected a tuple (h_0, c_0), got {type(hx).__name__}")
        h0, c0 = hx
        states: list[Any] = []
        self._check_hx(h0, B, self._out, x, "hx[0] (h_0)")
        self._check_hx(c0, B, self.hidden_size, x, "hx[1] (c_0)")
        for k, cell in enumerate(self._cells):
            if cell.State is LSTMFGRState:
                g = torch.zeros(B, cell.state_sizes()["gates"], dtype=x.dtype, device=x.device)
                states.append(LSTMFGRState(h0[k], c0[k], g))
            else:
                states.append(LSTMState(h0[k], c0[k]))
        return states

    def _final(self, states: list[Any]) -> Any:
        return torch.stack([s.h for s in states], 0), torch.stack([s.c for s in states], 0)


def _check_recurrent_dropout(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"recurrent_dropout: expected a probability in [0, 1), got {p!r}")
    return float(p)
