"""Helpers shared by the layers: argument checks, padding, packing, reversal (lengths and
masks come from rnnlab._sequences).

Shapes: B batch, T time, F features.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .._sequences import check_lengths, valid_mask


def check_sequence(
    x: Any,
    features: int,
    *,
    batch_first: bool,
    argument: str = "x",
    trailing: tuple[int | None, ...] | None = None,
) -> None:
    """A floating (B, T, F) tensor (or (T, B, F) when not batch-first) with T >= 1.

    ``trailing`` replaces (F,) by the per-step shape a cell declares (``input_shape``, e.g.
    (C, None, None) for frames of any size: None matches any positive size).
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{argument}: expected a torch.Tensor or PackedSequence, got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{argument}: expected a floating-point tensor, got dtype {x.dtype}")
    shape = (features,) if trailing is None else trailing
    dims = ", ".join("*" if d is None else str(d) for d in shape)
    layout = f"(B, T, {dims})" if batch_first else f"(T, B, {dims})"
    got = tuple(x.shape)
    if x.dim() != 2 + len(shape) or any(d is not None and g != d for g, d in zip(got[2:], shape)):
        raise ValueError(f"{argument}: expected {layout}, got {tuple(x.shape)}")
    t_dim = 1 if batch_first else 0
    if x.shape[t_dim] < 1 or x.shape[1 - t_dim] < 1:
        raise ValueError(
            f"{argument}: expected at least one sequence and one time step, got {tuple(x.shape)}"
        )


def check_against_parameters(x: Tensor, module: nn.Module, argument: str = "x") -> None:
    # under autocast a layer's input may be in the lower precision its predecessor returned
    autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
    for p in module.parameters():
        if p.dtype != x.dtype and not autocast:
            raise TypeError(
                f"{argument}: expected dtype {p.dtype} (the parameters'), got {x.dtype}"
            )
        if p.device != x.device:
            raise ValueError(
                f"{argument}: expected device {p.device} (the parameters'), got {x.device}"
            )
        return


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a batch-first (B, T, ...) tensor within its length.

    Padding stays where it is, so reverse(reverse(x)) == x.
    """
    if lengths is None:
        return x.flip(1)
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    L = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    idx = torch.where(t < L, L - 1 - t, t)  # (B, T)
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def unpack(x: PackedSequence) -> tuple[Tensor, Tensor]:
    """PackedSequence -> batch-first padded (B, T, F) in the original order, and lengths."""
    padded, lengths = pad_packed_sequence(x, batch_first=True)
    return padded, lengths


def repack(y: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack batch-first ``y`` (original order) with exactly ``like``'s order and batch sizes."""
    lengths = lengths.cpu()
    if like.sorted_indices is not None:
        order = like.sorted_indices.to(y.device)
        y = y.index_select(0, order)  # (B, T, F), in decreasing length
        lengths = lengths.index_select(0, like.sorted_indices.cpu())
    packed = pack_padded_sequence(y, lengths, batch_first=True, enforce_sorted=True)
    return PackedSequence(
        packed.data, packed.batch_sizes, like.sorted_indices, like.unsorted_indices
    )


def layer_input_shape(layer: Any) -> tuple[int | None, ...] | None:
    """The per-step input shape a layer's cell declares (ConvLSTM: (C, None, None)), or None
    for vector steps; a composite layer (Bidirectional, Stacked) has its own ``input_shape``."""
    shape = getattr(layer, "input_shape", None)
    return (
        shape if shape is not None else getattr(getattr(layer, "cell", None), "input_shape", None)
    )


def sequence_input(
    x: Any,
    lengths: Any,
    features: int,
    batch_first: bool,
    trailing: tuple[int | None, ...] | None = None,
) -> tuple[Tensor, Tensor | None, PackedSequence | None]:
    """A layer's input as given: a tensor (with optional ``lengths``) or a PackedSequence.

    Returns the padded input in the layer's layout, the validated lengths (or None) and the
    original PackedSequence (or None), for :func:`sequence_output`. ``trailing``: the per-step
    shape of a layer on frames (see :func:`check_sequence`); such a layer takes no packed input.
    """
    packed = x if isinstance(x, PackedSequence) else None
    if packed is not None and trailing is not None:
        raise TypeError("x: a layer on per-step frames takes a padded tensor, not packed")
    if packed is not None:
        if lengths is not None:
            raise ValueError("lengths: a PackedSequence carries its own lengths; got both")
        xb, lengths = unpack(packed)
        x = xb if batch_first else xb.transpose(0, 1)
    check_sequence(x, features, batch_first=batch_first, trailing=trailing)
    b_dim = 0 if batch_first else 1
    lengths = check_lengths(lengths, x.shape[b_dim], x.shape[1 - b_dim], x.device)
    return x, lengths, packed


def sequence_output(
    y: Tensor, lengths: Tensor | None, packed: PackedSequence | None, batch_first: bool
) -> Tensor | PackedSequence:
    """Pack ``y`` like the input when the input was a PackedSequence; else return it."""
    if packed is None:
        return y
    assert lengths is not None
    return repack(y if batch_first else y.transpose(0, 1), lengths, packed)


def zero_padding(y: Tensor, lengths: Tensor | None, batch_first: bool) -> Tensor:
    """Zero the outputs past each sequence's end (any per-step shape after (B, T))."""
    if lengths is None:
        return y
    T = y.shape[1 if batch_first else 0]
    m = valid_mask(lengths.to(y.device), T)
    if m is None:
        return y
    if not batch_first:
        m = m.t()
    m = m.reshape(*m.shape, *([1] * (y.dim() - 2)))
    return torch.where(m, y, torch.zeros((), dtype=y.dtype, device=y.device))
