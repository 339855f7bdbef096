"""Fixed points: closed forms, the lecture's examples, saddles, certificates, trained fixtures."""

from __future__ import annotations

import json
import math
from itertools import product

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch
from torch import nn

from fixtures.flipflop import load, pulses
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.dynamics import (
    FixedPoints,
    FixedPointSolver,
    Map,
    find_fixed_points,
    linear_fixed_points,
    sample_seeds,
    simulate,
)

D = torch.float64


@pytest.mark.parametrize("via", ["closed form", "search"])
def test_lecture_stable_system_h_star_5(via: str) -> None:
    f = (
        Map.linear([[0.8]], [1.0])
        if via == "closed form"
        else Map.from_function(lambda h: 0.8 * h + 1, 1)
    )
    fp = find_fixed_points(f, torch.linspace(-10, 10, 50)[:, None])
    assert fp.method == via
    assert len(fp) == 1
    assert fp.points.item() == pytest.approx(5.0, abs=1e-12)
    assert fp.multipliers.item() == pytest.approx(0.8, abs=1e-12)
    assert fp.labels == ("stable",) and fp.n_unstable.tolist() == [0]
    assert fp.residuals.item() <= 1e-12


@pytest.mark.parametrize("via", ["closed form", "search"])
def test_lecture_unstable_system_h_star_minus_2_5(via: str) -> None:
    f = (
        Map.linear([[1.4]], [1.0])
        if via == "closed form"
        else Map.from_function(lambda h: 1.4 * h + 1, 1)
    )
    fp = find_fixed_points(f, torch.linspace(-10, 10, 50)[:, None])
    assert fp.points.item() == pytest.approx(-2.5, abs=1e-12)
    assert fp.multipliers.item() == pytest.approx(1.4, abs=1e-12)
    assert fp.labels == ("unstable",) and fp.n_unstable.tolist() == [1]
    # time constant -1/ln 1.4 < 0: a growth time
    assert fp.time_constants.item() == pytest.approx(-1 / math.log(1.4))


@pytest.mark.parametrize("r", [2.5, 2.9, 3.1, 3.5])
def test_logistic_fixed_points_and_the_stability_change_at_3(r: float) -> None:
    f = Map.from_function(lambda h: r * h * (1 - h), 1)
    fp = find_fixed_points(f, torch.rand(64, 1, generator=torch.Generator().manual_seed(0)))
    pts = sorted(fp.points[:, 0].tolist())
    assert pts == pytest.approx([0.0, 1 - 1 / r], abs=1e-10)
    k = int(torch.argmin((fp.points[:, 0] - (1 - 1 / r)).abs()))
    # f'(1 - 1/r) = 2 - r: stable for r < 3, unstable for r > 3
    assert fp.multipliers[k].item() == pytest.approx(2 - r, abs=1e-10)
    assert fp.labels[k] == ("stable" if r < 3 else "unstable")
    j = 1 - k
    assert fp.multipliers[j].item() == pytest.approx(r, abs=1e-10) and fp.labels[j] == "unstable"


def test_linear_maps_in_closed_form_against_scipy() -> None:
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6)) / 3
    b = rng.normal(size=6)
    fp = linear_fixed_points(torch.from_numpy(A), torch.from_numpy(b))
    h = np.linalg.solve(np.eye(6) - A, b)
    assert np.allclose(fp.points[0].numpy(), h, atol=1e-12)
    ev = scipy.linalg.eigvals(A)
    got = fp.eigenvalues[0].numpy()
    assert np.allclose(np.sort_complex(got), np.sort_complex(ev), atol=1e-12)
    rho = np.abs(ev).max()
    assert fp.labels == (("stable",) if rho < 1 else ("unstable",))
    assert fp.n_unstable.item() == int((np.abs(ev) > 1 + 1e-6).sum())
    # the search on the same system written as a function finds the same point
    At, bt = torch.from_numpy(A), torch.from_numpy(b)
    found = find_fixed_points(Map.from_function(lambda v: v @ At.T + bt, 6), n_seeds=32)
    assert len(found) == 1 and torch.allclose(found.points[0], torch.from_numpy(h), atol=1e-10)


def test_linear_map_with_input_uses_b_plus_bx() -> None:
    f = Map.linear([[0.5, 0.0], [0.0, -0.5]], [1.0, 0.0], B=[[1.0], [2.0]])
    fp = find_fixed_points(f, input=[3.0])
    # h* = (I - A)^{-1} (b + B x) = (4 / 0.5, 6 / 1.5)
    assert torch.allclose(fp.points[0], torch.tensor([8.0, 4.0], dtype=D), atol=1e-12)


def test_singular_linear_map_is_an_error() -> None:
    with pytest.raises(ValueError, match="I - A is singular"):
        linear_fixed_points(torch.eye(2), torch.ones(2))


def _flipflop_cell(n: int, w: float) -> ElmanCell:
    cell = ElmanCell(n, n).double()
    with torch.no_grad():
        cell.weight_hh.copy_(w * torch.eye(n))
        cell.weight_ih.copy_(3.0 * torch.eye(n))  # a pulse flips a unit
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    return cell


