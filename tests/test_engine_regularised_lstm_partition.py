"""The regularised LSTM kernel's unit-partitioned loops (csrc/regularised.h, note 0007).

RNNLAB_ENGINE_PARTITION=1 forces the partition on; with 2 and 3 threads and H=20 each thread
owns a slice of the units (spans of 16 and 4, or 8, 8 and 4: uneven, one not a whole vector).
Independent reference: the reference loop (``engine.disabled()``) over the wrapper cells'
written-out steps, in float64, outputs, final states and every gradient, with the state mask,
zoneout's keep draws (the same RNG draws on both paths) and lengths.
"""

from __future__ import annotations

import pytest
import torch

from engine_spy import spy_ops as _spy
from rnnlab import engine
from rnnlab.cells import LSTMCell, VariationalDropoutCell, ZoneoutCell
from rnnlab.engine import build
from rnnlab.layers import Recurrent

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

CASES = {
    "dropout": lambda: Recurrent(LSTMCell(5, 20), dropout_input=0.3, dropout_state=0.4),
    "zoneout": lambda: Recurrent(ZoneoutCell(LSTMCell(5, 20), {"h": 0.2, "c": 0.5})),
    "zoneout-c": lambda: Recurrent(ZoneoutCell(LSTMCell(5, 20), {"c": 0.5})),
    "both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(LSTMCell(5, 20), 0.2, 0.3), {"h": 0.1, "c": 0.5}),
        reverse=True,
    ),
}


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _run(layer, x, s0, lengths, use_engine, seed=1):
    torch.manual_seed(seed)
    layer.zero_grad()
    x = x.detach().requires_grad_(True)
    s0 = tuple(s.detach().requires_grad_(True) for s in s0)
    # the initial state draws the dropout masks (travelling with the state): the same on both
    # paths, with a given h(0), c(0)
    state = layer.cell.initial_state(x.shape[0], dtype=x.dtype)
    state = state._replace(h=s0[0], c=s0[1])
    if use_engine:
        y, s = layer(x, state, lengths=lengths)
    else:
        with engine.disabled():
            y, s = layer(x, state, lengths=lengths)
    loss = (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum()
    loss = loss + sum((f * f).sum() for f in s[:2])
    loss.backward()
    return [y, *s[:2], x.grad, *(v.grad for v in s0)] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("nthreads", [2, 3])
@pytest.mark.parametrize("lengths", [None, [9, 3, 1, 7]], ids=["full", "lengths"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(CASES))
def test_partitioned_regularised_lstm_equals_reference_loop(
    name, train, lengths, nthreads, threads, monkeypatch
):
    threads(nthreads)
    monkeypatch.setenv("RNNLAB_ENGINE_PARTITION", "1")
    torch.manual_seed(0)
    layer = CASES[name]().double().train(train)
    x = torch.randn(4, 9, 5, dtype=torch.float64)
    s0 = tuple(torch.randn(4, 20, dtype=torch.float64) for _ in range(2))
    L = None if lengths is None else torch.tensor(lengths)
    ref = _run(layer, x, s0, L, use_engine=False)
    calls = _spy(monkeypatch)
    got = _run(layer, x, s0, L, use_engine=True)
    if train or name != "dropout":  # eval dropout is the plain LSTM
        assert "lstm_reg_forward" in calls and "lstm_reg_backward" in calls, calls
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("nthreads", [2, 3])
def test_partitioned_regularised_lstm_float32(nthreads, threads, monkeypatch):
    # float32: the per-thread packed products and fexp-based gates, to float32 accuracy
    threads(nthreads)
    monkeypatch.setenv("RNNLAB_ENGINE_PARTITION", "1")
    torch.manual_seed(0)
    layer = CASES["both"]().float().train()
    x = torch.randn(4, 9, 5)
    s0 = tuple(torch.randn(4, 20) for _ in range(2))
    L = torch.tensor([9, 3, 1, 7])
    ref = _run(layer, x, s0, L, use_engine=False)
    got = _run(layer, x, s0, L, use_engine=True)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
