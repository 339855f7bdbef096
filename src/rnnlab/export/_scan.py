"""ONNX ``Scan`` lowerings of the engine's forward ops: every cell ONNX's RNN/GRU/LSTM cannot
express (Jordan, LSTM with projection, absent gates, coupled input-forget gate, full gate
recurrence, hardtanh; the regularised ops: zoneout, variational dropout's state mask, layer
norm) and every float64 model (onnxruntime has no float64 RNN/GRU/LSTM).

One ``Scan`` node per layer call: the states are Scan's state variables, ``gx`` (and the
lengths' step mask) its scan inputs, every step's states its scan outputs (stacked by Scan, not
by a Concat per step, which would copy quadratically in T). The body graph is recorded with
``onnx_ir``'s tape and reads the weights from the outer graph (ONNX's outer-scope names). The
maths is :mod:`rnnlab.engine.reference` step for step; past a sequence's length a ``Where``
keeps the old states, as the kernels do.

The node is appended to the exporter's recorder directly: its op recorder gives a variadic
output (Scan's) one value only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import onnx_ir as ir

_names = itertools.count()


def _fresh(what: str) -> str:
    return f"rnnlab_scan_{what}_{next(_names)}"


class Body:
    """A Scan body under construction: ``b.Add(x, y)`` records an ONNX node on the tape."""

    def __init__(self, dtype: Any) -> None:
        self.tape = ir.tape.Tape()
        self.dtype = dtype
        self.inputs: list[ir.Value] = []

    def input(self, rank: int, dtype: Any = None) -> ir.Value:
        v = ir.Value(
            name=_fresh("in"),
            type=ir.TensorType(dtype if dtype is not None else self.dtype),
            shape=ir.Shape([None] * rank),
        )
        self.inputs.append(v)
        return v

    def __getattr__(self, op_type: str) -> Callable[..., ir.Value]:
        def record(*inputs: Any, **attrs: Any) -> ir.Value:
            return self.tape.op(op_type, list(inputs), attrs or None)

        return record

    def split(self, x: ir.Value, n: int) -> Sequence[ir.Value]:
        """``x`` (B, n·H) into n blocks (B, H)."""
        if n == 1:
            return [x]
        return self.tape.op_multi_out("Split", [x], {"axis": 1, "num_outputs": n}, num_outputs=n)

    def graph(self, outputs: Sequence[ir.Value]) -> ir.Graph:
        for node in self.tape.nodes:
            for o in node.outputs:
                if o.name is None:
                    o.name = _fresh("v")
        return ir.Graph(self.inputs, list(outputs), nodes=self.tape.nodes, name=_fresh("body"))


def scan(op: Any, body: Body, outputs: Sequence[ir.Value], inits: Sequence[Any],
         seqs: Sequence[Any]) -> Sequence[Any]:  # fmt: skip
    """Record ``Scan(inits..., seqs...)`` with ``body`` (inputs: states then slices; outputs:
    new states then per-step outputs) and return its outputs (finals, then stacked)."""
    from onnxscript import evaluator
    from torch.onnx._internal.exporter import _tensors

    recorder: Any = evaluator.default()
    graph = body.graph(outputs)
    n_out = len(outputs)
    node = ir.Node(
        "",
        "Scan",
        [*inits, *seqs],
        attributes=[ir.AttrGraph("body", graph), ir.AttrInt64("num_scan_inputs", len(seqs))],
        outputs=[_tensors.SymbolicTensor(recorder.opset) for _ in range(n_out)],
    )
    recorder.nodes.append(node)
    return node.outputs


def step_mask(op: Any, gx: Any, lengths: Any) -> Any:
    """(T, B, 1) bool: step t still runs for sequence b (t < lengths[b])."""
    T = op.Shape(gx, start=0, end=1)
    t = op.Range(op.Constant(value_int=0), op.Squeeze(T), op.Constant(value_int=1))
    t = op.Unsqueeze(t, [1, 2])  # (T, 1, 1) int64
    L = op.Unsqueeze(op.Cast(lengths, to=7), [0, 2])  # (1, B, 1)
    return op.Less(t, L)


class Consts:
    """Outer-graph scalars in gx's dtype, read by the body (outer scope)."""

    def __init__(self, op: Any, like: Any) -> None:
        self.op, self.like = op, like
        self.cache: dict[float, Any] = {}

    def __call__(self, v: float) -> Any:
        if v not in self.cache:
            self.cache[v] = self.op.CastLike(self.op.Constant(value_float=v), self.like)
        return self.cache[v]


