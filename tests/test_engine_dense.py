"""rnnlab.engine.dense: the input projections through oneDNN (float32 only, so the checks are
against the same maths in float64), its gradients and double backward, that it runs where it
should (built-in GRU, CompiledCell's hoisted product) and stays out of transforms."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from rnnlab import GRUCell, Recurrent, engine
from rnnlab.bench import MinimalGatedUnit
from rnnlab.engine import CompiledCell, build, dense

needs_dnnl = pytest.mark.skipif(dense._LINEAR is None, reason="torch built without oneDNN")


@pytest.fixture
def counted(monkeypatch):
    """dense forced on (SWITCH "1"), its oneDNN op wrapped to count calls."""
    calls = [0]
    real = dense._LINEAR

    def op(*a: Any) -> Any:
        calls[0] += 1
        return real(*a)

    monkeypatch.setattr(dense, "SWITCH", "1")
    monkeypatch.setattr(dense, "_LINEAR", op)
    return calls


def _grads(fn, *inputs):  # type: ignore[no-untyped-def]
    out = fn(*inputs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.dtype)
    return [out, *torch.autograd.grad((w * out).sum(), inputs)]


@needs_dnnl
def test_linear_and_its_gradients_equal_float64(counted):
    torch.manual_seed(0)
    # the time-major view of a batch-first input, as the kernels pass it (not contiguous)
    x = torch.randn(5, 7, 6).transpose(0, 1).requires_grad_()
    w = torch.randn(4, 6, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    fast = _grads(dense.linear, x, w, b)
    assert counted[0] == 3  # forward, dx, dW
    ref = _grads(F.linear, *(t.detach().double().requires_grad_() for t in (x, w, b)))
    for name, a, r in zip(["y", "x", "w", "b"], fast, ref):
        assert a.dtype == torch.float32 and a.shape == r.shape, name
        torch.testing.assert_close(a.double(), r, rtol=1e-5, atol=1e-5, msg=name)
    gx, gw = torch.autograd.grad(dense.linear(x, w).sum(), (x, w))  # no bias
    rx, rw = torch.autograd.grad(F.linear(x, w).sum(), (x, w))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)


@needs_dnnl
def test_double_backward_equals_f_linear(counted):
    torch.manual_seed(0)
    ins = [torch.randn(9, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True),
           torch.randn(3, requires_grad=True)]  # fmt: skip
    res = []
    ins64 = [t.detach().double().requires_grad_() for t in ins]
    for fn, xs in ((dense.linear, ins), (F.linear, ins64)):
        y = fn(*xs)
        g = torch.autograd.grad(y.square().sum(), xs, create_graph=True)
        res.append(torch.autograd.grad(sum((k + 1) * t.sin().sum() for k, t in enumerate(g)), xs))
    assert counted[0] > 3  # the backward's own products ran through dense again
    for a, r in zip(*res):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-4)


def test_by_size_and_dtype(monkeypatch):
    monkeypatch.setattr(dense, "SWITCH", "")
    big = torch.randn(64, 256), torch.randn(512, 256)
    assert dense._wanted(*big, None) == (dense._LINEAR is not None)
    assert not dense._wanted(torch.randn(2, 3), torch.randn(4, 3), None)  # set-up dominates
    assert not dense._wanted(*(t.double() for t in big), None)  # oneDNN: float32 only
    monkeypatch.setattr(dense, "SWITCH", "0")
    assert not dense._wanted(*big, None)


@needs_dnnl
def test_transforms_and_traces_see_f_linear(counted):
    x, w = torch.randn(4, 3), torch.randn(2, 3)
    g = torch.func.grad(lambda x_: dense.linear(x_, w).sum())(x)
    torch.testing.assert_close(g, w.sum(0).expand(4, 3))
    torch.func.vmap(lambda r: dense.linear(r, w))(x)
    with torch.autograd.forward_ad.dual_level():
        dense.linear(torch.autograd.forward_ad.make_dual(x, torch.ones_like(x)), w)
    torch.jit.trace(lambda x_: dense.linear(x_, w), (x,), check_trace=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's bf16 product, as F.linear
        assert dense.linear(x, w).dtype == F.linear(x, w).dtype == torch.bfloat16
    assert counted[0] == 0


@needs_dnnl
@pytest.mark.skipif(build.ops() is None, reason="compiled engine unavailable")
def test_gru_kernel_through_dense_equals_reference_loop(counted):
    torch.manual_seed(0)
    cell = GRUCell(5, 6)
    x = torch.randn(3, 4, 5, requires_grad=True)
    fast = _grads(lambda x_, *p: Recurrent(cell)(x_)[0], x, *cell.parameters())
    assert counted[0] == 3
    cell64 = GRUCell(5, 6).double()
    cell64.load_state_dict(cell.state_dict())
    x64 = x.detach().double().requires_grad_()
    with engine.disabled():
        ref = _grads(lambda x_, *p: Recurrent(cell64)(x_)[0], x64, *cell64.parameters())
    for a, r in zip(fast, ref):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-5)


@needs_dnnl
def test_compiled_cell_hoist_through_dense_equals_reference_loop(counted, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    cell = MinimalGatedUnit(5, 6)
    x = torch.randn(3, 4, 5, requires_grad=True)
    layer = Recurrent(CompiledCell(cell))
    fast = _grads(lambda x_, *p: layer(x_)[0], x, *cell.parameters())
    assert counted[0] == 3  # the hoisted addmm, its dx and dW
    cell64 = MinimalGatedUnit(5, 6).double()
    cell64.load_state_dict(cell.state_dict())
    x64 = x.detach().double().requires_grad_()
    ref = _grads(lambda x_, *p: Recurrent(cell64)(x_)[0], x64, *cell64.parameters())
    for a, r in zip(fast, ref):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-5)
