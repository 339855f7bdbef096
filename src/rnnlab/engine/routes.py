"""Which autograd.Function runs an engine op: a lean one in plain eager mode, the traceable ones
of :mod:`.functions` everywhere else; forward-mode AD (jvp) for both eager routes.

``Elman.apply(...)`` etc. (the names :mod:`.kernels` calls) pick per call:

- **compiling or exporting** (Dynamo): :mod:`.functions`' classes as they are, with
  ``setup_context`` and no ``jvp`` (a ``jvp`` staticmethod stops Dynamo: "Unsupported custom
  jvp");
- **plain eager** (no torch.func transform, no dispatch or function mode: no fake tensors, no
  make_fx, no non-strict export): a lean Function, forward(ctx, ...) without ``setup_context``.
  torch binds a ``setup_context`` Function's arguments with ``inspect`` on every call (about
  0.1-0.2 ms); this one saves the same tensors, asks for no zero gradients of the buffer outputs
  (gates, activations: T·B·G·H zeros per call otherwise), and its backward calls the backward op
  directly, or the backward Function of :mod:`.functions` when the backward is itself
  differentiated (``create_graph``: exact double backward as before);
- **under a torch.func transform or a mode**: subclasses of :mod:`.functions`' classes that add
  ``jvp``, so ``torch.func.jvp``, ``jacfwd`` and ``hessian`` (forward over reverse) work.

Forward mode is the reference loop's (:mod:`.reference`): a Function's ``jvp`` is
``torch.func.jvp`` of the differentiable maths it computes, the forward op's (outputs from
inputs) or the backward op's (input gradients from output gradients and inputs). Exact, and as
slow as the reference loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import functions as fn
from . import reference
from .functions import Spec, _floating
from .ops import op


def _plain_eager() -> bool:
    """No trace, no torch.func transform, no torch dispatch or function mode active."""
    if torch.compiler.is_compiling():  # first: Dynamo must not see the calls below
        return False
    return (
        torch._C._functorch.peek_interpreter_stack() is None
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
    )


def _linearised_jvp(f: Any, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> Any:
    """J v by reverse mode twice (u -> Jᵀu is linear; its vjp with v is J v): torch.func.jvp
    cannot run inside an open ``forward_ad.dual_level`` ("Nested forward mode AD")."""
    out, pull = torch.func.vjp(f, *primals)[:2]
    pull2 = torch.func.vjp(pull, tuple(torch.zeros_like(o) for o in out))[1]
    (jv,) = pull2(tangents)
    return out, jv


def _ref_jvp(
    spec: Spec, tin: list[Any], cfg: tuple[Any, ...], tangents: list[Any], nested: bool = False
) -> Any:
    """Tangents of the forward op's outputs (None for the buffers) from the inputs'; ``nested``:
    inside ``forward_ad.dual_level``."""
    present = [i for i, t in enumerate(tin) if _floating(t)]
    ref = getattr(reference, spec.cell)

    def f(*xs: Tensor) -> tuple[Tensor, ...]:
        full = list(tin)
        for i, x in zip(present, xs):
            full[i] = x
        return ref(*full, *cfg)

    def tangent(i: int) -> Tensor:
        t = tangents[i]
        return torch.zeros_like(tin[i]) if t is None else t

    jvp = _linearised_jvp if nested else torch.func.jvp
    with torch.enable_grad():
        out_t = jvp(f, tuple(tin[i] for i in present), tuple(map(tangent, present)))[1]
    res: list[Any] = [None] * spec.n_out
    for k, t in zip(spec.diff, out_t):
        res[k] = t
    return tuple(res)


def _ref_bwd_jvp(
    spec: Spec, saved: list[Any], cfg: tuple[Any, ...], tangents: list[Any]
) -> tuple[Any, ...]:
    """Tangents of the backward op's input gradients from those of (grads, inputs)."""
    n_diff = len(spec.diff)
    grads, tin = saved[:n_diff], list(saved[n_diff:])
    present = [i for i, t in enumerate(tin) if _floating(t)]
    ref = getattr(reference, spec.cell)

    vjp_of_ref = reference.vjp_of(reference.filled(ref, tin, present, cfg))

    def tangent(t: Any, like: Tensor) -> Tensor:
        return torch.zeros_like(like) if t is None else t

    g_t = tuple(tangent(tangents[k], grads[k]) for k in range(n_diff))
    x_t = tuple(tangent(tangents[n_diff + i], tin[i]) for i in present)
    with torch.enable_grad():
        xs = tuple(tin[i] for i in present)
        out_t = torch.func.jvp(vjp_of_ref, (tuple(grads), xs), (g_t, x_t))[1]
    return tuple(out_t)


