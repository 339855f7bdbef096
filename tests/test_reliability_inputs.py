"""Inputs resolve as written: an explicit data root holds the data or is an error, generate's
--prime-steps, --num and --temperature are checked, a model too large for the machine is
refused with its estimated size before allocation, and a cell called directly with the wrong
dtype gets rnnlab's message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rnnlab
from rnnlab.cli import main
from rnnlab.training import ConfigError, Trainer
from rnnlab.training import build as build_mod
from rnnlab.training import trainer as trainer_mod

FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"

SERIES = ["train", "--task", "series", "--length", "12", "--n-train", "8", "--n-val", "3"]
SERIES += ["--batch-size", "4", "--hidden-size", "4", "--steps", "2", "--no-progress"]
SERIES += ["--no-plots", "--grad-monitor-every", "0"]


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gen") / "series"
    assert main([*SERIES, "--run-dir", str(run)]) == 0
    return run


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--prime-steps", "13"], "--prime-steps: expected at most the 12 steps of a validation"),
        (["--num", "4"], "--num: expected at most the 3 validation sequences, got 4"),
        (["--temperature", "-0.5"], "--temperature: expected a finite number >= 0"),
        (["--temperature", "nan"], "--temperature: expected a finite number >= 0"),
    ],
)
def test_generate_refuses_what_it_cannot_do(series_run, capsys, argv, match):
    capsys.readouterr()
    assert main(["generate", str(series_run), *argv]) == 2
    captured = capsys.readouterr()
    assert match in captured.err and captured.out == "", "nothing generated"


def test_generate_within_bounds_reports_what_it_did(series_run, capsys):
    capsys.readouterr()
    argv = ["generate", str(series_run), "--prime-steps", "12", "--num", "3", "--steps", "4"]
    assert main([*argv, "--temperature", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# 12 validation inputs read, then 4 free-running outputs")
    assert len(out) == 1 + 3 * 4, "3 sequences of 4 outputs"


def test_explicit_data_root_without_the_data_is_an_error(tmp_path, monkeypatch):
    if FASHION.is_dir():
        monkeypatch.setenv("RNNLAB_DATA", str(FASHION.parent))  # a fallback that would work
    empty = tmp_path / "empty"
    empty.mkdir()
    c = {"task": {"name": "fashion_mnist", "options": {"root": str(empty)}}}
    with pytest.raises(FileNotFoundError, match=r"root: the folder given, .*empty.* does not hold"):
        Trainer(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"no Fashion-MNIST at {FASHION}")
def test_config_records_the_data_root_actually_used(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_DATA", str(FASHION.parent))
    c = {
        "task": {"name": "fashion_mnist", "n_train": 8, "n_val": 8},
        "model": {"hidden_size": 4},
        "train": {"batch_size": 8},
    }
    t = Trainer(c, None)
    assert t.config["task"]["options"]["root"] == str(FASHION)


def test_huge_hidden_size_is_refused_with_its_size_before_allocation(monkeypatch):
    def never(*a, **k):
        raise AssertionError("the model must not be allocated")

    monkeypatch.setattr(trainer_mod, "SequenceModel", never)
    monkeypatch.setattr(build_mod, "_memory_bytes", lambda: 8 * 2**30)
    c = {"task": {"name": "adding"}, "model": {"cell": "LSTMCell", "hidden_size": 20000}}
    # 4 gates x 20000 x (2 + 20000 + 2) weights, x4 (grads, Adam) x 4 bytes = 23.8 GiB
    with pytest.raises(
        ConfigError, match=r"model\.hidden_size: 20000 needs about 23\.8 GiB .* 8\.0 GiB"
    ):
        Trainer(c, None)


def test_estimate_matches_the_real_parameter_count():
    """The estimate is the real count of the gated cells (x16 bytes), so it never over-refuses."""
    for cell in ("GRUCell", "LSTMCell"):
        spec = {"cell": cell, "input_size": 3, "hidden_size": 7, "output_size": 2}
        spec |= {"num_layers": 2, "bidirectional": True}
        full = {**spec, "cell_options": {}, "dropout": 0.0, "readout": "linear"}
        full |= {"feedback": "none", "tokens": False, "seq2seq": False}
        m = rnnlab.training.SequenceModel(full)
        assert trainer_mod.estimated_bytes(spec) == 16 * sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "cell", [rnnlab.ElmanCell(3, 4), rnnlab.GRUCell(3, 4), rnnlab.LSTMCell(3, 4)]
)
def test_cell_called_directly_with_another_dtype_gets_our_message(cell):
    x = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(
        TypeError,
        match=r"x: expected dtype torch\.float32 \(the cell's parameters\), got torch\.float64",
    ):
        cell(x, cell.initial_state(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="x: expected dtype torch.float32"):
        cell(x)
    y, _ = cell.to(torch.float64)(x)  # the fix the message names works
    assert y.dtype == torch.float64