def activation(b: Body, code: int, x: ir.Value, k: Consts) -> ir.Value:
    """The kernel activation ``code`` (rnnlab.engine.kernels.ACT_CODES) on ``x``."""
    code = int(code)
    if code == 0:
        return x
    if code == 5:  # hardtanh
        return b.Clip(x, k(-1.0), k(1.0))
    name = {1: "Tanh", 2: "Sigmoid", 3: "Relu", 4: "Softsign", 6: "Elu", 7: "Softplus"}[code]
    return getattr(b, name)(x)


def _keep(b: Body, m: ir.Value | None, new: ir.Value, old: ir.Value) -> ir.Value:
    return new if m is None else b.Where(m, new, old)


def _with_first(op: Any, seq: Any, first: Any) -> Any:
    """A Scan output (T, B, n) with the initial state (B, n) in front: (T+1, B, n)."""
    return op.Concat(op.Unsqueeze(first, [0]), seq, axis=0)


def elman(op: Any, gx: Any, w_hh: Any, h0: Any, first: Any, lengths: Any, act: int) -> Any:
    """hs (T+1, B, H): h(t) = act(gx(t) + U h(t-1)), ``first`` added at step 0."""
    k = Consts(op, gx)
    if first is not None:
        head = op.Add(op.Slice(gx, [0], [1], [0]), op.Unsqueeze(first, [0]))
        gx = op.Concat(head, op.Slice(gx, [1], [2**62], [0]), axis=0)
    uT = op.Transpose(w_hh)
    b = Body(gx.dtype)
    h, g = b.input(2), b.input(2)
    m = b.input(2, ir.DataType.BOOL) if lengths is not None else None
    h_new = _keep(b, m, activation(b, act, b.Add(g, b.MatMul(h, uT)), k), h)
    seqs = [gx] if lengths is None else [gx, step_mask(op, gx, lengths)]
    _, hs = scan(op, b, [h_new, b.Identity(h_new)], [h0], seqs)
    return _with_first(op, hs, h0)


def jordan(op: Any, gx: Any, u: Any, wy: Any, by: Any, y0: Any, lengths: Any, act: int,
           oact: int, mask_y: Any = None, keep_y: Any = None) -> Any:  # fmt: skip
    """(ys (T+1, B, O), hs (T, B, H), yc (T, B, O)): h(t) = act(gx(t) + U y(t-1)),
    ỹ(t) = oact(W_y h + b_y), y(t) = ỹ(t); with ``mask_y`` (B, O) on y(t-1) in the product
    and zoneout keep weights ``keep_y`` (T, B, O) on y, the regularised Jordan
    (rnnlab.engine.regularised_jordan.jordan_reg)."""
    k = Consts(op, gx)
    uT, wyT = op.Transpose(u), op.Transpose(wy)
    b = Body(gx.dtype)
    y, g = b.input(2), b.input(2)
    d = b.input(2) if keep_y is not None else None
    m = b.input(2, ir.DataType.BOOL) if lengths is not None else None
    yin = y if mask_y is None else b.Mul(mask_y, y)
    h = activation(b, act, b.Add(g, b.MatMul(yin, uT)), k)
    pre = b.MatMul(h, wyT)
    if by is not None:
        pre = b.Add(pre, by)
    yc = activation(b, oact, pre, k)
    y_new = _keep(b, m, _zone(b, d, y, yc, k), y)
    seqs = [gx] + ([keep_y] if keep_y is not None else [])
    seqs += [] if lengths is None else [step_mask(op, gx, lengths)]
    outs = [y_new, b.Identity(y_new), b.Identity(h), b.Identity(yc)]
    _, ys, hs, ycs = scan(op, b, outs, [y0], seqs)
    return _with_first(op, ys, y0), hs, ycs


def elman_reg(op: Any, gx: Any, w_hh: Any, h0: Any, mask_h: Any, keep_h: Any, lengths: Any,
              act: int) -> Any:  # fmt: skip
    """(hs (T+1, B, H), hc (T, B, H)): h̃ = act(gx(t) + U (m ⊙ h(t-1))), then zoneout
    (rnnlab.engine.regularised.elman_reg)."""
    k = Consts(op, gx)
    uT = op.Transpose(w_hh)
    b = Body(gx.dtype)
    h, g = b.input(2), b.input(2)
    d = b.input(2) if keep_h is not None else None
    m = b.input(2, ir.DataType.BOOL) if lengths is not None else None
    hin = h if mask_h is None else b.Mul(mask_h, h)
    hc = activation(b, act, b.Add(g, b.MatMul(hin, uT)), k)
    h_new = _keep(b, m, _zone(b, d, h, hc, k), h)
    seqs = [gx] + ([keep_h] if keep_h is not None else [])
    seqs += [] if lengths is None else [step_mask(op, gx, lengths)]
    _, hs, hcs = scan(op, b, [h_new, b.Identity(h_new), b.Identity(hc)], [h0], seqs)
    return _with_first(op, hs, h0), hcs


