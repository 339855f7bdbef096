"""State feedback on the engine for GRU and LSTM (rnnlab.engine.feedback_gated): the masked
kernels against the engine-off reference loop ``rnnlab.layers.unroll`` in float64 (outputs,
final state, every gradient: parameters, input, initial state, reference) under teacher
forcing, free running and mixtures, detach on and off, with lengths, one reversed case; the
ops' second derivative against the reference's; torch.library.opcheck; spies in the trainer
(one masked-kernel call per chunk under every schedule)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from rnnlab import engine
from rnnlab.cells import GRUCell, LSTMCell, ZoneoutCell
from rnnlab.engine import build, ops
from rnnlab.engine import feedback_gated as fg
from rnnlab.engine import reference as eref
from rnnlab.layers import Recurrent, dispatch
from rnnlab.layers.feedback import Alternating, FreeRunning, GivenMask, Mixed, TeacherForcing

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

B, T, I = 3, 6, 2
LENGTHS = torch.tensor([6, 4, 1])
D = torch.float64


def _given(detach: bool) -> GivenMask:
    return GivenMask(torch.rand(B, T, generator=torch.Generator().manual_seed(3)) < 0.5, detach)


SCHEDULES = {
    "teacher": TeacherForcing,
    "free": FreeRunning,
    "alternating": lambda detach: Alternating(2, 1, detach=detach),
    "mixed": lambda detach: Mixed(0.5, detach=detach),
    "given": _given,
}

CELLS = {
    "gru": lambda: GRUCell(I, 4, dtype=D),
    "gru_before": lambda: GRUCell(I, 4, reset="before", activation="sigmoid", dtype=D),
    "lstm": lambda: LSTMCell(I, 4, dtype=D),
    "lstm_peep_proj": lambda: LSTMCell(I, 4, peephole=True, proj_size=3, dtype=D),
    "lstm_fgr": lambda: LSTMCell(I, 3, variant="FGR", dtype=D),
}


class Spy:
    """Counts the masked ops' calls (wraps ``GRUFed.apply`` and ``LSTMFed.apply``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        for cls in (fg.GRUFed, fg.LSTMFed):
            real = cls.apply

            def counted(*a, _real=real):  # type: ignore[no-untyped-def]
                self.calls += 1
                return _real(*a)

            monkeypatch.setattr(cls, "apply", counted)


@pytest.mark.parametrize("cell_name", sorted(CELLS))
@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_masked_kernel_equals_unroll(monkeypatch, cell_name, sched, detach, lengths) -> None:
    torch.manual_seed(0)
    cell = CELLS[cell_name]()
    reverse = sched == "alternating" and lengths is not None  # one reversed case per cell
    layer = Recurrent(cell, reverse=reverse)
    n = cell.state_sizes()[cell.feedback_field]
    schedule = SCHEDULES[sched](detach=detach)  # type: ignore[operator]
    torch.manual_seed(1)
    x = torch.randn(B, T, I, dtype=D, requires_grad=True)
    r = torch.randn(B, T, n, dtype=D, requires_grad=True)
    s0 = cell.State(*(torch.randn(B, k, dtype=D, requires_grad=True)
                      for k in cell.state_sizes().values()))  # fmt: skip
    leaves = [x, r, *s0, *cell.parameters()]
    w = torch.randn(B, T, n, dtype=D)
    results = []
    for fast in (True, False):
        spy = Spy(monkeypatch)
        dispatch.FALLBACKS.clear()
        gen = torch.Generator().manual_seed(11)
        kw = {"lengths": lengths, "feedback": schedule, "reference": r, "generator": gen}
        if fast:
            res = layer.run(x, s0, **kw)
            assert spy.calls == 1 and not dispatch.FALLBACKS
        else:
            with engine.disabled():
                res = layer.run(x, s0, **kw)
            assert spy.calls == 0
        loss = (res.output * w).sum() + sum((f**2).sum() for f in res.state)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        results.append((res.output, res.state, grads))
        monkeypatch.undo()
    (yf, ff, gf), (yr, fr, gr) = results
    torch.testing.assert_close(yf, yr, rtol=0, atol=1e-10)
    for a, b in zip(ff, fr):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    for a, b in zip(gf, gr):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            assert a is not None
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell_name", ["gru", "lstm"])
def test_detach_changes_the_gradient(cell_name) -> None:
    """detach is honoured, not ignored: free running with and without it gives different
    input gradients, and without it equals the plain (unfed) run's."""
    torch.manual_seed(2)
    cell = CELLS[cell_name]()
    layer = Recurrent(cell)
    x = torch.randn(B, T, I, dtype=D, requires_grad=True)
    r = torch.zeros(B, T, 4, dtype=D)
    out = {}
    for d in (True, False):
        y, _ = layer(x, feedback=FreeRunning(detach=d), reference=r)
        (out[d],) = torch.autograd.grad(y.sum(), [x])
    y, _ = layer(x)
    (g_plain,) = torch.autograd.grad(y.sum(), [x])
    assert float((out[True] - out[False]).abs().max()) > 1e-3
    torch.testing.assert_close(out[False], g_plain, rtol=0, atol=1e-12)


