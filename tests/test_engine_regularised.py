"""The engine's regularised operators (issue 18): recurrent dropout and zoneout in the loop.

Independent reference: the reference loop (``engine.disabled()``) over the wrapper cells'
written-out steps (cells/dropout.py, cells/zoneout.py), float64, outputs, final states (masks
included) and every gradient; gradcheck/gradgradcheck of the operators against finite
differences; the same RNG draws on both paths.
"""

from __future__ import annotations

import pytest
import torch

from engine_spy import spy_ops as _spy
from rnnlab import engine
from rnnlab.cells import (
    ElmanCell,
    GRUCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    VariationalDropoutCell,
    ZoneoutCell,
)
from rnnlab.engine import build
from rnnlab.engine import regularised as reg
from rnnlab.layers import Recurrent

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

L = torch.tensor([7, 3, 5])


def _run(layer, x, lengths, use_engine, seed=1):
    torch.manual_seed(seed)
    layer.zero_grad()
    x = x.detach().requires_grad_(True)
    if use_engine:
        y, s = layer(x, lengths=lengths)
    else:
        with engine.disabled():
            y, s = layer(x, lengths=lengths)
    loss = (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum()
    loss = loss + sum((f * f).sum() for f in s[:2])
    loss.backward()
    return [y, *s, x.grad] + [p.grad.clone() for p in layer.parameters()]


CASES = {
    "lstm-dropout": lambda: Recurrent(LSTMCell(4, 5), dropout_input=0.3, dropout_state=0.4),
    "gru-dropout": lambda: Recurrent(GRUCell(4, 5), dropout_input=0.3, dropout_state=0.4),
    "gru-before-dropout": lambda: Recurrent(GRUCell(4, 5, reset="before"), dropout_state=0.4),
    "lstm-zoneout": lambda: Recurrent(ZoneoutCell(LSTMCell(4, 5), {"h": 0.2, "c": 0.5})),
    "lstm-zoneout-c": lambda: Recurrent(ZoneoutCell(LSTMCell(4, 5), {"c": 0.5})),
    "gru-zoneout": lambda: Recurrent(ZoneoutCell(GRUCell(4, 5), 0.3)),
    "gru-before-zoneout": lambda: Recurrent(ZoneoutCell(GRUCell(4, 5, reset="before"), 0.3)),
    "lstm-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(LSTMCell(4, 5), 0.2, 0.3), {"h": 0.1, "c": 0.5})
    ),
    "ln-lstm": lambda: Recurrent(LayerNormLSTMCell(4, 5)),
    "ln-lstm-nobias": lambda: Recurrent(LayerNormLSTMCell(4, 5, bias=False)),
    "ln-lstm-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(LayerNormLSTMCell(4, 5), 0.2, 0.3), {"h": 0.1, "c": 0.5})
    ),
    "ln-gru": lambda: Recurrent(LayerNormGRUCell(4, 5)),
    "ln-gru-before-nobias": lambda: Recurrent(LayerNormGRUCell(4, 5, bias=False, reset="before")),
    "ln-gru-before-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(LayerNormGRUCell(4, 5, reset="before"), 0.2, 0.3), 0.2)
    ),
    "ln-gru-after-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(LayerNormGRUCell(4, 5), 0.2, 0.3), 0.2)
    ),
    "elman-dropout": lambda: Recurrent(ElmanCell(4, 5), dropout_input=0.3, dropout_state=0.4),
    "elman-out-dropout": lambda: Recurrent(ElmanCell(4, 5, 3), dropout_state=0.4),
    "elman-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(ElmanCell(4, 5), 0.2, 0.3), 0.2)
    ),
    "gru-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(GRUCell(4, 5), 0.2, 0.3), 0.2)
    ),
}


