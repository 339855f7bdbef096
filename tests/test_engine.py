"""Layer 3: every fast path equals the reference loop on outputs, final states and every
gradient (initial states included), for every cell x lengths x direction x stacking, in float32
(1e-5) and float64 (1e-10); gradcheck through the compiled kernels in float64."""

from __future__ import annotations

import os

import pytest
import torch

import rnnlab
from cell_zoo import ZOO
from rnnlab import Bidirectional, GRUCell, JordanCell, LSTMCell, Recurrent, Stacked, engine
from rnnlab.engine import build

pytestmark = pytest.mark.skipif(  # under CI a failed build fails (tests/test_engine_paths.py)
    build.ops() is None and os.environ.get("CI", "").lower() not in ("true", "1"),
    reason=f"compiled engine unavailable: {build.status()['error']}",
)

FAST = sorted(n for n in ZOO if engine.lookup(ZOO[n]()) is not None)
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def test_every_builtin_cell_has_a_kernel():
    plain = [n for n in ZOO if not n.startswith("deep_")]
    assert sorted(plain) == FAST


def _run(cell, x, s0, lengths, reverse, fast):
    params = list(cell.parameters())
    ctx = engine.disabled() if not fast else _null()
    with ctx:
        y, s = Recurrent(cell, reverse=reverse)(x, cell.State(*s0), lengths=lengths)
    g = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    loss = loss + sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in s)
    grads = torch.autograd.grad(loss, [x, *s0, *params])
    return y, s, grads


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths", [None, [6, 3, 1, 6]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_engine_equals_reference(name, dtype, lengths, reverse):
    torch.manual_seed(0)
    cell = ZOO[name]().to(dtype)
    L = None if lengths is None else torch.tensor(lengths)
    x = torch.randn(4, 6, cell.input_size, dtype=dtype, requires_grad=True)
    s0 = tuple(
        torch.randn(4, n, dtype=dtype, requires_grad=True) for n in cell.state_sizes().values()
    )
    fast = _run(cell, x, s0, L, reverse, True)
    ref = _run(cell, x, s0, L, reverse, False)
    tol = TOL[dtype]
    torch.testing.assert_close(fast[0], ref[0], rtol=tol, atol=tol)
    for a, b in zip(fast[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for a, b in zip(fast[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_kernel_is_actually_used(monkeypatch):
    calls = []
    real = build.ops()

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setitem(build._state, "ops", Spy())
    y, _ = Recurrent(GRUCell(3, 4))(torch.randn(2, 5, 3))
    y.sum().backward()
    assert calls == ["gru_forward", "gru_backward"]


def test_jordan_with_linear_output_runs_one_gemm_per_step_on_elmans_kernel(monkeypatch):
    # y = W_y h + b_y is linear, so the Jordan recurrence is Elman's in h with U W_y
    calls = []
    real = build.ops()

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setitem(build._state, "ops", Spy())
    y, _ = Recurrent(JordanCell(3, 4, 2))(torch.randn(2, 5, 3))
    y.sum().backward()
    assert calls == ["elman_forward", "elman_backward"]
    calls.clear()
    y, _ = Recurrent(JordanCell(3, 4, 2, output_activation="tanh"))(torch.randn(2, 5, 3))
    y.sum().backward()
    assert calls == ["jordan_forward", "jordan_backward"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTMCell(2, 3, variant="V", proj_size=2),
        lambda: LSTMCell(2, 3, variant="FGR"),
        lambda: GRUCell(2, 3, reset="before"),
        lambda: GRUCell(2, 3),
        lambda: JordanCell(2, 3, 2, activation="relu", output_activation="sigmoid"),
        lambda: JordanCell(2, 3, 2),
        lambda: rnnlab.ElmanCell(2, 3, 2, activation="softsign"),
    ],
)
def test_gradcheck_through_kernels(make):
    torch.manual_seed(0)
    cell = make().double()
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    s0 = tuple(
        (0.5 * torch.randn(3, n, dtype=torch.float64)).requires_grad_()
        for n in cell.state_sizes().values()
    )
    lengths = torch.tensor([4, 2, 3])

    def f(x, *s):
        y, st = Recurrent(cell)(x, cell.State(*s), lengths=lengths)
        return (y, *st)

    assert torch.autograd.gradcheck(f, (x, *s0), eps=1e-6, atol=1e-6)


def test_stacked_bidirectional_and_dropins_use_the_engine_and_agree():
    torch.manual_seed(0)
    net = Stacked(
        [
            Bidirectional(Recurrent(GRUCell(3, 4, reset="before"))),
            Recurrent(LSTMCell(8, 4, variant="V")),
        ]
    ).double()
    x = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    y, _ = net(x, lengths=lengths)
    (gx,) = torch.autograd.grad(y.sum(), x)
    with engine.disabled():
        y2, _ = net(x, lengths=lengths)
        (gx2,) = torch.autograd.grad(y2.sum(), x)
    torch.testing.assert_close(y, y2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, gx2, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnlab.ElmanCell(2, 3, activation="softsign"),
        lambda: JordanCell(2, 3, 2, output_activation="tanh"),
        lambda: JordanCell(2, 3, 2),
        lambda: GRUCell(2, 3),
        lambda: GRUCell(2, 3, reset="before"),
        lambda: LSTMCell(2, 3, peephole=True, proj_size=2),
        lambda: LSTMCell(2, 3, variant="FGR"),
        lambda: LSTMCell(2, 3, variant="CIFG"),
    ],
)
def test_double_backward_through_kernels(make, monkeypatch):
    # gradgradcheck: the second derivative (the reference's vjp inside the backward op's
    # Function) against finite differences of the first (the compiled BPTT), with lengths
    calls = []
    real = build.ops()

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setitem(build._state, "ops", Spy())
    torch.manual_seed(0)
    cell = make().double()
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    s0 = tuple(
        torch.randn(3, n, dtype=torch.float64, requires_grad=True)
        for n in cell.state_sizes().values()
    )
    L = torch.tensor([4, 2, 3])
    params = [p for p in cell.parameters()]

    def f(x, *rest):
        y, s = Recurrent(cell)(x, cell.State(*rest[: len(s0)]), lengths=L)
        return y, *s

    torch.autograd.gradgradcheck(f, (x, *s0), fast_mode=True)
    assert any(c.endswith("_backward") for c in calls)  # the kernels ran, not the loop
    # the weights' mixed second derivatives against the reference loop's
    y, _ = Recurrent(cell)(x, cell.State(*s0), lengths=L)
    (g,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    gg = torch.autograd.grad(g.pow(2).sum(), params)
    with engine.disabled():
        y, _ = Recurrent(cell)(x, cell.State(*s0), lengths=L)
        (g2,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
        gg2 = torch.autograd.grad(g2.pow(2).sum(), params)
    torch.testing.assert_close(g, g2, rtol=1e-10, atol=1e-10)
    for a, b in zip(gg, gg2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_ops_have_fakes_and_fixed_arity_schemas():
    from rnnlab.engine import ops

    for name in ops.SCHEMAS:
        schema = ops.op(name)._schema
        assert all(str(r.type) == "Tensor" for r in schema.returns), name  # no Tensor[]
    torch.manual_seed(0)
    gx, w, h0 = torch.randn(5, 3, 4), torch.randn(4, 4), torch.randn(3, 4)
    L = torch.tensor([5, 2, 4])
    torch.library.opcheck(
        ops.op("elman_forward"),
        (gx, w, h0, None, L, 1),
        test_utils=("test_schema", "test_faketensor"),
    )
    hs = ops.op("elman_forward")(gx, w, h0, None, L, 1)
    torch.library.opcheck(
        ops.op("elman_backward"), (torch.randn_like(hs), hs, w, L, 1),
        test_utils=("test_schema", "test_faketensor"),
    )  # fmt: skip
    gx3 = torch.randn(5, 3, 12)
    args = (gx3, torch.randn(12, 4), None, h0, None, True, 1, True)
    torch.library.opcheck(
        ops.op("gru_forward"), args, test_utils=("test_schema", "test_faketensor")
    )
    blocks = [0, 1, 2, 3]
    gx4 = torch.randn(5, 3, 16)
    args = (gx4, torch.randn(16, 2), torch.randn(4), None, None, torch.randn(2, 4), None,
            torch.randn(3, 2), h0, None, L, blocks, False, 1, 1, True)  # fmt: skip
    torch.library.opcheck(
        ops.op("lstm_forward"), args, test_utils=("test_schema", "test_faketensor")
    )


def test_rnnlab_engine_0_switches_off_every_fast_path(monkeypatch):
    # torch's fused LSTM included: the drop-in LSTM then runs the reference loop
    calls = []
    monkeypatch.setattr(torch, "lstm", lambda *a, **k: calls.append("torch.lstm"))
    monkeypatch.setenv("RNNLAB_ENGINE", "0")
    m = rnnlab.nn.LSTM(3, 4)
    y, _ = m(torch.randn(5, 2, 3))
    assert calls == [] and y.shape == (5, 2, 4)
    monkeypatch.setenv("RNNLAB_ENGINE", "1")
    with pytest.raises(TypeError):  # the fused path is really taken with the engine on
        m(torch.randn(5, 2, 3))
    assert calls == ["torch.lstm"]


def test_subclass_is_never_replaced():
    class MyGRU(GRUCell):
        def step(self, x, state):
            y, s = super().step(x, state)
            return 2 * y, s

    assert engine.lookup(MyGRU(2, 3)) is None
    cell = MyGRU(2, 3)
    y, _ = Recurrent(cell)(torch.randn(1, 3, 2))
    with engine.disabled():
        y2, _ = Recurrent(cell)(torch.randn(1, 3, 2))
    assert y.shape == y2.shape


def test_callable_activation_falls_back_to_reference():
    cell = rnnlab.ElmanCell(2, 3, activation=lambda v: torch.sin(v))
    assert engine.lookup(cell) is not None  # registered type...
    x = torch.randn(2, 4, 2)
    y, _ = Recurrent(cell)(x)  # ...but the kernel declines: the reference loop runs
    h = torch.zeros(2, 3)
    for t in range(4):
        h = torch.sin(
            x[:, t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
        )
    torch.testing.assert_close(y[:, -1], h)


@pytest.mark.parametrize("lengths", [None, [7, 2, 5]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_jordan_teacher_forced_parallel_path_equals_sequential(lengths, reverse, bias):
    torch.manual_seed(0)
    cell = JordanCell(3, 6, 2, activation="sigmoid", output_activation="tanh", bias=bias)
    cell = cell.double()
    assert engine.lookup_teacher_forced(cell) is not None
    L = None if lengths is None else torch.tensor(lengths)
    x = torch.randn(3, 7, 3, dtype=torch.float64, requires_grad=True)
    r = torch.randn(3, 7, 2, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    layer = Recurrent(cell, reverse=reverse)
    outs = []
    for fast in (True, False):
        with _null() if fast else engine.disabled():
            y, s = layer(x, (y0,), lengths=L, feedback=rnnlab.TeacherForcing(), reference=r)
        grads = torch.autograd.grad((y * y).sum() + s.y.sum(), [x, r, y0, *cell.parameters()])
        outs.append((y, s.y, grads))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-12)
    for a, b in zip(outs[0][2], outs[1][2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTMCell(8, 96, variant="V"),
        lambda: GRUCell(8, 96),
        lambda: GRUCell(8, 96, reset="before"),
        lambda: rnnlab.ElmanCell(8, 256),
    ],
)
def test_multithreaded_kernels_equal_reference(make):
    # Large enough steps (B·G·H >= 16384) split rows across threads; check that path too.
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        cell = make().double()
        x = torch.randn(64, 5, 8, dtype=torch.float64, requires_grad=True)
        L = torch.randint(1, 6, (64,))
        y, s = Recurrent(cell)(x, lengths=L)
        g1 = torch.autograd.grad(y.pow(2).sum() + s[0].sum(), [x, *cell.parameters()])
        with engine.disabled():
            y2, s2 = Recurrent(cell)(x, lengths=L)
            g2 = torch.autograd.grad(y2.pow(2).sum() + s2[0].sum(), [x, *cell.parameters()])
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(y, y2, rtol=1e-10, atol=1e-10)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_kernels_decline_non_cpu_tensors():
    # CUDA is absent here; the meta device stands in for "not CPU": the reference loop runs.
    cell = GRUCell(3, 4, reset="before").to("meta")
    y, s = Recurrent(cell)(torch.empty(2, 5, 3, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 5, 4) and s.h.shape == (2, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GRUCell(3, 5),
        lambda: GRUCell(3, 5, reset="before"),
        lambda: LSTMCell(3, 5, peephole=True, proj_size=2),
        lambda: LSTMCell(3, 5, variant="FGR"),
        lambda: LSTMCell(3, 5, variant="CIFG"),
    ],
)
def test_inference_forward_without_gate_buffers_equals_reference(make, monkeypatch):
    # under no_grad the kernels keep one step of gates instead of T (store=False)
    stores = []
    real = build.ops()

    class Spy:
        def __getattr__(self, name):
            op = getattr(real, name)
            return lambda *a: (stores.append(a[-1]), op(*a))[1]

    monkeypatch.setitem(build._state, "ops", Spy())
    torch.manual_seed(0)
    cell = make().double()
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    s0 = cell.State(*(torch.randn(4, n, dtype=torch.float64) for n in cell.state_sizes().values()))
    lengths = torch.tensor([7, 2, 5, 1])
    with torch.no_grad():
        y, s = Recurrent(cell)(x, s0, lengths=lengths)
    assert stores == [False]
    Recurrent(cell)(x, s0, lengths=lengths)
    assert stores == [False, True]
    with torch.no_grad():
        with engine.disabled():
            y2, s2 = Recurrent(cell)(x, s0, lengths=lengths)
    torch.testing.assert_close(y, y2, rtol=1e-10, atol=1e-10)
    for a, b in zip(s, s2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("nthreads", [2, 3])
@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTMCell(5, 20, variant="CIFG"),
        lambda: LSTMCell(5, 20, peephole=True),
        lambda: LSTMCell(5, 20, variant="NIG"),
        lambda: LSTMCell(5, 20, variant="NFG"),
        lambda: LSTMCell(5, 20, variant="NOG", activation="sigmoid"),
        lambda: GRUCell(5, 20),
        lambda: GRUCell(5, 20, bias=False),
        lambda: GRUCell(5, 20, reset="before", activation="sigmoid"),
    ],
    ids=["cifg", "peephole", "nig", "nfg", "nog", "gru", "gru_nobias", "gru_before"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unit_partitioned_loops_equal_reference(make, dtype, nthreads, threads, monkeypatch):
    # RNNLAB_ENGINE_PARTITION=1: each thread owns a slice of the H=20 units (spans of 16 and 4
    # with two threads, 8, 8 and 4 with three), barriers per step, forward and backward
    threads(nthreads)
    monkeypatch.setenv("RNNLAB_ENGINE_PARTITION", "1")
    torch.manual_seed(0)
    cell = make().to(dtype)
    x = torch.randn(4, 9, 5, dtype=dtype, requires_grad=True)
    s0 = tuple(torch.randn(4, 20, dtype=dtype, requires_grad=True) for _ in cell.state_sizes())
    tol = TOL[dtype]
    for lengths, reverse in [(None, False), ([9, 3, 1, 7], True)]:
        L = None if lengths is None else torch.tensor(lengths)
        fast = _run(cell, x, s0, L, reverse, True)
        ref = _run(cell, x, s0, L, reverse, False)
        for a, b in zip([fast[0], *fast[1], *fast[2]], [ref[0], *ref[1], *ref[2]]):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
        with torch.no_grad():  # inference: one step of gate buffers
            y = Recurrent(cell, reverse=reverse)(x, cell.State(*s0), lengths=L)[0]
        torch.testing.assert_close(y, ref[0], rtol=tol, atol=tol)