def test_constructed_3bit_flipflop_has_exactly_27_fixed_points_with_right_labels() -> None:
    w = 2.0
    cell = _flipflop_cell(3, w)
    # h+ solves h = tanh(w h) (an independent scalar root)
    hp = scipy.optimize.brentq(lambda v: math.tanh(w * v) - v, 0.1, 1.0)
    traj = simulate(cell, torch.zeros(16, 3, dtype=D), inputs=pulses(16, 80).to(D))
    fp = find_fixed_points(cell, traj)  # defaults: 512 seeds, 80% on segments
    assert len(fp) == 27 and len(fp.failed) == 0
    assert fp.counts() == {0: 8, 1: 12, 2: 6, 3: 1}
    expected = {tuple(v) for v in product((-hp, 0.0, hp), repeat=3)}
    for p, lab, k in zip(fp.points.tolist(), fp.labels, fp.n_unstable.tolist()):
        key = min(expected, key=lambda e: sum((a - b) ** 2 for a, b in zip(e, p)))
        assert np.allclose(p, key, atol=1e-10)
        expected.discard(key)
        zeros = sum(abs(v) < 1e-8 for v in p)
        assert k == zeros  # each unit at 0 is one unstable direction (multiplier w = 2)
        assert lab == ("stable" if zeros == 0 else "unstable")
        # eigenvalues: w at the zero units, w (1 - h+^2) at the others
        ev = sorted(fp.eigenvalues[fp.points.tolist().index(p)].real.tolist())
        want = sorted(w if abs(v) < 1e-8 else w * (1 - hp**2) for v in p)
        assert np.allclose(ev, want, atol=1e-10)
    assert not expected
    assert float(fp.residuals.max()) <= 1e-12 and float(fp.newton_steps.max()) <= 1e-10


def test_non_converged_seeds_are_reported_never_returned() -> None:
    # F(h) = f(h) - h = (h - 2)((h + 1)^2 + 0.1): one zero (h = 2); near h = -1 the speed q has
    # a minimum above zero (a slow point) that traps seeds
    f = Map.from_function(lambda h: h + (h - 2) * ((h + 1) ** 2 + 0.1), 1)
    seeds = torch.cat([torch.linspace(-1.2, -0.8, 20), torch.linspace(1.5, 2.5, 20)])[:, None]
    fp = FixedPointSolver().solve(f, seeds.to(D))
    assert fp.points[:, 0].tolist() == pytest.approx([2.0], abs=1e-12)
    assert len(fp.failed) > 0
    assert int(fp.seed_counts.sum()) + len(fp.failed) == 40
    assert bool((fp.failed.residuals > fp.residual_tol).all())
    assert bool((fp.failed.states - 2.0).abs().min() > 1e-3)
    assert fp.failed.seeds.shape == (len(fp.failed), 1)


def test_map_without_fixed_points_returns_none_and_all_seeds_failed() -> None:
    fp = find_fixed_points(Map.from_function(lambda h: h + 1.0, 2), torch.randn(10, 2), n_seeds=10)
    assert len(fp) == 0 and len(fp.failed) == 10 and fp.n_seeds == 10
    assert "0 points" in repr(fp)


def test_gru_artefacts_outside_the_box_are_not_fixed_points() -> None:
    # far outside (-1, 1) a GRU's update gate rounds to exactly 1 and f(h) = h holds in floating
    # point on a whole region; the Newton-step certificate rejects such non-isolated zeros
    torch.manual_seed(0)
    cell = GRUCell(1, 2).double()
    with torch.no_grad():
        cell.weight_hh.zero_()
        cell.weight_hh[2:4] = 40.0 * torch.eye(2)  # U_z: z -> 1 for large h
    far = torch.full((4, 2), 30.0, dtype=D)
    assert torch.equal(Map.from_cell(cell)(far), far)  # "fixed" in float64
    fp = find_fixed_points(cell, far, n_seeds=4, noise=0.0, descent_iters=0)
    assert bool((fp.points.abs() < 1).all())
    assert bool((fp.failed.states.abs() > 1).any())


@pytest.mark.parametrize("kind", ["lstm", "gru", "torch-lstm-2"])
def test_found_points_are_certified_by_an_independent_evaluation(kind: str) -> None:
    torch.manual_seed(3)
    if kind == "lstm":
        net = LSTMCell(2, 6)
        with torch.no_grad():
            net.weight_hh.mul_(4.0)
    elif kind == "gru":
        net = GRUCell(2, 6)
        with torch.no_grad():
            net.weight_hh.mul_(6.0)
    else:
        net = nn.LSTM(2, 4, num_layers=2)
    m = Map.from_cell(net) if not isinstance(net, nn.LSTM) else Map.from_torch(net)
    traj = simulate(m, torch.randn(8, m.state_size), inputs=torch.randn(8, 50, 2))
    fp = find_fixed_points(net, traj, n_seeds=128)
    assert len(fp) >= 1
    net64 = net.double()
    for p, J in zip(fp.points, fp.jacobians):
        state = m.unflatten(p[None])
        if isinstance(net, nn.LSTM):
            _, new = net64(torch.zeros(1, 1, 2, dtype=D), state)
            p_new = m.flatten(new)[0]
        else:
            _, new = net64(torch.zeros(1, 2, dtype=D), state)
            p_new = torch.cat(list(new), dim=1)[0]
        assert float((p_new - p).norm()) <= 1e-10
        ref = torch.autograd.functional.jacobian(lambda v: m.to(D).step(v[None])[0], p)
        assert torch.allclose(J, ref, atol=1e-10)


