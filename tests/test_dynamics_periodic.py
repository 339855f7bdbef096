"""Periodic orbits and period detection: the logistic map's period-2 orbit in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.dynamics import Map, detect_period, find_periodic_orbits, monodromy, simulate

D = torch.float64


def logistic(r: float) -> Map:
    return Map.from_function(lambda h: r * h * (1 - h), 1)


@pytest.mark.parametrize("r", [3.1, 3.3, 3.44, 3.5, 3.6])
def test_logistic_period_two_orbit_in_closed_form(r: float) -> None:
    orbits = find_periodic_orbits(logistic(r), 2, torch.rand(64, 1, dtype=D), n_seeds=64)
    assert len(orbits) == 1  # the fixed points are not prime period-2 orbits
    s = math.sqrt((r + 1) * (r - 3))
    expected = sorted([(r + 1 - s) / (2 * r), (r + 1 + s) / (2 * r)])
    assert orbits.orbits[0, :, 0].tolist() == pytest.approx(expected, abs=1e-12)
    # monodromy f'(x-) f'(x+) = -r² + 2r + 4; stable exactly for 3 < r < 1 + √6
    mu = -(r**2) + 2 * r + 4
    assert orbits.multipliers[0, 0].real.item() == pytest.approx(mu, abs=1e-10)
    assert orbits.labels == (("stable",) if r < 1 + math.sqrt(6) else ("unstable",))


def test_period_one_orbits_are_the_fixed_points_and_non_prime_ones_can_be_kept() -> None:
    f = logistic(3.2)
    one = find_periodic_orbits(f, 1, torch.rand(32, 1, dtype=D), n_seeds=32)
    assert sorted(one.orbits[:, 0, 0].tolist()) == pytest.approx([0.0, 1 - 1 / 3.2], abs=1e-12)
    two = find_periodic_orbits(f, 2, torch.rand(64, 1, dtype=D), n_seeds=64, prime=False)
    assert len(two) == 3  # two fixed points and the 2-cycle


def test_monodromy_of_a_linear_map_is_its_power() -> None:
    A = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=D) * 0.9  # rotation by 90°, shrink
    orbit = torch.zeros(4, 2, dtype=D)
    M = monodromy(Map.linear(A), orbit)
    assert torch.allclose(M, torch.linalg.matrix_power(A, 4))


def test_stable_three_cycle_is_where_simulation_ends() -> None:
    f = logistic(3.83)  # inside the period-3 window
    orbits = find_periodic_orbits(f, 3, torch.rand(256, 1, dtype=D), n_seeds=256)
    stable = [o for o, lab in zip(orbits.orbits, orbits.labels) if lab == "stable"]
    assert len(stable) == 1 and len(orbits) == 2  # the stable 3-cycle and its unstable twin
    traj = simulate(f, torch.tensor([[0.3]], dtype=D), 600)[0, -3:, 0]
    assert sorted(traj.tolist()) == pytest.approx(sorted(stable[0][:, 0].tolist()), abs=1e-9)
    assert orbits.multipliers[orbits.labels.index("stable")].abs().item() < 1


@pytest.mark.parametrize("r, period", [(2.8, 1), (3.2, 2), (3.5, 4), (3.83, 3), (3.9, 0)])
def test_detect_period_of_logistic_trajectories(r: float, period: int) -> None:
    traj = simulate(logistic(r), torch.tensor([[0.3]], dtype=D), 3000)
    assert int(detect_period(traj[0], max_period=16, tol=1e-8)) == period


def test_detect_period_of_a_rotation_and_batches() -> None:
    th = 2 * math.pi / 5
    R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=D)
    traj = simulate(Map.linear(R), torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=D), 50)
    assert detect_period(traj, tol=1e-10).tolist() == [5, 1]


def test_bad_period_and_tolerance() -> None:
    with pytest.raises(ValueError, match="period: expected an int >= 1, got 0"):
        find_periodic_orbits(logistic(3.2), 0)
    with pytest.raises(TypeError, match="period: expected an int"):
        find_periodic_orbits(logistic(3.2), 2.0)
    with pytest.raises(ValueError, match=r"tol: expected 0.0 < tol, got 0.0"):
        detect_period(torch.zeros(10, 1), tol=0)
    with pytest.raises(ValueError, match="max_period: expected < window = 5, got 5"):
        detect_period(torch.zeros(10, 1), max_period=5)
