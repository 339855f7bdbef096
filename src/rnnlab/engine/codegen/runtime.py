"""A compiled cell at run time: the loaded library, its PyTorch operators and its gradient.

``torch.ops.rnnlab_user.forward`` / ``.backward`` are one pair of torch.library operators for
every compiled cell (the cell is named by its cache key, a string argument), each with a fake
that computes output shapes from the cell's layout, so that ``torch.compile`` and
``torch.export`` see one node. :class:`_Run` is the ``autograd.Function`` (with
``setup_context``, as torch.func needs) whose backward calls the backward op.

Shapes: T time, B batch, O output, H_k a state field's size, n_j a saved value's size.
"""

from __future__ import annotations

import ctypes
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

_PLANS: dict[str, Plan] = {}

_lib = torch.library.Library("rnnlab_user", "DEF")
_lib.define("forward(str key, int T, Tensor[] hoisted, Tensor[] consts, Tensor[] h0, "
            "Tensor? lengths, bool store=True) -> Tensor[]")  # fmt: skip
_lib.define("backward(str key, Tensor[] grads, Tensor[] hoisted, Tensor[] consts, "
            "Tensor[] outs, Tensor? lengths) -> Tensor[]")  # fmt: skip

_SECOND_ORDER = (
    "rnnlab.engine.CompiledCell: second-order gradients through the compiled loop are not "
    "supported; run this code under `with rnnlab.engine.disabled():` (the reference loop)"
)


@dataclass
class Plan:
    """Everything a compiled cell needs at run time (rebuilt from the cache without tracing)."""

    key: str
    meta: dict[str, Any]
    fwd: Any
    infer: Any
    bwd: Any
    consts_fn: Any  # (*params) -> constants the loop reads
    hoist_fn: Any  # (x rows, *params) -> hoisted values
    vmap_hoist: bool

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.meta["dtype"])


def load(key: str, so: str, meta: dict[str, Any]) -> Plan:
    lib = ctypes.CDLL(so)
    from .. import dense

    ns: dict[str, Any] = {"torch": torch, "addmm": dense.addmm, "mm": dense.mm}
    exec(compile(meta["python"], f"<rnnlab cell {key}>", "exec"), ns)  # our own cached code
    plan = Plan(
        key, meta, lib.rnnlab_forward, lib.rnnlab_infer, lib.rnnlab_backward,
        ns["consts"], ns["hoist"], bool(meta["vmap_hoist"]),
    )  # fmt: skip
    _PLANS[key] = plan
    return plan


def _plan(key: str) -> Plan:
    """The loaded plan of ``key``; a program exported in another process finds it in the
    cache."""
    if key not in _PLANS:
        from . import cache

        hit = cache.lookup(key)
        if hit is None:
            raise RuntimeError(
                f"rnnlab_user: no compiled cell {key} in this process or in the cache "
                f"({cache.cache_dir()}); run the CompiledCell once to compile it"
            )
        load(key, str(hit[0]), hit[1])
    return _PLANS[key]


def _blas_threads() -> Any:
    """``RNNLAB_CC_BLAS_THREADS=n``: the loops' BLAS calls run on n threads (MKL's
    thread-local setting, restored after each loop); unset: MKL's own choice. For A/B runs of
    the benchmark: small per-step products may lose more to thread start-up than they gain."""
    import os

    n = os.environ.get("RNNLAB_CC_BLAS_THREADS")
    if not n:
        return None
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        fn = lib.MKL_Set_Num_Threads_Local  # by value (the lowercase names take a pointer)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    return lambda k: fn(ctypes.c_int(k)), int(n)


_BLAS = _blas_threads()
# RNNLAB_CC_ROWS=1: split the forward loop's batch rows over threads (opt-in: on the quiet
# 2-core machine it measured slower, S2 forward 5.0-5.2 ms against 2.6-2.9 ms on one thread,
# S1 8.7-9.6 against 7.1-7.7 ms; the per-thread products on B/2 rows lose more than the
# second core gives; docs/design/0008)
ROWS = __import__("os").environ.get("RNNLAB_CC_ROWS", "0") == "1"
# multiply-adds of a call from which the rows are split: starting a thread costs tens of
# microseconds (milliseconds on a loaded machine), about 8M multiply-adds of one core's work
ROWS_MIN_MACS = 1 << 23