@pytest.mark.parametrize("lengths", [None, L], ids=["full", "lengths"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(CASES))
def test_regularised_kernel_equals_reference_loop(name, train, lengths, monkeypatch):
    torch.manual_seed(0)
    layer = CASES[name]().double().train(train)
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    ref = _run(layer, x, lengths, use_engine=False)
    calls = _spy(monkeypatch)
    got = _run(layer, x, lengths, use_engine=True)
    assert calls, "no compiled kernel ran"
    if name.startswith("ln-"):
        kind = "ln_gru" if name.startswith("ln-gru") else "ln_lstm"
        assert f"{kind}_forward" in calls and f"{kind}_backward" in calls, calls
    elif train:
        assert any("_reg_" in c for c in calls), calls  # the masks went into the loop
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_zoneout_draws_match_reference_and_eval_is_the_mixture(monkeypatch):
    # the same generator state gives the same per-step keep draws on both paths
    g = torch.Generator().manual_seed(3)
    cell = ZoneoutCell(LSTMCell(4, 5), {"h": 0.5, "c": 0.5}, generator=g).double()
    layer = Recurrent(cell)
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    g.manual_seed(3)
    y1, _ = layer(x)
    g.manual_seed(3)
    with engine.disabled():
        y2, _ = layer(x)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-13)
    keep = __import__("rnnlab.engine.kernels_extra", fromlist=["x"]).zoneout_keep
    g.manual_seed(3)
    k = keep(cell, x, cell.initial_state(2, dtype=torch.float64))
    assert set(k) == {"h", "c"} and k["h"].shape == (6, 2, 5)
    assert 0 < float(k["h"].mean()) < 1
    cell.eval()
    k = keep(cell, x, cell.initial_state(2, dtype=torch.float64))
    assert bool((k["c"] == 0.5).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zoneout_keep_one_draw_equals_the_reference_per_step_draws(dtype):
    # zoneout_keep draws T keys at once and all steps' decisions in the compiled kernel; the
    # reference loop (ZoneoutCell.step) one key per step and its decisions, here re-made with
    # the pure-torch Philox (docs/design/0020): the same values, whatever the default dtype
    from rnnlab.cells import _philox
    from rnnlab.engine.kernels_extra import zoneout_keep

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        g = torch.Generator().manual_seed(11)
        cell = ZoneoutCell(LSTMCell(4, 37), {"h": 0.3, "c": 0.6}, generator=g).to(dtype)
        x = torch.randn(5, 40, 4, dtype=dtype)
        like = cell.initial_state(5, dtype=dtype)
        g.manual_seed(11)
        got = zoneout_keep(cell, x, like)
        g.manual_seed(11)
        thr = _philox.thresholds([0.3, 0.6])
        want: dict[str, list[torch.Tensor]] = {"h": [], "c": []}
        for _ in range(40):
            flat = _philox.keep_reference(_philox.step_keys(1, g), [185, 185], thr, dtype)
            want["h"].append(flat[:185].view(5, 37))
            want["c"].append(flat[185:].view(5, 37))
    finally:
        torch.set_default_dtype(old)
    for f in ("h", "c"):
        assert got[f].dtype == dtype and torch.equal(got[f], torch.stack(want[f])), f


@pytest.mark.parametrize("gru", [False, True], ids=["lstm", "gru"])
def test_regularised_ops_gradcheck_and_gradgradcheck(gru):
    torch.manual_seed(0)
    T, B, H = 4, 3, 2
    dt = torch.float64
    lengths = torch.tensor([4, 1, 3])
    mask = torch.bernoulli(torch.full((B, H), 0.6, dtype=dt)) / 0.6
    keep = (torch.rand(T, B, H) < 0.4).to(dt)
    G = 3 if gru else 4
    gx = torch.randn(T, B, G * H, dtype=dt, requires_grad=True)
    w = torch.randn(G * H, H, dtype=dt, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dt, requires_grad=True)
    if gru:
        b = torch.randn(G * H, dtype=dt, requires_grad=True)

        def f(gx, w, b, h0):
            return reg.GRUReg.apply(gx, w, b, h0, mask, keep, lengths, False, 1)[:1]

        def f2(gx, w, h0):
            return reg.GRUReg.apply(gx, w, None, h0, mask, keep, lengths, True, 1)[0]

        args: tuple = (gx, w, b, h0)
        torch.autograd.gradcheck(f2, (gx, w, h0))
        torch.autograd.gradgradcheck(f2, (gx, w, h0), fast_mode=True)
        ref = reg.gru_reg(gx, w, b, h0, mask, keep, lengths, False, 1)[0]
    else:
        c0 = torch.randn(B, H, dtype=dt, requires_grad=True)
        keep_c = (torch.rand(T, B, H) < 0.6).to(dt)

        def f(gx, w, h0, c0):
            return reg.LSTMReg.apply(gx, w, h0, c0, mask, keep, keep_c, lengths, 1, 1)[:2]

        args = (gx, w, h0, c0)
        ref = reg.lstm_reg(gx, w, h0, c0, mask, keep, keep_c, lengths, 1, 1)[0]
    torch.testing.assert_close(f(*args)[0], ref)
    torch.autograd.gradcheck(f, args)
    torch.autograd.gradgradcheck(f, args, fast_mode=True)


def test_regularised_ops_have_fakes_and_fixed_arity_schemas():
    from rnnlab.engine import ops

    for name in reg.SCHEMAS:
        schema = ops.op(name)._schema
        assert all(str(r.type) == "Tensor" for r in schema.returns), name
    torch.manual_seed(0)
    gx, w, h0 = torch.randn(5, 3, 8), torch.randn(8, 2), torch.randn(3, 2)
    m, k = torch.rand(3, 2), torch.rand(5, 3, 2)
    test = ("test_schema", "test_faketensor")
    args = (gx, w, h0, h0, m, k, None, torch.tensor([5, 2, 4]), 1, 1)
    torch.library.opcheck(ops.op("lstm_reg_forward"), args, test_utils=test)
    args = (torch.randn(5, 3, 6), torch.randn(6, 2), None, h0, m, None, None, True, 1)
    torch.library.opcheck(ops.op("gru_reg_forward"), args, test_utils=test)


def test_unsupported_inner_cells_decline_to_the_reference_loop(monkeypatch):
    torch.manual_seed(0)
    layer = Recurrent(LSTMCell(4, 5, peephole=True), dropout_state=0.3).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    ref = _run(layer, x, None, use_engine=False)
    calls = _spy(monkeypatch)
    got = _run(layer, x, None, use_engine=True)
    assert not any("_reg_" in c for c in calls)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_lstm_op_gradcheck_and_gradgradcheck(bias):
    from rnnlab.engine import regularised_ln as ln

    torch.manual_seed(0)
    T, B, H = 3, 2, 2
    dt = torch.float64
    lengths = torch.tensor([3, 2])
    mask = torch.bernoulli(torch.full((B, H), 0.6, dtype=dt)) / 0.6
    keep_h = (torch.rand(T, B, H) < 0.4).to(dt)
    keep_c = (torch.rand(T, B, H) < 0.5).to(dt)

    def r(*s):
        return torch.randn(*s, dtype=dt, requires_grad=True)

    gx, w, gh, gc, h0, c0 = r(T, B, 4 * H), r(4 * H, H), r(4 * H), r(H), r(B, H), r(B, H)
    bh, bc = (r(4 * H), r(H)) if bias else (None, None)
    args = (gx, w, gh, gc, h0, c0) + ((bh, bc) if bias else ())

    def f(gx, w, gh, gc, h0, c0, bh=None, bc=None):
        return ln.LNLSTM.apply(gx, w, gh, bh, gc, bc, h0, c0, mask, keep_h, keep_c, lengths,
                               1e-5)[:2]  # fmt: skip

    ref = ln.ln_lstm(gx, w, gh, bh, gc, bc, h0, c0, mask, keep_h, keep_c, lengths, 1e-5)
    torch.testing.assert_close(f(*args), ref)
    torch.autograd.gradcheck(f, args)
    torch.autograd.gradgradcheck(f, args, fast_mode=True)


@pytest.mark.parametrize("norm_x", [False, True], ids=["gx", "norm-x"])
@pytest.mark.parametrize("before", [False, True], ids=["after", "before"])
def test_layer_norm_gru_op_gradcheck_and_gradgradcheck(before, norm_x):
    # norm_x: gx is W x and the op normalises it (g_x, b_x) itself; else gx is normalised
    from rnnlab.engine import regularised_ln as ln

    torch.manual_seed(0)
    T, B, H = 3, 2, 2
    dt = torch.float64
    lengths = torch.tensor([3, 2])
    mask = torch.bernoulli(torch.full((B, H), 0.6, dtype=dt)) / 0.6
    keep = (torch.rand(T, B, H) < 0.4).to(dt)

    def r(*s):
        return torch.randn(*s, dtype=dt, requires_grad=True)

    args = (r(T, B, 3 * H), r(3 * H, H), r(3 * H), r(3 * H), r(B, H))
    args += (r(3 * H), r(3 * H)) if norm_x else ()

    def f(gx, w, gh, bh, h0, g_x=None, b_x=None):
        return ln.LNGRU.apply(gx, w, gh, bh, h0, g_x, b_x, mask, keep, lengths, before, 1e-5)[:1]

    full = args if norm_x else args + (None, None)
    ref = ln.ln_gru(*full, mask, keep, lengths, before, 1e-5)
    torch.testing.assert_close(f(*args), ref)
    torch.autograd.gradcheck(f, args)
    torch.autograd.gradgradcheck(f, args, fast_mode=True)


def test_elman_reg_op_gradcheck_and_gradgradcheck():
    torch.manual_seed(0)
    T, B, H = 4, 3, 2
    dt = torch.float64
    lengths = torch.tensor([4, 1, 3])
    mask = torch.bernoulli(torch.full((B, H), 0.6, dtype=dt)) / 0.6
    keep = (torch.rand(T, B, H) < 0.4).to(dt)
    args = tuple(torch.randn(*s, dtype=dt, requires_grad=True) for s in ((T, B, H), (H, H), (B, H)))

    def f(gx, w, h0):
        return reg.ElmanReg.apply(gx, w, h0, mask, keep, lengths, 1)[:1]

    torch.testing.assert_close(f(*args), reg.elman_reg(*args, mask, keep, lengths, 1))
    torch.autograd.gradcheck(f, args)
    torch.autograd.gradgradcheck(f, args, fast_mode=True)


@pytest.mark.parametrize("name", ["ln-lstm", "ln-gru", "ln-gru-before-both"])
def test_layer_norm_kernels_float32_match_the_reference_loop(name):
    # the float32 kernels normalise in float (statistics summed in double): the same outputs
    # and gradients as the reference loop's F.layer_norm, to float32 accuracy
    torch.manual_seed(0)
    cells = {"ln-lstm": lambda: LayerNormLSTMCell(4, 40), "ln-gru": lambda: LayerNormGRUCell(4, 40)}
    layer = Recurrent(cells[name]()) if name in cells else CASES[name]()
    layer.float().train()
    x = torch.randn(3, 9, 4) * 3
    ref = _run(layer, x, L, use_engine=False)
    got = _run(layer, x, L, use_engine=True)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
