"""rnnlab bench: the records' schema, the FLOP formula of the issue, the interleaved
torch.nn.LSTM yardstick and the table built from them (tiny shapes: timings are not tested)."""

from __future__ import annotations

import pytest

from rnnlab import bench


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(bench.SHAPES, "S1", (6, 3, 5, 4))
    return bench.SHAPES["S1"]


def test_records_schema_flops_and_yardstick(tiny):
    T, B, I, H = tiny
    recs = bench.bench(["gru", "lstm_cifg", "lstm"], ["S1"], ["forward", "train"], repeats=2)
    by = {(r["cell"], r["mode"], r["impl"]): r for r in recs}
    assert {k[2] for k in by if k[0] == "gru"} == {"rnnlab", "torch", "reference", "torch_lstm"}
    assert {k[2] for k in by if k[0] == "lstm_cifg"} == {"rnnlab", "reference", "torch_lstm"}
    assert {k[2] for k in by if k[0] == "lstm"} == {"rnnlab", "torch", "reference"}
    for r in recs:
        assert set(r) >= {"cell", "shape", "mode", "impl", "median_ms", "flop", "peak_mem_mb"}
        assert r["shape"] == "S1" and r["median_ms"] > 0
    # 6·T·B·G·H·(I+H) for training, a third of it forward; the yardstick counts an LSTM's
    assert by["gru", "train", "rnnlab"]["flop"] == 6 * T * B * 3 * H * (I + H)
    assert by["lstm_cifg", "forward", "rnnlab"]["flop"] == 2 * T * B * 3 * H * (I + H)
    assert by["gru", "train", "torch_lstm"]["flop"] == 6 * T * B * 4 * H * (I + H)
    assert by["gru", "train", "torch_lstm"]["peak_mem_mb"] is None
    assert by["gru", "train", "torch"]["peak_mem_mb"] is not None


def test_efficiency_is_the_gflops_ratio_against_the_same_runs_lstm():
    rec = {
        "rnnlab": {"cell": "jordan", "flop": 3e9, "median_ms": 30.0},
        "torch_lstm": {"cell": "jordan", "flop": 8e9, "median_ms": 40.0},
        "reference": {"cell": "jordan", "flop": 3e9, "median_ms": 90.0},
    }
    assert bench.efficiency(rec) == pytest.approx((3e9 / 30.0) / (8e9 / 40.0))
    own = {
        "rnnlab": {"cell": "lstm", "flop": 8e9, "median_ms": 50.0},
        "torch": {"cell": "lstm", "flop": 8e9, "median_ms": 40.0},
    }
    assert bench.efficiency(own) == pytest.approx(0.8)
    assert bench.efficiency({"rnnlab": {"cell": "gru", "flop": 1, "median_ms": 1}}) is None
    rows = [dict(r, shape="S1", mode="train", impl=k, peak_mem_mb=None) for k, r in rec.items()]
    line = bench.table(rows).splitlines()[-1]
    assert line.startswith("| jordan | S1 | train | 30.0 | 100 | - | - | 0.50 | 90.0 | 3.0 |")


def test_cli_rejects_a_bad_repeat_count(capsys):
    from rnnlab.cli import main

    with pytest.raises(SystemExit, match=r"--repeats: expected a positive int, got 0"):
        main(["bench", "--repeats", "0"])


def test_interleaved_rotates_the_order_every_round():
    calls = []
    runs = {k: (lambda k=k: calls.append(k) or 0.001 * (ord(k) - 64)) for k in "ABC"}
    med = bench._interleaved(runs, 3)
    assert "".join(calls) == "ABCBCACAB"
    assert med == {"A": 1.0, "B": 2.0, "C": 3.0}