def _call(fn: Any, *args: Any) -> None:
    if _BLAS is None:
        fn(*args)
        return
    set_local, n = _BLAS
    prev = set_local(n)
    try:
        fn(*args)
    finally:
        set_local(prev)


def _ptrs(ts: list[Tensor]) -> Any:
    arr = (ctypes.c_void_p * max(len(ts), 1))()
    for i, t in enumerate(ts):
        arr[i] = t.data_ptr()
    return arr


def _outs_like(plan: Plan, T: int, like: Tensor, store: bool = True) -> list[Tensor]:
    """Y, the state sequences and the saved values (empty when ``store`` is false)."""
    m = plan.meta
    B, O = m["out"]
    n = like.new_empty
    saved = [n(T, s) if store else n(0) for s in m["saved"]]
    return [n(T, B, O)] + [n(T + 1, *rc) for rc in m["states"]] + saved


@torch.library.register_fake("rnnlab_user::forward", lib=_lib)
def _forward_fake(key, T, hoisted, consts, h0, lengths, store=True):  # type: ignore[no-untyped-def]
    return _outs_like(_plan(key), T, h0[0], store)


@torch.library.register_fake("rnnlab_user::backward", lib=_lib)
def _backward_fake(key, grads, hoisted, consts, outs, lengths):  # type: ignore[no-untyped-def]
    return (
        [torch.empty_like(h) for h in hoisted]
        + [torch.empty_like(c) for c in consts]
        + [o.new_empty(o.shape[1:]) for o in outs[1 : 1 + len(_plan(key).meta["states"])]]
    )


def _lengths_ptr(lengths: Tensor | None) -> tuple[Any, Tensor | None]:
    if lengths is None:
        return None, None
    keep = lengths.to(torch.int64).contiguous()
    return ctypes.c_void_p(keep.data_ptr()), keep


def _forward_cpu(key, T, hoisted, consts, h0, lengths, store=True):  # type: ignore[no-untyped-def]
    plan = _plan(key)
    hoisted = [h.contiguous() for h in hoisted]
    consts = [c.contiguous() for c in consts]
    outs = _outs_like(plan, T, h0[0], store)
    ns = len(plan.meta["states"])
    for s, h in zip(outs[1 : 1 + ns], h0):
        s[0].copy_(h)
    # a row-split loop (codegen.rows) runs on torch's thread count, each thread its own workspace
    B = plan.meta["out"][0]
    split = plan.meta["split"] and ROWS and T * B * plan.meta["row_macs"] >= ROWS_MIN_MACS
    nth = max(1, min(torch.get_num_threads(), B)) if split else 1
    ws = plan.meta["work"]
    work = h0[0].new_empty(ws * nth)
    lp, keep = _lengths_ptr(lengths)
    _call(
        plan.fwd if store else plan.infer,
        ctypes.c_long(T), _ptrs(hoisted), _ptrs(consts), _ptrs(outs[1 : 1 + ns]),
        ctypes.c_void_p(outs[0].data_ptr()), _ptrs(outs[1 + ns :]),
        ctypes.c_void_p(work.data_ptr()), lp, ctypes.c_int(nth), ctypes.c_long(ws),
    )  # fmt: skip
    del keep
    return outs


def _backward_cpu(key, grads, hoisted, consts, outs, lengths):  # type: ignore[no-untyped-def]
    plan = _plan(key)
    ns = len(plan.meta["states"])
    grads = [g.contiguous() for g in grads]
    hoisted = [h.contiguous() for h in hoisted]
    consts = [c.contiguous() for c in consts]
    gh = [torch.empty_like(h) for h in hoisted]
    gk = [torch.zeros_like(c) for c in consts]
    g0 = [o.new_empty(o.shape[1:]) for o in outs[1 : 1 + ns]]
    work = outs[0].new_empty(plan.meta["work"])
    T = outs[0].shape[0]
    bt = [outs[0].new_empty(T, n) for n in plan.meta["bt"]]
    lp, keep = _lengths_ptr(lengths)
    _call(plan.bwd, ctypes.c_long(outs[0].shape[0]), _ptrs(hoisted), _ptrs(consts),
             _ptrs(list(outs[1 : 1 + ns])), ctypes.c_void_p(outs[0].data_ptr()),
             _ptrs(list(outs[1 + ns :])), ctypes.c_void_p(grads[0].data_ptr()),
             _ptrs(grads[1:]), _ptrs(gh), _ptrs(gk), _ptrs(g0), _ptrs(bt),
             ctypes.c_void_p(work.data_ptr()), lp)  # fmt: skip
    del keep
    return gh + gk + g0


