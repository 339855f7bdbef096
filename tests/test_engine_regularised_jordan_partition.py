"""The regularised Jordan kernel's batch-row partition (csrc/regularised_jordan.h).

``RNNLAB_ENGINE_PARTITION=1`` forces the team on at these small sizes: with B=5 the threads
own rows [0, 2) and [2, 5) (2 threads) or [0, 1), [1, 3) and [3, 5) (3 threads), uneven blocks
that each run the whole loop. Independent reference: ``engine.disabled()`` (the wrapper cells'
written-out steps), float64, outputs, final states (masks included), and the gradients of the
input, the initial state y(0) and every parameter, with the state mask, zoneout (training draws
and eval's mixture), tanh and identity output layers, output sizes 7 and H = 20, and lengths
shorter than T.
"""

from __future__ import annotations

import pytest
import torch

from engine_spy import run_with_grads as _run
from engine_spy import spy_ops as _spy
from rnnlab.cells import JordanCell, VariationalDropoutCell, ZoneoutCell
from rnnlab.engine import build
from rnnlab.layers import Recurrent

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

H = 20


def _jordan(oact: str, out: int) -> JordanCell:
    return JordanCell(4, H, out, output_activation=oact)


CASES = {
    "dropout-tanh": lambda: Recurrent(_jordan("tanh", 7), dropout_input=0.3, dropout_state=0.4),
    "dropout-identity": lambda: Recurrent(_jordan("identity", H), dropout_state=0.4),
    "zoneout-tanh": lambda: Recurrent(ZoneoutCell(_jordan("tanh", H), 0.3)),
    "zoneout-identity": lambda: Recurrent(ZoneoutCell(_jordan("identity", 7), 0.3)),
    "both-tanh": lambda: Recurrent(
        ZoneoutCell(VariationalDropoutCell(_jordan("tanh", 7), 0.2, 0.3), 0.2)
    ),
}


@pytest.mark.parametrize("nthreads", [2, 3])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(CASES))
def test_partitioned_regularised_jordan_equals_reference_loop(
    name, train, nthreads, threads, monkeypatch
):
    if not train and name.startswith("dropout"):
        pytest.skip("no mask in eval: the plain Jordan kernel runs")
    threads(nthreads)
    monkeypatch.setenv("RNNLAB_ENGINE_PARTITION", "1")
    torch.manual_seed(0)
    layer = CASES[name]().double().train(train)
    x = torch.randn(5, 9, 4, dtype=torch.float64)
    torch.manual_seed(3)
    s0 = layer.cell.initial_state(5, dtype=torch.float64)  # the dropout masks drawn here
    s0 = s0._replace(y=torch.randn(s0.y.shape, dtype=torch.float64))
    for lengths in (None, torch.tensor([9, 3, 1, 7, 9])):
        ref = _run(layer, x, s0, lengths, use_engine=False)
        with monkeypatch.context() as mp:
            calls = _spy(mp)
            got = _run(layer, x, s0, lengths, use_engine=True)
        assert "jordan_reg_forward" in calls and "jordan_reg_backward" in calls, calls
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