def _gru_args(g: torch.Generator, before: bool) -> list:  # type: ignore[type-arg]
    S, b, H = 4, 2, 3

    def r(*shape):  # type: ignore[no-untyped-def]
        return (torch.randn(*shape, generator=g, dtype=D) * 0.5).requires_grad_()

    return [r(S, b, 3 * H), r(3 * H, H), None if before else r(3 * H), r(b, H), r(S, b, H)]


MASK = torch.tensor([[True, True], [False, True], [True, False], [False, False]])
LEN2 = torch.tensor([4, 3])


def _lstm_args(g: torch.Generator) -> list:  # type: ignore[type-arg]
    S, b, H, P = 4, 2, 3, 2

    def r(*shape):  # type: ignore[no-untyped-def]
        return (torch.randn(*shape, generator=g, dtype=D) * 0.5).requires_grad_()

    # peepholes and a projection: every optional input but FGR's
    return [r(S, b, 4 * H), r(4 * H, P), r(H), r(H), r(H), r(P, H), None, r(b, P), r(b, H),
            None, r(S, b, P)]  # fmt: skip


@pytest.mark.parametrize("case", ["gru_after", "gru_before", "lstm"])
@pytest.mark.parametrize("detach", [True, False])
def test_op_first_and_second_derivatives(case, detach) -> None:
    """The ops' gradients (hand-written BPTT) and second derivatives equal the reference's."""
    g = torch.Generator().manual_seed(5)
    if case == "lstm":
        args = _lstm_args(g)
        cfg = ([0, 1, 2, 3], False, 1, 1, True, detach)

        def f(*a):  # type: ignore[no-untyped-def]
            return fg.LSTMFed.apply(*a[:10], a[10], MASK, LEN2, *cfg)[:2]

        def ref(*a):  # type: ignore[no-untyped-def]
            return eref.lstm_fed(*a[:10], a[10], MASK, LEN2, *cfg)[:2]
    else:
        before = case == "gru_before"
        args = _gru_args(g, before)
        cfg = (before, 1, True, detach)

        def f(*a):  # type: ignore[no-untyped-def]
            return fg.GRUFed.apply(*a, MASK, LEN2, *cfg)[:1]

        def ref(*a):  # type: ignore[no-untyped-def]
            return eref.gru_fed(*a, MASK, LEN2, *cfg)

    present = [a for a in args if a is not None]

    def pack(fun):  # type: ignore[no-untyped-def]
        def inner(*xs):  # type: ignore[no-untyped-def]
            it = iter(xs)
            return fun(*[next(it) if a is not None else None for a in args])

        return inner

    outs = [pack(fun)(*present) for fun in (f, ref)]
    for a, c in zip(*outs):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
    ws = [torch.randn(o.shape, generator=g, dtype=D) for o in outs[1]]
    v = [torch.randn(a.shape, generator=g, dtype=D) for a in present]
    seconds = []
    for fun in (f, ref):
        y = pack(fun)(*present)
        grads = torch.autograd.grad(sum((o * w).sum() for o, w in zip(y, ws)), present,
                                    create_graph=True)  # fmt: skip
        second = torch.autograd.grad(sum((a * c).sum() for a, c in zip(grads, v)), present)
        seconds.append((grads, second))
    for one, two in zip(*seconds):
        for a, c in zip(one, two):
            torch.testing.assert_close(a, c, rtol=0, atol=1e-12)


def test_new_ops_pass_opcheck() -> None:
    for name in fg.SCHEMAS:
        schema = ops.op(name)._schema
        assert all(str(r.type) == "Tensor" for r in schema.returns), name
    g = torch.Generator().manual_seed(0)
    test = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    gx, w, b, h0, r = (a.detach() for a in _gru_args(g, False))
    args = (gx, w, b, h0, r, MASK, LEN2, False, 1, True, True)
    torch.library.opcheck(ops.op("gru_fed_forward"), args, test_utils=test)
    hs, gates, aux, ss = ops.op("gru_fed_forward")(*args)
    bargs = (torch.randn_like(hs), hs, gates, aux, ss, MASK, w, LEN2, False, 1, True)
    torch.library.opcheck(ops.op("gru_fed_backward"), bargs, test_utils=test)
    la = [a.detach() if a is not None else None for a in _lstm_args(g)]
    args = (*la[:10], la[10], MASK, LEN2, [0, 1, 2, 3], False, 1, 1, True, False)
    torch.library.opcheck(ops.op("lstm_fed_forward"), args, test_utils=test)
    ys, cs, gs, acts, ms, ss = ops.op("lstm_fed_forward")(*args)
    bargs = (torch.randn_like(ys), torch.randn_like(cs), None, ys, cs, gs, acts, ms, ss, MASK,
             *la[1:7], LEN2, [0, 1, 2, 3], False, 1, 1, False)  # fmt: skip
    torch.library.opcheck(ops.op("lstm_fed_backward"), bargs, test_utils=test)


# ------------------------------------------------------------------------------ trainer ----
STEPS = 3


