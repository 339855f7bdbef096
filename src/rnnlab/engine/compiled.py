"""CompiledCell: a user's own cell traced once and run as a generated C++ time loop.

The step is recorded with ``make_fx`` and split (:mod:`.codegen.trace`): what depends on x only
(the input projection) runs for all T at once before the loop, as one large GEMM; what depends
on the state becomes a C++ loop (:mod:`.codegen.loop`) with the recurrent GEMMs through BLAS and
the pointwise maths between them fused into vectorised loops, forward and backward (the
backward is the traced vector-Jacobian product of the step, not a rule written per cell). It
is compiled with g++ in about a second and loaded with ctypes; no ATen header is parsed, no
dynamo or Inductor runs. The loop is a torch.library operator with a fake and an
``autograd.Function``, so it also runs under ``torch.compile``, ``torch.export`` and
``torch.func.grad``.

Compiled loops are cached on disk (:mod:`.codegen.cache`), keyed by the step's
``torch.fx.symbolic_trace`` code, the module tree, parameter shapes, batch size, dtype, torch
version and compiler flags: a later process loads the library without tracing. A step the
code generator cannot follow (data-dependent control flow, an op without a lowering, a
tensor of more than two dimensions) runs on the reference loop, with a warning naming the
reason; never wrong and never silent.

Shapes: B batch, T time, I input, O output, H_k a state field's size.
"""

from __future__ import annotations

import operator
import sys
import time
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..cells.base import Cell


class CompiledCell(Cell):
    """Wrap ``cell`` so that ``Recurrent`` runs it as a generated, compiled C++ loop.

    The wrapped step must be a function of ``x`` (B, I), the state fields (B, H_k) and the
    cell's parameters and buffers, built from ATen ops the generator lowers (matrix products,
    pointwise maths, sums/max over a dimension, slicing and concatenation); otherwise the
    reference loop runs, with a warning. Float32 and float64 on CPU; other devices and dtypes
    take the reference loop silently (there is nothing to compile for them).

    Args:
        cell: any rnnlab cell (typically your own; built-in cells have hand-written kernels).

    Example:
        >>> from rnnlab import Recurrent
        >>> from rnnlab.bench import MinimalGatedUnit
        >>> fast = Recurrent(CompiledCell(MinimalGatedUnit(3, 4)))  # compiled on first call
    """

    def __init__(self, cell: Cell) -> None:
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected an rnnlab Cell, got {type(cell).__name__}")
        self.cell = cell
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.output_size = cell.output_size
        self.State = cell.State
        self.feedback_field = cell.feedback_field
        self._plans: dict[tuple[Any, ...], Any] = {}
        self.last_fallback: str | None = None  # the reason of the last reference-loop run
        self._where: list[tuple[nn.Module, str]] | None = None

    def _inner(self) -> Any:
        return self.cell.step if type(self.cell).forward is Cell.forward else self.cell.forward

    def state_sizes(self) -> dict[str, int]:
        return self.cell.state_sizes()

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self._inner()(x, state)

    def config(self) -> dict[str, Any]:
        return self.cell.config()

    def _tensors(self) -> list[tuple[str, Tensor]]:
        return list(self.cell.named_parameters()) + list(self.cell.named_buffers())

    def _current(self) -> list[Tensor]:
        """The parameters and buffers in traced order, read by (module, name) on every call
        (cheaper than named_parameters, and a reassigned parameter is still seen)."""
        if self._where is None:
            mods = dict(self.cell.named_modules())
            where: list[tuple[nn.Module, str]] = []
            for n, _ in self._tensors():
                mod, _, attr = n.rpartition(".")
                where.append((mods[mod], attr))
            self._where = where
        return [getattr(m, a) for m, a in self._where]

    def plan(self, x: Tensor) -> Any:
        """The compiled loop for x's batch size and dtype (compiling or loading it on first
        use), or None after warning why the reference loop runs instead."""
        if "torch._dynamo" in sys.modules:  # under torch.compile: built outside the graph
            import torch._dynamo

            return torch._dynamo.disable(self._plan)(x)
        return self._plan(x)

    def _plan(self, x: Tensor) -> Any:
        B, dtype = x.shape[0], x.dtype
        k = (B, dtype)
        if k not in self._plans:
            try:
                self._plans[k] = _build(self, B, dtype)
                self.last_fallback = None
            except Exception as exc:  # noqa: BLE001 - every failure: reference loop, warned
                from .codegen.trace import Unsupported

                reason = (
                    str(exc) if isinstance(exc, Unsupported) else f"{type(exc).__name__}: {exc}"
                )
                warnings.warn(
                    f"CompiledCell({type(self.cell).__name__}): running the reference loop "
                    f"instead, because {reason}",
                    RuntimeWarning,
                    stacklevel=4,
                )
                self._plans[k] = None
                self.last_fallback = reason
        return self._plans[k]


