"""Jordan with variational recurrent dropout and zoneout on the engine (issue 18).

Independent references: the Jordan equations written out here step by step (masks read from
the state, zoneout's keep draws re-made from the same generator), and the reference loop
(``engine.disabled()``) over the wrapper cells' steps; float64, outputs, final states (masks
included) and every gradient; gradcheck/gradgradcheck of the operators against finite
differences; the masks carried across truncated-BPTT windows; eval().
"""

from __future__ import annotations

import pytest
import torch

from engine_spy import spy_ops as _spy
from rnnlab import engine
from rnnlab.cells import JordanCell, VariationalDropoutCell, ZoneoutCell, _philox
from rnnlab.engine import build
from rnnlab.layers import Recurrent

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

L = torch.tensor([7, 3, 5])
ACTS = {"identity": lambda v: v, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def _loss(y, s):
    w = torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)
    return (y * w).sum() + (s[0] * s[0]).sum()


def _run(layer, x, lengths, use_engine, seed=1):
    torch.manual_seed(seed)
    layer.zero_grad()
    x = x.detach().requires_grad_(True)
    if use_engine:
        y, s = layer(x, lengths=lengths)
    else:
        with engine.disabled():
            y, s = layer(x, lengths=lengths)
    _loss(y, s).backward()
    return [y, *s, x.grad] + [p.grad.clone() for p in layer.parameters()]


def _jordan(oact="tanh", bias=True):
    return JordanCell(4, 5, 3, output_activation=oact, bias=bias)


CASES = {
    "dropout": lambda: Recurrent(_jordan(), dropout_input=0.3, dropout_state=0.4),
    "dropout-linear": lambda: Recurrent(_jordan("identity"), dropout_state=0.4),
    "dropout-nobias": lambda: Recurrent(
        _jordan("sigmoid", False), dropout_input=0.2, dropout_state=0.4
    ),
    "zoneout": lambda: Recurrent(ZoneoutCell(_jordan(), 0.3)),
    "zoneout-linear": lambda: Recurrent(ZoneoutCell(_jordan("identity"), 0.3)),
    "both": lambda: Recurrent(ZoneoutCell(VariationalDropoutCell(_jordan(), 0.2, 0.3), 0.2)),
}


