"""Forward-mode AD through the engine's ops (torch.func.jvp, jacfwd, hessian and eager
torch.autograd.forward_ad), and the plain-eager route (engine/routes.py): every kernel's
tangents equal the reference loop's (RNNLAB_ENGINE off) and central finite differences, in
float64, with lengths; the kernels run, not the loop."""

from __future__ import annotations

import os

import pytest
import torch
from torch.autograd import forward_ad as fwAD

import rnnlab
from cell_zoo import ZOO
from rnnlab import Recurrent, engine
from rnnlab.engine import build, routes

pytestmark = pytest.mark.skipif(
    build.ops() is None and os.environ.get("CI", "").lower() not in ("true", "1"),
    reason=f"compiled engine unavailable: {build.status()['error']}",
)

FAST = sorted(n for n in ZOO if engine.lookup(ZOO[n]()) is not None)
L = torch.tensor([4, 2, 3])


@pytest.fixture
def spy(monkeypatch):
    calls: list[str] = []
    real = build.ops()

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setitem(build._state, "ops", Spy())
    return calls


def _layer(name, B=3, T=4, lengths=L):
    torch.manual_seed(0)
    cell = ZOO[name]().double()
    layer = Recurrent(cell)
    x = torch.randn(B, T, cell.input_size, dtype=torch.float64)
    s0 = tuple(torch.randn(B, n, dtype=torch.float64) for n in cell.state_sizes().values())

    def f(x, *s):
        y, s_n = layer(x, cell.State(*s), lengths=lengths)
        return y, *s_n

    return f, (x, *s0)


def _reference_jvp(f, primals, tangents):
    with engine.disabled():
        return torch.func.jvp(f, primals, tangents)[1]


@pytest.mark.parametrize("name", FAST)
def test_jvp_and_dual_numbers_equal_the_reference_loop(name, spy):
    f, primals = _layer(name)
    tangents = tuple(torch.randn_like(p) for p in primals)
    ref = _reference_jvp(f, primals, tangents)
    spy.clear()
    _, func_t = torch.func.jvp(f, primals, tangents)
    assert any(c.endswith("_forward") for c in spy)  # the kernel computed the primal
    spy.clear()
    with fwAD.dual_level():
        out = f(*(fwAD.make_dual(p, t) for p, t in zip(primals, tangents)))
        dual_t = [fwAD.unpack_dual(o).tangent for o in out]
    assert any(c.endswith("_forward") for c in spy)
    eps = 1e-6
    plus = f(*(p + eps * t for p, t in zip(primals, tangents)))
    minus = f(*(p - eps * t for p, t in zip(primals, tangents)))
    for r, a, b, hi, lo in zip(ref, func_t, dual_t, plus, minus):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b, r, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a, (hi - lo) / (2 * eps), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "name", ["elman_relu_out", "jordan_sigmoid", "gru_before", "lstm_peephole_proj", "lstm_fgr"]
)
def test_jacfwd_and_hessian_equal_the_reference_loop(name, spy):
    f, (x, *s0) = _layer(name, B=2, T=3, lengths=torch.tensor([3, 1]))

    def y(x):
        return f(x, *s0)[0]

    def loss(x):
        return y(x).sin().sum()

    jac = torch.func.jacfwd(y)(x)
    hess = torch.func.hessian(loss)(x)  # forward over reverse: the backward op's jvp
    assert any(c.endswith("_backward") for c in spy)
    with engine.disabled():
        jac_ref = torch.func.jacrev(y)(x)
        hess_ref = torch.func.jacrev(torch.func.jacrev(loss))(x)
    torch.testing.assert_close(jac, jac_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(hess, hess_ref, rtol=1e-9, atol=1e-10)


def test_fused_lstm_is_left_under_dual_numbers():
    # torch's fused LSTM (mkldnn_rnn_layer) has no forward derivative: float32 dual inputs run
    # the engine's own op instead
    torch.manual_seed(0)
    lstm = rnnlab.nn.LSTM(3, 4, batch_first=True)
    x, v = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    with fwAD.dual_level():
        t = fwAD.unpack_dual(lstm(fwAD.make_dual(x, v))[0]).tangent
    with engine.disabled():
        _, t_ref = torch.func.jvp(lambda x: lstm(x)[0], (x,), (v,))
    torch.testing.assert_close(t, t_ref, rtol=1e-5, atol=1e-6)


def test_plain_eager_takes_the_lean_route_and_transforms_the_traceable_one():
    from torch._subclasses.fake_tensor import FakeTensorMode

    seen = []
    torch.func.grad(lambda x: (seen.append(routes._plain_eager()), x.sum())[1])(torch.ones(2))
    with FakeTensorMode():
        seen.append(routes._plain_eager())
    assert routes._plain_eager() and seen == [False, False]
    gx = torch.randn(3, 2, 4, requires_grad=True)
    (hs,) = routes.Elman.apply(gx, torch.randn(4, 4), torch.zeros(2, 4), None, None, 1)
    assert type(hs.grad_fn).__name__ == "ElmanEagerBackward"
    hs = torch.func.vmap(
        lambda g: routes.Elman.apply(g, torch.eye(4), torch.zeros(2, 4), None, None, 1)[0]
    )(torch.randn(5, 3, 2, 4))
    assert hs.shape == (5, 4, 2, 4)


def test_lean_route_gradients_of_unused_outputs_are_zero():
    # only the outputs y are used: no gradient reaches the cell states' sequence (None, not
    # materialised zeros), which the backward op then gets as zeros
    torch.manual_seed(0)
    cell = ZOO["lstm_peephole_proj"]().double()
    x = torch.randn(3, 4, cell.input_size, dtype=torch.float64, requires_grad=True)
    grads = []
    for ctx in (rnnlab.engine.disabled, None):
        with ctx() if ctx else torch.enable_grad():
            y, _ = Recurrent(cell)(x, lengths=L)
            grads.append(torch.autograd.grad(y.sum(), [x, *cell.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
