"""The whole time loop of a traced cell as one C++ source, forward and backward.

From the recurrent graph of :mod:`.trace`, ``make_fx`` of ``torch.func.vjp`` gives the joint
graph of one step: its forward part (the ancestors of y and the new state) runs in
``rnnlab_forward``'s loop over t, its backward part (the traced vector-Jacobian product, never a
hand-written rule) in ``rnnlab_backward``'s loop from T-1 down to 0. Forward values the backward
reads are saved per step (or read back from the state sequence, where they are the state).

The C ABI (every array contiguous, time-major; ``n`` a step's element count of that array):

``rnnlab_forward(T, H, K, S, Y, SV, W, len, nth, ws)`` (``rnnlab_infer``: the same without
writing SV, for runs that need no gradient): H[k] hoisted (T, B, ·), K[k] constants,
S[k] the state sequence (T+1, B, H_k) with S[k][0] = the initial state, Y (T, B, O), SV[j] saved
(T, n_j), W the workspace (nth parts of ws elements), len the lengths (B,) or null, nth the
threads: where the step never mixes batch rows (:mod:`.rows`), each runs a range of the rows
through all T steps (no synchronisation inside the loop), else one thread runs it all. Past a
sequence's length the state is carried and y is zero, as in the reference loop.

``rnnlab_backward(T, H, K, S, Y, SV, GY, GS, GH, GK, G0, BT, W, len)``: GY (T, B, O) and
GS[k] (T+1, B, H_k) the incoming gradients; writes GH[k] (T, B, ·), G0[k] (B, H_k) and adds
into GK[k] (zeroed by the caller). BT[j] (T, n_j) keeps per-step operands of the weight
gradients, which are one GEMM over all T·B rows after the loop.

Shapes: T time, B batch, O output, H_k a state field's size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import fx

from .cpp import Step, Val, contiguous, shape2
from .rows import row_local
from .trace import VIEWS, Split, Unsupported, trace

aten = torch.ops.aten

PRELUDE = r"""
#include <cmath>
#include <algorithm>
#include <cstdint>
#include <cstring>
typedef %(ctype)s T;
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*);
}
// Row-major C[M,N] = alpha op(A) op(B) + beta C, as the column-major C^T = op(B)^T op(A)^T.
static inline void gemm(int ta, int tb, int M, int N, int K, T alpha, const T* A, int lda,
                        const T* B, int ldb, T beta, T* C, int ldc) {
  const char* a = ta ? "T" : "N";
  const char* b = tb ? "T" : "N";
  if (K == 0) {
    for (int i = 0; i < M; ++i) for (int j = 0; j < N; ++j) C[i*ldc+j] *= beta;
    return;
  }
  %(gemm)s(b, a, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}
// exp by range reduction and a polynomial (Cephes expf): plain arithmetic, so loops vectorise
static inline float exp_(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f; y = y * r + 8.3334519073e-3f; y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f; y = y * r + 5.0000001201e-1f; y = y * r * r + r + 1.0f;
  int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float s; std::memcpy(&s, &e, sizeof(s));
  return y * s;
}
static inline double exp_(double x) { return std::exp(x); }
static inline T sigm(T x) { return T(1) / (T(1) + exp_(-x)); }
static inline double tanh_(double x) { return std::tanh(x); }
static inline float tanh_(float x) {
  typedef float T;
  T ax = std::fabs(x), e = exp_(T(-2) * ax), x2 = x * x;
  T small = ax * (T(1) - x2 * (T(1) / T(3) - x2 * T(2) / T(15)));
  T r = ax < T(0.0625) ? small : (T(1) - e) / (T(1) + e);
  return std::copysign(r, x);
}
static inline T pw(T x, double e) {
  return e == 2.0 ? x * x : e == 1.0 ? x : e == 0.5 ? std::sqrt(x) : std::pow(x, T(e));
}
"""


# rows [r0, r1) of B on threads of their own (one per range; at most 16), W split alike
ROWS_H = r"""
#include <thread>
template <class F> static void run_rows(int split, int B, int nth, T* W, long ws, const F& f) {
  nth = std::min(std::min(nth, split), 16);
  if (nth <= 1) { f(0, B, W); return; }
  std::thread th[16];
  for (int k = 1; k < nth; ++k) {
    const int r0 = k * B / nth, r1 = (k + 1) * B / nth;
    try { th[k] = std::thread(f, r0, r1, W + k * ws); }
    catch (...) { f(r0, r1, W + k * ws); }  // no thread to be had: this range runs here
  }
  f(0, B / nth, W);
  for (int k = 1; k < nth; ++k) if (th[k].joinable()) th[k].join();
}
"""

# the small-M products (csrc/smallgemm.h, shared with the built-in kernels), pasted in whole
# (without its "#pragma once", which g++ warns about in a main file)
SMALLGEMM_H = (
    (Path(__file__).resolve().parent.parent / "csrc" / "smallgemm.h")
    .read_text()
    .replace("#pragma once\n", "")
)


def _is_compute(n: fx.Node) -> bool:
    return n.op == "call_function" and n.target not in VIEWS


def _root(n: fx.Node) -> fx.Node:
    while n.op == "call_function" and n.target in VIEWS:
        n = n.args[0]  # type: ignore[assignment]
    return n


def generate(sp: Split, dtype: torch.dtype) -> tuple[str, dict[str, Any]]:
    """C++ source and the layout (``meta``) of the loop of ``sp``'s recurrent graph."""
    rec = sp.rec
    ph = [n for n in rec.graph.nodes if n.op == "placeholder"]
    nh = len(sp.hoisted)
    ns = sum(1 for p in ph if p.name.startswith("state"))
    examples = [torch.zeros(p.meta["val"].shape, dtype=dtype) for p in ph]
    out_vals = [o.meta["val"] for o in next(iter(reversed(rec.graph.nodes))).args[0]]
    cots = [torch.zeros(v.shape, dtype=dtype) for v in out_vals]
    n_in = len(examples)

    def joint(*args: torch.Tensor) -> Any:
        # torch.autograd.grad, not torch.func.vjp: the latter imports dynamo (seconds)
        xs = args[:n_in]
        outs = rec(*xs)
        used = [(o, c) for o, c in zip(outs, args[n_in:]) if o.requires_grad]
        gs = torch.autograd.grad([o for o, _ in used], xs, [c for _, c in used],
                                 allow_unused=True)  # fmt: skip
        gs = tuple(torch.zeros_like(x) if g is None else g for g, x in zip(gs, xs))
        return (*outs, *gs)

    examples = [e.requires_grad_() for e in examples]
    j = trace(joint, (*examples, *cots))
    jph = [n for n in j.graph.nodes if n.op == "placeholder"]
    ins, cot_ph = jph[:n_in], jph[n_in:]
    outs = list(next(n for n in j.graph.nodes if n.op == "output").args[0])  # type: ignore
    f_outs, grads = outs[: 1 + ns], outs[1 + ns :]
    for o in f_outs:
        if not isinstance(o, fx.Node):
            raise Unsupported("the step returns a constant")

    fwd_set: set[fx.Node] = set()
    stack = list(f_outs)
    while stack:
        n = stack.pop()
        if n in fwd_set or n.op != "call_function":
            continue
        fwd_set.add(n)
        stack.extend(n.all_input_nodes)
    order = [n for n in j.graph.nodes if n.op == "call_function"]
    fwd_nodes = [n for n in order if n in fwd_set]
    bwd_nodes = [n for n in order if n not in fwd_set]

    sizes = [shape2(p) for p in ins]
    hs = sizes[:nh]
    ss = sizes[nh : nh + ns]
    ks = sizes[nh + ns :]
    O = shape2(f_outs[0])

    def nel(rc: tuple[int, int]) -> int:
        return rc[0] * rc[1]

    def at_t(arr: str, rc: tuple[int, int], t: str = "t") -> Val:
        return contiguous(f"({arr} + {t}*{nel(rc)})", *rc)

    def inputs() -> dict[fx.Node, Val]:
        v: dict[fx.Node, Val] = {}
        for k in range(nh):
            v[ins[k]] = at_t(f"H[{k}]", hs[k])
        for k in range(ns):
            v[ins[nh + k]] = at_t(f"S[{k}]", ss[k])
        for k in range(len(ks)):
            v[ins[nh + ns + k]] = contiguous(f"K[{k}]", *ks[k])
        return v

    # ---- forward step: outputs straight into Y and S(t+1); saved values into SV
    work = [0]
    fhomes: dict[fx.Node, Val] = {}
    f_dests = [at_t("Y", O)] + [at_t(f"S[{k}]", ss[k], "(t+1)") for k in range(ns)]
    late: list[tuple[fx.Node, Val]] = []
    for o, d in zip(f_outs, f_dests):
        if _is_compute(o) and o not in fhomes and o in fwd_set:
            fhomes[o] = d
        else:
            late.append((o, d))
    saved: list[fx.Node] = []
    for n in bwd_nodes:
        for a in n.all_input_nodes:
            r = _root(a)
            if r in fwd_set and _is_compute(r) and r not in saved:
                saved.append(r)
    for g in grads:
        if isinstance(g, fx.Node) and _root(g) in fwd_set and _root(g) not in saved:
            saved.append(_root(g))
    sv_sizes: list[int] = []
    for r in saved:
        if r not in fhomes:
            fhomes[r] = at_t(f"SV[{len(sv_sizes)}]", shape2(r))
            sv_sizes.append(nel(shape2(r)))
    # batch rows on separate threads where the forward step never mixes them (.rows)
    split = row_local(fwd_nodes, ins[: nh + ns], O[0]) is not None
    sr = O[0] if split else 0
    fstep = Step(fwd_nodes, inputs(), dict(fhomes), work, split_rows=sr)
    fstep.emit()
    for o, d in late:
        fstep.store(o, d)
    # the same step without the saves, for runs that need no gradient
    ihomes = {o: d for o, d in fhomes.items() if o in f_outs}
    istep = Step(fwd_nodes, inputs(), ihomes, work, split_rows=sr)
    istep.emit()
    for o, d in late:
        istep.store(o, d)
    f_work = work[0]

    # ---- backward step: reads saved values at t, cotangents from CY/CS, writes GH, GSb, GK
    work = [0]
    cy = Step([], {}, {}, work).tmp(*O)
    cs = [Step([], {}, {}, work).tmp(*rc) for rc in ss]
    gs_a = [Step([], {}, {}, work).tmp(*rc) for rc in ss]
    gs_b = [Step([], {}, {}, work).tmp(*rc) for rc in ss]
    bvals = inputs()
    bvals[cot_ph[0]] = cy
    for k in range(ns):
        bvals[cot_ph[1 + k]] = cs[k]
    for r in saved:
        bvals[r] = fhomes[r]
    b_dests: list[tuple[Any, Val, str]] = []
    for k in range(nh):
        b_dests.append((grads[k], at_t(f"GH[{k}]", hs[k]), "="))
    for k in range(ns):
        b_dests.append((grads[nh + k], contiguous(f"gsb[{k}]", *ss[k]), "="))
    bhomes: dict[fx.Node, Val] = {}
    blate = []
    for g, d, mode in b_dests:
        if isinstance(g, fx.Node) and _is_compute(g) and g not in fwd_set and g not in bhomes:
            bhomes[g] = d
        else:
            blate.append((g, d, mode))
    deferred, bt_sizes = _defer_weight_grads(grads[nh + ns :], fwd_set, bvals, bhomes, O[0], at_t)
    for k in range(len(ks)):
        if k not in deferred:
            blate.append((grads[nh + ns + k], contiguous(f"GK[{k}]", *ks[k]), "+="))
    skip = {d[0] for d in deferred.values()}
    bstep = Step([n for n in bwd_nodes if n not in skip], bvals, bhomes, work)
    for n in fwd_nodes:
        if fstep._kind(n) == "scalar":
            bstep.scalars[n] = fstep._scalar(n)
    bstep.emit()
    for g, d, mode in blate:
        bstep.store(g, d, mode)
    post = []
    for k, (_, pa, pb, n_, m_, trans) in deferred.items():
        rows = f"(int)(nT*{O[0]})"
        if trans:
            post.append(f"gemm(1, 0, {m_}, {n_}, {rows}, T(1), {pb}, {m_}, {pa}, {n_}, T(1), "
                        f"GK[{k}], {n_});")  # fmt: skip
        else:
            post.append(f"gemm(1, 0, {n_}, {m_}, {rows}, T(1), {pa}, {n_}, {pb}, {m_}, T(1), "
                        f"GK[{k}], {m_});")  # fmt: skip
    bstep.post = post
    b_work = work[0]

    src = _assemble(dtype, fstep, istep, bstep, O, ss, cy, cs, gs_a, gs_b)
    meta = {
        "dtype": str(dtype).replace("torch.", ""),
        "hoisted": [list(rc) for rc in hs],
        "states": [list(rc) for rc in ss],
        "consts": [list(p.meta["val"].shape) for p in ins[nh + ns :]],
        "out": list(O),
        "saved": sv_sizes,
        "bt": bt_sizes,
        "work": max(f_work, b_work) + 16,
        "split": split,
        # a row's multiply-adds per step (its products and, as 16 each, its state values): the
        # runtime splits the rows only where a call has enough of them to pay for the threads
        "row_macs": sum(
            shape2(n)[1] * shape2(n.args[-2])[1]
            for n in fwd_nodes
            if n.target in (aten.mm.default, aten.addmm.default)
        )
        + 16 * sum(c for _, c in ss),
    }
    return src, meta


_PER_T = re.compile(r"^\((.+) \+ (t|\(t\+1\))\*(\d+)\)$")


def _t0(v: Val) -> str | None:
    """The pointer to step 0 of a per-step array view (rows of all T steps contiguous), or
    None when ``v`` is not one."""
    m = _PER_T.match(v.base)
    if not m or v.off or v.cs != 1 or v.rs != v.C or int(m.group(3)) != v.R * v.C:
        return None
    return m.group(1) if m.group(2) == "t" else f"({m.group(1)} + {m.group(3)})"


def _defer_weight_grads(
    kgrads: list[Any], fwd_set: set[fx.Node], bvals: dict[fx.Node, Val],
    bhomes: dict[fx.Node, Val], B: int, at_t: Any,
) -> tuple[dict[int, tuple[Any, ...]], list[int]]:  # fmt: skip
    """A weight's gradient sum_t a_tᵀ b_t (a, b: (B, ·) per step) as one GEMM over all T·B
    rows after the loop instead of T small ones: a and b get per-step homes (BT arrays where
    they have none), the per-step product is dropped. Returns {const: (mm node, a ptr, b ptr,
    n, m, transposed)} and the sizes of the BT arrays."""
    tr = (aten.permute.default, aten.t.default, aten.transpose.int)
    out: dict[int, tuple[Any, ...]] = {}
    bt: list[int] = []
    for k, g in enumerate(kgrads):
        if not isinstance(g, fx.Node) or g in fwd_set or len(g.users) != 1:
            continue
        r, trans = g, False
        while r.target in tr and len(r.users) == 1:
            r, trans = r.args[0], not trans  # type: ignore[assignment]
        if r.target is not aten.mm.default or len(r.users) != 1 or r in fwd_set:
            continue
        A, b = r.args
        if not isinstance(A, fx.Node) or A.target not in tr or not isinstance(b, fx.Node):
            continue
        a = A.args[0]
        assert isinstance(a, fx.Node)
        ptrs = []
        for x in (a, b):
            if shape2(x)[0] != B or (x.op == "call_function" and x.target in VIEWS):
                break
            if x in bvals or x in bhomes:
                p = _t0(bvals[x] if x in bvals else bhomes[x])
            elif _is_compute(x) and x not in fwd_set:
                bhomes[x] = at_t(f"BT[{len(bt)}]", shape2(x))
                bt.append(shape2(x)[0] * shape2(x)[1])
                p = _t0(bhomes[x])
            else:
                p = None
            if p is None:
                break
            ptrs.append(p)
        if len(ptrs) == 2:
            out[k] = (r, ptrs[0], ptrs[1], shape2(a)[1], shape2(b)[1], trans)
    return out, bt


def _assemble(dtype: torch.dtype, fstep: Step, istep: Step, bstep: Step, O: tuple[int, int],
              ss: list[tuple[int, int]], cy: Val, cs: list[Val], gs_a: list[Val],
              gs_b: list[Val]) -> str:  # fmt: skip
    B = O[0]
    ctype, gemm = ("float", "sgemm_") if dtype == torch.float32 else ("double", "dgemm_")
    ns = len(ss)
    L = [SMALLGEMM_H, PRELUDE % {"ctype": ctype, "gemm": gemm}]
    arr = "T* const* H, T* const* K, T* const* S, T* Y, T* const* SV"
    L.append(ROWS_H)
    for name, step in (("rnnlab_forward", fstep), ("rnnlab_infer", istep)):
        L.append(f"static void {name}_rows(long nT, {arr}, T* W, const int64_t* len, int r0, "
                 "int r1) {")  # fmt: skip
        L += step.pre
        L.append("for (long t = 0; t < nT; ++t) {")
        L += step.lines
        L.append("if (len) for (int b = r0; b < r1; ++b) if (t >= len[b]) {")
        for k, (_, h) in enumerate(ss):
            L.append(f"  std::memcpy(S[{k}] + (t+1)*{B * h} + b*{h}, S[{k}] + t*{B * h} + "
                     f"b*{h}, {h}*sizeof(T));")  # fmt: skip
        L.append(f"  std::memset(Y + t*{B * O[1]} + b*{O[1]}, 0, {O[1]}*sizeof(T)); }}")
        L.append("}}")
        # nth threads (ws elements of W each) on row ranges, where the step allows it
        L.append(f'extern "C" void {name}(long nT, {arr}, T* W, const int64_t* len, int nth, '
                 f"long ws) {{ run_rows({B if fstep.split_rows else 1}, {B}, nth, W, ws, "
                 f"[&](int r0, int r1, T* w) {{ {name}_rows(nT, H, K, S, Y, SV, w, len, r0, r1); "
                 "}); }")  # fmt: skip
    L.append(f'extern "C" void rnnlab_backward(long nT, {arr}, T* GY, T* const* GS, '
             "T* const* GH, T* const* GK, T* const* G0, T* const* BT, T* W, "
             "const int64_t* len) {")  # fmt: skip
    L.append(f"T* gsa[{max(ns, 1)}]; T* gsb[{max(ns, 1)}];")
    for k, (_, h) in enumerate(ss):
        L.append(f"gsa[{k}] = {gs_a[k].base}; gsb[{k}] = {gs_b[k].base};")
        L.append(f"std::memset(gsa[{k}], 0, {B * h}*sizeof(T));")
    L += bstep.pre
    L.append("for (long t = nT - 1; t >= 0; --t) {")
    for k, (_, h) in enumerate(ss):
        L.append(f"for (int e = 0; e < {B * h}; ++e) gsa[{k}][e] += GS[{k}][(t+1)*{B * h} + e];")
        L.append(f"std::memcpy({cs[k].base}, gsa[{k}], {B * h}*sizeof(T));")
    L.append(f"std::memcpy({cy.base}, GY + t*{B * O[1]}, {B * O[1]}*sizeof(T));")
    L.append(f"if (len) for (int b = 0; b < {B}; ++b) if (t >= len[b]) {{")
    for k, (_, h) in enumerate(ss):
        L.append(f"  std::memset({cs[k].base} + b*{h}, 0, {h}*sizeof(T));")
    L.append(f"  std::memset({cy.base} + b*{O[1]}, 0, {O[1]}*sizeof(T)); }}")
    L += bstep.lines
    L.append(f"if (len) for (int b = 0; b < {B}; ++b) if (t >= len[b]) {{")
    for k, (_, h) in enumerate(ss):
        L.append(f"  std::memcpy(gsb[{k}] + b*{h}, gsa[{k}] + b*{h}, {h}*sizeof(T));")
    L.append("}")
    for k in range(ns):
        L.append(f"{{ T* tmp = gsa[{k}]; gsa[{k}] = gsb[{k}]; gsb[{k}] = tmp; }}")
    L.append("}")
    for k, (_, h) in enumerate(ss):
        L.append(f"for (int e = 0; e < {B * h}; ++e) G0[{k}][e] = gsa[{k}][e] + GS[{k}][e];")
    L += bstep.post
    L.append("}")
    return "\n".join(L) + "\n"
