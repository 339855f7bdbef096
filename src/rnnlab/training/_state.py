"""Helpers over nested recurrent states (NamedTuples of tensors, tuples of them per layer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


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


def detach_state(state: Any) -> Any:
    """The state without its autograd history (the carry between truncated-BPTT windows)."""
    return map_state(lambda t: t.detach(), state)


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
