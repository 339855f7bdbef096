"""Which forward steps can run their batch rows on separate threads.

In a recurrence every batch row is its own sequence: when each value of the forward step that
depends on the inputs is (B, ·) and is computed from the same row of its operands (pointwise
ops, products ``rows @ constant weight``, slices and reductions along the features), the whole
time loop splits into row ranges that share nothing but the read-only weights, one per
thread, with no synchronisation until the end (:mod:`.loop` emits those loops over
``[r0, r1)``). Anything that mixes rows (a transpose, a reduction or ``cat`` over the batch, a
product with a row-dependent right-hand side, a constant computed at batch shape) keeps the
single-threaded loop.

Shapes: B batch.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from .cpp import GEMM, POINTWISE, REDUCE, shape2
from .trace import VIEWS, Unsupported

aten = torch.ops.aten

# views that keep dimension 0 (the batch) as it is, when their dimension argument is 1 (or -1)
_FEATURE_VIEWS = {aten.slice.Tensor: 1, aten.split.Tensor: 2, aten.split_with_sizes.default: 2}
_SAME = {aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default, aten.clone.default,
         aten.view.default, aten.reshape.default, aten._unsafe_view.default}  # fmt: skip


def _dim(n: fx.Node, pos: int) -> Any:
    return n.args[pos] if len(n.args) > pos else n.kwargs.get("dim", 0)


def _shape(n: fx.Node) -> tuple[int, ...]:
    v = n.meta.get("val")
    return tuple(int(d) for d in v.shape) if isinstance(v, torch.Tensor) else ()


def row_local(nodes: list[fx.Node], row_inputs: list[fx.Node], B: int) -> set[fx.Node] | None:
    """The nodes of ``nodes`` (one forward step, in order) that carry batch rows, when every
    one of them is row-local (module docstring); None when the step mixes rows or B < 2."""
    if B < 2:
        return None
    carry: set[fx.Node] = set(row_inputs)
    try:
        for n in nodes:
            ins = n.all_input_nodes
            if not any(a in carry for a in ins):
                if n.target not in VIEWS and len(_shape(n)) == 2 and _shape(n)[0] == B:
                    return None  # a batch-shaped constant: every row range would need all of it
                continue
            if not _local(n, carry, B):
                return None
            carry.add(n)
    except Unsupported:
        return None
    return carry - set(row_inputs)


def _local(n: fx.Node, carry: set[fx.Node], B: int) -> bool:
    t = n.target
    if t is operator.getitem:
        return len(_shape(n)) == 2 and _shape(n)[0] == B
    if t in _FEATURE_VIEWS:
        return len(_shape(n.args[0])) == 2 and _dim(n, _FEATURE_VIEWS[t]) in (1, -1)  # type: ignore[arg-type]
    shp = _shape(n)
    if len(shp) != 2 or shp[0] != B or shape2(n) != shp:
        return False
    if t in _SAME:
        return _shape(n.args[0]) == shp  # type: ignore[arg-type]
    if t is aten.expand.default:
        return _shape(n.args[0])[:1] == (B,)  # type: ignore[arg-type]
    if t in POINTWISE:
        return all(len(_shape(a)) < 2 or _shape(a)[0] in (1, B) for a in n.all_input_nodes)
    if t in GEMM:
        a, b = n.args[-2], n.args[-1]
        return a in carry and b not in carry and _shape(a)[0] == B  # type: ignore[index,arg-type]
    if t in REDUCE:
        dims = n.args[1] if len(n.args) > 1 else None
        return isinstance(dims, (list, tuple)) and list(dims) in ([1], [-1])
    if t is aten.cat.default:
        return _dim(n, 1) in (1, -1)
    return False
