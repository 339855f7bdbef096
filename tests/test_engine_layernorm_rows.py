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
