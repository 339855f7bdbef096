"""Layer 2: the drop-ins against torch.nn with copied weights: outputs, final states and
gradients with respect to inputs, weights and initial states."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnlab

CASES = []
for mode, layers, bidir, bf in itertools.product(
    ["RNN_TANH", "RNN_RELU", "LSTM", "LSTM_PROJ", "GRU"], [1, 2], [False, True], [False, True]
):
    CASES.append((mode, layers, bidir, bf))


def make(mode, layers, bidir, bf, dtype):
    I, H = 3, 5
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=bf)
    if mode.startswith("RNN"):
        kw["nonlinearity"] = mode[4:].lower()
        t, r = torch.nn.RNN(I, H, **kw), rnnlab.nn.RNN(I, H, **kw)
    elif mode == "GRU":
        t, r = torch.nn.GRU(I, H, **kw), rnnlab.nn.GRU(I, H, **kw)
    else:
        if mode == "LSTM_PROJ":
            kw["proj_size"] = 2
        t, r = torch.nn.LSTM(I, H, **kw), rnnlab.nn.LSTM(I, H, **kw)
    t, r = t.to(dtype), r.to(dtype)
    r.load_state_dict(t.state_dict())
    return t, r


def hidden(mode, t_mod, B, dtype, g):
    D = 2 if t_mod.bidirectional else 1
    n = t_mod.num_layers * D
    out = t_mod.proj_size if getattr(t_mod, "proj_size", 0) else t_mod.hidden_size
    h0 = torch.randn(n, B, out, dtype=dtype, generator=g, requires_grad=True)
    if mode.startswith("LSTM"):
        c0 = torch.randn(n, B, t_mod.hidden_size, dtype=dtype, generator=g, requires_grad=True)
        return (h0, c0)
    return h0


def flat(out, hn):
    o = out.data if isinstance(out, PackedSequence) else out
    return [o, *(hn if isinstance(hn, tuple) else (hn,))]


def close(actual, expected, tol, msg=None):
    # tol relative to the tensor's scale: float32 sums of a few dozen terms of size ~5 differ in
    # the last bits whatever the summation order (torch's own loops disagree by ~1e-6 too).
    scale = max(1.0, float(expected.detach().abs().max()))
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale, msg=msg)


def compare(t, r, x, hx, tol):
    xt = x.detach().clone().requires_grad_() if not isinstance(x, PackedSequence) else x
    xr = x.detach().clone().requires_grad_() if not isinstance(x, PackedSequence) else x

    def clone_hx(h):
        if isinstance(h, tuple):
            return tuple(v.detach().clone().requires_grad_() for v in h)
        return h.detach().clone().requires_grad_()

    ht, hr = clone_hx(hx), clone_hx(hx)
    a = flat(*t(xt, ht))
    b = flat(*r(xr, hr))
    for u, v in zip(a, b):
        close(v, u, tol)
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(u.shape, dtype=u.dtype, generator=g) for u in a]
    sum((u * w).sum() for u, w in zip(a, weights)).backward()
    sum((v * w).sum() for v, w in zip(b, weights)).backward()
    for (n1, p1), (n2, p2) in zip(t.named_parameters(), r.named_parameters()):
        assert n1 == n2
        close(p2.grad, p1.grad, tol, msg=n1)
    for u, v in zip(ht if isinstance(ht, tuple) else (ht,), hr if isinstance(hr, tuple) else (hr,)):
        close(v.grad, u.grad, tol)
    if not isinstance(x, PackedSequence):
        close(xr.grad, xt.grad, tol)


@pytest.mark.parametrize("mode,layers,bidir,bf", CASES)
def test_dropin_equals_torch_float64(mode, layers, bidir, bf):
    torch.manual_seed(0)
    t, r = make(mode, layers, bidir, bf, torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 3, dtype=torch.float64, generator=g)
    if not bf:
        x = x.transpose(0, 1).contiguous()
    compare(t, r, x, hidden(mode, t, 4, torch.float64, g), 1e-10)


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "LSTM_PROJ", "GRU"])
def test_dropin_equals_torch_float32(mode):
    torch.manual_seed(0)
    t, r = make(mode, 2, True, True, torch.float32)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 3, generator=g)
    compare(t, r, x, hidden(mode, t, 4, torch.float32, g), 1e-6)


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM_PROJ", "GRU"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_dropin_packed_sequence(mode, enforce_sorted):
    torch.manual_seed(0)
    t, r = make(mode, 2, True, False, torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, 3, dtype=torch.float64, generator=g)
    lengths = torch.tensor([7, 5, 5, 2]) if enforce_sorted else torch.tensor([5, 7, 2, 5])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out_t, _ = t(packed, hidden(mode, t, 4, torch.float64, torch.Generator().manual_seed(2)))
    out_r, _ = r(packed, hidden(mode, t, 4, torch.float64, torch.Generator().manual_seed(2)))
    assert isinstance(out_r, PackedSequence)
    torch.testing.assert_close(out_r.batch_sizes, out_t.batch_sizes)
    torch.testing.assert_close(out_r.sorted_indices, out_t.sorted_indices)
    compare(
        t, r, packed, hidden(mode, t, 4, torch.float64, torch.Generator().manual_seed(2)), 1e-10
    )


def test_dropin_unbatched_and_default_hidden():
    torch.manual_seed(0)
    t, r = make("LSTM", 2, True, False, torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    (a, (ha, ca)), (b, (hb, cb)) = t(x), r(x)
    torch.testing.assert_close(b, a)
    torch.testing.assert_close(hb, ha)
    torch.testing.assert_close(cb, ca)


def test_dropin_signatures_and_parameter_order():
    import inspect

    for cls, tcls in [
        (rnnlab.nn.RNN, torch.nn.RNN),
        (rnnlab.nn.LSTM, torch.nn.LSTM),
        (rnnlab.nn.GRU, torch.nn.GRU),
    ]:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        expected = {
            "RNN": [
                "input_size",
                "hidden_size",
                "num_layers",
                "nonlinearity",
                "bias",
                "batch_first",
                "dropout",
                "bidirectional",
                "device",
                "dtype",
            ],
            "LSTM": [
                "input_size",
                "hidden_size",
                "num_layers",
                "bias",
                "batch_first",
                "dropout",
                "bidirectional",
                "proj_size",
                "device",
                "dtype",
            ],
            "GRU": [
                "input_size",
                "hidden_size",
                "num_layers",
                "bias",
                "batch_first",
                "dropout",
                "bidirectional",
                "device",
                "dtype",
            ],
        }[cls.__name__]
        assert positional == expected
        a = [n for n, _ in tcls(3, 4, 2, bidirectional=True).named_parameters()]
        b = [n for n, _ in cls(3, 4, 2, bidirectional=True).named_parameters()]
        assert a == b
    # positional construction means the same as torch's
    r = rnnlab.nn.LSTM(3, 4, 2, False, True)
    assert r.bias is False and r.batch_first is True and len(list(r.parameters())) == 4


def test_dropin_extras_peephole_and_reset_before():
    lstm = rnnlab.nn.LSTM(3, 4, peephole=True)
    names = [n for n, _ in lstm.named_parameters()]
    assert names[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert "weight_ci_l0" in names and "weight_co_l0" in names
    gru_a = rnnlab.nn.GRU(3, 4).double()
    gru_b = rnnlab.nn.GRU(3, 4, reset="before").double()
    gru_b.load_state_dict(gru_a.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert not torch.allclose(gru_a(x)[0], gru_b(x)[0])
    rnn = rnnlab.nn.RNN(3, 4, nonlinearity="sigmoid")
    assert rnn(torch.randn(5, 2, 3))[0].min() > 0


def test_dropin_to_dtype_keeps_cells_in_sync():
    r = rnnlab.nn.GRU(3, 4)
    t = torch.nn.GRU(3, 4)
    r.load_state_dict(t.state_dict())
    r, t = r.double(), t.double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(r(x)[0], t(x)[0])
