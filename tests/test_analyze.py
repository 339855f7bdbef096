"""`rnnlab analyze`: a trained run's fixed points really are fixed points of its cell."""

from __future__ import annotations

import json
from pathlib import Path

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


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    """The sine example (feedback: input), trained briefly: a few seconds."""
    d = tmp_path_factory.mktemp("runs") / "sine"
    args = [
        "train",
        "--config",
        str(Path(__file__).parents[1] / "examples" / "train_sine.yaml"),
        "--run-dir",
        str(d),
        "--steps",
        "150",
    ]
    assert main(args) == 0
    return d


def test_analyze_closed_loop_agrees_with_generate(sine_run):
    """What analyze says the closed loop does is what generate's outputs do (issue 14)."""
    from rnnlab.analyze import _validation_prime

    s = analyze(sine_run, sine_run / "a_closed", seeds=64, steps=200)
    assert s["system"]["loop"] == "closed"
    assert "closed loop" in s["system"]["description"]
    assert s["generate_agreement"]["max_abs_difference"] < 1e-4
    b = s["behaviour"]
    # independent of the map: run generate itself for as long and look at its outputs' tail
    model, _ = load_run(sine_run)
    prime = _validation_prime(sine_run, 10)
    y = model.double().generate(b["steps"], prime=prime.double()).values[0, :, 0]  # (T,)
    tail = y[len(y) // 2 :]
    W = model.readout.weight[0]
    if b["kind"] == "fixed point":
        y_star = float(W @ torch.tensor(b["point"], dtype=torch.float64) + model.readout.bias[0])
        assert b["stable"] is True
        assert (tail - y_star).abs().max() < 1e-4
    elif b["kind"] == "k-cycle":
        k = b["period"]
        assert k > 1 and (tail[k:] - tail[:-k]).abs().max() < 1e-4
    else:
        assert b["kind"] == "quasi-periodic or chaotic"
        assert float(tail.std()) > 1e-2  # it keeps moving: no attracting fixed point
        for k in range(1, 65):  # and does not repeat with a short period
            assert (tail[k:] - tail[:-k]).abs().max() > 1e-4
        assert b["largest_lyapunov_nats_per_step"] < 0.1  # a sine: a torus, not chaos
    # every recurrent block of the GRU is reported: U_r, U_z, U_h of the (3H, H) weight
    blocks = [r["block"] for r in s["recurrent_weights"]]
    assert blocks == ["r", "z", "n"]
    U = model.core.cell.weight_hh.detach().double()
    H = U.shape[1]
    rho = torch.linalg.eigvals(U[2 * H :]).abs().max()
    assert abs(s["recurrent_weights"][2]["spectral_radius"] - float(rho)) < 1e-5


def test_analyze_loop_option(sine_run, run_dir, capsys):
    assert (
        main(
            [
                "analyze",
                str(sine_run),
                "--loop",
                "open",
                "--seeds",
                "32",
                "--steps",
                "40",
                "--out",
                str(sine_run / "a_open"),
            ]
        )
        == 0
    )
    data = json.loads((sine_run / "a_open" / "analysis.json").read_text())
    assert data["system"]["loop"] == "open" and data["input"] == 0.0
    assert "system: open loop" in capsys.readouterr().out
    with pytest.raises(ValueError, match="loop: 'closed' needs.*feedback 'none'"):
        analyze(run_dir, run_dir / "x", loop="closed")
    with pytest.raises(ValueError, match="loop: expected one of"):
        analyze(run_dir, run_dir / "x", loop="both")
