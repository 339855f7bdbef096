"""The shared body of the drop-ins in :mod:`rnnlab.nn`: torch.nn's checks and errors, its
weight surface and the forward loop over rnnlab cells (split from nn.py by job, issue 16).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch import nn as tnn
from torch.nn.utils.rnn import PackedSequence

from ._checks import check_probability
from ._nn_compat import (
    AttributeTypeError,
    RuntimeValueError,
    check_config,
    check_hx,
    check_hx_kind,
    check_input,
    empty_batch,
    factory_kwargs,
    fail,
)
from .cells.base import Cell
from .cells.dropout import VariationalDropoutCell
from .engine.gpu import cudnn as gpu_cudnn
from .layers._utils import check_lengths, repack, unpack
from .layers.dispatch import run

__all__ = ["_RNNBase", "_SingleStateMixin", "check_layer_norm", "check_recurrent_dropout"]


class _RNNBase(tnn.Module):
    """What RNN, GRU and LSTM share: torch.nn's checks and errors, its weight surface
    (``_flat_weights``, ``_flat_weights_names``, ``all_weights``) and the forward loop.

    Not a subclass of ``torch.nn.RNNBase`` (docs/design/0012-dropin-fidelity.md says why).
    """

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
        num_layers, proj_size = check_config(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size
        )
        factory = factory_kwargs(device, dtype)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = proj_size
        num_dir = 2 if bidirectional else 1
        out = proj_size if proj_size > 0 else hidden_size
        self._cells: list[Cell] = []
        self._names: list[list[tuple[str, str]]] = []
        for layer in range(num_layers):
            for d in range(num_dir):
                in_size = input_size if layer == 0 else out * num_dir
                cell = self._make_cell(in_size, factory["device"], factory["dtype"], cell_kwargs)
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                names = []
                for pname, p in cell.named_parameters():
                    self.register_parameter(pname + suffix, p)
                    names.append((pname, pname + suffix))
                self._cells.append(cell)
                self._names.append(names)
        self._index_weights()

    def _make_cell(self, in_size: int, device: Any, dtype: Any, kw: dict[str, Any]) -> Cell:
        raise NotImplementedError  # pragma: no cover

    # --- the weight surface -------------------------------------------------------------------
    def _index_weights(self) -> None:
        # torch.nn.RNNBase's names: one group per layer and direction, torch's weights first
        # (w_ih, w_hh, b_ih, b_hh, w_hr), then rnnlab's extras (peepholes, ...).
        self._all_weights = [[name for _, name in names] for names in self._names]
        self._flat_weights_names = [name for group in self._all_weights for name in group]
        self._slots = [
            (cell, pname, name)
            for cell, names in zip(self._cells, self._names)
            for pname, name in names
        ]

    def _sync_weights(self) -> None:
        """The one place where the cells (and so the reference loop and the engine) get their
        weights: this module's current value of each, a Parameter or, under weight_norm,
        spectral_norm, pruning, a parametrisation or ``torch.func.functional_call``, the
        re-parametrised tensor. An identity check per weight when nothing changed."""
        params = self._parameters
        for cell, pname, name in self._slots:
            w = params.get(name)
            if w is None:
                # Not a Parameter any more: weight_norm, spectral_norm and prune keep the
                # computed tensor as a plain attribute, parametrize as a property.
                w = getattr(self, name)
            if cell._parameters.get(pname) is not w:
                cell._parameters[pname] = w

    def _sync(self) -> None:
        # The name rnnlab.dynamics (as_map of a drop-in) calls before reading the cells.
        self._sync_weights()

    @property
    def _flat_weights(self) -> list[Tensor | None]:
        """The weights in ``_flat_weights_names`` order, as torch.nn.RNNBase's attribute:
        Parameters, or the re-parametrised tensors where a weight is re-parametrised."""
        return [getattr(self, n, None) for n in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """The weights grouped by layer and direction (torch.nn.RNNBase.all_weights)."""
        return [[getattr(self, n) for n in group] for group in self._all_weights]

    def reset_parameters(self) -> None:
        """Re-initialise every weight as at construction (torch.nn.RNNBase.reset_parameters):
        each cell's own initialisation, which for torch's options is torch's uniform(±1/√H);
        with ``layer_norm=True`` the gains restart at 1 and the LN biases at 0, and
        ``forget_bias`` is applied again. Re-parametrised weights (weight_norm, ...) keep
        their parametrisation; their underlying Parameters are not touched."""
        with torch.no_grad():
            for cell, names in zip(self._cells, self._names):
                for pname, name in names:
                    w = self._parameters.get(name)
                    if w is not None:  # the module's own Parameter, re-initialised in place
                        cell._parameters[pname] = w
                cell.reset_parameters()  # type: ignore[operator]
        self._sync_weights()

    def flatten_parameters(self) -> None:
        """No-op: torch.nn uses it to pack weights for cuDNN; rnnlab's cells read the weights
        as they are, so there is nothing to pack."""

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # .to(), .double(), .cuda() ... may replace the Parameter objects: re-point the cells.
        ret = super()._apply(fn, recurse)
        self._sync_weights()
        return ret

    def __getstate__(self) -> dict[str, Any]:
        # After prune.remove / remove_weight_norm the cells may still hold the last computed
        # (non-leaf) tensor; hand them the Parameter again so copy and pickle work as torch's.
        self._sync_weights()
        return super().__getstate__()  # type: ignore[no-any-return]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_slots" not in state:  # pickled before the weight surface existed
            self._index_weights()

    # --- checks ---------------------------------------------------------------------------------
    @property
    def _num_dir(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _out(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @property
    def _torch_name(self) -> str:
        # The name in torch.nn's messages ("RNN: Expected input to be 2D or 3D ..."); not
        # type(self).__name__, which parametrize changes to "ParametrizedLSTM".
        return self.mode if self.mode in ("LSTM", "GRU") else "RNN"

    def _validate_hx(self, hx: Any, B: int, x: Tensor) -> None:
        raise NotImplementedError  # pragma: no cover

    def _initial(self, hx: Any, B: int, x: Tensor) -> list[Any]:
        raise NotImplementedError  # pragma: no cover

    def _final(self, states: list[Any]) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _prepare(
        self, input: Any, hx: Any
    ) -> tuple[Tensor, Any, Tensor | None, PackedSequence | None, bool]:
        """Validate ``input`` and ``hx`` as torch.nn does; return x (B, T, I) batch-first, hx
        with a batch dimension, lengths, the PackedSequence (or None), unbatched."""
        packed = input if isinstance(input, PackedSequence) else None
        unbatched = False
        lengths_cpu = None
        if packed is not None:
            check_hx_kind(self, hx, True)
            x, lengths_cpu = unpack(packed)  # (B, T, I), original order
        elif isinstance(input, Tensor):
            if input.dim() not in (2, 3):
                layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
                tail = " tensor" if self.mode not in ("LSTM", "GRU") else ""
                fail(
                    ValueError,
                    f"input: expected {layout} or unbatched (T, I) with I={self.input_size}, "
                    f"got {tuple(input.shape)}",
                    f"{self._torch_name}: Expected input to be 2D or 3D, got {input.dim()}D"
                    f"{tail} instead",
                )
            unbatched = input.dim() == 2
            check_hx_kind(self, hx, not unbatched)
            if unbatched:
                x = input.unsqueeze(0)  # (1, T, I)
                if hx is not None:
                    hx = (
                        tuple(h.unsqueeze(1) for h in hx)
                        if isinstance(hx, (tuple, list))
                        else hx.unsqueeze(1)
                    )
            else:
                x = input if self.batch_first else input.transpose(0, 1)  # (B, T, I)
        else:
            fail(
                AttributeTypeError,
                f"input: expected a Tensor or PackedSequence, got {type(input).__name__}",
                f"'{type(input).__name__}' object has no attribute 'dim'",
            )
        check_input(self, x)
        B = x.shape[0]
        if hx is not None:
            self._validate_hx(hx, B, x)
        if x.shape[1] < 1:
            fail(
                RuntimeValueError,
                f"input: expected at least one time step, got {x.shape[1]}",
                "Expected sequence length to be larger than 0 in RNN",
            )
        lengths = None
        if packed is not None:
            lengths = check_lengths(lengths_cpu, B, x.shape[1], x.device)
        return x, hx, lengths, packed, unbatched

    def forward(self, input: Tensor | PackedSequence, hx: Any = None) -> tuple[Any, Any]:
        """As torch.nn's: ``input`` (T, B, I) / (B, T, I) / (T, I) or a PackedSequence."""
        self._sync_weights()
        x, hx, lengths, packed, unbatched = self._prepare(input, hx)
        B = x.shape[0]
        if B == 0:
            out0, h_0 = empty_batch(self, x, hx)
            return (out0 if self.batch_first else out0.transpose(0, 1)), h_0
        states = self._initial(hx, B, x)
        D = self._num_dir
        layer_in = x
        finals: list[Any] = []
        # CUDA, torch's maths: the whole module in one cuDNN call, as torch.nn (docs/design/0014)
        whole = gpu_cudnn.whole_module(self, x, states, lengths)
        if whole is not None:
            layer_in, finals = whole
        for layer in range(self.num_layers if whole is None else 0):
            outs = []
            for d in range(D):
                k = layer * D + d
                cell, s0 = self._cells[k], states[k]
                p_rec: float = getattr(self, "recurrent_dropout", 0.0)
                if p_rec > 0 and self.training:
                    # Keras's recurrent_dropout: a fresh mask on h(t-1) per call (sequence).
                    cell = VariationalDropoutCell(cell, 0.0, p_rec)
                    s0 = cell.with_masks(s0)
                res = run(cell, layer_in, s0, lengths, reverse=d == 1)
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
        # torch.nn.RNNBase's order and conditions, so reprs of the two read the same.
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        # rnnlab's extras, only where set (so the default repr stays torch.nn's)
        if getattr(self, "layer_norm", False):
            s += ", layer_norm=True"
        if getattr(self, "recurrent_dropout", 0.0):
            s += f", recurrent_dropout={self.recurrent_dropout}"
        return s


class _SingleStateMixin:
    def _validate_hx(self, hx: Any, B: int, x: Tensor) -> None:
        check_hx(self, hx, B, self.hidden_size, x, "hx", "hidden")  # type: ignore[attr-defined]

    def _initial(self, hx: Any, B: int, x: Tensor) -> list[Any]:
        n = self.num_layers * self._num_dir  # type: ignore[attr-defined]
        if hx is None:
            return [c.initial_state(B, device=x.device, dtype=x.dtype) for c in self._cells]  # type: ignore[attr-defined]
        return [self._cells[k].State(hx[k]) for k in range(n)]  # type: ignore[attr-defined]

    def _final(self, states: list[Any]) -> Any:
        return torch.stack([s.h for s in states], 0)


def check_recurrent_dropout(p: Any) -> float:
    return check_probability(p, "recurrent_dropout")


def check_layer_norm(value: Any) -> bool:
    """``layer_norm`` as a bool: a string such as ``"False"`` must not switch it on."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"layer_norm: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)
