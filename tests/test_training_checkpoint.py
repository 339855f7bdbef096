"""Checkpoints: no code execution on load, atomic writes, a SIGKILLed run leaves a loadable
checkpoint, and resume reproduces the uninterrupted run exactly."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnlab.training import (
    ConfigError,
    RunDirError,
    SequenceModel,
    Trainer,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from rnnlab.training import checkpoint as ckpt_mod
from rnnlab.training.checkpoint import CheckpointWarning


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
    # the newer, cut-short checkpoint is skipped, not silently: a warning names both files
    with pytest.warns(CheckpointWarning, match=r"step-00000002\.safetensors .* using the older"):
        found = latest_checkpoint(folder)
    assert found.name == "step-00000001.safetensors"
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


_KILL_SCRIPT = """
import os, signal, sys, json
import safetensors.torch as st
from rnnlab.training import trainer as tr
cfg, run, mode, at = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
real_save, real_rows = st.save_file, tr._Writer.grad_norms
calls = [0]
def save_file(tensors, filename, metadata=None):
    calls[0] += 1
    real_save(tensors, filename, metadata=metadata)
    if mode == "save" and calls[0] == at:  # half written under the temporary name, then killed
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
def grad_norms(self, rows):
    real_rows(self, rows)
    if mode == "between" and rows and rows[0]["step"] == at:  # after the rows, before a save
        os.kill(os.getpid(), signal.SIGKILL)
st.save_file, tr._Writer.grad_norms = save_file, grad_norms
tr.Trainer(cfg, run).fit()
"""


@pytest.mark.parametrize("mode, at", [("save", 3), ("between", 6)])
def test_sigkilled_run_resumes_bit_identical(tmp_path, mode, at):
    """SIGKILL at a deterministic point (inside the 3rd checkpoint write, or after update 7's
    gradient-norm rows, between checkpoints): every complete-named checkpoint loads, the
    resume continues from the last one, and parameters and metric files equal the
    uninterrupted run's: no duplicate row (grad_norms rows carry the step before their
    update), no missing one."""
    run = tmp_path / "killed"
    c = _cfg(12, checkpoint_every=4, grad_monitor_every=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, json.dumps(c), str(run), mode, str(at)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    folder = run / "checkpoints"
    for p in folder.glob("step-*.safetensors"):
        load_checkpoint(p)  # every complete-named file is complete
    assert list(folder.glob(".step-*.tmp-*")) or mode == "between"
    last = latest_checkpoint(folder)
    step = load_checkpoint(last).meta["progress"]["step"]
    assert 0 < step < 12
    if mode == "between":
        # the row of the update after the checkpoint was written before the kill
        assert max(json.loads(x)["step"] for x in (run / "grad_norms.jsonl").open()) == at >= step
    t = Trainer({"train": {"steps": 12}}, run, resume=True)
    assert t.step == step
    t.fit()
    ref = Trainer(c, tmp_path / "straight")
    ref.fit()
    for (k, p), q in zip(ref.model.state_dict().items(), t.model.state_dict().values()):
        assert torch.equal(p, q), k
    for name in ("metrics.jsonl", "grad_norms.jsonl"):
        assert _rows(run, name) == _rows(tmp_path / "straight", name), name
    assert not list(folder.glob(".step-*.tmp-*")), "the dead process's temporary file is gone"


def test_resume_draws_nothing_from_the_generators(tmp_path, monkeypatch):
    """Restoring a stream's carry builds a template state; a model whose initial_state draws
    (dropout masks, a random initial state) must not move the RNG the resumed run continues
    with: after the resume, every generator is exactly where the checkpoint left it."""
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 12)
    Trainer(_text_cfg(text, 4), tmp_path / "r").fit()
    saved = load_checkpoint(latest_checkpoint(tmp_path / "r" / "checkpoints")).meta
    assert saved["carry"] is not None, "the test needs a carried state to restore"
    real = SequenceModel.initial_state

    def drawing(self, *a, **k):
        torch.rand(3)  # what a dropout mask drawn with the state would do
        return real(self, *a, **k)

    monkeypatch.setattr(SequenceModel, "initial_state", drawing)
    Trainer(_text_cfg(text, 8), tmp_path / "r", resume=True)
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"].to(torch.uint8))