def _zone(b: Body, d: ir.Value | None, prev: ir.Value, new: ir.Value, k: Consts) -> ir.Value:
    """Zoneout: d ⊙ prev + (1 - d) ⊙ new (no keep weights: new)."""
    if d is None:
        return new
    return b.Add(b.Mul(d, prev), b.Mul(b.Sub(k(1.0), d), new))


def gru(op: Any, gx: Any, w_hh: Any, b_hh: Any, h0: Any, lengths: Any, before: bool,
        act: int, mask_h: Any = None, keep_h: Any = None) -> Any:  # fmt: skip
    """hs (T+1, B, H), both reset positions (rnnlab.engine.reference.gru); with ``mask_h``
    (B, H) on h(t-1) in the products and zoneout keep weights ``keep_h`` (T, B, H), the
    regularised GRU (rnnlab.engine.regularised.gru_reg)."""
    k = Consts(op, gx)
    H = int(w_hh.shape[1])
    wT = op.Transpose(w_hh)  # (H, 3H)
    b = Body(gx.dtype)
    h, g = b.input(2), b.input(2)
    d = b.input(2) if keep_h is not None else None
    m = b.input(2, ir.DataType.BOOL) if lengths is not None else None
    hin = h if mask_h is None else b.Mul(mask_h, h)
    xr, xz, xn = b.split(g, 3)
    if before:
        wrzT = op.Slice(wT, [0], [2 * H], [1])
        wnT = op.Slice(wT, [2 * H], [3 * H], [1])
        hr, hz = b.split(b.MatMul(hin, wrzT), 2)
        r, z = b.Sigmoid(b.Add(xr, hr)), b.Sigmoid(b.Add(xz, hz))
        n = activation(b, act, b.Add(xn, b.MatMul(b.Mul(r, hin), wnT)), k)
    else:
        hh = b.MatMul(hin, wT)
        if b_hh is not None:
            hh = b.Add(hh, b_hh)
        hr, hz, hn = b.split(hh, 3)
        r, z = b.Sigmoid(b.Add(xr, hr)), b.Sigmoid(b.Add(xz, hz))
        n = activation(b, act, b.Add(xn, b.Mul(r, hn)), k)
    h_new = b.Add(b.Mul(z, h), b.Mul(b.Sub(k(1.0), z), n))
    h_new = _keep(b, m, _zone(b, d, h, h_new, k), h)
    seqs = [gx] + ([keep_h] if keep_h is not None else [])
    seqs += [] if lengths is None else [step_mask(op, gx, lengths)]
    _, hs = scan(op, b, [h_new, b.Identity(h_new)], [h0], seqs)
    return _with_first(op, hs, h0)


def lstm_reg(op: Any, gx: Any, w_hh: Any, h0: Any, c0: Any, mask_h: Any, keep_h: Any,
             keep_c: Any, lengths: Any, act: int, cact: int) -> Any:  # fmt: skip
    """(hs, cs) (T+1, B, H): torch's LSTM maths with ``mask_h`` on h(t-1) in the product and
    zoneout keep weights per field (rnnlab.engine.regularised.lstm_reg)."""
    k = Consts(op, gx)
    whhT = op.Transpose(w_hh)
    b = Body(gx.dtype)
    h, c, g_t = b.input(2), b.input(2), b.input(2)
    dh = b.input(2) if keep_h is not None else None
    dc = b.input(2) if keep_c is not None else None
    m = b.input(2, ir.DataType.BOOL) if lengths is not None else None
    hin = h if mask_h is None else b.Mul(mask_h, h)
    i, f, g, o = b.split(b.Add(g_t, b.MatMul(hin, whhT)), 4)
    c_new = b.Add(b.Mul(b.Sigmoid(f), c), b.Mul(b.Sigmoid(i), activation(b, act, g, k)))
    h_new = b.Mul(b.Sigmoid(o), activation(b, cact, c_new, k))
    h_new = _keep(b, m, _zone(b, dh, h, h_new, k), h)
    c_new = _keep(b, m, _zone(b, dc, c, c_new, k), c)
    seqs = [gx] + [v for v in (keep_h, keep_c) if v is not None]
    seqs += [] if lengths is None else [step_mask(op, gx, lengths)]
    outs = scan(op, b, [h_new, c_new, b.Identity(h_new), b.Identity(c_new)], [h0, c0], seqs)
    return _with_first(op, outs[2], h0), _with_first(op, outs[3], c0)


