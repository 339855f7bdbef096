"""`rnnlab analyze`: a trained run's fixed points really are fixed points of its cell."""

from __future__ import annotations

import json

import pytest
import torch

from rnnlab.analyze import analyze
from rnnlab.cli import main
from rnnlab.training import load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "ff"
    assert (
        main(
            [
                "train",
                "--task",
                "flipflop",
                "--run-dir",
                str(d),
                "--steps",
                "30",
                "--cell",
                "GRUCell",
                "--hidden-size",
                "8",
            ]
        )
        == 0
    )
    return d


def test_analyze_writes_fixed_points_that_are_fixed(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--seeds", "64", "--steps", "60"]) == 0
    out = run_dir / "analysis"
    data = json.loads((out / "analysis.json").read_text())
    assert (out / "fixed_points_pca.png").stat().st_size > 0
    pts = torch.tensor(data["fixed_points"]["points"], dtype=torch.float64)
    assert len(pts) >= 1
    model, _ = load_run(run_dir)
    cell = model.core.cell.double()
    x = torch.zeros(len(pts), cell.input_size, dtype=torch.float64)
    _, new = cell(x, (pts,))
    # independent check: one step of the cell maps each reported point onto itself
    torch.testing.assert_close(new.h, pts, rtol=0, atol=1e-8)
    assert len(data["lyapunov"]["exponents_nats_per_step"]) >= 1
    assert "fixed points" in capsys.readouterr().out


def test_analyze_bad_input(run_dir, tmp_path):
    with pytest.raises(ValueError, match="seeds: expected a positive int, got 0"):
        analyze(run_dir, tmp_path, seeds=0)
    with pytest.raises(Exception, match="run|checkpoint"):
        analyze(tmp_path / "missing", tmp_path)
