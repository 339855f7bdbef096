"""Zoneout's keep draws on the engine: ``torch.ops.rnnlab.zoneout_keep`` (docs/design/0020).

``zoneout_keep(keys (T,) int64, sizes [n_f], thresholds [thr_f], dtype) -> (T · Σ n_f,)``:
the keep decisions of :mod:`rnnlab.cells._philox` (Philox4x32-10 keyed by each step's drawn
key, keep iff word < thr_f), field f's (T, n_f) block at offset T · (n_0 + ... + n_{f-1}).
Its CPU implementation is the C++ kernel of ``csrc/draws.cpp`` (vectorised over Philox
blocks, split over threads by counter ranges: the same values for any thread count), or the
pure-torch code when the build is unavailable; a fake makes it traceable (torch.compile,
torch.export). On import this module installs the op as the cells' fast path
(:func:`rnnlab.cells._philox.set_fast`), so that the reference loop's per-step draws and the
engine's all-steps draw run the same kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..cells import _philox
from . import build, ops
from .ops import op

SCHEMA = "(Tensor keys, int[] sizes, int[] thresholds, ScalarType dtype) -> Tensor"


def _fake(keys: Tensor, sizes: list[int], thresholds: list[int], dtype: torch.dtype) -> Tensor:
    return keys.new_empty(keys.shape[0] * sum(sizes), dtype=dtype)


def _cpu(keys: Tensor, sizes: list[int], thresholds: list[int], dtype: torch.dtype) -> Tensor:
    kernels = build.ops()
    if kernels is None:
        return _philox.keep_reference(keys, sizes, thresholds, dtype)
    out: Tensor = kernels.zoneout_keep(keys, sizes, thresholds, dtype)
    return out


def _fast(keys: Tensor, sizes: list[int], thresholds: list[int], dtype: torch.dtype) -> Any:
    return op("zoneout_keep")(keys, sizes, thresholds, dtype)


def _register() -> None:
    ops._lib.define("zoneout_keep" + SCHEMA)
    torch.library.register_fake(f"{ops.NAMESPACE}::zoneout_keep", _fake, lib=ops._lib)
    ops._lib.impl("zoneout_keep", _cpu, "CPU")
    _philox.set_fast(_fast)


_register()
