"""Bidirectional RNNs: a forward and a backward sub-RNN whose outputs are combined.

Shapes: B batch, T time, I input, H forward output, G backward output, O merged output.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..cells.activations import ActivationSpec, resolve_activation
from ..cells.base import check_positive_int
from ._utils import layer_input_shape, sequence_input, sequence_output
from .recurrent import Recurrent


class BidirectionalState(NamedTuple):
    """The two sub-RNNs' states."""

    forward: Any
    backward: Any


class BidirectionalOutput(nn.Module):
    r"""The lecture's combination: y(t) = σ_y(W_yh h(t) + W_yg g(t) + b_y).

    ``weight_yh`` is W_yh (O, H) from the forward sub-RNN h, ``weight_yg`` W_yg (O, G) from the
    backward sub-RNN g, ``bias`` b_y.
    """

    def __init__(
        self,
        forward_size: int,
        backward_size: int,
        output_size: int,
        *,
        activation: ActivationSpec = "identity",
    ) -> None:
        super().__init__()
        self.forward_size = check_positive_int(forward_size, "forward_size")
        self.backward_size = check_positive_int(backward_size, "backward_size")
        self.output_size = check_positive_int(output_size, "output_size")
        self.activation, self.activation_name = resolve_activation(activation)
        bound = 1.0 / (forward_size + backward_size) ** 0.5
        self.weight_yh = nn.Parameter(
            torch.empty(output_size, forward_size).uniform_(-bound, bound)
        )
        self.weight_yg = nn.Parameter(
            torch.empty(output_size, backward_size).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(output_size))

    def forward(self, h: Tensor, g: Tensor) -> Tensor:
        return self.activation(F.linear(h, self.weight_yh, self.bias) + F.linear(g, self.weight_yg))


_MERGES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "concat": lambda h, g: torch.cat([h, g], dim=2),  # features, or channels of frames
    "sum": lambda h, g: h + g,
    "mean": lambda h, g: 0.5 * (h + g),
    "mul": lambda h, g: h * g,
}


class Bidirectional(nn.Module):
    """A forward sub-RNN and a backward sub-RNN over the same sequence (Schuster & Paliwal 1997).

    Args:
        forward_layer: a :class:`Recurrent` running forwards.
        backward_layer: a :class:`Recurrent` for the backward direction (it always runs reversed
            here, within each sequence's length). Default: a fresh copy of ``forward_layer`` with
            its own, re-initialised parameters.
        merge: ``"concat"`` (default, torch's convention: O = H + G), ``"sum"``, ``"mean"``,
            ``"mul"``, or a module ``(h, g) -> y`` such as :class:`BidirectionalOutput`.

    Layers on per-step frames (a cell with ``input_shape``, e.g. ConvLSTM on (B, T, C, H, W))
    work the same way; ``"concat"`` joins the channels, (B, T, F + G, H, W).

    Example:
        >>> from rnnlab import GRUCell, Recurrent
        >>> bi = Bidirectional(Recurrent(GRUCell(3, 4)))
        >>> y, state = bi(torch.randn(2, 5, 3))
        >>> y.shape
        torch.Size([2, 5, 8])
    """

    def __init__(
        self,
        forward_layer: Recurrent,
        backward_layer: Recurrent | None = None,
        merge: str | nn.Module = "concat",
    ) -> None:
        super().__init__()
        if not isinstance(forward_layer, Recurrent):
            raise TypeError(
                f"forward_layer: expected a Recurrent, got {type(forward_layer).__name__}"
            )
        if backward_layer is None:
            backward_layer = copy.deepcopy(forward_layer)
            for m in backward_layer.modules():
                reset = getattr(m, "reset_parameters", None)
                if callable(reset) and m is not backward_layer:
                    reset()
        if not isinstance(backward_layer, Recurrent):
            raise TypeError(
                f"backward_layer: expected a Recurrent, got {type(backward_layer).__name__}"
            )
        if backward_layer.input_size != forward_layer.input_size:
            raise ValueError(
                f"backward_layer: expected input_size {forward_layer.input_size} "
                "(as forward_layer), "
                f"got {backward_layer.input_size}"
            )
        if backward_layer.batch_first != forward_layer.batch_first:
            raise ValueError("backward_layer: expected the same batch_first as forward_layer")
        shape = layer_input_shape(forward_layer)
        if layer_input_shape(backward_layer) != shape:
            raise ValueError(
                f"backward_layer: expected the per-step input shape {shape} (as forward_layer), "
                f"got {layer_input_shape(backward_layer)}"
            )
        if shape is not None and isinstance(merge, BidirectionalOutput):
            raise TypeError(
                "merge: BidirectionalOutput maps feature vectors; for per-step frames use "
                "'concat' (channels), 'sum', 'mean', 'mul' or a module of your own"
            )
        H, G = forward_layer.output_size, backward_layer.output_size
        if isinstance(merge, str):
            if merge not in _MERGES:
                raise ValueError(
                    f"merge: expected one of {sorted(_MERGES)} or a module, got {merge!r}"
                )
            if merge != "concat" and H != G:
                raise ValueError(f"merge: {merge!r} needs equal output sizes, got {H} and {G}")
            self.output_size = H + G if merge == "concat" else H
        elif isinstance(merge, nn.Module):
            out = getattr(merge, "output_size", None)
            if not isinstance(out, int):
                raise TypeError("merge: a merge module must have an int attribute output_size")
            self.output_size = out
        else:
            raise TypeError(f"merge: expected a name or an nn.Module, got {type(merge).__name__}")
        self.merge = merge
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        self.batch_first = forward_layer.batch_first
        self.input_size = forward_layer.input_size
        self.input_shape = shape

    def forward(
        self,
        x: Tensor | PackedSequence,
        state: BidirectionalState | None = None,
        *,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, BidirectionalState]:
        """Return ``(merge(h, g), BidirectionalState(forward, backward))``."""
        inp, lengths, packed = sequence_input(
            x, lengths, self.input_size, self.batch_first, self.input_shape
        )
        if state is None:
            s_f = s_b = None
        elif isinstance(state, tuple) and len(state) == 2:
            s_f, s_b = state
        else:
            raise TypeError("state: expected BidirectionalState(forward, backward) or None")
        h, s_f = self.forward_layer(inp, s_f, lengths=lengths, reverse=False)
        g, s_b = self.backward_layer(inp, s_b, lengths=lengths, reverse=True)
        fn = self.merge if isinstance(self.merge, nn.Module) else _MERGES[self.merge]
        y = fn(h, g)
        return sequence_output(y, lengths, packed, self.batch_first), BidirectionalState(s_f, s_b)
