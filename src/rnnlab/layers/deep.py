"""Deep RNNs (Pascanu et al. 2014; Goodfellow et al. 2016, ch. 10.5): stacked layers with
optional skip and residual connections. Deep transition and deep output are cells
(:class:`rnnlab.cells.DeepTransition`, :class:`rnnlab.cells.DeepOutput`), so they compose with
any layer here.

Shapes: B batch, T time, I input, H_l output of layer l.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ._utils import layer_input_shape, sequence_input, sequence_output, zero_padding


class Stacked(nn.Module):
    """Layers on top of each other; layer l reads layer l-1's output.

    Args:
        layers: :class:`Recurrent` or :class:`Bidirectional` layers (anything with
            ``input_size``, ``output_size``, ``batch_first`` and
            ``forward(x, state, *, lengths=...) -> (y, state)``), all with the same
            ``batch_first``.
        dropout: dropout on each layer's output before the next layer (training only), as
            torch.nn's ``dropout``.
        input_skip: feed the network input to every layer (layer l > 0 reads
            ``cat(y_{l-1}, x)``, so its input size must be H_{l-1} + I).
        output_skip: the output is every layer's output concatenated (sum of the H_l), not only
            the last layer's.
        residual: layer l > 0 adds its input to its output (H_l must equal its main input size).

    The state is a tuple with one state per layer. Layers on per-step frames (ConvLSTM,
    (B, T, C, H, W)) stack the same way, all of them on frames; sizes then count channels, and
    the skips concatenate channels.

    Example:
        >>> from rnnlab import Bidirectional, LSTMCell, Recurrent
        >>> net = Stacked([Bidirectional(Recurrent(LSTMCell(3, 8))),
        ...                Bidirectional(Recurrent(LSTMCell(16 + 3, 8)))], input_skip=True)
        >>> y, states = net(torch.randn(2, 5, 3))
        >>> y.shape, len(states)
        (torch.Size([2, 5, 16]), 2)
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        *,
        dropout: float = 0.0,
        input_skip: bool = False,
        output_skip: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ValueError("layers: expected at least one layer, got 0")
        for k, layer in enumerate(layers):
            for attr in ("input_size", "output_size", "batch_first"):
                if not hasattr(layer, attr):
                    raise TypeError(
                        f"layers[{k}]: expected a recurrent layer with {attr}, "
                        f"got {type(layer).__name__}"
                    )
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout: expected a value in [0, 1), got {dropout!r}")
        bf = {bool(layer.batch_first) for layer in layers}
        if len(bf) != 1:
            raise ValueError("layers: expected the same batch_first for every layer, got a mix")
        shape = layer_input_shape(layers[0])
        for k, layer in enumerate(layers):
            if (layer_input_shape(layer) is None) != (shape is None):
                kind = "per-step frames" if shape is not None else "feature vectors"
                raise ValueError(
                    f"layers[{k}]: expected a layer on {kind} like layers[0], got input shape "
                    f"{layer_input_shape(layer)}"
                )
        I = int(layers[0].input_size)  # type: ignore[arg-type]
        for k in range(1, len(layers)):
            prev = int(layers[k - 1].output_size)  # type: ignore[arg-type]
            want = prev + I if input_skip else prev
            got = int(layers[k].input_size)  # type: ignore[arg-type]
            if got != want:
                why = f"layer {k - 1}'s output {prev}" + (f" + input {I}" if input_skip else "")
                raise ValueError(f"layers[{k}]: expected input_size {want} ({why}), got {got}")
            if residual and int(layers[k].output_size) != prev:  # type: ignore[arg-type]
                raise ValueError(
                    f"layers[{k}]: residual connections need output_size {prev} (its input's), "
                    f"got {layers[k].output_size}"
                )
        self.layers = nn.ModuleList(layers)
        self.dropout = float(dropout)
        self.input_skip = bool(input_skip)
        self.output_skip = bool(output_skip)
        self.residual = bool(residual)
        self.batch_first = bf.pop()
        self.input_size = I
        self.input_shape = shape
        outs = [int(layer.output_size) for layer in layers]  # type: ignore[arg-type]
        self.output_size = sum(outs) if output_skip else outs[-1]

    def forward(
        self,
        x: Tensor | PackedSequence,
        state: Sequence[Any] | None = None,
        *,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, tuple[Any, ...]]:
        """Return ``(y, (state_0, ..., state_{L-1}))``."""
        inp, lengths, packed = sequence_input(
            x, lengths, self.input_size, self.batch_first, self.input_shape
        )
        n = len(self.layers)
        if state is None:
            states: list[Any] = [None] * n
        elif isinstance(state, (tuple, list)) and len(state) == n:
            states = list(state)
        else:
            raise TypeError(f"state: expected a tuple of {n} layer states or None")
        h = inp
        outputs: list[Tensor] = []
        new_states: list[Any] = []
        for k, layer in enumerate(self.layers):
            if k > 0:
                h_in = nn.functional.dropout(h, self.dropout, self.training) if self.dropout else h
                layer_in = torch.cat([h_in, inp], dim=2) if self.input_skip else h_in
            else:
                h_in = layer_in = inp
            y, s = layer(layer_in, states[k], lengths=lengths)
            if self.residual and k > 0:
                y = y + h_in
            outputs.append(y)
            new_states.append(s)
            h = y
        out = torch.cat(outputs, dim=2) if self.output_skip else outputs[-1]
        out = zero_padding(out, lengths, self.batch_first)
        return sequence_output(out, lengths, packed, self.batch_first), tuple(new_states)
