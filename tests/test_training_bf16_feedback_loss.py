"""Two trainer items of issue 16: bf16 autocast with output feedback (state and input, mixed
schedules, truncated BPTT with its carried state), and a loss of the user's own across
checkpoints (re-imported from its saved "module:qualname", or refused by name)."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.training import Trainer, trainer_from_checkpoint

STEPS = 3


def _cfg(cell: str, task: str, mode: str, monitor: int = 0, **bptt):  # type: ignore[no-untyped-def]
    model = {"cell": cell, "hidden_size": 8}
    return {
        "task": {"name": task, "length": 12, "n_train": 16, "n_val": 8},
        "model": model,
        "forcing": {"mode": mode},
        "bptt": bptt,
        "train": {"steps": STEPS, "batch_size": 8, "progress": False, "eval_every": 1000,
                  "plots": False, "grad_monitor_every": monitor, "log_every": 1},
    }  # fmt: skip


@pytest.mark.parametrize(
    "cell,task,mode,bptt",
    [
        # state feedback through truncated-BPTT windows on the reference loop (the gradient
        # monitor's taps): the carried state came out in bf16 (Jordan's readout under
        # autocast) and the next window's cells refused it
        ("JordanCell", "flipflop", "mixed", {"k1": 4, "monitor": 1}),
        ("JordanCell", "flipflop", "mixed", {"k1": 4}),  # the masked kernel
        ("JordanCell", "flipflop", "free", {}),
        ("GRUCell", "series", "mixed", {"k1": 4}),  # input feedback: the model-level loop
    ],
)
def test_bf16_with_output_feedback_trains(cell, task, mode, bptt) -> None:
    t32 = Trainer(_cfg(cell, task, mode, **bptt), None)
    t16 = Trainer(_cfg(cell, task, mode, **bptt), None, precision="bf16")
    assert t16.model.feedback in ("state", "input")
    # the same initial model: bf16 evaluation within bf16's precision of fp32's
    l32, l16 = t32.evaluate()["loss"], t16.evaluate()["loss"]
    assert l16 == pytest.approx(l32, rel=0.05)
    res = t16.fit()
    assert math.isfinite(res.last_val["loss"])
    assert all(p.dtype == torch.float32 for p in t16.net.parameters())


def summed_squares(pred, target, mask):  # type: ignore[no-untyped-def]
    """A loss of the user's own, at module level: importable, so saved and reloaded."""
    return (((pred - target) ** 2).sum(-1) * mask).sum()


def _run(tmp_path, loss, name):  # type: ignore[no-untyped-def]
    cfg = _cfg("GRUCell", "series", "none")
    cfg["train"]["checkpoint_every"] = STEPS
    run = tmp_path / name
    Trainer(cfg, run, loss=loss).fit()
    return run


def test_an_importable_loss_is_saved_and_reloaded(tmp_path) -> None:
    run = _run(tmp_path, summed_squares, "imp")
    t = trainer_from_checkpoint(run)
    assert t.loss_fn is summed_squares
    task_loss = trainer_from_checkpoint(run, loss=None)
    assert task_loss.loss_fn is summed_squares  # None means "as saved"
    resumed = Trainer({"train": {"steps": STEPS + 1}}, run, resume=True)
    assert resumed.loss_fn is summed_squares
    resumed.fit()
    assert resumed.step == STEPS + 1


def test_a_lambda_loss_must_be_passed_again(tmp_path) -> None:
    def local(pred, target, mask):  # type: ignore[no-untyped-def]
        return summed_squares(pred, target, mask) * 2.0

    run = _run(tmp_path, local, "local")
    msg = r"loss: this run was trained with a loss of your own \('test_a_lambda.*local'\).*pass"
    with pytest.raises(ValueError, match=msg):
        trainer_from_checkpoint(run)
    with pytest.raises(ValueError, match=r"Trainer\(\.\.\., resume=True, loss=fn\)"):
        Trainer({"train": {"steps": STEPS + 1}}, run, resume=True)
    t = trainer_from_checkpoint(run, loss=local)
    ev = t.evaluate()["loss"]
    assert ev == pytest.approx(2.0 * trainer_from_checkpoint(run, loss=summed_squares)
                               .evaluate()["loss"])  # fmt: skip
    from rnnlab.cli import main

    assert main(["eval", str(run)]) != 0  # the CLI cannot take a function: it says so
