"""Plain cells on torch's own fused RNN entry points (cuDNN on CUDA).

Where a cell's maths is torch.nn's (Elman without an output layer with tanh/relu = nn.RNN,
GRU with the reset after the product = nn.GRU, the LSTM without options = nn.LSTM), the cell's
own parameters go to ``torch.rnn_tanh`` / ``torch.rnn_relu`` / ``torch.gru`` / ``torch.lstm``,
the functions torch.nn's modules call: on CUDA that is cuDNN, so the result and the speed are
torch.nn's. Padded batches (``lengths``) go through the packed-sequence overloads, as
``nn.utils.rnn.pack_padded_sequence`` + torch.nn would. Gradients are torch's autograd.

The same calls run on CPU tensors (torch's native kernels), which is how the tests check this
path against the reference loop without a GPU.

Shapes: B batch, T time, I input, H hidden.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...cells.gru import GRUCell, GRUState
from ...cells.lstm import LSTMCell, LSTMState
from ...cells.simple import ElmanCell, ElmanState

# torch's function for each layer kind, looked up at call time (so a test can spy on it)
_ELMAN = {"tanh": "rnn_tanh", "relu": "rnn_relu"}


def torch_maths(cell: Any) -> bool:
    """Whether ``cell`` computes exactly what one torch.nn RNN/GRU/LSTM layer computes."""
    if type(cell) is ElmanCell:
        return cell.weight_ho is None and cell.activation_name in _ELMAN
    if type(cell) is GRUCell:
        return cell.reset == "after" and cell.activation_name == "tanh"
    if type(cell) is LSTMCell:
        return (
            cell.variant == "NP"
            and not cell.peephole
            and cell.activation_name == "tanh"
            and cell.cell_activation_name == "tanh"
            and cell.proj_size == 0
        )
    return False


def _params(cell: Any) -> list[Tensor]:
    weights = [cell.weight_ih, cell.weight_hh]
    if cell.bias_ih is not None:
        weights += [cell.bias_ih, cell.bias_hh]
    return weights


def _call(cell: Any, x: Tensor, hx: Any, lengths: Tensor | None) -> tuple[Tensor, Any]:
    """One layer, one direction, batch-first x (B, T, I); hx (1, B, H) or a pair of them."""
    fn: Any
    if type(cell) is LSTMCell:
        fn = torch.lstm
    elif type(cell) is GRUCell:
        fn = torch.gru
    else:
        fn = getattr(torch, _ELMAN[cell.activation_name])
    params, has_bias = _params(cell), cell.bias_ih is not None
    if lengths is None:
        out = fn(x, hx, params, has_bias, 1, 0.0, False, False, True)
        return out[0], out[1:] if type(cell) is LSTMCell else out[1]
    # cuDNN's packed layout wants sequences sorted by length; pack sorts and tells the order
    T = x.shape[1]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    order, unorder = packed.sorted_indices, packed.unsorted_indices
    assert order is not None and unorder is not None
    if isinstance(hx, tuple):
        hx = tuple(h.index_select(1, order) for h in hx)
    else:
        hx = hx.index_select(1, order)
    out = fn(packed.data, packed.batch_sizes, hx, params, has_bias, 1, 0.0, False, False)
    seq = type(packed)(out[0], packed.batch_sizes, order, unorder)
    y, _ = pad_packed_sequence(seq, batch_first=True, total_length=T)  # zeros past each end
    finals = tuple(h.index_select(1, unorder) for h in out[1:])
    return y, finals if type(cell) is LSTMCell else finals[0]


def run(cell: Any, x: Tensor, state: Any, lengths: Tensor | None) -> tuple[Tensor, Any]:
    """The kernel contract: ``(output (B, T, H), final_state)`` for a cell with torch's maths."""
    if type(cell) is LSTMCell:
        y, (h_n, c_n) = _call(cell, x, (state.h.unsqueeze(0), state.c.unsqueeze(0)), lengths)
        return y, LSTMState(h_n[0], c_n[0])
    y, h_n = _call(cell, x, state.h.unsqueeze(0), lengths)
    return y, (GRUState if type(cell) is GRUCell else ElmanState)(h_n[0])


def whole_module(module: Any, x: Tensor, states: list[Any], lengths: Tensor | None) -> Any:
    """A whole ``rnnlab.nn`` drop-in (every layer and direction) as torch.nn runs it: one call
    of torch's function with the module's flat weights, so on CUDA cuDNN does all layers at once
    (inter-layer dropout included) exactly as for the torch.nn module. Returns
    ``(output (B, T, D·H), final states per layer and direction)`` or None (then the drop-in
    runs its layers one by one): not a CUDA tensor, fast paths off, any cell not torch's maths
    or a subclass, recurrent dropout in training.
    """
    from .. import build, registry

    cells = module._cells
    if registry._device_type(x) != "cuda" or registry.lookup(cells[0]) is None:
        return None
    if not build.enabled():
        return None
    if not all(type(c) is type(cells[0]) and torch_maths(c) for c in cells):
        return None
    if getattr(module, "recurrent_dropout", 0.0) > 0 and module.training:
        return None
    lstm = type(cells[0]) is LSTMCell
    fn: Any
    if lstm:
        fn = torch.lstm
    elif type(cells[0]) is GRUCell:
        fn = torch.gru
    else:
        fn = getattr(torch, _ELMAN[cells[0].activation_name])
    hx: Any = torch.stack([s.h for s in states])  # (L·D, B, H)
    if lstm:
        hx = (hx, torch.stack([s.c for s in states]))
    flags = (module.bias, module.num_layers, module.dropout, module.training, module.bidirectional)
    weights = module._flat_weights
    if lengths is None:
        out = fn(x, hx, weights, *flags, True)
        y, finals = out[0], out[1:]
    else:
        T = x.shape[1]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        assert order is not None and unorder is not None
        hx = tuple(h.index_select(1, order) for h in hx) if lstm else hx.index_select(1, order)
        out = fn(packed.data, packed.batch_sizes, hx, weights, *flags)
        seq = type(packed)(out[0], packed.batch_sizes, order, unorder)
        y, _ = pad_packed_sequence(seq, batch_first=True, total_length=T)
        finals = tuple(h.index_select(1, unorder) for h in out[1:])
    if lstm:
        return y, [LSTMState(h, c) for h, c in zip(finals[0], finals[1])]
    state = GRUState if type(cells[0]) is GRUCell else ElmanState
    return y, [state(h) for h in finals[0]]
