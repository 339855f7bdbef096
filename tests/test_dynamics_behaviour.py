"""long_run_behaviour against maps whose attractors are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.dynamics import Map
from rnnlab.dynamics.behaviour import long_run_behaviour


def test_lecture_map_converges_to_its_stable_fixed_point() -> None:
    b = long_run_behaviour(Map.linear([[0.8]], [1.0]), torch.zeros(1))
    assert b.kind == "fixed point" and b.stable is True
    assert abs(b.point.item() - 5.0) < 1e-8  # h* = 1 / (1 - 0.8)
    assert abs(b.multipliers.abs().max().item() - 0.8) < 1e-12


def test_logistic_two_cycle() -> None:
    r = 3.2
    b = long_run_behaviour(Map.from_function(lambda h: r * h * (1 - h), 1), torch.tensor([0.3]))
    assert b.kind == "k-cycle" and b.period == 2 and b.stable is True
    # the 2-cycle of the logistic map: x = (r + 1 ± sqrt((r - 3)(r + 1))) / (2r)
    s = math.sqrt((r - 3) * (r + 1))
    want = sorted([(r + 1 - s) / (2 * r), (r + 1 + s) / (2 * r)])
    assert sorted(b.cycle[:, 0].tolist()) == pytest.approx(want, abs=1e-8)
    # Floquet multiplier: r^2 (1 - 2x1)(1 - 2x2) = 4 + 2r - r^2
    assert b.multipliers[0].real.item() == pytest.approx(4 + 2 * r - r * r, abs=1e-8)


def test_henon_is_chaotic_with_its_lyapunov_exponent() -> None:
    def henon(h: torch.Tensor) -> torch.Tensor:
        return torch.stack([1 - 1.4 * h[:, 0] ** 2 + h[:, 1], 0.3 * h[:, 0]], 1)

    b = long_run_behaviour(Map.from_function(henon, 2), torch.tensor([0.1, 0.1]), 500)
    assert b.kind == "quasi-periodic or chaotic" and b.stable is None
    assert abs(b.lyapunov - 0.419) < 0.03  # Hénon (a=1.4, b=0.3): λ₁ ≈ 0.419
    assert "chaotic" in b.describe()


def test_irrational_rotation_is_quasi_periodic() -> None:
    th = math.pi * (math.sqrt(5) - 1)  # 2π / golden ratio: never repeats

    def rot(h: torch.Tensor) -> torch.Tensor:
        c, s = math.cos(th), math.sin(th)
        R = torch.tensor([[c, -s], [s, c]], dtype=h.dtype)
        r = h.norm(dim=1, keepdim=True)
        return (h @ R.T) / r * (r + 0.5 * (1 - r))  # attracted onto the unit circle

    b = long_run_behaviour(Map.from_function(rot, 2), torch.tensor([0.5, 0.0]), 500)
    assert b.kind == "quasi-periodic or chaotic"
    assert abs(b.lyapunov) < 1e-3 and "quasi-periodic" in b.describe()


def test_divergence_and_bad_input() -> None:
    b = long_run_behaviour(Map.linear([[1.4]], [1.0]), torch.zeros(1), 3000)
    assert b.kind == "diverges"
    with pytest.raises(ValueError, match="h0: expected one state"):
        long_run_behaviour(Map.linear([[0.8]], [1.0]), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="steps"):
        long_run_behaviour(Map.linear([[0.8]], [1.0]), torch.zeros(1), 5)