def _step_fn(cc: CompiledCell, names: list[str], n_state: int) -> Any:
    from torch.nn.utils.stateless import _reparametrize_module

    inner, State, cell = cc._inner(), cc.State, cc.cell

    def stepf(x: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        state, ps = rest[:n_state], rest[n_state:]
        with _reparametrize_module(cell, dict(zip(names, ps))):
            y, new = inner(x, State(*state))
        return (y, *new)

    return stepf


def _symbolic_key(cc: CompiledCell, B: int, dtype: torch.dtype) -> str | None:
    """The cache key, from ``torch.fx.symbolic_trace`` (None when the step cannot be
    symbolically traced: then nothing is cached)."""
    from .codegen import cache

    sizes = list(cc.state_sizes().values())
    fields = ", ".join(f"s{i}" for i in range(len(sizes)))
    ns: dict[str, Any] = {}
    exec(f"def forward(self, x, {fields}):\n    y, s = self.fn(x, self.State({fields}))\n"
         "    return (y, *s)\n", ns)  # fmt: skip

    class _Wrap(nn.Module):
        forward = ns["forward"]

    w = _Wrap()
    w.cell = cc.cell
    w.fn = cc._inner()
    w.State = cc.State  # type: ignore[assignment]
    try:
        code = torch.fx.symbolic_trace(w).code
    except Exception:  # noqa: BLE001 - untraceable symbolically: compile, but do not cache
        return None
    parts = {
        "code": code,
        "tree": repr(cc.cell),
        "type": f"{type(cc.cell).__module__}.{type(cc.cell).__qualname__}",
        "tensors": [(n, list(t.shape), str(t.dtype)) for n, t in cc._tensors()],
        "B": B, "I": cc.input_size, "states": sizes, "dtype": str(dtype),
    }  # fmt: skip
    return cache.key(parts)


def _build(cc: CompiledCell, B: int, dtype: torch.dtype) -> Any:
    from .codegen import cache, runtime

    key = _symbolic_key(cc, B, dtype)
    if key is not None:
        hit = cache.lookup(key)
        if hit is not None:
            return runtime.load(key, str(hit[0]), hit[1])
    name = type(cc.cell).__name__
    t0 = time.perf_counter()
    # one line: the message now, its end (the time, or "failed") when done
    dt = str(dtype).replace("torch.", "")
    print(f"rnnlab: compiling {name} for B={B}, {dt} (first use; cached afterwards) ...",
          end="", file=sys.stderr, flush=True)  # fmt: skip
    ok = False
    try:
        # the joint graph of the backward is traced with torch.autograd.grad: under a caller's
        # no_grad it would record no gradient at all (and cache a backward of zeros)
        with torch.enable_grad():
            src, meta = _generate(cc, B, dtype)
        k = key or cache.key({"uncached": id(cc), "t": time.time()})
        so = cache.compile_and_store(k, src, meta, keep=key is not None)
        plan = runtime.load(k, str(so), meta)
        ok = True
    finally:
        end = f" {time.perf_counter() - t0:.1f} s" if ok else " not compiled"
        print(end, file=sys.stderr, flush=True)
    return plan


def _generate(cc: CompiledCell, B: int, dtype: torch.dtype) -> tuple[str, dict[str, Any]]:
    from .codegen import loop, trace

    tensors = cc._tensors()
    names = [n for n, _ in tensors]
    for n, t in tensors:
        if t.dtype != dtype:
            raise trace.Unsupported(f"the tensor {n} is {t.dtype}, the input {dtype}")
    sizes = list(cc.state_sizes().values())
    ex = [torch.zeros(B, cc.input_size, dtype=dtype)]
    ex += [torch.zeros(B, h, dtype=dtype) for h in sizes]
    ex += [t.detach().clone() for _, t in tensors]
    full = trace.trace(_step_fn(cc, names, len(sizes)), tuple(ex))
    sp = trace.split(full, len(sizes))
    for h in sp.hoisted:
        shp = tuple(h.meta["val"].shape)
        if len(shp) != 2 or shp[0] != B:
            raise trace.Unsupported(f"a value computed from x alone has shape {shp}, not (B, k)")
    src, meta = loop.generate(sp, dtype)
    args = ["x"] + [f"p{i}" for i in range(len(names))]
    ph_args = ["x"] + [f"s{i}" for i in range(len(sizes))] + args[1:]
    consts_src = trace.python_source(full, sp.consts, ph_args, "consts")
    # the products of the input projection through engine.dense (oneDNN in eager float32)
    aten = torch.ops.aten
    dense_calls = {aten.addmm.default: "addmm", aten.mm.default: "mm"}
    hoist_src = trace.python_source(full, sp.hoisted, ph_args, "hoist", dense_calls)
    # the generated functions take (x, *params) / (*params): state placeholders are unused
    py = consts_src.replace("def consts(" + ", ".join(ph_args) + "):",
                            "def consts(" + ", ".join(args[1:]) + "):")  # fmt: skip
    py += hoist_src.replace("def hoist(" + ", ".join(ph_args) + "):",
                            "def hoist(" + ", ".join(args) + "):")  # fmt: skip
    meta["python"] = py
    meta["vmap_hoist"] = not _rows_independent(sp)
    meta["names"] = names
    return src, meta


def _rows_independent(sp: Any) -> bool:
    """Whether the hoisted part treats every row of x separately (then it runs on all T·B
    rows at once; otherwise it is vmapped over T)."""
    from .codegen.cpp import POINTWISE

    aten = torch.ops.aten
    ph = [n for n in sp.full.graph.nodes if n.op == "placeholder"]
    x = ph[0]
    dep_x: set[Any] = {x}
    for n in sp.full.graph.nodes:
        if n.op == "call_function" and any(a in dep_x for a in n.all_input_nodes):
            dep_x.add(n)
    seen: set[Any] = set()
    stack = list(sp.hoisted)
    while stack:
        n = stack.pop()
        if n in seen or n not in dep_x or n is x:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
        t = n.target
        if t in POINTWISE:
            continue
        if t in (aten.split.Tensor, aten.split_with_sizes.default):
            if (n.args[2] if len(n.args) > 2 else 0) in (1, -1):
                continue
            return False
        if t is aten.slice.Tensor:
            if (n.args[1] if len(n.args) > 1 else 0) in (1, -1):
                continue
            return False
        if t is operator.getitem:
            continue
        if t is aten.mm.default and n.args[0] in dep_x and n.args[1] not in dep_x:
            continue
        if (
            t is aten.addmm.default
            and n.args[1] in dep_x
            and not (n.args[0] in dep_x or n.args[2] in dep_x)
        ):
            continue
        return False
    return True


def compiled_cell_kernel(
    cell: CompiledCell, x: Tensor, state: Any, lengths: Tensor | None
) -> tuple[Tensor, Any] | None:
    """The engine kernel of CompiledCell: the compiled loop, or None (reference loop)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    plan = cell.plan(x)
    if plan is None:
        return None
    params = cell._current()
    y, final = _run(plan, x, params, tuple(state), lengths)
    return y, cell.State(*final)


def _run(plan: Any, x: Tensor, params: list[Tensor], state: tuple[Tensor, ...],
         lengths: Tensor | None) -> Any:  # fmt: skip
    from .codegen import runtime

    return runtime.run(plan, x, params, state, lengths)
