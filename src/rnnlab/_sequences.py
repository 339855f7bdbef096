"""Masks, lengths and states of batches of sequences: the one place where a length mask is
built (t < length), where ``lengths`` are checked, and the helpers over nested recurrent states
(NamedTuples of tensors, tuples of them per layer). Imports nothing of rnnlab, so every part
(engine, layers, data, training) may use it (docs/design/0016; issue 16).

Shapes: B batch, T time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


# --- lengths and masks ---------------------------------------------------------------------------
def length_mask(lengths: Tensor, steps: int, device: Any = None) -> Tensor:
    """(B, T) bool, True where t < lengths[b]; on ``device`` (default: the lengths')."""
    device = lengths.device if device is None else device
    return torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def check_lengths(lengths: Any, batch_size: int, steps: int, device: torch.device) -> Tensor | None:
    """Validate ``lengths`` (any device, tensor or sequence of ints); return int64 on ``device``."""
    if lengths is None:
        return None
    if isinstance(lengths, Tensor):
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
        t = lengths
    elif isinstance(lengths, Sequence) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in lengths
    ):
        t = torch.tensor(list(lengths), dtype=torch.int64)
    else:
        raise TypeError(
            "lengths: expected a 1-D integer tensor or a list of ints, got "
            f"{type(lengths).__name__}"
        )
    if t.dim() != 1 or t.shape[0] != batch_size:
        raise ValueError(
            f"lengths: expected shape ({batch_size},) (one per sequence), got {tuple(t.shape)}"
        )
    if torch.compiler.is_compiling():
        # traced code (compile, export, ONNX) cannot branch on tensor values: the values are
        # checked in eager mode only, the shape above always
        return t.to(device=device, dtype=torch.int64)
    lo, hi = int(t.min()), int(t.max())
    if lo < 1 or hi > steps:
        raise ValueError(f"lengths: expected values in [1, T={steps}], got min {lo} and max {hi}")
    return t.to(device=device, dtype=torch.int64)


def valid_mask(lengths: Tensor | None, steps: int) -> Tensor | None:
    """(B, T) bool, True where t < length; None when every sequence is full."""
    if lengths is None:
        return None
    # traced code cannot branch on values: it always masks (the same result)
    if not torch.compiler.is_compiling() and bool((lengths == steps).all()):
        return None
    return length_mask(lengths, steps)


# --- nested states -------------------------------------------------------------------------------
def map_state(fn: Callable[..., Tensor], state: Any, *others: Any) -> Any:
    """Apply ``fn`` leaf-wise over states of the same structure."""
    if isinstance(state, Tensor):
        return fn(state, *others)
    if isinstance(state, tuple):
        items = [map_state(fn, s, *(o[k] for o in others)) for k, s in enumerate(state)]
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)
    if state is None:
        return None
    raise TypeError(f"state: expected tensors nested in tuples, got {type(state).__name__}")


def detach_state(state: Any, dtype: torch.dtype | None = None) -> Any:
    """The state without its autograd history (the carry between truncated-BPTT windows);
    with ``dtype``, its floating fields in that dtype (under bf16 autocast a window's state
    may come out in bfloat16, while the next window's cells check it against float32)."""
    if dtype is None:
        return map_state(lambda t: t.detach(), state)
    return map_state(lambda t: t.detach().to(dtype) if t.is_floating_point() else t.detach(), state)


def where_state(keep_new: Tensor, new: Any, old: Any) -> Any:
    """Per sequence: ``new`` where ``keep_new`` (B,) is True, else ``old``."""

    def pick(n: Tensor, o: Tensor) -> Tensor:
        m = keep_new.reshape(-1, *([1] * (n.dim() - 1)))
        return torch.where(m, n, o)

    return map_state(pick, new, old)


def state_leaves(state: Any) -> list[Tensor]:
    """The state's tensors in a fixed order."""
    out: list[Tensor] = []

    def keep(t: Tensor) -> Tensor:
        out.append(t)
        return t

    map_state(keep, state)
    return out


def state_from_leaves(template: Any, leaves: list[Tensor]) -> Any:
    """Rebuild a state with ``template``'s structure from :func:`state_leaves` output."""
    it = iter(leaves)
    return map_state(lambda _: next(it), template)


def slice_state(state: Any, rows: slice) -> Any:
    """The state of a slice of the batch."""
    return map_state(lambda t: t[rows], state)