_lib.impl("forward", _forward_cpu, "CPU")
_lib.impl("backward", _backward_cpu, "CPU")


def _counts(key: str) -> tuple[int, int, int]:
    m = _plan(key).meta
    return len(m["hoisted"]), len(m["consts"]), len(m["states"])


class _Run(torch.autograd.Function):
    """(key, T, lengths, *hoisted, *consts, *h0) -> (Y, *S, *saved). Only the key and tensors
    cross into the Function (the counts are read from the plan: dynamo traces the backward
    of a Function speculatively, with the context's values wrapped)."""

    @staticmethod
    def forward(key, T, lengths, *tensors):  # type: ignore[no-untyped-def,override]
        nh, nk, _ = _counts(key)
        h, k, s0 = tensors[:nh], tensors[nh : nh + nk], tensors[nh + nk :]
        return tuple(torch.ops.rnnlab_user.forward(key, T, list(h), list(k), list(s0), lengths))

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
        key, _, lengths = inputs[:3]
        nh, nk, ns = _counts(key)
        ctx.mark_non_differentiable(*output[1 + ns :])
        ctx.save_for_backward(*inputs[3 : 3 + nh + nk], *output)
        ctx.key, ctx.lengths = key, lengths

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[no-untyped-def]
        nh, nk, ns = _counts(ctx.key)
        saved = ctx.saved_tensors
        outs = saved[nh + nk :]
        gs = [torch.zeros_like(o) if g is None else g for g, o in zip(grads[: 1 + ns], outs)]
        res = _RunBackward.apply(ctx.key, ctx.lengths, *saved, *gs)
        return (None, None, None, *res)


class _RunBackward(torch.autograd.Function):
    """The backward op as a Function of its own, so that differentiating it again (double
    backward, hessians) raises a clear error instead of returning silent zeros."""

    @staticmethod
    def forward(key, lengths, *tensors):  # type: ignore[no-untyped-def,override]
        nh, nk, ns = _counts(key)
        ins, rest = tensors[: nh + nk], tensors[nh + nk :]
        outs, gs = rest[: len(rest) - 1 - ns], rest[len(rest) - 1 - ns :]
        return tuple(
            torch.ops.rnnlab_user.backward(
                key, list(gs), list(ins[:nh]), list(ins[nh:]), list(outs), lengths
            )
        )

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
        pass

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[no-untyped-def]
        raise RuntimeError(_SECOND_ORDER)


# autograd.Function.apply calls inspect.signature(forward) on every call (0.1 ms here): a
# precomputed __signature__ is returned at once
for _fn in (_Run, _RunBackward):
    _fn.forward.__signature__ = inspect.signature(_fn.forward)  # type: ignore[union-attr]


def run(plan: Plan, x: Tensor, params: list[Tensor], state: tuple[Tensor, ...],
        lengths: Tensor | None) -> tuple[Tensor, list[Tensor]]:  # fmt: skip
    """y (B, T, O) and the final state fields of ``x`` (B, T, I) through ``plan``'s loop."""
    B, T, I = x.shape
    consts = list(plan.consts_fn(*params))
    xt = x.transpose(0, 1)  # (T, B, I): step t's rows are contiguous
    if plan.vmap_hoist:
        hoisted = list(torch.vmap(lambda xs: plan.hoist_fn(xs, *params))(xt))
    else:
        rows = plan.hoist_fn(xt.reshape(T * B, I), *params)
        hoisted = [r.reshape(T, B, -1) for r in rows]  # (T, B, k)
    lens = None if lengths is None else lengths.to("cpu", torch.int64)
    tensors = (*hoisted, *consts, *state)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        outs = _Run.apply(plan.key, T, lens, *tensors)
    else:  # nothing to differentiate: the op alone, without the autograd.Function's cost
        outs = torch.ops.rnnlab_user.forward(plan.key, T, hoisted, consts, list(state), lens, False)
    ns = len(state)
    return outs[0].transpose(0, 1), [s[-1] for s in outs[1 : 1 + ns]]
