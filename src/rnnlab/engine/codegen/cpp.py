"""C++ for one step of a traced graph: GEMMs through BLAS, pointwise runs fused into one loop.

Every value of a step is a 2-D strided view ``base[i*rs + j*cs]`` of shape (R, C) (a 1-D
tensor of n elements is (1, n), a scalar (1, 1): torch's broadcasting aligns trailing
dimensions, so this is exact). Views (permute, slice, split, unsqueeze, expand) cost nothing:
they only change (base, R, C, rs, cs). Consecutive pointwise nodes of the same shape form a
segment, emitted as one loop whose intermediates stay in registers; a value is written to
memory only where something outside its segment reads it. Reductions (sum, amax over either
dimension: layer norm over H, a parameter's gradient over B) and ``cat`` get their own loops;
``mm``/``addmm`` call ``sgemm_``/``dgemm_`` (libtorch_cpu's BLAS) on the views' pointers, or, for
a product of few rows with a loop-invariant weight, ``csrc/smallgemm.h`` on the weight packed
once before the loop.

Nothing here knows a cell: :mod:`.loop` feeds it the forward or the backward part of the joint
graph from :mod:`.trace`.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from .trace import VIEWS, Unsupported

aten = torch.ops.aten

# pointwise ops: C++ expression templates over the operand expressions {0}, {1}, ...
UNARY = {
    aten.neg.default: "(-{0})", aten.sigmoid.default: "sigm({0})", aten.tanh.default: "tanh_({0})",
    aten.exp.default: "exp_({0})", aten.log.default: "std::log({0})",
    aten.relu.default: "std::max({0}, T(0))", aten.rsqrt.default: "(T(1) / std::sqrt({0}))",
    aten.sqrt.default: "std::sqrt({0})", aten.abs.default: "std::fabs({0})",
    aten.reciprocal.default: "(T(1) / {0})", aten.sin.default: "std::sin({0})",
    aten.cos.default: "std::cos({0})", aten.log1p.default: "std::log1p({0})",
    aten.expm1.default: "std::expm1({0})", aten.erf.default: "std::erf({0})",
    aten.sign.default: "T(({0} > T(0)) - ({0} < T(0)))", aten.clone.default: "{0}",
    aten.logical_not.default: "T(!({0} != T(0)))",
}  # fmt: skip
BINARY = {
    aten.add.Tensor: "({0} + {1})", aten.sub.Tensor: "({0} - {1})", aten.mul.Tensor: "({0} * {1})",
    aten.div.Tensor: "({0} / {1})", aten.maximum.default: "std::max({0}, {1})",
    aten.minimum.default: "std::min({0}, {1})", aten.pow.Tensor_Scalar: "pw({0}, {1})",
    aten.pow.Tensor_Tensor: "std::pow({0}, {1})", aten.gt.Tensor: "T({0} > {1})",
    aten.gt.Scalar: "T({0} > {1})", aten.lt.Tensor: "T({0} < {1})", aten.lt.Scalar: "T({0} < {1})",
    aten.ge.Tensor: "T({0} >= {1})", aten.ge.Scalar: "T({0} >= {1})",
    aten.le.Tensor: "T({0} <= {1})", aten.le.Scalar: "T({0} <= {1})",
    aten.eq.Tensor: "T({0} == {1})", aten.eq.Scalar: "T({0} == {1})",
    aten.ne.Tensor: "T({0} != {1})", aten.ne.Scalar: "T({0} != {1})",
    aten.add.Scalar: "({0} + {1})", aten.sub.Scalar: "({0} - {1})",
    aten.mul.Scalar: "({0} * {1})", aten.div.Scalar: "({0} / {1})",
}  # fmt: skip
POINTWISE = set(UNARY) | set(BINARY) | {
    aten.where.self, aten.clamp.default, aten.sigmoid_backward.default,
    aten.tanh_backward.default, aten.threshold_backward.default, aten._to_copy.default,
    aten.copy.default, aten.fill.Scalar, aten.full_like.default, aten.zeros_like.default,
    aten.ones_like.default, aten.full.default, aten.zeros.default, aten.ones.default,
    aten.scalar_tensor.default, aten.lerp.Scalar, aten.lerp.Tensor,
}  # fmt: skip
REDUCE = {aten.sum.dim_IntList: "+", aten.amax.default: "max", aten.amin.default: "min",
          aten.sum.default: "+"}  # fmt: skip
GEMM = {aten.mm.default, aten.addmm.default}
# Per-step products with a constant weight and at most SMALL_M rows use csrc/smallgemm.h
# (packed once per loop) rather than BLAS; RNNLAB_CC_SMALLGEMM=0 keeps BLAS (A/B runs).
SMALL_GEMM = os.environ.get("RNNLAB_CC_SMALLGEMM", "1") != "0"
SMALL_M = 32


def _args(n: fx.Node) -> Any:
    return n.args


def shape2(n: Any) -> tuple[int, int]:
    """A node's value as (R, C): (n,) is (1, n), a scalar is (1, 1)."""
    s = tuple(int(d) for d in n.meta["val"].shape)
    if len(s) > 2:
        raise Unsupported(f"{n.target} makes a {len(s)}-D tensor inside the loop")
    return (1, 1) if not s else (1, s[0]) if len(s) == 1 else (s[0], s[1])