def _flipflop_setup(kind: str) -> tuple[object, dict, torch.Tensor]:
    cell, meta = load(kind)
    traj = simulate(cell, torch.zeros(32, 16), inputs=pulses(32, 100, seed=5))
    return cell, meta, traj


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_trained_flipflop_reference_sets_are_recovered(kind: str) -> None:
    cell, meta, traj = _flipflop_setup(kind)
    ref = meta["reference_fixed_points"]
    P = torch.tensor(ref["points"], dtype=D)
    fp = find_fixed_points(cell, traj)
    assert len(fp) == len(P) == 27
    d = (P[:, None] - fp.points[None]).norm(dim=-1)  # exact differences (cdist rounds)
    match = d.argmin(dim=1)
    assert float(d.min(dim=1).values.max()) <= 1e-8  # every reference point found
    assert sorted(match.tolist()) == list(range(len(fp)))  # and nothing else
    assert [fp.n_unstable[j].item() for j in match.tolist()] == ref["n_unstable"]
    assert [fp.labels[j] for j in match.tolist()] == ref["labels"]
    rho = fp.spectral_radius[match]
    assert torch.allclose(rho, torch.tensor(ref["spectral_radius"], dtype=D), atol=1e-8)
    # seeds on segments between visited states are what finds the saddles
    few = find_fixed_points(cell, traj, interpolate=0.0, noise=0.05)
    assert few.counts().get(1, 0) < 12


def test_sample_seeds_draws_states_and_segment_points() -> None:
    pool = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    s = sample_seeds(
        pool, 200, noise=0.0, interpolate=1.0, generator=torch.Generator().manual_seed(0)
    )
    # on the segment between the two states, not only at its ends
    assert torch.allclose(s[:, 0], s[:, 1])
    assert float(((s[:, 0] > 0.05) & (s[:, 0] < 0.95)).float().mean()) > 0.3
    t = sample_seeds(pool, 2, noise=0.0, interpolate=0.0)
    assert sorted(t[:, 0].tolist()) == [0.0, 1.0]


def test_result_serialises_and_selects() -> None:
    fp = find_fixed_points(Map.from_function(lambda h: 3.5 * h * (1 - h), 1), torch.rand(32, 1))
    data = json.loads(json.dumps(fp.to_dict()))
    assert len(data["points"]) == 2 and set(data["labels"]) == {"unstable"}
    sub = fp.select(fp.points[:, 0] > 0.5)
    assert isinstance(sub, FixedPoints) and len(sub) == 1
    assert sub.points.item() == pytest.approx(1 - 1 / 3.5)
    V = fp.eigenvectors()
    assert V.shape == (2, 1, 1)


def test_bad_arguments_name_the_argument() -> None:
    f = Map.from_function(lambda h: 0.5 * h, 2)
    with pytest.raises(
        ValueError, match=r"stability_tol: expected 0.0 <= stability_tol < 1.0, got 1.5"
    ):
        find_fixed_points(f, stability_tol=1.5)
    with pytest.raises(ValueError, match=r"residual_tol: expected 0.0 < residual_tol, got -1.0"):
        FixedPointSolver(residual_tol=-1)
    with pytest.raises(ValueError, match="states: expected finite values"):
        find_fixed_points(f, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"states: expected shape \(\.\.\., 2\), got \(4, 3\)"):
        find_fixed_points(f, torch.zeros(4, 3))
    wrong = Map.from_function(lambda h: h.sum(dim=1, keepdim=True), 2)
    with pytest.raises(ValueError, match=r"f \(function\): expected output of the state's shape"):
        find_fixed_points(wrong, torch.zeros(4, 2))
    with pytest.raises(TypeError, match="unknown solver setting"):
        find_fixed_points(f, tolerance=1e-3)
    with pytest.raises(ValueError, match="n_seeds: expected an int >= 1, got 0"):
        find_fixed_points(f, torch.zeros(4, 2), n_seeds=0)


def test_batched_solve_is_correct_with_several_threads() -> None:
    # this torch build's batched LU is wrong for n > ~150 with more than one thread
    from rnnlab.dynamics._linalg import solve_ex

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        A = torch.randn(3, 192, 192, dtype=D, generator=g)
        b = torch.randn(3, 192, 1, dtype=D, generator=g)
        x, info = solve_ex(A, b)
    finally:
        torch.set_num_threads(before)
    assert info.tolist() == [0, 0, 0]
    assert float((A @ x - b).abs().max()) < 1e-10
