"""The trainer: learning, every case end to end, early stopping, NaN detection, the run
directory's files, and every bad input refused before anything is written."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rnnlab.training import (
    ConfigError,
    RunDirError,
    TaskData,
    Trainer,
    TrainingDiverged,
    build_task,
    latest_checkpoint,
    load_checkpoint,
)
from rnnlab.training.tasks import Split

QUIET = {"progress": False, "grad_monitor_every": 0, "plots": False}


def cfg(task, steps=10, batch_size=8, model=None, **sections):
    out = {
        "task": task,
        "model": model or {"cell": "GRUCell", "hidden_size": 8},
        "train": {"steps": steps, "batch_size": batch_size, **QUIET},
    }
    for k, v in sections.items():
        out[k] = {**out.get(k, {}), **v}
    return out


def test_training_lowers_the_loss(tmp_path):
    """Next-step prediction of a sine wave: the teacher-forced validation loss falls by a
    factor of 5 in 150 updates, and the run directory has everything."""
    c = cfg(
        {"name": "series", "length": 20, "n_train": 64, "n_val": 16},
        steps=150,
        batch_size=16,
        optim={"lr": 0.01},
        train={"eval_every": 50, "log_every": 25, "grad_monitor_every": 50, "plots": True},
    )
    t = Trainer(c, tmp_path / "run")
    before = t.evaluate()["forced_loss"]
    res = t.fit()
    assert res.last_val["forced_loss"] < 0.2 * before
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {
        "config.yaml",
        "metrics.jsonl",
        "metrics.csv",
        "grad_norms.jsonl",
        "loss.png",
        "grad_norms.png",
        "checkpoints",
    } <= names
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1 and csv_lines[0].startswith("step,epoch,split,loss")
    assert [r["step"] for r in rows if r["split"] == "val"] == [50, 100, 150]
    g = [json.loads(line) for line in (run / "grad_norms.jsonl").open()]
    assert [r["step"] for r in g] == [0, 50, 100] and len(g[0]["norms"]) == 20
    meta = load_checkpoint(latest_checkpoint(run / "checkpoints")).meta
    assert meta["progress"]["step"] == 150 and meta["model_spec"]["feedback"] == "input"


def _static_task(case):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    y = (x[:, 0] > 0).long()
    return TaskData(
        "static",
        Split(x[:32], y[:32]),
        Split(x[32:], y[32:]),
        case,
        "cross_entropy",
        5,
        2,
        tokens=True,
    )


@pytest.mark.parametrize(
    "task, case",
    [
        ({"name": "map", "length": 8, "options": {"map": "stable_linear", "mode": "initial"}}, 1),
        ("static", 2),
        ({"name": "adding", "length": 10, "options": {"min_length": 5}}, 3),
        ({"name": "flipflop", "length": 10}, 4),
        ({"name": "reverse", "length": 5, "options": {"min_length": 2}}, "seq2seq"),
    ],
)
def test_every_case_trains(tmp_path, task, case):
    inject = None
    if task == "static":
        inject, task = _static_task(2), {"name": "adding"}
    c = cfg(
        {**task, "n_train": 32, "n_val": 8},
        steps=12,
        supervision={"steps": 4} if case == 2 else {},
        optim={"lr": 0.02},
    )
    t = Trainer(c, None, task=inject)
    assert t.supervision.case == case
    if "min_length" in task.get("options", {}):  # variable lengths reach the batches
        assert t.task.train.lengths is not None and t.task.val.lengths is not None
    untrained = t.evaluate()["loss"]
    losses = []
    for _ in range(3):
        t.config["train"]["steps"] += 16
        losses.append(t.fit().last_val["loss"])
    assert t.step == 60
    # below 0.9 x the trivial predictor's loss (the best constant output; for the balanced
    # two-class static task chance, ln 2): a bound the untrained model cannot reach
    baseline = t.task.baseline if t.task.baseline is not None else math.log(2)
    assert untrained > 0.95 * baseline, "the untrained model is not below the bound"
    assert losses[-1] < 0.9 * baseline, (losses, baseline)


def test_fashion_mnist_case2_and_case3(shared_data):
    for view, case, size in (("image", 2, 784), ("rows", 3, 28)):
        task = build_task(
            "fashion_mnist",
            length=1,
            n_train=16,
            n_val=8,
            options={"view": view, "root": str(shared_data / "fashion-mnist")},
        )
        assert (task.case, task.input_size, task.output_size) == (case, size, 10)
        assert task.train.x.shape[0] == 16 and float(task.train.x.max()) <= 1.0


def test_early_stopping_keeps_the_best(tmp_path):
    c = cfg(
        {"name": "flipflop", "length": 6, "n_train": 16, "n_val": 8},
        steps=100,
        optim={"lr": 0.0, "name": "sgd"},
        train={"eval_every": 2, "patience": 2},
    )
    res = Trainer(c, tmp_path / "r").fit()
    assert res.stopped == "early_stopping" and res.step == 6 and res.best_step == 2
    best = load_checkpoint(tmp_path / "r" / "checkpoints" / "best.safetensors").meta
    assert best["progress"]["step"] == 2


def test_nan_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    task = build_task("flipflop", length=6, n_train=32, n_val=8)
    task.train.x[21, 3, 0] = float("nan")  # one bad sequence
    c = cfg({"name": "flipflop"}, steps=50, train={"checkpoint_every": 1})
    t = Trainer(c, tmp_path / "r", task=task)
    with pytest.raises(
        TrainingDiverged,
        match=r"diverged at update step \d+ .*loss is nan.*"
        r"last good checkpoint is .*step-\d{8}\.safetensors \(step \d+\)",
    ):
        t.fit()
    last = latest_checkpoint(tmp_path / "r" / "checkpoints")
    meta = load_checkpoint(last).meta
    assert meta["progress"]["step"] == t.step  # the failing batch changed nothing
    for k, v in t.model.state_dict().items():
        assert torch.equal(meta["model"][k], v) and bool(torch.isfinite(v).all())
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").open()]
    assert rows[-1]["split"] == "diverged"


# --- bad input: refused before anything is written ----------------------------------------------
GOOD = {"name": "adding", "length": 6, "n_train": 16, "n_val": 8}


@pytest.mark.parametrize(
    "config, match",
    [
        ({"trian": {}}, r"trian: unknown config section.*did you mean 'train'"),
        ({"train": {"stpes": 3}}, r"train\.stpes: unknown config key.*did you mean 'steps'"),
        ({"train": {"steps": "many"}}, r"train\.steps: expected an int, got 'many'"),
        ({"train": {"steps": 0}}, r"train\.steps: expected a value >= 1, got 0"),
        ({"model": {"cell": "LTSMCell"}}, r"model\.cell: expected one of .*'LSTMCell'"),
        ({"forcing": {"mode": "teacher"}}, r"forcing\.mode: 'teacher' feeds outputs back, but"),
        ({"model": {"feedback": "input"}}, r"model\.feedback: 'input' .* 'adding' is not one"),
        (
            {"model": {"cell": "JordanCell"}, "forcing": {"mode": "free"}},
            r"model\.feedback: 'state' .* needs a target at every step",
        ),
        (
            {"model": {"bidirectional": True}, "bptt": {"k1": 3}},
            r"bptt\.k1: truncated BPTT and streams need a causal model",
        ),
        ({"bptt": {"k2": 4}}, r"bptt\.k2: needs bptt\.k1"),
        ({"bptt": {"k1": 4, "k2": 2}}, r"bptt\.k2: expected k2 >= k1=4"),
        ({"bptt": {"stream": True}}, r"bptt\.stream: needs a text task"),
        ({"supervision": {"case": 4}}, r"supervision\.case: the task 'adding' is case 3"),
        ({"supervision": {"loss": "cross_entropy"}}, r"supervision\.loss: the task 'adding'"),
        ({"forcing": {"decay": "cosine"}}, r"forcing\.decay: expected one of"),
        ({"task": {**GOOD, "options": {"variant": "x"}}}, r"variant: expected one of"),
        ({"task": {**GOOD, "options": {"colour": 1}}}, r"task\.options\.colour: the task"),
        ({"train": {"batch_size": 64}}, r"train\.batch_size: expected at most the 16"),
        ({"train": {"device": "tpu"}}, r"train\.device: expected one of auto, cpu"),
        ({"model": {"cell_options": {"variant": "Q"}}}, r"model\.cell_options: .*variant"),
    ],
)
def test_bad_config_is_refused_before_anything_is_written(tmp_path, config, match):
    full = {"task": dict(GOOD), "train": {**QUIET, "batch_size": 8}}
    for k, v in config.items():
        full[k] = {**full.get(k, {}), **v} if k in full else v
    with pytest.raises((ConfigError, ValueError, TypeError), match=match):
        Trainer(full, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_teacher_forcing_needs_a_teacherable_model():
    """Teacher forcing is fine for a Jordan net on a case-4 task (feedback 'state' chosen)."""
    t = Trainer(
        cfg(
            {"name": "flipflop", "length": 6, "n_train": 16, "n_val": 8},
            model={"cell": "JordanCell", "hidden_size": 4},
            forcing={"mode": "teacher"},
        ),
        None,
    )
    assert t.model.feedback == "state" and t.spec["readout"] == "none"


def test_missing_data_file(tmp_path):
    c = cfg({"name": "text", "options": {"path": str(tmp_path / "nope.txt")}})
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        Trainer(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"task\.options\.path: expected a UTF-8 text file"):
        Trainer(cfg({"name": "text"}), None)


def test_existing_run_directory_is_left_alone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    c = cfg(dict(GOOD), steps=2)
    with pytest.raises(
        RunDirError, match="exists and is not empty; pass --resume .* or --overwrite"
    ):
        Trainer(c, run)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]
    # --overwrite deletes only a folder rnnlab made (.rnnlab-run.json): this one is refused
    with pytest.raises(RunDirError, match=r"refusing to delete .* no \.rnnlab-run\.json marker"):
        Trainer(c, run, overwrite=True)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]
    mine = tmp_path / "mine"
    Trainer(c, mine).fit()
    (mine / "stale.txt").write_text("rnnlab's folder: replaced whole")
    Trainer(c, mine, overwrite=True).fit()
    assert not (mine / "stale.txt").exists() and (mine / "config.yaml").exists()
    with pytest.raises(ValueError, match="resume, overwrite: expected at most one"):
        Trainer(c, run, resume=True, overwrite=True)


def test_tensorboard_is_used_when_installed(tmp_path, monkeypatch):
    """A stand-in ``torch.utils.tensorboard`` receives every logged scalar."""
    import sys
    import types

    calls = []

    class SummaryWriter:
        def __init__(self, log_dir):
            calls.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def close(self):
            calls.append(("close", None))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    c = cfg(dict(GOOD), steps=4, train={"log_every": 2, "eval_every": 4})
    Trainer(c, tmp_path / "tb").fit()
    assert calls[0] == ("dir", str(tmp_path / "tb" / "tensorboard"))
    assert ("train/loss", 2) in calls and ("val/loss", 4) in calls and calls[-1][0] == "close"
