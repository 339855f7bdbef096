"""Continuation in a constant input: folds of a bistable unit, logistic period doubling."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.cells import ElmanCell
from rnnlab.dynamics import Map, continue_fixed_points

D = torch.float64


def test_bistable_tanh_unit_has_two_folds_in_closed_form() -> None:
    w = 2.0
    unit = Map.from_function(lambda h, x: torch.tanh(w * h + x), 1, 1)
    sweep = continue_fixed_points(unit, [-1.0], [1.0], states=torch.linspace(-1, 1, 41)[:, None])
    # fold where w (1 - h²) = 1: h_f = ±√(1 - 1/w), x_f = atanh(h_f) - w h_f
    hf = math.sqrt(1 - 1 / w)
    xf = math.atanh(hf) - w * hf
    folds = sweep.events("fold")
    assert len(folds) == 2
    assert sorted(f.input.item() for f in folds) == pytest.approx([-abs(xf), abs(xf)], abs=1e-7)
    assert sorted(f.point.item() for f in folds) == pytest.approx([-hf, hf], abs=1e-5)
    assert all(abs(f.eigenvalue - 1) < 1e-6 for f in folds)
    # one S-shaped branch from x = -1 to x = 1: stable, saddle (middle), stable
    assert len(sweep.branches) == 1
    br = sweep.branches[0]
    assert br.end == "boundary" and br.parameters[0] == 0.0 and br.parameters[-1] == 1.0
    mid = (br.parameters > 0.3) & (br.parameters < 0.7) & (br.points[:, 0].abs() < 0.2)
    assert set(br.labels[i] for i in torch.nonzero(mid).flatten().tolist()) == {"unstable"}
    assert br.labels[0] == br.labels[-1] == "stable"


def test_logistic_period_doubling_at_r_3() -> None:
    logistic = Map.from_function(lambda h, x: x * h * (1 - h), 1, 1)
    sweep = continue_fixed_points(logistic, [2.5], [3.5], states=torch.rand(64, 1, dtype=D))
    pd = sweep.events("period_doubling")
    assert len(pd) == 1
    assert pd[0].input.item() == pytest.approx(3.0, abs=1e-8)
    assert pd[0].point.item() == pytest.approx(2 / 3, abs=1e-8)
    assert pd[0].eigenvalue.real == pytest.approx(-1.0, abs=1e-6)
    assert sweep.events("fold") == []
    br = next(b for b in sweep.branches if float(b.points[:, 0].abs().max()) > 0.1)
    r = br.inputs[:, 0]
    # the branch is h* = 1 - 1/r, stable before r = 3, unstable after
    assert torch.allclose(br.points[:, 0], 1 - 1 / r, atol=1e-9)
    for ri, lab in zip(r.tolist(), br.labels):
        if abs(ri - 3) > 1e-6:
            assert lab == ("stable" if ri < 3 else "unstable")


def test_cells_can_be_swept_along_an_input_direction() -> None:
    # two decoupled bistable units driven by the same input: each folds at ±x_f
    cell = ElmanCell(1, 2).double()
    with torch.no_grad():
        cell.weight_hh.copy_(2.0 * torch.eye(2))
        cell.weight_ih.fill_(1.0)
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    seeds = torch.rand(64, 2, dtype=D) * 2 - 1
    sweep = continue_fixed_points(cell, [-1.0], [1.0], states=seeds)
    xf = abs(math.atanh(math.sqrt(0.5)) - 2 * math.sqrt(0.5))
    xs = sorted({round(f.input.item(), 6) for f in sweep.events("fold")})
    assert xs == pytest.approx([-xf, xf], abs=1e-6)


def test_neimark_sacker_where_a_complex_pair_leaves_the_unit_circle() -> None:
    th = 0.7
    R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=D)
    spiral = Map.from_function(lambda h, x: x * (h @ R.T), 2, 1)  # J = x R, |λ| = x
    sweep = continue_fixed_points(spiral, [0.5], [1.5], states=torch.zeros(4, 2, dtype=D))
    ns = sweep.events("neimark_sacker")
    assert len(ns) == 1 and ns[0].input.item() == pytest.approx(1.0, abs=1e-9)
    assert abs(ns[0].eigenvalue) == pytest.approx(1.0, abs=1e-9)
    assert sweep.events("fold") == [] and sweep.events("period_doubling") == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="f: expected an input-driven map"):
        continue_fixed_points(Map.from_function(lambda h: h, 1), [0.0], [1.0])
    unit = Map.from_function(lambda h, x: torch.tanh(h + x), 1, 1)
    with pytest.raises(ValueError, match="end: expected an input different from start"):
        continue_fixed_points(unit, [0.5], [0.5])
    with pytest.raises(ValueError, match=r"start: expected shape \(1,\), got \(2,\)"):
        continue_fixed_points(unit, [0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="step: expected min_step <= step <= max_step"):
        continue_fixed_points(unit, [0.0], [1.0], step=0.5, max_step=0.1)