def lstm(op: Any, gx: Any, w_hh: Any, w_ci: Any, w_cf: Any, w_co: Any, w_hr: Any, w_gg: Any,
         h0: Any, c0: Any, g0: Any, lengths: Any, blocks: Sequence[int], coupled: bool,
         act: int, cact: int) -> Any:  # fmt: skip
    """(ys (T+1, B, P), cs (T+1, B, H), gs (T+1, B, NS·H) or None): every option of LSTMCell
    (rnnlab.engine.reference.lstm)."""
    k = Consts(op, gx)
    oi, of, og, oo = (int(v) for v in blocks)
    G = sum(v >= 0 for v in (oi, of, og, oo))
    fgr = w_gg is not None
    names = [n for n, v in (("i", oi), ("f", of), ("o", oo)) if v >= 0]
    whhT = op.Transpose(w_hh)
    b = Body(gx.dtype)
    y, c = b.input(2), b.input(2)
    gprev = b.input(2) if fgr else None
    g_t = b.input(2)
    m = b.input(2, ir.DataType.BOOL) if lengths is not None else None
    blk = b.split(b.Add(g_t, b.MatMul(y, whhT)), G)
    R: dict[str, ir.Value] = {}
    if fgr:
        R = dict(zip(names, b.split(b.MatMul(gprev, op.Transpose(w_gg)), len(names))))

    def gate(name: str, pre: ir.Value, peep: Any, cell: ir.Value) -> ir.Value:
        if peep is not None:
            pre = b.Add(pre, b.Mul(peep, cell))
        if name in R:
            pre = b.Add(pre, R[name])
        return b.Sigmoid(pre)

    i = gate("i", blk[oi], w_ci, c) if oi >= 0 else None
    f = gate("f", blk[of], w_cf, c) if of >= 0 else None
    g = activation(b, act, blk[og], k)
    ig = b.Mul(i, g) if i is not None else g
    if f is not None:
        c_new = b.Add(b.Mul(f, c), ig)
    elif i is not None and coupled:
        c_new = b.Add(b.Mul(b.Sub(k(1.0), i), c), ig)
    else:
        c_new = b.Add(c, ig)
    out = activation(b, cact, c_new, k)
    o = None
    if oo >= 0:
        o = gate("o", blk[oo], w_co, c_new)
        out = b.Mul(o, out)
    y_new = b.MatMul(out, op.Transpose(w_hr)) if w_hr is not None else out
    y_new, c_new = _keep(b, m, y_new, y), _keep(b, m, c_new, c)
    finals, stacked = [y_new, c_new], [b.Identity(y_new), b.Identity(c_new)]
    inits = [h0, c0]
    if fgr:
        present = {"i": i, "f": f, "o": o}
        g_new = b.Concat(*[present[n] for n in names], axis=1)
        assert gprev is not None
        g_new = _keep(b, m, g_new, gprev)
        finals.append(g_new)
        stacked.append(b.Identity(g_new))
        inits.append(g0)
    seqs = [gx] if lengths is None else [gx, step_mask(op, gx, lengths)]
    outs = scan(op, b, finals + stacked, inits, seqs)
    n = len(finals)
    ys, cs = _with_first(op, outs[n], h0), _with_first(op, outs[n + 1], c0)
    gs = _with_first(op, outs[n + 2], g0) if fgr else None
    return ys, cs, gs


def _ln(b: Body, x: ir.Value, scale: Any, bias: Any, eps: float) -> ir.Value:
    """Layer norm over the last dimension (ONNX LayerNormalization, opset 17)."""
    ins = [x, scale] if bias is None else [x, scale, bias]
    return b.tape.op("LayerNormalization", ins, {"axis": -1, "epsilon": float(eps)})


