"""Data parallelism: ``torchrun --nproc_per_node=2`` (gloo, 2 CPU processes) gives the same
parameters after K updates as one process with the same global batch."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from rnnlab.training import Trainer, latest_checkpoint, load_checkpoint

ARGS = (
    "--task adding --task-option min_length=6 --length 12 --n-train 32 --n-val 8 "
    "--batch-size 8 --cell LSTMCell --hidden-size 6 --k1 5 --steps 9 --eval-every 3 "
    "--checkpoint-every 3 --grad-monitor-every 3 --no-progress --no-plots --keep 10"
).split()
CONFIG = {
    "task": {
        "name": "adding",
        "length": 12,
        "n_train": 32,
        "n_val": 8,
        "options": {"min_length": 6},
    },
    "model": {"cell": "LSTMCell", "hidden_size": 6},
    "bptt": {"k1": 5},
    "train": {
        "steps": 9,
        "batch_size": 8,
        "eval_every": 3,
        "checkpoint_every": 3,
        "grad_monitor_every": 3,
        "progress": False,
        "plots": False,
        "keep": 10,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)
def test_two_processes_equal_one(tmp_path):
    """Variable lengths (each process counts its own padded steps, yet the loss is the global
    mean), truncated BPTT (several backward passes per batch) and per-step gradient norms."""
    two = tmp_path / "two"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "rnnlab",
        "train",
        *ARGS,
        "--run-dir",
        str(two),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("rnnlab train: task adding") == 1  # rank 0 alone prints
    assert "2 processes" in out.stdout

    one = Trainer(CONFIG, tmp_path / "one")
    assert one.task.train.lengths is not None and len(set(one.task.train.lengths.tolist())) > 1
    one.fit()
    a = load_checkpoint(latest_checkpoint(two / "checkpoints")).meta
    # batches trimmed to their longest sequence have 2 or 3 windows: a run ends at the first
    # batch boundary at or past 9 updates
    assert a["progress"]["step"] == one.step >= 9 and a["world_size"] == 2
    for k, v in one.model.state_dict().items():
        assert torch.allclose(a["model"][k], v, atol=2e-6), k
    first = load_checkpoint(two / "checkpoints" / "step-00000000.safetensors").meta["model"]
    assert any(not torch.allclose(first[k], a["model"][k]) for k in first)  # it did train
    g1 = [json.loads(line) for line in (tmp_path / "one" / "grad_norms.jsonl").open()]
    g2 = [json.loads(line) for line in (two / "grad_norms.jsonl").open()]
    assert [(r["step"], r["key"], r["window_start"]) for r in g1] == [
        (r["step"], r["key"], r["window_start"]) for r in g2
    ]
    for r1, r2 in zip(g1, g2):
        assert r1["norms"] == pytest.approx(r2["norms"], rel=1e-4, abs=1e-9)
    # only rank 0 wrote: one set of metrics rows
    rows = [json.loads(line) for line in (two / "metrics.jsonl").open()]
    ref = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").open()]
    val = [r["step"] for r in rows if r["split"] == "val"]
    assert len(val) >= 3 and val == [r["step"] for r in ref if r["split"] == "val"]
    for r1, r2 in zip(ref, rows):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-5)


_SIGTERM_RANK1 = """
import os, signal, sys
from rnnlab.training import trainer as tr
real, fired = tr.Trainer._train_batch, []
def batch(self):
    if self.dist.rank == 1 and self.step >= 3 and not fired:  # only rank 1 gets the signal
        fired.append(self.step)
        os.kill(os.getpid(), signal.SIGTERM)
    return real(self)
tr.Trainer._train_batch = batch
from rnnlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)
def test_sigterm_on_one_rank_stops_every_rank_at_one_checkpoint(tmp_path):
    """SIGTERM to rank 1 only: the ranks agree through a collective at the batch boundary, all
    join the checkpoint's collective, rank 0 writes it and exits 128 + 15."""
    script = tmp_path / "sigterm_rank1.py"
    script.write_text(_SIGTERM_RANK1)
    run = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script)]
    cmd += ["train", *ARGS, "--run-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode != 0
    assert out.stderr.count("stopped by SIGTERM") <= 1, out.stderr[-3000:]  # rank 0 alone
    # a rank exits 128 + SIGTERM first; torchrun then stops the other (which has saved too)
    assert re.search(r"exitcode\s*: 143", out.stderr), out.stderr[-3000:]
    meta = load_checkpoint(latest_checkpoint(run / "checkpoints")).meta
    step = meta["progress"]["step"]
    assert 3 < step < 9 and meta["world_size"] == 2
    hist = [json.loads(line) for line in (run / "history.jsonl").open()]
    assert hist[-1]["event"] == "interrupted" and hist[-1]["step"] == step


def test_shutdown_meets_at_a_barrier_only_after_a_normal_end(monkeypatch):
    """A finished run waits for every rank before leaving the group (no rank tears its gloo
    connections down while another still writes); after an error there is no barrier, where a
    rank that failed alone would wait for ever."""
    from rnnlab.training import distributed

    calls: list[str] = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    two = distributed.DistInfo(rank=1, world_size=2)
    distributed.shutdown(two, finished=True)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    distributed.shutdown(two)
    assert calls == ["destroy"]
    calls.clear()
    distributed.shutdown(distributed.DistInfo(), finished=True)  # one process: nothing to leave
    assert calls == []