@pytest.mark.parametrize("lengths", [None, L], ids=["full", "lengths"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(CASES))
def test_jordan_regularised_kernel_equals_reference_loop(name, train, lengths, monkeypatch):
    torch.manual_seed(0)
    layer = CASES[name]().double().train(train)
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    ref = _run(layer, x, lengths, use_engine=False)
    calls = _spy(monkeypatch)
    got = _run(layer, x, lengths, use_engine=True)
    assert calls, "no compiled kernel ran"
    if train or name.startswith("zoneout") or name == "both":
        assert "jordan_reg_forward" in calls and "jordan_reg_backward" in calls, calls
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def _written_out(cell, x, y0, m_x, m_y, p, keep_draws, lengths, train):
    """Jordan's equations, step by step, with variational dropout (m_x, m_y) and zoneout
    (rate p on y; ``keep_draws`` (T, B, O) 0/1 in training, the mixture in eval)."""
    oact = ACTS[cell.output_activation_name]
    b_h = cell.bias_ih + cell.bias_hh
    y, ys = y0, []
    for t in range(x.shape[1]):
        xin, yin = (x[:, t] * m_x, y * m_y) if train else (x[:, t], y)
        h = torch.tanh(xin @ cell.weight_ih.T + yin @ cell.weight_hh.T + b_h)
        cand = oact(h @ cell.weight_ho.T + cell.bias_ho)
        if p > 0:
            d = keep_draws[t] if train else torch.full_like(cand, p)
            cand = d * y + (1 - d) * cand
        if lengths is not None:
            run = (lengths > t).unsqueeze(1)
            cand = torch.where(run, cand, y)
            ys.append(torch.where(run, cand, torch.zeros_like(cand)))
        else:
            ys.append(cand)
        y = cand
    return torch.stack(ys, 1), y


@pytest.mark.parametrize("oact", ["tanh", "identity"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_jordan_dropout_zoneout_match_the_written_out_equations(oact, train):
    torch.manual_seed(0)
    p = 0.4
    g = torch.Generator().manual_seed(5)
    inner = VariationalDropoutCell(_jordan(oact), dropout_input=0.25, dropout_state=0.5)
    # masks drawn in training mode (eval would give ones), then used in either mode
    s0 = inner.initial_state(3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    layer = Recurrent(ZoneoutCell(inner, {"y": p}, generator=g)).double().train(train)
    x = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    assert bool((s0.mask_h == 0).any()) and s0.mask_h.shape == (3, 3)  # on y (B, O)
    g.manual_seed(9)
    y, s = layer(x, s0, lengths=L[:3].clamp(max=6))
    # the reference loop's draws, re-made: per step one key from g, then the pure-torch
    # Philox keep decisions on the (B, O) units (docs/design/0020)
    g.manual_seed(9)
    thr = _philox.thresholds([p])
    draws = torch.stack([
        _philox.keep_reference(_philox.step_keys(1, g), [9], thr, torch.float64).view(3, 3)
        for _ in range(6)
    ])  # fmt: skip
    cell = inner.cell
    y_ref, last = _written_out(
        cell, x, s0.y, s0.mask_x, s0.mask_h, p, draws, L[:3].clamp(max=6), train
    )
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(s.y, last, rtol=1e-12, atol=1e-13)
    assert bool((s.mask_h == s0.mask_h).all())
    params = [x, *layer.parameters()]
    g1 = torch.autograd.grad(_loss(y, (s.y,)), params)
    g2 = torch.autograd.grad(_loss(y_ref, (last,)), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_jordan_mask_carries_across_truncated_bptt_windows(monkeypatch):
    # two windows with the state carried (masks inside it) = one run over the whole sequence
    torch.manual_seed(0)
    layer = Recurrent(_jordan(), dropout_input=0.3, dropout_state=0.5).double()
    x = torch.randn(2, 8, 4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    s0 = layer.cell.initial_state(2, dtype=torch.float64, generator=gen)
    calls = _spy(monkeypatch)
    y_all, s_all = layer(x, s0)
    y1, s1 = layer(x[:, :5], s0)
    s1 = type(s1)(*(f.detach() for f in s1))
    y2, s2 = layer(x[:, 5:], s1)
    assert calls.count("jordan_reg_forward") == 3
    assert bool((s2.mask_h == s0.mask_h).all()) and bool((s2.mask_x == s0.mask_x).all())
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_all, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(s2.y, s_all.y, rtol=1e-12, atol=1e-13)
    with engine.disabled():
        y_ref, _ = layer(x, s0)
    torch.testing.assert_close(y_all, y_ref, rtol=1e-12, atol=1e-13)


def test_jordan_dropout_is_off_in_eval(monkeypatch):
    torch.manual_seed(0)
    cell = _jordan().double()
    layer = Recurrent(cell, dropout_input=0.5, dropout_state=0.5).double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    s0 = layer.cell.cell.initial_state(2, dtype=torch.float64)
    y, _ = layer(x, s0)
    with engine.disabled():
        y_plain, _ = Recurrent(cell)(x, s0)
    torch.testing.assert_close(y, y_plain, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("bias", [True, False])
def test_jordan_reg_op_gradcheck_and_gradgradcheck(bias):
    from rnnlab.engine import regularised_jordan as rj

    torch.manual_seed(0)
    T, B, H, O = 4, 3, 3, 2
    dt = torch.float64
    lengths = torch.tensor([4, 1, 3])
    mask = torch.bernoulli(torch.full((B, O), 0.6, dtype=dt)) / 0.6
    keep = (torch.rand(T, B, O) < 0.4).to(dt)

    def r(*s):
        return torch.randn(*s, dtype=dt, requires_grad=True)

    gx, u, wy, y0 = r(T, B, H), r(H, O), r(O, H), r(B, O)
    by = r(O) if bias else None
    args = (gx, u, wy, y0) + ((by,) if bias else ())

    def f(gx, u, wy, y0, by=None):
        return rj.JordanReg.apply(gx, u, wy, by, y0, mask, keep, lengths, 1, 2)[:1]

    ref = rj.jordan_reg(gx, u, wy, by, y0, mask, keep, lengths, 1, 2)
    torch.testing.assert_close(f(*args), ref)
    torch.autograd.gradcheck(f, args)
    torch.autograd.gradgradcheck(f, args, fast_mode=True)


def test_jordan_reg_ops_opcheck():
    from rnnlab.engine import ops
    from rnnlab.engine import regularised_jordan as rj

    torch.manual_seed(0)
    gx, u, wy, by, y0 = (torch.randn(*s) for s in ((5, 3, 4), (4, 2), (2, 4), (2,), (3, 2)))
    m, k = torch.rand(3, 2), torch.rand(5, 3, 2)
    test = ("test_schema", "test_faketensor")
    for args in (
        (gx, u, wy, by, y0, m, k, torch.tensor([5, 2, 4]), 1, 0),
        (gx, u, wy, None, y0, None, None, None, 1, 1),
    ):
        torch.library.opcheck(ops.op("jordan_reg_forward"), args, test_utils=test)
    ys, hs, yc = ops.op("jordan_reg_forward")(gx, u, wy, by, y0, m, k, None, 1, 0)
    args = (torch.randn_like(ys), ys, hs, yc, u, wy, m, k, None, 1, 0)
    torch.library.opcheck(ops.op("jordan_reg_backward"), args, test_utils=test)
    assert set(rj.SCHEMAS) == {"jordan_reg_forward", "jordan_reg_backward"}
