"""Faults keep the work: SIGINT/SIGTERM checkpoint at the next batch and exit 128+signal,
failed writes (ENOSPC, EROFS) keep the last good checkpoint and the state in memory, an
exploding finite loss stops like NaN, metrics files stay strict JSON, and a resume rewrites
only what may change and records itself in the run's history."""

from __future__ import annotations

import errno
import json
import math
import os
import signal

import pytest
import torch
import yaml

from rnnlab.cli import main
from rnnlab.training import (
    ConfigError,
    RunWriteError,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    latest_checkpoint,
    load_checkpoint,
)
from rnnlab.training import resume as resume_mod
from rnnlab.training import trainer as trainer_mod


def cfg(steps, **train):
    return {
        "task": {"name": "adding", "length": 5, "n_train": 16, "n_val": 8},
        "model": {"cell": "GRUCell", "hidden_size": 6},
        "optim": {"scheduler": "step", "step_size": 3, "gamma": 0.5},
        "forcing": {},
        "train": {
            "steps": steps,
            "batch_size": 4,
            "eval_every": 4,
            "log_every": 3,
            "checkpoint_every": 5,
            "grad_monitor_every": 2,
            "progress": False,
            "plots": False,
            **train,
        },
    }


def signal_at(monkeypatch, step, signum):
    """Send ``signum`` to this process while the batch that starts at ``step`` trains."""
    real = trainer_mod.Trainer._train_batch

    def batch(self):
        if self.step == step:
            os.kill(os.getpid(), signum)
        return real(self)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_batch", batch)


def rows(run, name):
    out = [json.loads(line) for line in (run / name).open()]
    for r in out:
        r.pop("elapsed_s", None)
    return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_at_the_next_batch_and_resumes_bit_identical(
    tmp_path, monkeypatch, signum
):
    run = tmp_path / "run"
    signal_at(monkeypatch, 6, signum)
    t = Trainer(cfg(12), run)
    with pytest.raises(TrainingInterrupted) as info:
        t.fit()
    assert info.value.signum == signum
    assert t.step == 7, "the batch in flight finishes, then the run stops"
    assert info.value.checkpoint.name == "step-00000007.safetensors"
    assert latest_checkpoint(run / "checkpoints") == info.value.checkpoint
    hist = [json.loads(x) for x in (run / "history.jsonl").open()]
    assert hist[-1]["event"] == "interrupted" and hist[-1]["signal"] == signum
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handlers restored"
    monkeypatch.undo()
    resumed = Trainer({"train": {"steps": 12}}, run, resume=True)
    resumed.fit()
    ref = Trainer(cfg(12), tmp_path / "ref")
    ref.fit()
    for (k, p), q in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), k
    for name in ("metrics.jsonl", "grad_norms.jsonl"):
        assert rows(run, name) == rows(tmp_path / "ref", name), name


