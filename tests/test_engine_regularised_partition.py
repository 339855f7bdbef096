"""The regularised GRU kernels' unit-partitioned loops (note 0007) and the regularised Elman
kernel's batch-row team (csrc/regularised.h) against the reference loop.

``RNNLAB_ENGINE_PARTITION=1`` forces the team on at these small sizes: with H=20 the GRU's
threads own spans of 16 and 4 units (2 threads) or 8, 8 and 4 (3 threads), and with B=5
Elman's own rows 0-1 / 2-4 or 0 / 1-2 / 3-4, so every barrier, unit offset and row offset is
exercised on uneven blocks. Independent reference: ``engine.disabled()``
(the wrapper cells' written-out steps), float64, outputs, final states (masks included), and
the gradients of the input, the initial state and every parameter, with the variational masks,
zoneout (training draws and eval's mixture) and lengths.
"""

from __future__ import annotations

import pytest
import torch

from engine_spy import run_with_grads as _run
from engine_spy import spy_ops as _spy
from rnnlab.cells import ElmanCell, GRUCell, VariationalDropoutCell, ZoneoutCell
from rnnlab.engine import build
from rnnlab.layers import Recurrent

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

H = 20
CASES = {
    "gru-dropout": lambda: Recurrent(GRUCell(4, H), dropout_input=0.3, dropout_state=0.4),
    "gru-nobias-dropout": lambda: Recurrent(GRUCell(4, H, bias=False), dropout_state=0.4),
    "gru-before-dropout": lambda: Recurrent(GRUCell(4, H, reset="before"), dropout_state=0.4),
    "gru-zoneout": lambda: Recurrent(ZoneoutCell(GRUCell(4, H), 0.3)),
    "gru-before-zoneout": lambda: Recurrent(
        ZoneoutCell(GRUCell(4, H, reset="before", activation="sigmoid"), 0.3)
    ),
    "gru-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(GRUCell(4, H), 0.2, 0.3), 0.2)
    ),
    "gru-before-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(GRUCell(4, H, reset="before"), 0.2, 0.3), 0.2)
    ),
    "elman-dropout": lambda: Recurrent(ElmanCell(4, H), dropout_input=0.3, dropout_state=0.4),
    "elman-both": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(ElmanCell(4, H), 0.2, 0.3), 0.2)
    ),
}


@pytest.mark.parametrize("nthreads", [2, 3])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(CASES))
def test_partitioned_regularised_kernels_equal_reference_loop(
    name, train, nthreads, threads, monkeypatch
):
    threads(nthreads)
    monkeypatch.setenv("RNNLAB_ENGINE_PARTITION", "1")
    torch.manual_seed(0)
    layer = CASES[name]().double().train(train)
    x = torch.randn(5, 9, 4, dtype=torch.float64)
    torch.manual_seed(3)
    s0 = layer.cell.initial_state(5, dtype=torch.float64)  # the dropout masks drawn here
    s0 = s0._replace(**{s0._fields[0]: torch.randn(5, H, dtype=torch.float64)})
    for lengths in (None, torch.tensor([9, 3, 1, 7, 9])):
        ref = _run(layer, x, s0, lengths, use_engine=False)
        with monkeypatch.context() as mp:
            calls = _spy(mp)
            got = _run(layer, x, s0, lengths, use_engine=True)
        kind = name.split("-")[0]
        if train or "zoneout" in name or "both" in name:
            assert f"{kind}_reg_forward" in calls and f"{kind}_reg_backward" in calls, calls
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