def _with_jvp(full: Any, spec: Spec, backward: bool, backward_route: Any = None) -> Any:
    """``full`` (a :mod:`.functions` class) with forward mode, for eager torch.func; a forward
    Function's backward goes through ``backward_route`` (whose Function has a jvp too, for
    forward over reverse: ``hessian``)."""
    n_diff = len(spec.diff)
    n_saved = n_diff + spec.n_in if backward else spec.n_in

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        full.setup_context(ctx, inputs, output)
        # what jvp reads must come through ctx.saved_tensors: under vmap (jacfwd, hessian)
        # torch re-batches exactly those; the same tensors as save_for_backward's
        outs = output if isinstance(output, tuple) else (output,)
        ctx.save_for_forward(*inputs[:n_saved], *(() if backward else outs))

    def jvp(ctx: Any, *tangents: Any) -> Any:
        saved = list(ctx.saved_tensors[:n_saved])
        if backward:
            return _ref_bwd_jvp(spec, saved, ctx.cfg, list(tangents))
        return _ref_jvp(spec, saved, ctx.cfg, list(tangents))

    body = {"setup_context": staticmethod(setup_context), "jvp": staticmethod(jvp)}
    if not backward:

        def bwd(ctx: Any, *gouts: Tensor) -> Any:
            return fn._fwd_backward(spec, backward_route, ctx, gouts)

        body["backward"] = staticmethod(bwd)
    return type(full.__name__ + "Jvp", (full,), body)


def _lean(spec: Spec, backward_route: Any) -> Any:
    """The plain-eager Function of one forward op (see the module's docstring)."""
    n_in, diff = spec.n_in, spec.diff
    fwd_op, bwd_op = op(f"{spec.cell}_forward"), op(f"{spec.cell}_backward")
    non_diff = tuple(k for k in range(spec.n_out) if k not in diff)

    def forward(ctx: Any, *args: Any) -> Any:
        out = fwd_op(*args)
        outs = out if isinstance(out, tuple) else (out,)
        if non_diff:
            ctx.mark_non_differentiable(*(outs[k] for k in non_diff))
        ctx.set_materialize_grads(False)  # no T·B·G·H zeros for the unused buffer outputs
        ctx.save_for_backward(*args[:n_in], *outs)
        ctx.cfg = args[n_in:]
        if forward_ad._current_level >= 0:  # a dual level is open: keep the inputs for jvp
            ctx.fwd_inputs = args[:n_in]
        return outs

    def backward(ctx: Any, *gouts: Any) -> Any:
        saved = ctx.saved_tensors
        tin, outs = list(saved[:n_in]), list(saved[n_in:])
        grads = [torch.zeros_like(outs[k]) if gouts[k] is None else gouts[k] for k in diff]
        cfg = ctx.cfg
        if torch.is_grad_enabled():  # create_graph: the differentiable backward Function
            res = backward_route.apply(*grads, *tin, *cfg, *outs)
            it = iter(res if isinstance(res, tuple) else (res,))
            g_in = [next(it) if _floating(t) else None for t in tin]
        else:
            raw = bwd_op(*spec.backward_args(grads, tin, list(cfg), outs))
            g_in = spec.backward_grads(raw if isinstance(raw, tuple) else (raw,), tin)
        return (*g_in, *([None] * len(cfg)))

    def jvp(ctx: Any, *tangents: Any) -> Any:
        return _ref_jvp(spec, list(ctx.fwd_inputs), ctx.cfg, list(tangents), nested=True)

    body = {"forward": staticmethod(forward), "backward": staticmethod(backward),
            "jvp": staticmethod(jvp)}  # fmt: skip
    # created with its name, which autograd gives its backward node (ElmanEagerBackward)
    return type(f"{spec.cell.capitalize()}Eager", (torch.autograd.Function,), body)


class _Ints(tuple):  # type: ignore[type-arg]
    """An ``int[]`` argument (the LSTM's ``blocks``) as one pytree leaf: with a list, torch's
    jvp under vmap (``jacfwd``) counts its items as arguments and fails to match tangents."""


class _Route:
    """``.apply(*op_args)``: the lean Function in plain eager mode, else the traceable one (with
    ``jvp`` when not compiling)."""

    def __init__(self, spec: Spec, full: Any, full_backward: Any) -> None:
        self.full = full
        self.backward = _BackwardRoute(full_backward, _with_jvp(full_backward, spec, True))
        self.full_jvp = _with_jvp(full, spec, False, self.backward)
        self.lean = _lean(spec, self.backward)

    def apply(self, *args: Any) -> Any:
        if torch.compiler.is_compiling():
            return self.full.apply(*args)
        if _plain_eager():
            return self.lean.apply(*args)
        return self.full_jvp.apply(*(_Ints(a) if type(a) is list else a for a in args))


class _BackwardRoute:
    def __init__(self, full: Any, full_jvp: Any) -> None:
        self.full, self.full_jvp = full, full_jvp

    def apply(self, *args: Any) -> Any:
        if torch.compiler.is_compiling():
            return self.full.apply(*args)
        return self.full_jvp.apply(*args)


Elman = _Route(fn._ELMAN, fn.Elman, fn.ElmanBackward)
Jordan = _Route(fn._JORDAN, fn.Jordan, fn.JordanBackward)
GRU = _Route(fn._GRU, fn.GRU, fn.GRUBackward)
LSTM = _Route(fn._LSTM, fn.LSTM, fn.LSTMBackward)
