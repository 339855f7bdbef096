"""Trace a user cell's step once and split it: hoisted input part, constants, recurrent part.

``make_fx`` records the step as ATen operations (layer norm and friends decomposed into sums
and pointwise ops). Every node is classified by what it depends on:

* **const**: parameters only (a weight's transpose, ``1 - u``): computed once per call;
* **hoisted**: x and parameters, not the state (the input projection ``W x + b``): computed for
  all T at once, before the loop, as one large GEMM;
* **recurrent**: everything that depends on the state: the C++ time loop.

The recurrent part becomes its own graph whose inputs are the hoisted values at step t, the
state at t and the constants; its joint forward/vector-Jacobian graph (``make_fx`` of
``torch.func.vjp``) is what :mod:`.cpp` turns into C++. Nothing here is written per cell.

Shapes: B batch, T time, I input, H a state field's size.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Ops that only reinterpret memory (no arithmetic): free inside the loop, and a hoisted or
# constant value is passed to the loop as its root so that no copy is made.
VIEWS = {
    aten.permute.default, aten.t.default, aten.view.default, aten._unsafe_view.default,
    aten.reshape.default, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.default,
    aten.squeeze.dims, aten.expand.default, aten.slice.Tensor, aten.alias.default,
    aten.detach.default, aten.transpose.int, operator.getitem, aten.split.Tensor,
    aten.split_with_sizes.default, aten.lift_fresh_copy.default,
}  # fmt: skip


class Unsupported(Exception):
    """The step cannot be compiled; the message is the reason given to the user."""


def decompositions() -> dict[Any, Any]:
    from torch._decomp import core_aten_decompositions, get_decompositions

    table = dict(core_aten_decompositions())
    table.update(
        get_decompositions(
            [
                aten.native_layer_norm, aten.native_layer_norm_backward,
                aten.softplus, aten.softplus_backward, aten.silu,
                aten.silu_backward, aten.gelu, aten.gelu_backward, aten.elu,
                aten.elu_backward, aten.hardtanh, aten.hardtanh_backward, aten.addcmul,
                aten.clamp_min, aten.clamp_max, aten._softmax, aten._softmax_backward_data,
                aten._log_softmax, aten._log_softmax_backward_data,
            ]
        )
    )  # fmt: skip
    table[aten.var_mean.correction] = _var_mean
    table[aten.var.correction] = lambda *a, **k: _var_mean(*a, **k)[0]
    table[aten.mean.dim] = _mean
    return table


def _count(x: Tensor, dim: Any) -> tuple[list[int], int]:
    dims = list(range(x.dim())) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    n = 1
    for d in dims:
        n *= x.shape[d]
    return dims, n


def _mean(x: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    dims, n = _count(x, dim)
    return x.sum(dims, keepdim=keepdim) / n


def _var_mean(x: Tensor, dim: Any = None, *, correction: Any = None,
              keepdim: bool = False) -> tuple[Tensor, Tensor]:  # fmt: skip
    # sums and pointwise ops only, which the loop's code generator lowers
    dims, n = _count(x, dim)
    mean = x.sum(dims, keepdim=True) / n
    d = x - mean
    c = 1 if correction is None else correction
    var = (d * d).sum(dims, keepdim=keepdim) / max(n - c, 0)
    return var, mean if keepdim else mean.squeeze(dims)


def trace(fn: Any, args: tuple[Tensor, ...]) -> fx.GraphModule:
    """``make_fx`` with the decompositions; a failure becomes :class:`Unsupported`."""
    try:
        return _make_fx(fn, args)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is a reason to fall back
        name = type(exc).__name__
        msg = str(exc)
        if any(
            k in name + msg
            for k in (
                "DataDependent",
                "data-dependent",
                "GuardOn",
                "_local_scalar_dense",
                "value out of",
            )
        ):
            raise Unsupported(
                "the step has data-dependent control flow (a Python branch or loop on a "
                f"tensor's value), which a traced loop cannot follow ({name})"
            ) from exc
        raise Unsupported(f"tracing the step failed ({name}: {str(exc)[:200]})") from exc


def _make_fx(fn: Any, args: tuple[Tensor, ...]) -> fx.GraphModule:
    # make_fx itself imports torch._inductor (and with it dynamo: 2-3 s of the 5 s budget,
    # for one config flag). This records the same ATen graph with a dispatch mode: every op
    # the step (or its vjp) runs on the small example tensors becomes a node; a
    # decomposition, where the table has one, is recorded instead of the op.
    rec = _Recorder(decompositions())
    for i, a in enumerate(args):
        rec.bind(a, rec.graph.placeholder(f"arg{i}"))
    with rec:
        out = fn(*args)
    flat = out if isinstance(out, (tuple, list)) else (out,)
    rec.graph.output(tuple(rec.node_of(o) if isinstance(o, Tensor) else o for o in flat))
    return fx.GraphModule(torch.nn.Module(), rec.graph)


class _Recorder(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # else __torch_dispatch__ is wrapped by dynamo.disable (imports dynamo)

    def __init__(self, table: dict[Any, Any]) -> None:
        super().__init__()
        self.graph = fx.Graph()
        self.table = table
        self.env: dict[int, fx.Node] = {}
        self.keep: list[Tensor] = []  # alive, so that no id() is reused

    def bind(self, t: Tensor, n: fx.Node) -> None:
        n.meta["val"] = t
        self.env[id(t)] = n
        self.keep.append(t)

    def node_of(self, t: Tensor) -> fx.Node:
        n = self.env.get(id(t))
        if n is None:
            raise Unsupported(
                "the step uses a tensor that is neither an input, a parameter, a buffer nor "
                "computed from them (a constant tensor); register it as a buffer"
            )
        return n

    def _arg(self, a: Any) -> Any:
        if isinstance(a, Tensor):
            return self.node_of(a)
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(v) for v in a)
        return a

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _DATA_DEPENDENT:
            raise Unsupported(
                "the step has data-dependent control flow (a Python branch or loop on a "
                f"tensor's value, {func}), which a traced loop cannot follow"
            )
        if func in self.table:
            with self:
                r = self.table[func](*args, **kwargs)
            if r is not NotImplemented:
                return r
        with self:  # a composite op (to, linear, ...) as the ops it is made of
            r = func.decompose(*args, **kwargs)
        if r is not NotImplemented:
            return r
        if func._schema.is_mutable:
            raise Unsupported(f"the step mutates a tensor in place ({func})")
        out = func(*args, **kwargs)
        n = self.graph.call_function(func, self._arg(tuple(args)), self._arg(dict(kwargs)))
        if isinstance(out, Tensor):
            self.bind(out, n)
        elif isinstance(out, (tuple, list)):
            n.meta["val"] = out
            for i, o in enumerate(out):
                if isinstance(o, Tensor):
                    self.bind(o, self.graph.call_function(operator.getitem, (n, i)))
        return out


_DATA_DEPENDENT = {
    aten._local_scalar_dense.default, aten.is_nonzero.default, aten.nonzero.default,
    aten.equal.default, aten.masked_select.default,
}  # fmt: skip


@dataclass
class Split:
    """The partition of a traced step ``(x, *state, *params) -> (y, *new_state)``.

    ``pre`` holds the const and hoisted nodes needed by the loop; ``hoisted`` / ``consts``
    are the roots passed to the loop (hoisted: per step, (B, k); consts: once); ``rec`` is the
    recurrent graph ``(*hoisted_t, *state, *consts) -> (y, *new_state)``.
    """

    full: fx.GraphModule
    hoisted: list[fx.Node]
    consts: list[fx.Node]
    rec: fx.GraphModule


def _root(n: fx.Node) -> fx.Node:
    while n.op == "call_function" and n.target in VIEWS:
        first = n.args[0]
        assert isinstance(first, fx.Node)
        n = first
    return n


def split(full: fx.GraphModule, n_state: int) -> Split:
    """Classify ``full``'s nodes and build the recurrent graph (see the module docstring)."""
    graph = full.graph
    ph = [n for n in graph.nodes if n.op == "placeholder"]
    x_ph, state_ph = ph[0], ph[1 : 1 + n_state]
    dep_x: set[fx.Node] = {x_ph}
    dep_s: set[fx.Node] = set(state_ph)
    for n in graph.nodes:
        if n.op == "get_attr":
            raise Unsupported(f"the step uses a tensor constant ({n.target}); make it a buffer")
        if n.op != "call_function":
            continue
        ins = [a for a in n.all_input_nodes]
        if any(a in dep_s for a in ins):
            dep_s.add(n)
        elif any(a in dep_x for a in ins):
            dep_x.add(n)
    out_node = next(n for n in graph.nodes if n.op == "output")
    outs = list(out_node.args[0])  # type: ignore[arg-type]

    # the recurrent nodes and the boundary values they read (walked up to their view roots)
    rec_nodes = [n for n in graph.nodes if n in dep_s and n.op == "call_function"]
    pulled: set[fx.Node] = set()
    boundary: dict[fx.Node, None] = {}

    def need(v: fx.Node) -> None:
        if v in dep_s or v in pulled:
            return
        r = _root(v)
        m = v
        while m is not r:
            pulled.add(m)
            m = m.args[0]  # type: ignore[assignment]
        boundary[r] = None

    for n in rec_nodes:
        for a in n.all_input_nodes:
            need(a)
    for o in outs:
        if isinstance(o, fx.Node):
            need(o)
    hoisted = [b for b in boundary if b in dep_x]
    consts = [b for b in boundary if b not in dep_x and b not in dep_s]
    for b in hoisted:
        if len(b.meta["val"].shape) > 2:
            raise Unsupported("a hoisted value has more than two dimensions")

    # the recurrent graph: placeholders, then the pulled views and recurrent nodes in order
    rec = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for i, b in enumerate(hoisted):
        env[b] = rec.placeholder(f"hoisted{i}")
        env[b].meta["val"] = b.meta["val"]
    for i, s in enumerate(state_ph):
        env[s] = rec.placeholder(f"state{i}")
        env[s].meta["val"] = s.meta["val"]
    for i, c in enumerate(consts):
        env[c] = rec.placeholder(f"const{i}")
        env[c].meta["val"] = c.meta["val"]
    for n in graph.nodes:
        if n in pulled or (n in dep_s and n.op == "call_function"):
            env[n] = rec.node_copy(n, lambda a: env[a])
    rec.output(tuple(env[o] if isinstance(o, fx.Node) else o for o in outs))
    return Split(full, hoisted, consts, fx.GraphModule(torch.nn.Module(), rec))