def test_cli_exits_128_plus_the_signal(tmp_path, monkeypatch, capsys):
    signal_at(monkeypatch, 2, signal.SIGTERM)
    argv = ["train", "--task", "adding", "--length", "4", "--n-train", "8", "--n-val", "4"]
    argv += ["--batch-size", "4", "--steps", "50", "--no-progress", "--no-plots"]
    rc = main([*argv, "--run-dir", str(tmp_path / "r")])
    assert rc == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM at update step 3" in err and "resume with --resume" in err
    assert (
        load_checkpoint(latest_checkpoint(tmp_path / "r" / "checkpoints")).meta["progress"]["step"]
        == 3
    )


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_failed_checkpoint_write_keeps_the_last_good_one_and_the_state(tmp_path, monkeypatch, code):
    run = tmp_path / "run"
    real = resume_mod.save_checkpoint
    calls = []

    def failing(path, state):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, state)

    monkeypatch.setattr(resume_mod, "save_checkpoint", failing)
    t = Trainer(cfg(12), run)
    with pytest.raises(RunWriteError) as info:
        t.fit()
    msg = str(info.value)
    assert str(calls[1]) in msg and errno.errorcode[code] in msg
    assert "the last good checkpoint is" in msg and "step-00000000.safetensors (step 0)" in msg
    assert latest_checkpoint(run / "checkpoints").name == "step-00000000.safetensors"
    step = t.step
    assert step == 4, "the state in memory is the step that failed to save"
    monkeypatch.undo()
    assert t.save().name == f"step-{step:08d}.safetensors", "the state can still be saved"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_cli_reports_a_failed_metrics_write_without_a_traceback(
    tmp_path, monkeypatch, capsys, code
):
    def failing(self, row):
        raise OSError(code, os.strerror(code), str(self.run_dir / "metrics.jsonl"))

    monkeypatch.setattr(trainer_mod._Writer, "row", failing)
    argv = ["train", "--task", "adding", "--length", "4", "--n-train", "8", "--n-val", "4"]
    argv += ["--batch-size", "4", "--steps", "6", "--no-progress", "--no-plots"]
    rc = main([*argv, "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"metrics.jsonl: {'disk full' if code == errno.ENOSPC else 'read-only'}" in err
    assert errno.errorcode[code] in err and "step-00000000.safetensors" in err


def test_cli_reports_a_read_only_run_folder(tmp_path, monkeypatch, capsys):
    def read_only(path, kind, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(resume_mod, "make_folder", read_only)
    rc = main(["train", "--task", "adding", "--steps", "1", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"could not write {tmp_path / 'run'}: read-only file system (EROFS)" in err


def test_finite_exploding_loss_stops_like_nan(tmp_path, monkeypatch):
    real = trainer_mod.Trainer._train_batch

    def batch(self):
        loss, g, eps, rec = real(self)
        return (loss * 1e4 if self.step == 5 else loss), g, eps, rec

    monkeypatch.setattr(trainer_mod.Trainer, "_train_batch", batch)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"above train\.divergence_factor \(1000\)"):
        Trainer(cfg(12, divergence_factor=1e3), run).fit()
    assert latest_checkpoint(run / "checkpoints").name == "step-00000004.safetensors"
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "diverged" and last["loss"] is None and last["nonfinite"]
    # the lowest loss travels in the checkpoint
    assert (
        load_checkpoint(run / "checkpoints" / "step-00000004.safetensors").meta["progress"][
            "lowest_loss"
        ]
        > 0
    )
    monkeypatch.undo()
    res = Trainer(cfg(12), tmp_path / "ok").fit()  # the default factor 1e6: the plain run
    assert res.step == 12


def test_non_finite_validation_loss_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(
        trainer_mod.Trainer,
        "evaluate",
        lambda self, split="val": {"loss": math.inf, "forced_loss": 1.0},
    )
    with pytest.raises(TrainingDiverged, match="the validation loss is inf"):
        Trainer(cfg(12), tmp_path / "run").fit()


def test_every_metrics_file_is_strict_json(tmp_path):
    w = trainer_mod._Writer(tmp_path, True)
    w.row({"step": 1, "epoch": 0, "split": "train", "loss": math.nan, "lr": math.inf})
    w.grad_norms([{"step": 1, "window_start": 0, "key": "h", "norms": [1.0, math.nan]}])
    for name in ("metrics.jsonl", "grad_norms.jsonl"):
        text = (tmp_path / name).read_text()
        assert "NaN" not in text and "Infinity" not in text
        row = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
        assert row["nonfinite"]
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] is None


def test_resume_rewrites_only_resumable_keys_and_records_itself(tmp_path):
    run = tmp_path / "run"
    Trainer(cfg(4), run).fit()
    before = yaml.safe_load((run / "config.yaml").read_text())
    Trainer({"train": {"steps": 6, "eval_every": 2}}, run, resume=True).fit()
    after = yaml.safe_load((run / "config.yaml").read_text())
    before["train"].update(steps=6, eval_every=2)
    assert after == before
    hist = [json.loads(x) for x in (run / "history.jsonl").open()]
    assert [h["event"] for h in hist] == ["created", "resumed"]
    assert hist[1]["step"] == 4
    assert hist[1]["changed"] == {"train.steps": [4, 6], "train.eval_every": [4, 2]}


# --- inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expect",
    [("1e-3", 1e-3), (" 2.5E-2 ", 0.025), (1, 1.0)],
)
def test_numeric_strings_are_numbers(value, expect):
    from rnnlab.training.config import check_config

    assert check_config({"optim": {"lr": value}})["optim"]["lr"] == expect


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", math.nan, math.inf])
@pytest.mark.parametrize("key", ["optim.lr", "train.min_delta", "clip.grad_norm", "forcing.c"])
def test_nan_and_inf_are_refused_for_every_float(key, value):
    from rnnlab.training.config import check_config

    sec, k = key.split(".")
    with pytest.raises(ConfigError, match=rf"{key}: expected a finite number"):
        check_config({sec: {k: value}})


def test_yaml_lr_1e_3_and_a_word(tmp_path):
    from rnnlab.training.config import check_config, load_config_file

    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-3\n")
    assert isinstance(yaml.safe_load(f.read_text())["optim"]["lr"], str), "YAML 1.1"
    assert check_config(load_config_file(f))["optim"]["lr"] == 1e-3
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got the string 'fast'"):
        check_config({"optim": {"lr": "fast"}})


def test_config_directory_is_named_as_such(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path), "--dry-run"]) == 2
    assert "which is a directory" in capsys.readouterr().err
