"""Figures of the dynamics toolkit: they draw the right data and write PNG/SVG files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from rnnlab.cells import ElmanCell  # noqa: E402
from rnnlab.dynamics import (  # noqa: E402
    Map,
    continue_fixed_points,
    find_fixed_points,
    gradient_flow,
    predict_state_norms,
    simulate,
)
from rnnlab.plots import (  # noqa: E402
    bifurcation_diagram,
    cobweb,
    continuation,
    eigenvalues,
    gradient_norms,
    trajectories_pca,
)

D = torch.float64


def _line(fig: Figure, label_start: str) -> np.ndarray:
    for line in fig.axes[0].get_lines():
        if str(line.get_label()).startswith(label_start):
            return np.asarray(line.get_xydata())
    raise AssertionError(f"no line labelled {label_start!r}")


def test_cobweb_of_the_lecture_systems(tmp_path) -> None:
    fig = cobweb(lambda h: 0.8 * h + 1, 0.0, 40, path=tmp_path / "stable.png")
    assert isinstance(fig, Figure)
    orbit = _line(fig, "orbit")
    assert orbit[-1] == pytest.approx([5.0, 5.0], abs=1e-3)  # converges to h* = 5
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["h* = 5"]
    assert (tmp_path / "stable.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fig = cobweb(lambda h: 1.4 * h + 1, -2.0, 10, path=tmp_path / "unstable.svg")
    orbit = _line(fig, "orbit")
    dist = np.abs(orbit[::2, 0] + 2.5)  # distance of h(t) from h* = -2.5
    assert np.all(np.diff(dist) > 0)  # runs away
    assert [t.get_text() for t in fig.axes[0].texts] == ["h* = -2.5"]
    assert b"<svg" in (tmp_path / "unstable.svg").read_bytes()[:400]


def test_trajectories_pca_colours_fixed_points_by_stability(tmp_path) -> None:
    cell = ElmanCell(2, 2).double()
    with torch.no_grad():
        cell.weight_hh.copy_(2.0 * torch.eye(2))
        cell.weight_ih.copy_(3.0 * torch.eye(2))
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    x = torch.zeros(8, 40, 2, dtype=D)
    x[:, 0] = torch.tensor([[a, b] for a in (-1.0, 1.0) for b in (-1.0, 1.0)] * 2, dtype=D)
    traj = simulate(cell, torch.zeros(8, 2, dtype=D), inputs=x)
    fp = find_fixed_points(cell, traj)
    assert fp.counts() == {0: 4, 1: 4, 2: 1}
    fig = trajectories_pca(traj, fp, path=tmp_path / "pca.png")
    colls = fig.axes[0].collections
    assert len(colls) == 9
    colours = [tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in colls]
    blue = tuple(np.round(np.array([0.122, 0.467, 0.706]), 3))
    assert sum(np.allclose(c, blue, atol=2e-3) for c in colours) == 4  # the 4 stable points
    assert (tmp_path / "pca.png").stat().st_size > 1000


def test_eigenvalues_against_the_unit_circle() -> None:
    ev = torch.tensor([0.5, complex(0, 1.2), complex(0, -1.2)], dtype=torch.complex128)
    fig = eigenvalues(ev)
    circle = _line(fig, "|λ| = 1")
    assert np.allclose(np.hypot(circle[:, 0], circle[:, 1]), 1.0)
    pts = fig.axes[0].collections[0].get_offsets()
    assert np.allclose(sorted(pts[:, 1]), [-1.2, 0.0, 1.2])


def test_logistic_bifurcation_diagram(tmp_path) -> None:
    r = torch.tensor([2.8, 3.2, 3.5])
    fig = bifurcation_diagram(parameters=r, transient=2000, keep=64, path=tmp_path / "bif.png")
    pts = np.asarray(fig.axes[0].collections[0].get_offsets())
    distinct = {
        rv: len(np.unique(np.round(pts[np.isclose(pts[:, 0], rv), 1], 6))) for rv in (2.8, 3.2, 3.5)
    }
    assert distinct == {2.8: 1, 3.2: 2, 3.5: 4}  # fixed point, 2-cycle, 4-cycle
    at = pts[np.isclose(pts[:, 0], 2.8), 1]
    assert at[0] == pytest.approx(1 - 1 / 2.8, abs=1e-6)


def test_gradient_norm_figures(tmp_path) -> None:
    cell = ElmanCell(1, 3, activation="identity", bias=False).double()
    flow = gradient_flow(cell, torch.randn(2, 3, dtype=D), inputs=torch.zeros(15, 1, dtype=D))
    fig = gradient_norms(flow, path=tmp_path / "grad.png")
    measured = _line(fig, "measured")
    assert np.allclose(measured[:, 1], flow.measured.mean(0).numpy())
    fig = gradient_norms(predict_state_norms(0.9 * torch.eye(2), torch.ones(2), 10))
    assert _line(fig, "measured")[-1, 1] == pytest.approx(math.sqrt(2) * 0.9**10)
    with pytest.raises(TypeError, match="result: expected a GradientFlow"):
        gradient_norms("nope")


def test_continuation_figure_marks_folds() -> None:
    unit = Map.from_function(lambda h, x: torch.tanh(2 * h + x), 1, 1)
    sweep = continue_fixed_points(unit, [-1.0], [1.0], states=torch.linspace(-1, 1, 21)[:, None])
    fig = continuation(sweep)
    folds = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "fold"]
    assert len(folds) == 2


def test_bad_plot_arguments() -> None:
    with pytest.raises(ValueError, match="f: expected a 1-D map"):
        cobweb(Map.linear(torch.eye(2)), 0.0)
    with pytest.raises(ValueError, match="h0: expected a finite number"):
        cobweb(lambda h: h, math.nan)
    with pytest.raises(ValueError, match=r"trajectories: expected \(B, T, N\)"):
        trajectories_pca(torch.zeros(3))
