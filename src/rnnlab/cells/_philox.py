"""Zoneout's keep draws: one key per step from the caller's RNG, the keep decisions from
Philox4x32-10 (docs/design/0020-zoneout-draws.md).

Shapes: T steps, n_f the number of elements of zoned field f in one step (B · its size).

For every step, **one** 64-bit key is drawn from the generator (``generator`` or torch's
default one): ``torch.randint(-2**63, 2**63 - 1, (T,), generator=...)``, which
fills element by element, so T steps' keys in one call are exactly T one-step calls (a test
checks it). The step's keep decisions are then a pure function of its key: Philox4x32-10
(Salmon et al., SC 2011) with key (low, high 32 bits of the drawn integer) over the counters
(b, 0, 0, 0), b = 0, 1, ...; the step's word j = 4 b + lane belongs to the zoned fields laid end
to end in field order, and an element is kept iff its word < ceil(p_f · 2^32).

So the reference loop (one key per step) and the engine (T keys at once, then all steps in C++)
make the same decisions from the same generator state, and truncated-BPTT windows, stream
chunks and a resumed run (which restores the generator) reproduce them.

This module holds the pure-torch implementation (the fallback without the compiled engine,
and the independent reference of its tests); the engine installs its C++ kernel
(``csrc/draws.cpp``) with :func:`set_fast`. Both return the same flat tensor: field f's
(T, n_f) block, row-major, at offset T · (n_0 + ... + n_{f-1}).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["keep_draws", "philox4x32", "set_fast", "step_keys", "thresholds"]

_MASK = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # the key's Weyl increments

# The compiled kernel (keys, sizes, thresholds, dtype) -> flat tensor, installed by the engine
# (rnnlab.engine.draws) when it is built; None: the pure-torch code below runs.
_FAST: list[Callable[[Tensor, list[int], list[int], torch.dtype], Tensor] | None] = [None]


def set_fast(fn: Callable[[Tensor, list[int], list[int], torch.dtype], Tensor] | None) -> None:
    """Install (or, with None, remove) the compiled keep-draw kernel for CPU keys."""
    _FAST[0] = fn


def _mulhilo(m: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(high, low) 32-bit words of the 64-bit product m · x, for 32-bit m and x held in
    int64, without any intermediate over 2^49 (m split in 16-bit halves)."""
    a = x * (m & 0xFFFF)  # < 2^48
    b = x * (m >> 16)  # < 2^48
    t = a + ((b & 0xFFFF) << 16)  # m x = (b >> 16) 2^32 + t
    return (b >> 16) + (t >> 32), t & _MASK


def philox4x32(ctr: Sequence[Tensor], key: Sequence[Tensor | int]) -> list[Tensor]:
    """Philox4x32-10 on broadcastable int64 word tensors (each in [0, 2^32)): the four
    counter words ``ctr`` and the two key words ``key`` -> the four output words."""
    x0, x1, x2, x3 = ctr
    k0, k1 = key
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        hi0, lo0 = _mulhilo(_M0, x0)
        hi1, lo1 = _mulhilo(_M1, x2)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return [x0, x1, x2, x3]


def thresholds(rates: Sequence[float]) -> list[int]:
    """ceil(p · 2^32) per rate: keep iff the 32-bit word is below it (p = 1: always)."""
    return [min(1 << 32, math.ceil(float(p) * 2.0**32)) for p in rates]


def step_keys(steps: int, generator: torch.Generator | None, device: Any = None) -> Tensor:
    """(steps,) int64: one full-range 64-bit key per step, from ``generator`` (torch's
    default generator of ``device`` if None)."""
    # randint's range 2^64 - 1 takes a 64-bit word per element (its value mod 2^64 - 1)
    return torch.randint(
        -(2**63), 2**63 - 1, (steps,), generator=generator, dtype=torch.int64, device=device
    )


def keep_reference(
    keys: Tensor, sizes: Sequence[int], thresh: Sequence[int], dtype: torch.dtype
) -> Tensor:
    """The keep decisions in pure torch (the fallback and the tests' reference)."""
    T, W = keys.shape[0], sum(sizes)
    if T == 0 or W == 0:
        return torch.empty(T * W, dtype=dtype, device=keys.device)
    k0 = (keys & _MASK).unsqueeze(1)  # (T, 1)
    k1 = ((keys >> 32) & _MASK).unsqueeze(1)
    b = torch.arange((W + 3) // 4, dtype=torch.int64, device=keys.device).unsqueeze(0)
    zero = torch.zeros((), dtype=torch.int64, device=keys.device)
    words = torch.stack(philox4x32([b, zero, zero, zero], [k0, k1]), -1)  # (T, blocks, 4)
    words = words.reshape(T, -1)[:, :W]
    parts, start = [], 0
    for n, thr in zip(sizes, thresh):
        parts.append((words[:, start : start + n] < thr).to(dtype).reshape(-1))
        start += n
    return torch.cat(parts)


def keep_draws(
    keys: Tensor, sizes: Sequence[int], rates: Sequence[float], dtype: torch.dtype
) -> list[Tensor]:
    """Per field, the (T, n_f) keep decisions (1 keep, 0 take the new value) in ``dtype``
    (bool or floating) for the steps of ``keys``, contiguous: the compiled kernel for CPU keys
    when the engine installed it, else the pure-torch code; the same values either way."""
    sizes, thresh = [int(n) for n in sizes], thresholds(rates)
    fast = _FAST[0]
    if fast is not None and keys.device.type == "cpu":
        flat = fast(keys, sizes, thresh, dtype)
    else:
        flat = keep_reference(keys, sizes, thresh, dtype)
    T = keys.shape[0]
    return [part.view(T, n) for part, n in zip(flat.split([T * n for n in sizes]), sizes)]