def _train(cell: str, mode: str) -> None:
    from rnnlab.training import Trainer

    Trainer(
        {
            "task": {"name": "flipflop", "length": 12, "n_train": 16, "n_val": 8},
            "model": {"cell": cell, "hidden_size": 3, "feedback": "state", "readout": "none"},
            "forcing": {"mode": mode},
            "train": {
                "steps": STEPS,
                "batch_size": 8,
                "progress": False,
                "eval_every": 1000,
                "plots": False,
                "grad_monitor_every": 0,
            },
        },  # fmt: skip
        None,
    ).fit()


@pytest.mark.parametrize("cell", ["GRUCell", "LSTMCell"])
@pytest.mark.parametrize("mode", ["teacher", "free", "alternating", "mixed", "scheduled"])
def test_trainer_runs_the_masked_kernel(monkeypatch, cell, mode) -> None:
    """Every training step one masked-kernel call (one chunk), and the final evaluation's
    forced and free-running passes one each; no fallback counted."""
    from tests.test_training_fastpaths import Spy as TrainerSpy

    spy = TrainerSpy(monkeypatch)
    _train(cell, mode)
    assert spy.calls == Counter({"masked": STEPS + 2})
    assert not dispatch.FALLBACKS


# ----------------------------------------------------------------------------- wrappers ----
def test_wrapped_cells(monkeypatch) -> None:
    """The dropout wrapper without an active recurrent mask (eval; input dropout only) runs the
    inner cell's masked kernel, equal to the loop; with state dropout, or zoneout, the counted
    reference loop (the regularised kernels have no feedback mask)."""
    torch.manual_seed(0)
    x = torch.randn(B, T, I, dtype=D)
    r = torch.randn(B, T, 4, dtype=D)
    kw = {"feedback": Mixed(0.5), "reference": r, "lengths": LENGTHS}
    for opts, train in (({"dropout_input": 0.3}, True), ({"dropout_state": 0.3}, False)):
        layer = Recurrent(GRUCell(I, 4, dtype=D), **opts).train(train)
        s0 = layer.cell.initial_state(B, dtype=D, generator=torch.Generator().manual_seed(1))
        spy = Spy(monkeypatch)
        dispatch.FALLBACKS.clear()
        fast = layer.run(x, s0, generator=torch.Generator().manual_seed(2), **kw)
        assert spy.calls == 1 and not dispatch.FALLBACKS
        with engine.disabled():
            ref = layer.run(x, s0, generator=torch.Generator().manual_seed(2), **kw)
        torch.testing.assert_close(fast.output, ref.output, rtol=0, atol=1e-12)
        monkeypatch.undo()
    dispatch.FALLBACKS.clear()
    Recurrent(GRUCell(I, 4, dtype=D), dropout_state=0.3).train()(x, **kw)
    Recurrent(ZoneoutCell(GRUCell(I, 4, dtype=D), 0.2)).train()(x, **kw)
    assert dispatch.FALLBACKS == Counter({"masked kernel declined for VariationalDropoutCell": 1,
                                          "no masked kernel for ZoneoutCell": 1})  # fmt: skip


def test_masked_kernels_under_compile_and_vmap(monkeypatch) -> None:
    """One graph under torch.compile(fullgraph=True), and per-sample gradients (vmap of grad),
    equal to eager / the reference loop."""
    torch.manual_seed(4)
    m = torch.rand(B, T, generator=torch.Generator().manual_seed(3)) < 0.5
    for cell in (GRUCell(I, 4), LSTMCell(I, 4, dtype=D)):
        layer = Recurrent(cell)
        dt = next(cell.parameters()).dtype
        x = torch.randn(B, T, I, dtype=dt, requires_grad=True)
        r = torch.randn(B, T, 4, dtype=dt)

        def f(x, r, layer=layer):  # type: ignore[no-untyped-def]
            return layer(x, feedback=GivenMask(m, False), reference=r)[0]

        if dt == torch.float32:
            y1 = torch.compile(f, backend="aot_eager", fullgraph=True)(x, r)
            g1 = torch.autograd.grad(y1.sum(), [x, *cell.parameters()])
            y0 = f(x, r)
            g0 = torch.autograd.grad(y0.sum(), [x, *cell.parameters()])
            torch.testing.assert_close(y1, y0, rtol=0, atol=1e-6)
            for a, b in zip(g1, g0):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
            continue
        X = torch.randn(2, B, T, I, dtype=D)
        params = dict(cell.named_parameters())

        def loss(p, xi, layer=layer, r=r):  # type: ignore[no-untyped-def]
            kw = {"feedback": GivenMask(m, True), "reference": r}
            y = torch.func.functional_call(
                layer, {f"cell.{k}": v for k, v in p.items()}, (xi,), kw
            )[0]
            return (y**2).sum()

        spy = Spy(monkeypatch)
        fast = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, X)
        assert spy.calls == 1
        with engine.disabled():
            ref = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, X)
        for k in params:
            torch.testing.assert_close(fast[k], ref[k], rtol=0, atol=1e-10)
