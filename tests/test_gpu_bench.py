"""benchmarks/gpu.py runs end to end at a tiny size on CPU (``--tiny``: the Triton interpreter
and the CUDA dispatch with the device check patched), in a subprocess so that its
``TRITON_INTERPRET=1`` and patched registry stay out of this process. Times are not tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_runs_tiny_under_the_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    cells = ["lstm", "rnn_tanh", "gru_reset_before", "lstm_fgr"]
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--cells", *cells, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPT.parents[1] / "src"), *sys.path])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert "TRITON_INTERPRET" in data["machine"]["mode"]
    recs = data["records"]
    assert {r["dtype"] for r in recs} == {"fp32", "bf16"}
    assert {r["mode"] for r in recs} == {"forward", "train"}
    paths = {r["cell"]: r["path"] for r in recs if r["impl"] == "rnnlab"}
    assert paths == {"lstm": "cudnn", "rnn_tanh": "cudnn", "gru_reset_before": "triton",
                     "lstm_fgr": "triton"}  # fmt: skip
    impls = {(r["cell"], r["impl"]) for r in recs}
    assert ("lstm", "torch") in impls and ("gru_reset_before", "torch") not in impls
    assert {c for c, i in impls if i == "reference"} == set(cells)
    for r in recs:
        assert r["median_ms"] > 0 and r["flop"] > 0
        tol = 1e-5 if r["dtype"] == "fp32" else 3e-2
        assert r["max_abs_err_vs_fp32_loop"] < tol, r
    table = out.with_suffix(".md").read_text()
    assert "| TINY | bf16 | train | lstm_fgr | triton |" in table