def python_source(full: fx.GraphModule, wanted: list[fx.Node], args: list[str], name: str,
                  calls: dict[Any, str] | None = None) -> str:  # fmt: skip
    """Python source of ``def name(*args) -> tuple(wanted)``: ``wanted``'s ancestors in ``full``,
    as plain ``torch.ops`` calls (cached on disk, so a later process needs no tracing); an op in
    ``calls`` called with positional arguments only becomes a call of the function of that name
    instead (which the code's namespace must define)."""
    names: dict[fx.Node, str] = {}
    ph = [n for n in full.graph.nodes if n.op == "placeholder"]
    for n, a in zip(ph, args):
        names[n] = a
    needed: set[fx.Node] = set()
    stack = list(wanted)
    while stack:
        n = stack.pop()
        if n in needed or n.op == "placeholder":
            continue
        needed.add(n)
        stack.extend(n.all_input_nodes)

    def lit(a: Any) -> str:
        if isinstance(a, fx.Node):
            return names[a]
        if isinstance(a, (list, tuple)):
            inner = ", ".join(lit(v) for v in a)
            return f"[{inner}]" if isinstance(a, list) else f"({inner}{',' if len(a) == 1 else ''})"
        if isinstance(a, torch.dtype):
            return str(a)
        if isinstance(a, torch.device):
            return f"torch.device({str(a)!r})"
        if isinstance(a, (torch.layout, torch.memory_format)):
            return str(a)
        if isinstance(a, float) and (a != a or a in (float("inf"), float("-inf"))):
            return f"float({str(a)!r})"
        if a is None or isinstance(a, (bool, int, float, str)):
            return repr(a)
        raise Unsupported(f"an argument of type {type(a).__name__} in the input projection")

    lines = [f"def {name}({', '.join(args)}):"]
    for i, n in enumerate(full.graph.nodes):
        if n not in needed:
            continue
        v = names[n] = f"v{i}"
        if n.target is operator.getitem:
            lines.append(f"    {v} = {lit(n.args[0])}[{n.args[1]!r}]")
            continue
        if not isinstance(n.target, torch._ops.OpOverload):
            raise Unsupported(f"the op {n.target} in the input projection")
        pk = n.target._schema.name.split("::")
        target = f"torch.ops.{pk[0]}.{pk[1]}.{n.target._overloadname}"
        if calls and n.target in calls and not n.kwargs:
            target = calls[n.target]
        parts = [lit(a) for a in n.args] + [f"{k}={lit(a)}" for k, a in n.kwargs.items()]
        lines.append(f"    {v} = {target}({', '.join(parts)})")
    lines.append(f"    return ({''.join(names[w] + ', ' for w in wanted)})")
    return "\n".join(lines) + "\n"


def shape_baked(full: fx.GraphModule, wanted: list[fx.Node]) -> bool:
    """Whether the hoisted part has an op with a shape argument (then it is vmapped over T
    instead of run on (T·B, I) rows)."""
    shaped = {
        aten.view.default, aten._unsafe_view.default, aten.reshape.default,
        aten.expand.default, aten.full.default, aten.zeros.default, aten.ones.default,
        aten.empty.memory_format, aten.new_zeros.default, aten.new_full.default,
        aten.new_ones.default, aten.new_empty.default,
    }  # fmt: skip
    seen: set[fx.Node] = set()
    stack = list(wanted)
    while stack:
        n = stack.pop()
        if n in seen or n.op != "call_function":
            continue
        seen.add(n)
        if n.target in shaped:
            return True
        stack.extend(n.all_input_nodes)
    return False
