"""Batched Jacobians of a step function h, x -> h' on (B, N) tensors, vectorised with
torch.func in memory-bounded chunks (private; split from maps.py by job, issue 16).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, vmap

StepFn = Callable[[Tensor, "Tensor | None"], Tensor]


# Largest number of Jacobian entries built in one vectorised call (memory bound, ~32 MB f64).
_JAC_CHUNK_ENTRIES = 1 << 22


# Up to this many rows·outputs, Jacobians use one reverse pass on a replicated batch.
_SMALL_ROWS = 512


def _batched_jacobian(step: StepFn, h: Tensor, x: Tensor | None, argnum: int) -> Tensor:
    """Per-row Jacobians of a row-independent map, in chunks.

    Forward mode under ``vmap`` (torch.func) in general; for tiny problems, where torch.func's
    per-call overhead dominates, reverse mode on a replicated batch (row b·n + i carries the
    cotangent e_i), one backward pass for all rows.
    """
    B, N = h.shape
    n_in = N if argnum == 0 else (x.shape[1] if x is not None else 0)
    if B * N <= _SMALL_ROWS and h.requires_grad is False:
        return _replicated_jacobian(step, h, x, argnum)

    def single(h1: Tensor, x1: Tensor | None) -> Tensor:
        return step(h1[None], None if x1 is None else x1[None])[0]

    chunk = max(1, _JAC_CHUNK_ENTRIES // max(1, N * max(n_in, 1)))
    in_dims = (0, 0 if x is not None else None)
    parts = []
    for start in range(0, B, chunk):
        hs = h[start : start + chunk]
        xs = None if x is None else x[start : start + chunk]
        try:
            parts.append(vmap(jacfwd(single, argnums=argnum), in_dims=in_dims)(hs, xs))
        except (RuntimeError, NotImplementedError):
            # some user ops lack forward-mode rules; reverse mode then
            parts.append(vmap(jacrev(single, argnums=argnum), in_dims=in_dims)(hs, xs))
    if not parts:
        return h.new_zeros(0, N, n_in)
    return torch.cat(parts)  # (B, N, N) or (B, N, I)


def _replicated_jacobian(step: StepFn, h: Tensor, x: Tensor | None, argnum: int) -> Tensor:
    B, N = h.shape
    hr = h.detach().repeat_interleave(N, 0)  # (B·N, N): row b·N + i belongs to output i
    xr = None if x is None else x.detach().repeat_interleave(N, 0)
    wrt = hr if argnum == 0 else xr
    assert wrt is not None
    wrt.requires_grad_(True)
    cot = torch.eye(N, dtype=h.dtype, device=h.device).repeat(B, 1)  # (B·N, N)
    with torch.enable_grad():
        out = step(hr, xr)
        (g,) = torch.autograd.grad(out, wrt, cot, allow_unused=True)
    if g is None:
        g = torch.zeros_like(wrt)
    return g.reshape(B, N, wrt.shape[1])  # rows: outputs, columns: inputs
