"""The layer-norm kernels' batch-row partition (csrc/layernorm.h: ``ln_team``, ``over_rows``).

Each thread of the team owns a block of batch rows for the whole sequence, and the gain/bias
gradients are per-thread partial sums. Forced on (``RNNLAB_ENGINE_PARTITION=1``) with 2 and 3
threads and odd B and H, so the row blocks are uneven (B=5 over 3 threads: 1, 2, 2 rows), it
must give the reference loop's outputs, final states and every gradient (input, weights,
gains, biases) in float64, with lengths, dropout masks and zoneout inside.
"""

from __future__ import annotations

import pytest
import torch

from engine_spy import spy_ops as _spy
from rnnlab import engine
from rnnlab.cells import LayerNormGRUCell, LayerNormLSTMCell, VariationalDropoutCell, ZoneoutCell
from rnnlab.engine import build
from rnnlab.layers import Recurrent

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

I, H = 4, 17  # H >= 16: the partition's minimum width
CASES = {
    "ln-lstm": lambda: Recurrent(LayerNormLSTMCell(I, H)),
    "ln-lstm-nobias-both": lambda: Recurrent(
        ZoneoutCell(
            VariationalDropoutCell(LayerNormLSTMCell(I, H, bias=False), 0.2, 0.3),
            {"h": 0.1, "c": 0.5},
        )
    ),  # fmt: skip
    "ln-gru-after": lambda: Recurrent(LayerNormGRUCell(I, H)),
    "ln-gru-before": lambda: Recurrent(LayerNormGRUCell(I, H, reset="before")),
    "ln-gru-before-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(LayerNormGRUCell(I, H, reset="before"), 0.2, 0.3), 0.2)
    ),
    "ln-gru-after-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(LayerNormGRUCell(I, H), 0.2, 0.3), 0.2)
    ),
}
LENGTHS = {5: torch.tensor([7, 3, 5, 1, 6]), 2: torch.tensor([4, 7])}


def _randomise(layer):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-0.7, 0.7)  # gains 1 / biases 0 would hide where they enter
    return layer


def _run(layer, x, lengths, use_engine):
    torch.manual_seed(1)  # the same dropout/zoneout draws on both paths
    layer.zero_grad()
    x = x.detach().requires_grad_(True)
    if use_engine:
        y, s = layer(x, lengths=lengths)
    else:
        with engine.disabled():
            y, s = layer(x, lengths=lengths)
    w = torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)
    loss = (y * w).sum() + sum((f * f * (k + 1)).sum() for k, f in enumerate(s))
    loss.backward()
    return [y, *s, x.grad] + [p.grad.clone() for p in layer.parameters()]


@pytest.fixture(params=[2, 3], ids=["2threads", "3threads"])
def threads(request, monkeypatch):
    monkeypatch.setenv("RNNLAB_ENGINE_PARTITION", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("B", [5, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_row_partitioned_ln_kernels_equal_the_reference_loop(
    name, B, lengths, threads, monkeypatch
):
    layer = _randomise(CASES[name]().double().train())
    x = torch.randn(B, 7, I, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lens = LENGTHS[B] if lengths else None
    ref = _run(layer, x, lens, use_engine=False)
    calls = _spy(monkeypatch)
    got = _run(layer, x, lens, use_engine=True)
    kind = "ln_gru" if "gru" in name else "ln_lstm"
    assert f"{kind}_forward" in calls and f"{kind}_backward" in calls, calls
    assert len(got) == len(ref)
    for k, (a, b) in enumerate(zip(got, ref)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11, msg=lambda m, k=k: f"{k}: {m}")


def _ln(v, g, b, eps=1e-5):
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    out = (v - mu) / torch.sqrt(var + eps) * g
    return out if b is None else out + b


def _written_out_gru(p, x, h, lengths, reset):
    """LayerNormGRUCell's equations (its docstring) step by step, with the length freeze."""
    ys, Hn = [], h.shape[-1]
    bh, U, g = p.get("bias_hh"), p["weight_hh"], p["gain_hh"]
    for t in range(x.shape[1]):
        xr, xz, xn = _ln(x[:, t] @ p["weight_ih"].T, p["gain_ih"], p.get("bias_ih")).chunk(3, 1)
        if reset == "after":
            hr, hz, hn = _ln(h @ U.T, g, bh).chunk(3, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
        else:

            def part(k0, k1):
                return None if bh is None else bh[k0:k1]

            rz = _ln(h @ U[: 2 * Hn].T, g[: 2 * Hn], part(0, 2 * Hn))
            r, z = torch.sigmoid(xr + rz[:, :Hn]), torch.sigmoid(xz + rz[:, Hn:])
            n = torch.tanh(xn + _ln((r * h) @ U[2 * Hn :].T, g[2 * Hn :], part(2 * Hn, 3 * Hn)))
        valid = (t < lengths).unsqueeze(1)
        h_new = z * h + (1 - z) * n
        ys.append(torch.where(valid, h_new, torch.zeros_like(h_new)))
        h = torch.where(valid, h_new, h)
    return torch.stack(ys, 1), h


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("nthreads", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_ln_gru_input_norm_in_kernel_matches_written_out_equations(
    reset, nthreads, bias, monkeypatch
):
    # the input norm LN(W x; g_x, b_x) runs inside the kernel (forward and backward, per row):
    # outputs, final state and the gradients of x, W, U, both gains and biases and h0 against
    # the equations written out here; B=5 over 2/3 threads gives uneven row blocks
    monkeypatch.setenv("RNNLAB_ENGINE_PARTITION", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(nthreads)
    try:
        layer = _randomise(Recurrent(LayerNormGRUCell(I, H, reset=reset, bias=bias)).double())
        gen = torch.Generator().manual_seed(5)
        x0 = torch.randn(5, 6, I, dtype=torch.float64, generator=gen)
        h00 = torch.randn(5, H, dtype=torch.float64, generator=gen)
        lengths = torch.tensor([6, 2, 5, 1, 4])
        cot = torch.randn(5, 6, H, dtype=torch.float64, generator=gen)

        def grads(run):
            x, h0 = x0.clone().requires_grad_(True), h00.clone().requires_grad_(True)
            layer.zero_grad()
            y, h = run(x, h0)
            ((y * cot).sum() + (h * h).sum()).backward()
            return [y, h, x.grad, h0.grad] + [p.grad.clone() for p in layer.parameters()]

        p = dict(layer.cell.named_parameters())
        ref = grads(lambda x, h0: _written_out_gru(p, x, h0, lengths, reset))
        calls = _spy(monkeypatch)

        def eng(x, h0):
            y, s = layer(x, layer.cell.State(h0), lengths=lengths)
            return y, s.h

        got = grads(eng)
        assert "ln_gru_forward" in calls and "ln_gru_backward" in calls, calls
        again = grads(eng)
        for k, (a, b, c) in enumerate(zip(got, ref, again)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11, msg=lambda m, k=k: f"{k}: {m}")
            assert torch.equal(a, c), k  # deterministic for a thread count
    finally:
        torch.set_num_threads(before)