@dataclass
class Val:
    """A strided (R, C) view: element (i, j) is ``base[off + i*rs + j*cs]``."""

    base: str
    R: int
    C: int
    rs: int
    cs: int
    off: int = 0

    def at(self, i: str, j: str) -> str:
        terms = [str(self.off)] if self.off else []
        if self.R > 1 and self.rs:
            terms.append(f"{i}*{self.rs}" if self.rs != 1 else i)
        if self.C > 1 and self.cs:
            terms.append(f"{j}*{self.cs}" if self.cs != 1 else j)
        return f"{self.base}[{' + '.join(terms) or '0'}]"


def contiguous(base: str, R: int, C: int) -> Val:
    return Val(base, R, C, C, 1)


def lit(v: Any) -> str:
    if isinstance(v, bool):
        return "T(1)" if v else "T(0)"
    v = float(v)
    if math.isinf(v):
        return "(-INFINITY)" if v < 0 else "INFINITY"
    return f"T({v!r})"


@dataclass
class Step:
    """C++ for nodes of one graph. ``vals`` holds the values given from outside (placeholders,
    saved values) and ``homes`` where given nodes must be written (outputs, saved values)."""

    nodes: list[fx.Node]
    vals: dict[fx.Node, Val]
    homes: dict[fx.Node, Val]
    work: list[int]  # [next free element of the workspace], shared by the steps of a cell
    lines: list[str] = field(default_factory=list)
    post: list[str] = field(default_factory=list)  # after the time loop
    pre: list[str] = field(default_factory=list)  # before the time loop (weight packing)
    packs: dict[tuple[Any, ...], int] = field(default_factory=dict)  # packed weight -> offset
    scalars: dict[fx.Node, str] = field(default_factory=dict)
    split_rows: int = 0  # B of a row-split step (.rows): its loops over B rows run [r0, r1)

    def _rows(self, R: int) -> tuple[str, str]:
        return ("r0", "r1") if self.split_rows and R == self.split_rows else ("0", str(R))

    # ------------------------------------------------------------------------- values ----
    def val(self, n: Any) -> Val:
        if n in self.vals:
            return self.vals[n]
        if not isinstance(n, fx.Node) or n.op != "call_function" or n.target not in VIEWS:
            raise Unsupported(f"internal: no value for {n}")
        self.vals[n] = v = self._view(n)
        return v

    def _view(self, n: fx.Node) -> Val:
        t, a = n.target, _args(n)
        if t is operator.getitem:
            src = a[0]
            assert isinstance(src, fx.Node)
            sargs = _args(src)
            base = self.val(sargs[0])
            sizes = sargs[1]
            dim = sargs[2] if len(sargs) > 2 else 0
            if src.target is aten.split.Tensor:
                total = sargs[0].meta["val"].shape[dim]
                sizes = [min(sizes, total - k) for k in range(0, total, sizes)]
            start = sum(sizes[: a[1]])
            return self._slice(base, sargs[0], dim, start, start + sizes[a[1]])
        base = self.val(a[0])
        R, C = shape2(n)
        nd_in = len(a[0].meta["val"].shape)
        if t in (aten.permute.default, aten.t.default, aten.transpose.int):
            if nd_in < 2:
                return base
            return Val(base.base, R, C, base.cs, base.rs, base.off)
        if t is aten.slice.Tensor:
            dim, start, end = (list(a[1:]) + [0, None, None])[:3]
            step = a[4] if len(a) > 4 else 1
            if step != 1:
                raise Unsupported("a strided slice inside the loop")
            size = a[0].meta["val"].shape[dim]
            start = 0 if start is None else start
            end = size if end is None else min(end, size)
            return self._slice(base, a[0], dim, start, end)
        if t is aten.expand.default:
            return Val(base.base, R, C, base.rs if base.R == R else 0,
                       base.cs if base.C == C else 0, base.off)  # fmt: skip
        if t in (aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default):
            return base
        # view, reshape, unsqueeze, squeeze: same elements, new (R, C)
        if (R, C) == (base.R, base.C):
            return Val(base.base, R, C, base.rs, base.cs, base.off)
        if base.R == 1 or base.C == 1:  # a vector in, any vector-shaped result
            s = base.cs if base.R == 1 else base.rs
            if R == 1 or C == 1:
                return Val(base.base, R, C, s if R > 1 else 0, s if C > 1 else 0, base.off)
        if base.cs == 1 and base.rs == base.C:
            return Val(base.base, R, C, C, 1, base.off)
        raise Unsupported(f"a reshape {base.R}x{base.C} -> {R}x{C} of a strided value")

    def _slice(self, base: Val, src: Any, dim: int, start: int, end: int) -> Val:
        nd = len(src.meta["val"].shape)
        dim = dim % max(nd, 1)
        axis = 1 if nd == 1 or dim == 1 else 0
        if axis == 1:
            return Val(base.base, base.R, end - start, base.rs, base.cs, base.off + start * base.cs)
        return Val(base.base, end - start, base.C, base.rs, base.cs, base.off + start * base.rs)

    def _pack_space(self, N: int, K: int) -> int:
        off = self.work[0]
        # panels of at most 32 columns (two 64-byte vectors of float): a bound for every width
        self.work[0] += (N + 31) // 32 * 32 * K
        return off

    def tmp(self, R: int, C: int) -> Val:
        off = self.work[0]
        self.work[0] += (R * C + 15) // 16 * 16  # 64-byte steps keep rows vector-aligned
        return contiguous(f"(W + {off})", R, C)

    # ----------------------------------------------------------------------- emission ----
    def emit(self) -> None:
        kinds = [self._kind(n) for n in self.nodes]
        segs: list[list[fx.Node]] = []
        cur: list[fx.Node] = []
        for n, k in zip(self.nodes, kinds):
            if k == "view":
                continue
            if k == "scalar":
                self.scalars[n] = self._scalar(n)
                continue
            if k == "pointwise":
                shp = shape2(n)
                if cur and shape2(cur[0]) == shp and not self._reads_view_of(n, cur):
                    cur.append(n)
                    continue
                if cur:
                    segs.append(cur)
                cur = [n]
                continue
            if cur:
                segs.append(cur)
                cur = []
            segs.append([n])
        if cur:
            segs.append(cur)
        seg_of = {n: i for i, s in enumerate(segs) for n in s}
        users: dict[fx.Node, list[fx.Node]] = {n: [] for n in self.nodes}
        for n in self.nodes:
            for a in n.all_input_nodes:
                if a in users:
                    users[a].append(n)
        for s in segs:
            if self._kind(s[0]) != "pointwise":
                self._emit_other(s[0])
                continue
            local = {
                m for m in s
                if m not in self.homes
                and users[m]
                and all(seg_of.get(u) == seg_of[m] and u.target not in VIEWS for u in users[m])
            }  # fmt: skip
            self._emit_segment(s, local)

    def _kind(self, n: fx.Node) -> str:
        t = n.target
        if t in VIEWS:
            return "view"
        if t in (aten.scalar_tensor.default,) or (
            t in (aten.full.default, aten.zeros.default, aten.ones.default) and shape2(n) == (1, 1)
        ):
            return "scalar"
        if t in POINTWISE:
            return "pointwise"
        if t in GEMM or t in REDUCE or t is aten.cat.default:
            return "other"
        raise Unsupported(f"the op {t} has no lowering in CompiledCell's code generator")

    def _scalar(self, n: fx.Node) -> str:
        if n.target is aten.scalar_tensor.default:
            return lit(n.args[0])
        if n.target is aten.full.default:
            return lit(n.args[1])
        return lit(0 if n.target is aten.zeros.default else 1)

    def _reads_view_of(self, n: fx.Node, seg: list[fx.Node]) -> bool:
        members = set(seg)
        for a in n.all_input_nodes:
            m = a
            while m.op == "call_function" and m.target in VIEWS:
                m = _args(m)[0]
                if m in members:
                    return True
        return False

    def _home(self, n: fx.Node) -> Val:
        if n not in self.homes:
            R, C = shape2(n)
            self.homes[n] = self.tmp(R, C)
        self.vals[n] = self.homes[n]
        return self.homes[n]

    def _operand(self, a: Any, local: set[fx.Node], names: dict[fx.Node, str]) -> str:
        if isinstance(a, fx.Node):
            if a in names:
                return names[a]
            if a in self.scalars:
                return self.scalars[a]
            return self.val(a).at("i", "j")
        return lit(a)

    def _emit_segment(self, seg: list[fx.Node], local: set[fx.Node]) -> None:
        R, C = shape2(seg[0])
        names: dict[fx.Node, str] = {}
        body: list[str] = []
        stores: list[tuple[Val, str]] = []
        for m in seg:
            home = None if m in local else self._home(m)
            expr = self._pointwise(m, lambda a: self._operand(a, local, names))
            v = f"v{len(self.lines)}_{len(names)}"
            body.append(f"const T {v} = {expr};")
            names[m] = v
            if home is not None:
                stores.append((home, v))
        for home, v in stores:
            body.append(f"{home.at('i', 'j')} = {v};")
        lo, hi = self._rows(R)
        self.lines.append(f"for (int i = {lo}; i < {hi}; ++i) {{")
        self.lines.append("#pragma omp simd")
        self.lines.append(f"for (int j = 0; j < {C}; ++j) {{")
        self.lines.extend("  " + b for b in body)
        self.lines.append("}}")

    def _pointwise(self, n: fx.Node, op: Any) -> str:
        t, a, kw = n.target, _args(n), dict(n.kwargs)
        if t in UNARY:
            return UNARY[t].format(op(a[0]))
        if t in BINARY:
            x, y = op(a[0]), op(a[1])
            alpha = kw.get("alpha", 1)
            if alpha != 1:
                y = f"({lit(alpha)} * {y})"
            return BINARY[t].format(x, y)
        if t is aten.where.self:
            return f"(({op(a[0])}) != T(0) ? {op(a[1])} : {op(a[2])})"
        if t is aten.clamp.default:
            e = op(a[0])
            lo = a[1] if len(a) > 1 else kw.get("min")
            hi = a[2] if len(a) > 2 else kw.get("max")
            if lo is not None:
                e = f"std::max({e}, {op(lo)})"
            if hi is not None:
                e = f"std::min({e}, {op(hi)})"
            return e
        if t is aten.sigmoid_backward.default:
            g, y = op(a[0]), op(a[1])
            return f"({g} * {y} * (T(1) - {y}))"
        if t is aten.tanh_backward.default:
            g, y = op(a[0]), op(a[1])
            return f"({g} * (T(1) - {y} * {y}))"
        if t is aten.threshold_backward.default:
            return f"({op(a[1])} <= {lit(a[2])} ? T(0) : {op(a[0])})"
        if t in (aten._to_copy.default, aten.copy.default):
            dt = kw.get("dtype")
            if dt is not None and dt not in (torch.float32, torch.float64, torch.bool):
                raise Unsupported(f"a conversion to {dt} inside the loop")
            src = a[1] if t is aten.copy.default else a[0]
            return op(src)
        if t in (aten.lerp.Scalar, aten.lerp.Tensor):
            s, e, w = op(a[0]), op(a[1]), op(a[2])
            return f"({s} + {w} * ({e} - {s}))"
        if t is aten.fill.Scalar or t is aten.full_like.default:
            return lit(a[1])
        if t is aten.full.default:
            return lit(a[1])
        if t in (aten.zeros_like.default, aten.zeros.default):
            return "T(0)"
        return "T(1)"  # ones, ones_like

    def _emit_other(self, n: fx.Node) -> None:
        t: Any = n.target
        args, kwargs = _args(n), dict[str, Any](n.kwargs)
        out = self._home(n)
        if t in GEMM:
            bias = args[0] if t is aten.addmm.default else None
            a, b = (args[1], args[2]) if bias is not None else (args[0], args[1])
            beta = 0.0
            if bias is not None:
                bv = self._value_of(bias)
                self._copy(bv, out, "=")
                beta = float(kwargs.get("beta", 1))
            alpha = float(kwargs.get("alpha", 1))
            va, vb = self._gemm_operand(a), self._gemm_operand(b)
            (ta, lda), (tb, ldb) = self._layout(va), self._layout(vb)
            M, K, N = va.R, va.C, vb.C
            pa, pb = f"({va.base} + {va.off})", f"({vb.base} + {vb.off})"
            pc, mr = f"{out.base} + {out.off}", str(M)
            if self._rows(M)[0] == "r0":  # this thread's rows of A and C
                pa, pc, mr = f"({pa} + r0*{1 if ta else lda})", f"{pc} + r0*{out.rs}", "(r1 - r0)"
            if SMALL_GEMM and M <= SMALL_M and vb.base.startswith("K["):
                # a loop-invariant weight: packed once before the loop, small-M product per step
                pk = (vb.base, vb.off, vb.R, vb.C, vb.rs, vb.cs)
                if pk not in self.packs:
                    self.packs[pk] = off = self._pack_space(N, K)
                    self.pre.append(f"rnnlab_sg::pack_b({int(tb)}, {N}, {K}, {pb}, {ldb}, "
                                    f"W + {off});")  # fmt: skip
                self.lines.append(
                    f"rnnlab_sg::gemm_packed({int(ta)}, {mr}, {N}, {K}, T({alpha!r}), {pa}, {lda}, "
                    f"W + {self.packs[pk]}, T({beta!r}), {pc}, {out.rs});"
                )
                return
            self.lines.append(
                f"gemm({int(ta)}, {int(tb)}, {mr}, {N}, {K}, T({alpha!r}), {pa}, {lda}, {pb}, "
                f"{ldb}, T({beta!r}), {pc}, {out.rs});"
            )
            return
        if t is aten.cat.default:
            dim = args[1] if len(args) > 1 else 0
            nd = len(n.meta["val"].shape)
            axis = 1 if nd == 1 or dim % nd == 1 else 0
            k = 0
            for part in args[0]:
                v = self._value_of(part)
                size = v.C if axis == 1 else v.R
                dst = Val(
                    out.base,
                    out.R if axis == 1 else size,
                    size if axis == 1 else out.C,
                    out.rs,
                    out.cs,
                    out.off + k * (out.cs if axis == 1 else out.rs),
                )
                self._copy(v, dst, "=")
                k += size
            return
        # reductions
        src = args[0]
        v = self._value_of(src)
        nd = len(src.meta["val"].shape)
        dims = args[1] if len(args) > 1 else list(range(nd))
        if dims is None or dims == []:
            dims = list(range(nd))
        axes = {1 if nd == 1 else d % nd for d in dims} if nd else set()
        rows, cols = 0 in axes, 1 in axes
        kind = REDUCE[t]
        init = {"+": "T(0)", "max": "(-INFINITY)", "min": "INFINITY"}[kind]
        comb = {"+": "acc + {0}", "max": "std::max(acc, {0})", "min": "std::min(acc, {0})"}[kind]
        R, C = v.R, v.C
        if cols and not rows:  # over j: one value per row
            lo, hi = self._rows(R)
            self.lines.append(f"for (int i = {lo}; i < {hi}; ++i) {{ T acc = {init};")
            self.lines.append(f"for (int j = 0; j < {C}; ++j) acc = {comb.format(v.at('i', 'j'))};")
            self.lines.append(
                f"{out.base}[{out.off} + i*{out.rs if out.R > 1 else out.cs}] = acc; }}"
            )
        elif rows and not cols:  # over i: one value per column, accumulated row by row
            dst = Val(out.base, 1, C, 0, out.cs if out.C > 1 else 1, out.off)
            self.lines.append(f"for (int j = 0; j < {C}; ++j) {dst.at('0', 'j')} = {init};")
            self.lines.append(f"for (int i = 0; i < {R}; ++i) {{")
            self.lines.append("#pragma omp simd")
            self.lines.append(
                f"for (int j = 0; j < {C}; ++j) {{ T acc = {dst.at('0', 'j')}; "
                f"{dst.at('0', 'j')} = {comb.format(v.at('i', 'j'))}; }} }}"
            )
        else:
            self.lines.append(f"{{ T acc = {init}; for (int i = 0; i < {R}; ++i) "
                              f"for (int j = 0; j < {C}; ++j) acc = {comb.format(v.at('i', 'j'))};"
                              f" {out.base}[{out.off}] = acc; }}")  # fmt: skip

    def _value_of(self, a: Any) -> Val:
        if isinstance(a, fx.Node) and a in self.scalars:
            return Val(f"(&(const T&){self.scalars[a]})", 1, 1, 0, 0)
        return self.val(a)

    def _gemm_operand(self, a: Any) -> Val:
        v = self.val(a)
        broadcast = (v.R > 1 and v.rs == 0) or (v.C > 1 and v.cs == 0)
        if not broadcast and (v.cs == 1 or v.rs == 1 or v.R == 1 or v.C == 1):
            return v
        dst = self.tmp(v.R, v.C)  # a view BLAS cannot read: copied once
        self._copy(v, dst, "=")
        return dst

    @staticmethod
    def _layout(v: Val) -> tuple[bool, int]:
        """(transposed, leading dimension) of a view for the row-major gemm."""
        if v.cs == 1 or v.C == 1:
            return False, max(v.rs, v.C)
        return True, max(v.cs, v.R)

    def _copy(self, src: Val, dst: Val, mode: str) -> None:
        lo, hi = self._rows(dst.R)
        self.lines.append(f"for (int i = {lo}; i < {hi}; ++i) {{")
        self.lines.append("#pragma omp simd")
        self.lines.append(f"for (int j = 0; j < {dst.C}; ++j) {dst.at('i', 'j')} {mode} "
                          f"{src.at('i', 'j')}; }}")  # fmt: skip

    def store(self, n: Any, dst: Val, mode: str = "=") -> None:
        """Write (or with ``mode`` "+=" accumulate) node ``n``'s value into ``dst``."""
        lo, hi = self._rows(dst.R)
        if not isinstance(n, fx.Node) or n in self.scalars:
            c = self.scalars[n] if isinstance(n, fx.Node) else lit(n)
            self.lines.append(f"for (int i = {lo}; i < {hi}; ++i) for (int j = 0; j < {dst.C}; "
                              f"++j) {dst.at('i', 'j')} {mode} {c};")  # fmt: skip
            return
        v = self.val(n)
        if mode == "=" and v == dst:
            return
        self._copy(v, dst, mode)
