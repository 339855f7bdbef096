"""The open Trainer: a model of the user's own (a plain nn.Module with an rnnlab layer inside,
given by factory or as an object), callbacks with state in checkpoints, accuracy checked
against a hand count, bf16 autocast, progress lines, TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rnnlab.cli import main
from rnnlab.training import (
    Callback,
    ConfigError,
    Trainer,
    latest_checkpoint,
    load_checkpoint,
    masked_accuracy,
)

FIXTURES = Path(__file__).parent / "fixtures"
QUIET = {"progress": False, "grad_monitor_every": 0, "plots": False}
DIGITS = {"name": "digits", "n_train": 128, "n_val": 64}


@pytest.fixture(autouse=True)
def _factories_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))


def digits_cfg(steps=40, **train):
    return {
        "task": DIGITS,
        "model": {"factory": "user_models:make_classifier", "factory_kwargs": {"hidden_size": 16}},
        "optim": {"lr": 0.01},
        "train": {"steps": steps, "batch_size": 32, "eval_every": 20, **QUIET, **train},
    }


class Count(Callback):
    def __init__(self):
        self.steps, self.evals, self.ckpts, self.ended = 0, [], 0, None

    def on_step(self, trainer, info):
        self.steps += 1

    def on_eval(self, trainer, metrics):
        self.evals.append(dict(metrics))

    def on_checkpoint(self, trainer, path):
        self.ckpts += 1

    def on_end(self, trainer, result):
        self.ended = result.stopped

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


pytest.importorskip("sklearn")


def test_user_model_trains_with_a_callback_reports_accuracy_and_eval_reloads_it(tmp_path, capsys):
    cb = Count()
    t = Trainer(digits_cfg(), tmp_path / "run", callbacks=[cb])
    assert type(t.net).__name__ == "LastStepClassifier"
    before = t.evaluate()
    res = t.fit()
    assert cb.steps == 40 and len(cb.evals) == 2 and cb.ckpts >= 2 and cb.ended == "steps"
    val = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").open()]
    val = [r for r in val if r["split"] == "val"]
    assert [r["step"] for r in val] == [20, 40] and all("accuracy" in r for r in val)
    assert res.last_val["loss"] < before["loss"]
    assert res.last_val["accuracy"] > 0.4, "10 classes: chance is 0.1"
    # rebuilt from model.factory by `rnnlab eval` (the best checkpoint: the last here)
    assert main(["eval", str(tmp_path / "run"), "--which", "latest"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == pytest.approx(res.last_val["accuracy"])
    assert out["loss"] == pytest.approx(res.last_val["loss"], rel=1e-5)
    assert out["model"] == "user_models:make_classifier"
    # load_run rebuilds it too; generate and analyze rebuild it and say what they cannot do
    from rnnlab.training import load_run

    net, meta = load_run(tmp_path / "run")
    assert type(net).__name__ == "LastStepClassifier" and meta["user_model"]
    for a, b in zip(net.state_dict().values(), t.net.state_dict().values()):
        assert torch.equal(a, b)
    assert main(["generate", str(tmp_path / "run")]) == 2
    assert "declares no output feedback" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "run")]) == 2
    assert "analyze studies a SequenceModel" in capsys.readouterr().err


def test_cli_trains_a_factory_model(tmp_path, capsys):
    argv = ["train", "--task", "digits", "--n-train", "64", "--n-val", "32", "--steps", "4"]
    argv += ["--batch-size", "16", "--model-factory", "user_models:make_classifier"]
    argv += ["--factory-kwarg", "hidden_size=8", "--no-progress", "--no-plots"]
    argv += ["--callback", "user_models:make_callbacks"]
    assert main([*argv, "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "LastStepClassifier from user_models:make_classifier" in out
    assert ", accuracy " in out, "the summary reports the accuracy"
    meta = load_checkpoint(latest_checkpoint(tmp_path / "r" / "checkpoints")).meta
    assert meta["callbacks"] == {"0:StepCounter": {"steps": 4}}, "the CLI's callback ran"
    # resumed from the CLI: the callback's count goes on from the checkpoint
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--resume", "--steps", "6"]) == 0
    meta = load_checkpoint(latest_checkpoint(tmp_path / "r" / "checkpoints")).meta
    assert meta["callbacks"] == {"0:StepCounter": {"steps": 6}}
    assert meta["user_model"] and meta["config"]["model"]["factory_kwargs"] == {"hidden_size": 8}
    assert meta["model"]["rnn.cell.weight_ih"].shape[0] == 3 * 8  # the net's own names


def test_model_given_without_factory_trains_and_eval_says_it_cannot_rebuild(tmp_path, capsys):
    from user_models import Tagger

    cfg = {"task": {"name": "bank", "n_train": 32, "n_val": 16, "length": 12}}
    cfg["train"] = {"steps": 3, "batch_size": 8, **QUIET}
    t = Trainer(cfg, tmp_path / "run", model=Tagger(8, 3))
    t.fit()
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") is not None
    assert main(["eval", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "without model.factory, so it cannot be rebuilt" in err and "Traceback" not in err
    from rnnlab.training import trainer_from_checkpoint

    t2 = trainer_from_checkpoint(tmp_path / "run", model=Tagger(8, 3))
    for a, b in zip(t.net.state_dict().values(), t2.net.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("forcing", "mode", "teacher"),
        ("bptt", "k1", 3),
        ("model", "feedback", "input"),
    ],
)
def test_options_a_user_model_lacks_are_refused_by_name_before_any_work(
    tmp_path, section, key, value
):
    cfg = digits_cfg()
    cfg.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: .*declare it \(SequenceModel\)"):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_output_contract_is_checked_before_training(tmp_path):
    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(8, 4)  # 4 outputs, the task has 10

        def forward(self, x, lengths=None):
            return self.w(x[:, -1])

    cfg = digits_cfg()
    del cfg["model"]
    with pytest.raises(ValueError, match=r"model: expected an output of shape .* got \(2, 4\)"):
        Trainer(cfg, tmp_path / "run", model=Bad())
    from user_models import LastStepClassifier

    bank = {"task": {"name": "bank", "n_train": 16, "n_val": 8}, "train": {"batch_size": 8}}
    with pytest.raises(ValueError, match=r"one output per sequence .* case 4"):
        Trainer(bank, None, model=LastStepClassifier(8, 3))
    with pytest.raises(ConfigError, match=r"model.factory: could not import 'no_such_mod'"):
        Trainer({**cfg, "model": {"factory": "no_such_mod:f"}}, None)
    with pytest.raises(TypeError, match=r"callbacks\[0\]: expected an object with"):
        Trainer(digits_cfg(), None, callbacks=[object()])


def test_callback_state_is_saved_and_restored_and_a_callback_can_stop(tmp_path):
    class StopAt(Count):
        def on_step(self, trainer, info):
            super().on_step(trainer, info)
            if self.steps == 7:
                trainer.request_stop("target reached")

    cb = StopAt()
    res = Trainer(digits_cfg(steps=40), tmp_path / "run", callbacks=[cb]).fit()
    assert res.stopped == "target reached" and res.step == 7 and cb.ended == "target reached"
    meta = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints")).meta
    assert meta["progress"]["step"] == 7 and meta["callbacks"] == {"0:StopAt": {"steps": 7}}
    again = StopAt()
    Trainer(digits_cfg(steps=40), tmp_path / "run", resume=True, callbacks=[again])
    assert again.steps == 7, "the callback's state came back from the checkpoint"


def test_accuracy_is_a_hand_count():
    # logits (B=2, T=3, C=3): argmax per step [[0, 1, 2], [2, 2, 0]]
    y = torch.tensor(
        [
            [[5.0, 0, 0], [0, 5, 0], [0, 0, 5]],
            [[0, 0, 5.0], [0, 0, 5], [5, 0, 0]],
        ]
    )
    target = torch.tensor([[0, 2, 2], [2, -100, 1]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # labelled: (0,0) hit, (0,1) miss, (0,2) masked out, (1,0) hit, (1,1) -100, (1,2) miss
    assert masked_accuracy(y, target, mask) == (2, 4)


def test_evaluate_accuracy_per_sequence_and_per_step_matches_a_loop(tmp_path):
    """Digits (case 3, one label): the fraction of sequences whose last output's argmax is the
    label. Bank (case 4): the fraction of labelled steps."""
    t = Trainer(digits_cfg(steps=1), None)
    got = t.evaluate()["accuracy"]
    hits = 0
    val = t.task.val
    with torch.no_grad():
        for i in range(len(val)):
            b = t.task.batch("val", torch.tensor([i]))
            y = t.net(b["x"], lengths=b["lengths"])  # (1, 10)
            hits += int(int(y.argmax(-1)) == int(b["y"][0]))
    assert got == pytest.approx(hits / len(val))

    cfg = {"task": {"name": "bank", "n_train": 16, "n_val": 16}, "train": {"batch_size": 8}}
    t = Trainer(cfg, None)
    got = t.evaluate()["accuracy"]
    hits = n = 0
    with torch.no_grad():
        for i in range(len(t.task.val)):
            b = t.task.batch("val", torch.tensor([i]))
            y = t.model(b["x"], lengths=b["lengths"]).output[0]  # (T, C)
            T = int(b["lengths"][0]) if b["lengths"] is not None else y.shape[0]
            for k in range(T):
                label = int(b["y"][0, k])
                if label != -100:
                    n += 1
                    hits += int(int(y[k].argmax()) == label)
    assert got == pytest.approx(hits / n)


def test_bf16_autocast_trains_and_the_loss_drops():
    cfg = digits_cfg(steps=30)
    t = Trainer(cfg, None, precision="bf16")
    assert t.config["train"]["precision"] == "bf16"
    seen = []
    real = t.net.forward

    def spy(x, lengths=None):
        y = real(x, lengths=lengths)
        seen.append(y.dtype)
        return y

    t.net.forward = spy
    before = t.evaluate()["loss"]
    res = t.fit()
    assert torch.bfloat16 in seen, "the forward ran under bf16 autocast"
    assert all(p.dtype == torch.float32 for p in t.net.parameters())
    assert math.isfinite(res.last_val["loss"]) and res.last_val["loss"] < 0.8 * before


def test_progress_off_a_tty_is_plain_lines_with_each_validation(capsys):
    cfg = digits_cfg(steps=20)
    cfg["train"].update(progress=True, log_every=10, eval_every=10)
    Trainer(cfg, None).fit()
    err = capsys.readouterr().err.splitlines()
    assert [line.split()[2] for line in err if line.startswith("train step")] == ["10/20", "20/20"]
    vals = [line for line in err if line.startswith("val")]
    assert len(vals) == 2 and "accuracy" in vals[0] and "\r" not in "".join(err)


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    Trainer(digits_cfg(steps=2), tmp_path / "run").fit()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_loss_function_of_your_own_replaces_the_tasks():
    """Twice the task's masked cross-entropy sum: the first update's loss is exactly twice the
    default's (same seed, same batch, same parameters)."""
    from rnnlab.training import masked_loss_sum

    first = {}

    class First(Callback):
        def __init__(self, key):
            self.key = key

        def on_step(self, trainer, info):
            first.setdefault(self.key, info["loss"])

    def double(y, target, mask):
        return 2 * masked_loss_sum(y, target, mask, "cross_entropy")[0]

    Trainer(digits_cfg(steps=1), None, callbacks=[First("task")]).fit()
    t = Trainer(digits_cfg(steps=1), None, callbacks=[First("mine")], loss=double)
    t.fit()
    assert first["mine"] == pytest.approx(2 * first["task"], rel=1e-6)
    mine = Trainer(digits_cfg(1), None, loss=double).evaluate()["loss"]
    assert mine == pytest.approx(2 * Trainer(digits_cfg(1), None).evaluate()["loss"], rel=1e-6)
    with pytest.raises(TypeError, match=r"loss: expected a function"):
        Trainer(digits_cfg(), None, loss="mse")


def test_progress_on_a_tty_is_a_bar_that_stays():
    import io

    from rnnlab.training.progress import Progress

    class TTY(io.StringIO):
        def isatty(self):
            return True

    out = TTY()
    bar = Progress(4, 0, enabled=True, every=1, stream=out)
    assert bar.bar is not None, "tqdm on a TTY"
    for k in range(1, 5):
        bar.update(k, 0.5)
    bar.validation(4, {"loss": 0.25})
    bar.close()
    text = out.getvalue()
    assert "val   step 4/4 loss 0.25" in text
    # the finished bar stays: its last redraw shows 4/4 and ends the line (leave=False would
    # end with a carriage return and blanks that erase it)
    assert text.endswith("\n") and "4/4" in text[:-1].split("\n")[-1].split("\r")[-1]
    plain = io.StringIO()  # not a TTY: lines, no bar
    bar = Progress(4, 0, enabled=True, every=2, stream=plain)
    for k in range(1, 5):
        bar.update(k, 0.5)
    assert bar.bar is None and len(plain.getvalue().splitlines()) == 2
