"""Checkpoints: no code execution on load, atomic writes, a SIGKILLed run leaves a loadable
checkpoint, and resume reproduces the uninterrupted run exactly."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from rnnlab.training import (
    ConfigError,
    RunDirError,
    Trainer,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from rnnlab.training import checkpoint as ckpt_mod


def test_roundtrip_nested_state(tmp_path):
    state = {
        "model": {"w": torch.randn(3, 2), "b": torch.zeros(2, dtype=torch.float64)},
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "buf": None}},
            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}],
        },
        "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "progress": {"step": 7, "best": None, "nan": float("inf")},
    }
    p = save_checkpoint(tmp_path / "c.safetensors", state)
    got = load_checkpoint(p).meta
    assert torch.equal(got["model"]["w"], state["model"]["w"])
    assert got["model"]["b"].dtype == torch.float64
    assert got["optimizer"]["state"][0]["step"].item() == 3.0
    assert got["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert got["rng"]["numpy"][0] == "MT19937"
    assert np.array_equal(got["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert got["progress"] == {"step": 7, "best": None, "nan": float("inf")}


def test_loading_never_unpickles(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(2), "n": 1})

    def refuse(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert load_checkpoint(p).meta["n"] == 1


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "step-00000001.safetensors", {"w": torch.ones(2)})

    def crash(*a, **k):
        raise OSError("disk gone")

    monkeypatch.setattr(ckpt_mod.os, "replace", crash)
    with pytest.raises(OSError):
        save_checkpoint(folder / "step-00000002.safetensors", {"w": torch.zeros(2)})
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000001.safetensors"]
    assert latest_checkpoint(folder).name == "step-00000001.safetensors"


def test_latest_skips_broken_and_temporary_files(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "step-00000001.safetensors", {"w": torch.ones(2)})
    good = (folder / "step-00000001.safetensors").read_bytes()
    (folder / "step-00000002.safetensors").write_bytes(good[: len(good) // 2])  # cut short
    (folder / ".step-00000003.safetensors.tmp-123").write_bytes(good)
    assert latest_checkpoint(folder).name == "step-00000001.safetensors"
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        load_checkpoint(folder / "step-00000002.safetensors")


def _cfg(steps, **train):
    return {
        "task": {"name": "temporal_xor", "length": 8, "n_train": 24, "n_val": 8},
        "model": {"cell": "LSTMCell", "hidden_size": 6, "num_layers": 2, "dropout": 0.2},
        "forcing": {"mode": "scheduled", "decay": "linear", "c": 0.05, "warmup": 2},
        "optim": {"scheduler": "step", "step_size": 4, "gamma": 0.5},
        "clip": {"state_value": 0.5},
        "train": {
            "steps": steps,
            "batch_size": 8,
            "eval_every": 3,
            "log_every": 1,
            "checkpoint_every": 5,
            "grad_monitor_every": 2,
            "progress": False,
            "plots": False,
            **train,
        },
    }


def _rows(run, name="metrics.jsonl", extra_step=None):
    """The rows without timings (and without the end-of-run validation at ``extra_step``)."""
    rows = [json.loads(line) for line in (run / name).open()]
    for r in rows:
        r.pop("elapsed_s", None)
    return [r for r in rows if not (r["step"] == extra_step and r.get("split") == "val")]


def _text_cfg(path, steps):
    return {
        "task": {"name": "text", "length": 6, "options": {"path": str(path)}},
        "model": {"cell": "GRUCell", "hidden_size": 8},
        "bptt": {"stream": True, "k1": 3},
        "forcing": {"mode": "mixed", "p": 0.5, "token_feedback": "sample"},
        "train": {
            "steps": steps,
            "batch_size": 4,
            "eval_every": 4,
            "log_every": 1,
            "checkpoint_every": 100,
            "progress": False,
            "grad_monitor_every": 0,
            "plots": False,
        },
    }


@pytest.mark.parametrize("kind", ["sequences", "text stream"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, kind):
    """2N updates straight == N updates, a resume from the checkpoint, N more: identical
    parameters, optimizer state and metrics (dropout, scheduled-sampling coins, LR schedule,
    epochs, per-step clipping; for the stream also the carried state)."""
    if kind == "sequences":
        make, N = _cfg, 5
    else:
        text = tmp_path / "t.txt"
        text.write_text("the quick brown fox jumps over the lazy dog\n" * 12)
        N = 6  # stream chunks of 6 steps, two updates each: 3 batches

        def make(steps):
            return _text_cfg(text, steps)

    a = Trainer(make(2 * N), tmp_path / "a")
    a.fit()
    b = Trainer(make(N), tmp_path / "b")
    b.fit()
    assert b.step == N
    b2 = Trainer(make(2 * N), tmp_path / "b", resume=True)
    assert b2.step == N
    b2.fit()
    for (k, p), q in zip(a.model.state_dict().items(), b2.model.state_dict().values()):
        assert torch.equal(p, q), k
    sa, sb = a.optimizer.state_dict()["state"], b2.optimizer.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k])
    # the N-update run also validated at its end, step N: leave that row out
    extra = None if N % 3 == 0 and kind == "sequences" else N
    if kind == "text stream":
        extra = None if N % 4 == 0 else N
    assert _rows(tmp_path / "a", extra_step=extra) == _rows(tmp_path / "b", extra_step=extra)
    if kind == "sequences":
        assert _rows(tmp_path / "a", "grad_norms.jsonl") == _rows(
            tmp_path / "b", "grad_norms.jsonl"
        )


def test_resume_refuses_a_changed_config(tmp_path):
    Trainer(_cfg(2), tmp_path / "r").fit()
    with pytest.raises(ConfigError, match=r"model\.hidden_size: a resumed run keeps its config"):
        Trainer({"model": {"hidden_size": 7}}, tmp_path / "r", resume=True)
    t = Trainer({"train": {"steps": 3}}, tmp_path / "r", resume=True)  # steps may grow
    assert t.step == 2 and t.config["train"]["steps"] == 3
    with pytest.raises(RunDirError, match="has no checkpoint to resume from"):
        Trainer(_cfg(2), tmp_path / "empty", resume=True)


def test_sigkilled_run_leaves_a_loadable_checkpoint(tmp_path):
    run = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "rnnlab.train_cli",
        "train",
        "--task",
        "temporal_xor",
        "--length",
        "8",
        "--n-train",
        "16",
        "--n-val",
        "4",
        "--batch-size",
        "4",
        "--cell",
        "GRUCell",
        "--hidden-size",
        "64",
        "--steps",
        "100000",
        "--checkpoint-every",
        "1",
        "--eval-every",
        "1000",
        "--keep",
        "2",
        "--no-progress",
        "--no-plots",
        "--run-dir",
        str(run),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        folder = run / "checkpoints"
        while time.time() < deadline:
            if folder.is_dir() and len(list(folder.glob("step-*"))) >= 2:
                found = latest_checkpoint(folder)
                if found is not None and int(found.stem.split("-")[1]) >= 3:
                    break
            if proc.poll() is not None:
                pytest.fail(f"training ended early: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoints written in 60 s")
        time.sleep(0.13)  # land somewhere inside a step or a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    last = latest_checkpoint(run / "checkpoints")
    assert last is not None
    meta = load_checkpoint(last).meta
    step = meta["progress"]["step"]
    assert step >= 3
    for p in (run / "checkpoints").glob("step-*.safetensors"):
        load_checkpoint(p)  # every complete-named file is complete
    t = Trainer({"train": {"steps": step + 2}}, run, resume=True)
    assert t.step == step
    assert t.fit().step == step + 2
