"""The engine's kernels as PyTorch operators: ``torch.ops.rnnlab.<cell>_forward/_backward``.

Defined here, in Python, at import (before any trace and whether or not the C++ build works):

- the **schemas**, with fixed-arity returns and ``Tensor?`` for absent arguments (a ``Tensor[]``
  return blocks vmap's fallback and the ONNX translation);
- a **fake** (meta) implementation of each, so that ``torch.compile(fullgraph=True,
  dynamic=True)`` and ``torch.export`` see one node with symbolic B and T;
- the **CPU implementation**: the compiled kernel of ``csrc/`` (``torch.ops.rnnlab_engine``),
  or :mod:`.reference` when the build is unavailable; bfloat16/float16 are computed in float32
  and returned in the input's dtype, bfloat16 with the kernel's products in bf16
  (:mod:`.half`), float16 cast at the op boundary;
- **autocast** (CPU: the bf16 path under bf16 autocast, float32 otherwise; :mod:`.half`) and
  **vmap** rules: a forward op folds
  the vmapped dimension into B when the weights are shared; everything else (vmapped weights,
  every backward op, whose weight gradients are per vmapped slice) runs slice by slice.

Other devices register their own kernels for the same ops (``torch.library.impl(
"rnnlab::gru_forward", "cuda")``); the schemas carry no device. Gradients live in
:mod:`.functions`, not here: torch 2.13's ``register_autograd`` cannot serve torch.func.

Output dtype rule (the fakes follow it): a forward op's outputs have ``gx``'s dtype, except its
buffers (``BUFFERS``: outputs only its backward reads), float32 when ``gx`` is bf16/fp16; a
backward op's outputs have the dtype of the state sequence it is given (``hs``/``ys``).

Shapes: T time, B batch, H hidden, G gate blocks, P LSTM output, O Jordan output, NS FGR gates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import build, half

NAMESPACE = "rnnlab"
_lib = torch.library.Library(NAMESPACE, "DEF")

SCHEMAS = {
    "elman_forward": "(Tensor gx, Tensor w_hh, Tensor h0, Tensor? first, Tensor? lengths, "
    "int act) -> Tensor",
    "elman_backward": "(Tensor grad_hs, Tensor hs, Tensor w_hh, Tensor? lengths, int act) "
    "-> (Tensor, Tensor, Tensor)",
    "jordan_forward": "(Tensor gx, Tensor u, Tensor wy, Tensor? by, Tensor y0, Tensor? lengths, "
    "int act, int oact) -> (Tensor, Tensor)",
    "jordan_backward": "(Tensor grad_ys, Tensor ys, Tensor hs, Tensor u, Tensor wy, "
    "Tensor? lengths, int act, int oact) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "gru_forward": "(Tensor gx, Tensor w_hh, Tensor? b_hh, Tensor h0, Tensor? lengths, "
    "bool before, int act, bool store) -> (Tensor, Tensor, Tensor)",
    "gru_backward": "(Tensor grad_hs, Tensor hs, Tensor gates, Tensor aux, Tensor w_hh, "
    "Tensor? lengths, bool before, int act) -> (Tensor, Tensor, Tensor, Tensor)",
    "lstm_forward": "(Tensor gx, Tensor w_hh, Tensor? w_ci, Tensor? w_cf, Tensor? w_co, "
    "Tensor? w_hr, Tensor? w_gg, Tensor h0, Tensor c0, Tensor? g0, Tensor? lengths, "
    "int[] blocks, bool coupled, int act, int cact, bool store) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "lstm_backward": "(Tensor grad_ys, Tensor grad_cs, Tensor? grad_gs, Tensor ys, Tensor cs, "
    "Tensor gs, Tensor acts, Tensor ms, Tensor w_hh, Tensor? w_ci, Tensor? w_cf, "
    "Tensor? w_co, Tensor? w_hr, Tensor? w_gg, Tensor? lengths, int[] blocks, bool coupled, "
    "int act, int cact) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
    "Tensor, Tensor)",
}
for _name, _schema in SCHEMAS.items():
    _lib.define(_name + _schema)


_HANDLES: dict[str, Any] = {}


def op(name: str) -> Any:
    """``torch.ops.rnnlab.<name>.default``, looked up once (the lookup costs ~0.1 ms a call).
    Not cached while Dynamo traces: a dict written inside a traced autograd.Function (the
    first backward op looked up during a compiled training step) is a side effect that
    ``fullgraph=True`` refuses."""
    handle = _HANDLES.get(name)
    if handle is None:
        handle = getattr(getattr(torch.ops, NAMESPACE), name).default
        if not torch.compiler.is_compiling():
            _HANDLES[name] = handle
    return handle


# ------------------------------------------------------------------------------- fakes ----
def _e(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _elman_fwd_fake(gx, w_hh, h0, first, lengths, act):  # type: ignore[no-untyped-def]
    S, B, H = gx.shape
    return gx.new_empty(S + 1, B, H)


def _elman_bwd_fake(grad_hs, hs, w_hh, lengths, act):  # type: ignore[no-untyped-def]
    S1, B, H = hs.shape
    return hs.new_empty(S1 - 1, B, H), hs.new_empty(H, H), hs.new_empty(B, H)


def _jordan_fwd_fake(gx, u, wy, by, y0, lengths, act, oact):  # type: ignore[no-untyped-def]
    S, B, H = gx.shape
    O = u.shape[1]
    return gx.new_empty(S + 1, B, O), gx.new_empty(S, B, H)


def _jordan_bwd_fake(grad_ys, ys, hs, u, wy, lengths, act, oact):  # type: ignore[no-untyped-def]
    S, B, H = hs.shape
    O = u.shape[1]
    n = ys.new_empty
    return n(S, B, H), n(H, O), n(O, H), n(O), n(B, O)


def _gru_fwd_fake(gx, w_hh, b_hh, h0, lengths, before, act, store):  # type: ignore[no-untyped-def]
    S, B, H3 = gx.shape
    H = H3 // 3
    K = S if store else 1
    return gx.new_empty(S + 1, B, H), gx.new_empty(K, B, H3), gx.new_empty(K, B, H)


def _gru_bwd_fake(grad_hs, hs, gates, aux, w_hh, lengths, before, act):  # type: ignore[no-untyped-def]
    S, B, H3 = gates.shape
    H = H3 // 3
    n = hs.new_empty
    return n(S, B, H3), n(H3, H), n(H3), n(B, H)


def _lstm_fwd_fake(  # type: ignore[no-untyped-def]
    gx, w_hh, w_ci, w_cf, w_co, w_hr, w_gg, h0, c0, g0, lengths, blocks, coupled, act, cact, store
):
    S, B, GH = gx.shape
    H, P = c0.shape[-1], w_hh.shape[1]
    K = S if store else 1
    n = gx.new_empty
    gs = n(S + 1, B, w_gg.shape[0]) if w_gg is not None else n(0)
    ms = n(K, B, H) if w_hr is not None else n(0)
    return n(S + 1, B, P), n(S + 1, B, H), gs, n(K, B, GH), ms


def _lstm_bwd_fake(  # type: ignore[no-untyped-def]
    grad_ys,
    grad_cs,
    grad_gs,
    ys,
    cs,
    gs,
    acts,
    ms,
    w_hh,
    w_ci,
    w_cf,
    w_co,
    w_hr,
    w_gg,
    lengths,
    blocks,
    coupled,
    act,
    cact,
):
    S, B, GH = acts.shape
    H, P = cs.shape[-1], w_hh.shape[1]
    n = ys.new_empty

    def like(w: Tensor | None) -> Tensor:
        return n(w.shape) if w is not None else n(0)

    return (
        n(S, B, GH), n(GH, P), like(w_ci), like(w_cf), like(w_co), like(w_hr), like(w_gg),
        n(B, P), n(B, H), n(gs.shape[1:]) if w_gg is not None else n(0),
    )  # fmt: skip


_FAKES: dict[str, Callable[..., Any]] = {
    "elman_forward": _elman_fwd_fake,
    "elman_backward": _elman_bwd_fake,
    "jordan_forward": _jordan_fwd_fake,
    "jordan_backward": _jordan_bwd_fake,
    "gru_forward": _gru_fwd_fake,
    "gru_backward": _gru_bwd_fake,
    "lstm_forward": _lstm_fwd_fake,
    "lstm_backward": _lstm_bwd_fake,
}


# ------------------------------------------------------------------- CPU implementation ----
_HALF = (torch.bfloat16, torch.float16)
# the C++ kernels take an empty tensor for an absent optional argument
_NO_LENGTHS = torch.empty(0, dtype=torch.int64)


def _cpu_impl(name: str, primary: int) -> Callable[..., Any]:
    """The compiled kernel behind op ``name``; ``primary`` is the argument whose dtype the
    outputs get. Half-precision arguments are computed in float32."""

    lengths_at = _LENGTHS[name]

    def impl(*args: Any) -> Any:
        dtype = args[primary].dtype
        kernels = build.ops()
        if kernels is None:
            raise RuntimeError(
                f"torch.ops.rnnlab.{name}: the compiled kernels are unavailable "
                f"({build.status()['error']}); the layers run their reference loops instead"
            )
        # one compute dtype for all: half precision and mixed arguments (autocast's forward
        # casts, its backward does not) run in float32, or float64 if any is
        compute = dtype
        for a in args:
            if isinstance(a, Tensor) and a.is_floating_point():
                compute = torch.promote_types(compute, a.dtype)
        if compute in _HALF:
            compute = torch.float32
        empty = torch.empty(0, dtype=compute)
        cargs = []
        for i, a in enumerate(args):
            if a is None:
                cargs.append(_NO_LENGTHS if i == lengths_at else empty)
            elif isinstance(a, Tensor) and a.is_floating_point() and a.dtype != compute:
                cargs.append(a.to(compute))
            else:
                cargs.append(a)
        if half.wanted(name, args, compute):  # bf16: the kernel's products in bf16 (engine/half.py)
            with half.scope(kernels, name, args, cargs):
                out = getattr(kernels, name)(*cargs)
        else:
            out = getattr(kernels, name)(*cargs)
        if compute != dtype:  # a forward's buffers stay in float32 (no cast out and back)
            skip = BUFFERS.get(name, ()) if dtype in _HALF else ()
            out = [o if k in skip else o.to(dtype) for k, o in enumerate(out)]
        return out[0] if len(out) == 1 else tuple(out)

    return impl


# a forward op's outputs that only its backward reads: computed in float32 for half-precision
# inputs, they are kept in float32 rather than cast to bf16/fp16 and back (two passes over the
# largest tensors, ~1/8 of a bf16 training step at S3)
BUFFERS = {"jordan_forward": (1,), "gru_forward": (1, 2), "lstm_forward": (3, 4)}


def _fake_with_buffers(name: str, fake: Callable[..., Any]) -> Callable[..., Any]:
    def f(*args: Any) -> Any:
        out = fake(*args)
        if args[0].dtype not in _HALF:
            return out
        return tuple(
            o.new_empty(o.shape, dtype=torch.float32) if k in BUFFERS[name] else o
            for k, o in enumerate(out)
        )

    return f if name in BUFFERS else fake


# position of ``lengths`` in each schema
_LENGTHS = {
    "elman_forward": 4, "elman_backward": 3, "jordan_forward": 5, "jordan_backward": 5,
    "gru_forward": 4, "gru_backward": 5, "lstm_forward": 10, "lstm_backward": 14,
}  # fmt: skip
_PRIMARY = {
    "elman_forward": 0, "elman_backward": 1, "jordan_forward": 0, "jordan_backward": 1,
    "gru_forward": 0, "gru_backward": 1, "lstm_forward": 0, "lstm_backward": 3,
}  # fmt: skip

# ----------------------------------------------------------------------------- vmap ----
# Per forward op: the arguments that carry the batch, with the dimension of B in each, and the
# same for the outputs. Weights have no B; a vmapped weight means slice-by-slice.
_ROWS: dict[str, tuple[dict[int, int], tuple[int | None, ...]]] = {
    "elman_forward": ({0: 1, 2: 0, 3: 0, 4: 0}, (1,)),
    "jordan_forward": ({0: 1, 4: 0, 5: 0}, (1, 1)),
    "gru_forward": ({0: 1, 3: 0, 4: 0}, (1, 1, 1)),
    "lstm_forward": ({0: 1, 7: 0, 8: 0, 9: 0, 10: 0}, (1, 1, 1, 1, 1)),
}


def _vmap_loop(name: str) -> Callable[..., Any]:
    def rule(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
        outs = []
        for v in range(info.batch_size):
            sl = [
                a.select(d, v) if d is not None and isinstance(a, Tensor) else a
                for a, d in zip(args, in_dims)
            ]
            o = op(name)(*sl)
            outs.append(o if isinstance(o, tuple) else (o,))
        stacked = tuple(torch.stack(k) for k in zip(*outs))
        dims = (0,) * len(stacked)
        return (stacked[0], 0) if len(stacked) == 1 else (stacked, dims)

    return rule


def _vmap_fold(name: str) -> Callable[..., Any]:
    rows, out_b = _ROWS[name]
    loop = _vmap_loop(name)

    def rule(info: Any, in_dims: tuple[Any, ...], *args: Any) -> Any:
        # (a non-tensor argument's in_dims entry may be a structure, e.g. [None] * 4 for int[])
        if any(
            d is not None
            for i, (a, d) in enumerate(zip(args, in_dims))
            if i not in rows and isinstance(a, Tensor)
        ):
            return loop(info, in_dims, *args)  # a vmapped weight: no shared B to fold into
        V = info.batch_size
        folded = list(args)
        for i, row_dim in rows.items():
            a = args[i]
            if a is None:
                continue
            d = in_dims[i]
            a = a.movedim(d, 0) if d is not None else a.unsqueeze(0).expand(V, *a.shape)
            a = a.movedim(0, row_dim)  # V beside B, then one dimension V·B
            folded[i] = a.reshape(*a.shape[:row_dim], -1, *a.shape[row_dim + 2 :])
        res = op(name)(*folded)
        single = not isinstance(res, tuple)
        res_t = (res,) if single else res
        outs: list[Tensor] = []
        dims: list[int | None] = []
        for o, bdim in zip(res_t, out_b):
            if o.dim() <= 1:  # an absent output (empty): not batched
                outs.append(o)
                dims.append(None)
                continue
            assert bdim is not None
            outs.append(o.reshape(*o.shape[:bdim], V, -1, *o.shape[bdim + 1 :]))
            dims.append(bdim)
        if single:
            return outs[0], dims[0]
        return tuple(outs), tuple(dims)

    return rule


def _register() -> None:
    for name in SCHEMAS:
        qual = f"{NAMESPACE}::{name}"
        torch.library.register_fake(qual, _fake_with_buffers(name, _FAKES[name]), lib=_lib)
        _lib.impl(name, _cpu_impl(name, _PRIMARY[name]), "CPU")
        rule = _vmap_fold(name) if name in _ROWS else _vmap_loop(name)
        torch.library.register_vmap(qual, rule, lib=_lib)
        # CPU autocast: bf16 (the bf16 products) under bf16 autocast, float32 otherwise
        half.register_autocast(_lib, name, op(name))


_register()
