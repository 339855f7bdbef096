"""Batched linear solves that stay correct on this project's torch build (private).

Measured on torch 2.13.0+cpu (MKL 2024.2, AMD EPYC, AVX512): with more than one torch thread,
*batched* LU-based routines (``torch.linalg.solve``/``solve_ex``/``lu_factor``/``inv``/
``slogdet``) on matrices larger than about 150 x 150 return wrong results without an error
(residuals ~1 instead of ~1e-14) or fail with "Pivots given to lu_solve must all be greater or
equal to 1" after MKL prints "Parameter 6 was incorrect on entry to SLASWP". Single matrices,
one thread, and eig/svd/qr are fine. Reproduce: ``torch.set_num_threads(2)``, A = randn(2, 192,
192, float64), b = randn(2, 192, 1); ``(A @ torch.linalg.solve(A, b) - b).abs().max()`` is ~1.

So batches of large matrices are solved one matrix at a time whenever torch runs multi-threaded;
the n³ work per matrix dwarfs the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Above this size a batched LU is not trusted with several threads (failures seen from ~150).
_SAFE_BATCHED_N = 128


def solve_ex(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.solve_ex(A, B)`` for A (..., n, n), B (..., n, k), correct on this build."""
    n = A.shape[-1]
    if A.dim() < 3 or n <= _SAFE_BATCHED_N or torch.get_num_threads() == 1:
        return torch.linalg.solve_ex(A, B)
    batch = A.shape[:-2]
    A2 = A.reshape(-1, n, n)
    B2 = B.expand(*batch, *B.shape[-2:]).reshape(-1, *B.shape[-2:])
    xs, infos = [], []
    for a, b in zip(A2, B2):
        x, info = torch.linalg.solve_ex(a, b)
        xs.append(x)
        infos.append(info)
    if not xs:
        return torch.linalg.solve_ex(A, B)
    return torch.stack(xs).reshape(*batch, *B.shape[-2:]), torch.stack(infos).reshape(batch)