def ln_lstm(op: Any, gx: Any, w_hh: Any, g_hh: Any, b_hh: Any, g_c: Any, b_c: Any, h0: Any,
            c0: Any, mask_h: Any, keep_h: Any, keep_c: Any, lengths: Any,
            eps: float) -> Any:  # fmt: skip
    """(hs, cs) (T+1, B, H) of the layer-norm LSTM (rnnlab.engine.regularised_ln.ln_lstm):
    a = gx(t) + LN(U (m ⊙ h(t-1))), h̃ = o ⊙ tanh(LN(c̃)), then zoneout."""
    k = Consts(op, gx)
    whhT = op.Transpose(w_hh)
    b = Body(gx.dtype)
    h, c, g_t = b.input(2), b.input(2), b.input(2)
    dh = b.input(2) if keep_h is not None else None
    dc = b.input(2) if keep_c is not None else None
    m = b.input(2, ir.DataType.BOOL) if lengths is not None else None
    hin = h if mask_h is None else b.Mul(mask_h, h)
    i, f, g, o = b.split(b.Add(g_t, _ln(b, b.MatMul(hin, whhT), g_hh, b_hh, eps)), 4)
    c_new = b.Add(b.Mul(b.Sigmoid(f), c), b.Mul(b.Sigmoid(i), b.Tanh(g)))
    h_new = b.Mul(b.Sigmoid(o), b.Tanh(_ln(b, c_new, g_c, b_c, eps)))
    h_new = _keep(b, m, _zone(b, dh, h, h_new, k), h)
    c_new = _keep(b, m, _zone(b, dc, c, c_new, k), c)
    seqs = [gx] + [v for v in (keep_h, keep_c) if v is not None]
    seqs += [] if lengths is None else [step_mask(op, gx, lengths)]
    outs = scan(op, b, [h_new, c_new, b.Identity(h_new), b.Identity(c_new)], [h0, c0], seqs)
    return _with_first(op, outs[2], h0), _with_first(op, outs[3], c0)


def ln_gru(op: Any, gx: Any, w_hh: Any, g_hh: Any, b_hh: Any, h0: Any, mask_h: Any,
           keep_h: Any, lengths: Any, before: bool, eps: float, g_x: Any = None,
           b_x: Any = None) -> Any:  # fmt: skip
    """hs (T+1, B, H) of the layer-norm GRU (rnnlab.engine.regularised_ln.ln_gru); with
    ``g_x``, gx is W x and each step normalises its row first."""
    k = Consts(op, gx)
    H = int(w_hh.shape[1])
    wT = op.Transpose(w_hh)  # (H, 3H)
    b = Body(gx.dtype)
    h, g_t = b.input(2), b.input(2)
    d = b.input(2) if keep_h is not None else None
    m = b.input(2, ir.DataType.BOOL) if lengths is not None else None
    hin = h if mask_h is None else b.Mul(mask_h, h)
    if g_x is not None:
        g_t = _ln(b, g_t, g_x, b_x, eps)
    xr, xz, xn = b.split(g_t, 3)

    def part(v: Any, k0: int, k1: int) -> Any:
        return None if v is None else op.Slice(v, [k0], [k1], [0])

    if before:
        wrzT, wnT = op.Slice(wT, [0], [2 * H], [1]), op.Slice(wT, [2 * H], [3 * H], [1])
        rz = _ln(b, b.MatMul(hin, wrzT), part(g_hh, 0, 2 * H), part(b_hh, 0, 2 * H), eps)
        hr, hz = b.split(rz, 2)
        r, z = b.Sigmoid(b.Add(xr, hr)), b.Sigmoid(b.Add(xz, hz))
        v = _ln(b, b.MatMul(b.Mul(r, hin), wnT), part(g_hh, 2 * H, 3 * H),
                part(b_hh, 2 * H, 3 * H), eps)  # fmt: skip
        n = b.Tanh(b.Add(xn, v))
    else:
        hr, hz, hn = b.split(_ln(b, b.MatMul(hin, wT), g_hh, b_hh, eps), 3)
        r, z = b.Sigmoid(b.Add(xr, hr)), b.Sigmoid(b.Add(xz, hz))
        n = b.Tanh(b.Add(xn, b.Mul(r, hn)))
    h_new = b.Add(b.Mul(z, h), b.Mul(b.Sub(k(1.0), z), n))
    h_new = _keep(b, m, _zone(b, d, h, h_new, k), h)
    seqs = [gx] + ([keep_h] if keep_h is not None else [])
    seqs += [] if lengths is None else [step_mask(op, gx, lengths)]
    _, hs = scan(op, b, [h_new, b.Identity(h_new)], [h0], seqs)
    return _with_first(op, hs, h0)
