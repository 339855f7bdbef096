"""Linear stability: labels, multipliers, eigenvectors, time constants, linearisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.cells import GRUCell
from rnnlab.dynamics import (
    Map,
    classify,
    linearize,
    multiplier,
    stability,
    time_constants,
)

D = torch.float64


def test_labels_at_the_unit_circle_with_tolerance() -> None:
    ev = torch.tensor(
        [[0.5, 0.2], [1.0, 0.3], [1.2, 0.1], [complex(0.6, 0.8), complex(0.6, -0.8)], [1.3, -1.1]],
        dtype=torch.complex128,
    )
    labels, n_unstable = classify(ev, tol=1e-9)
    assert labels == ("stable", "marginal", "unstable", "marginal", "unstable")
    assert n_unstable.tolist() == [0, 0, 1, 0, 2]
    # a wider band turns 0.995 into marginal
    assert classify(torch.tensor([[0.995]]), tol=1e-2)[0] == ("marginal",)
    assert classify(torch.tensor([[0.995]]), tol=1e-3)[0] == ("stable",)


def test_stability_of_linear_maps_equals_numpy_eig() -> None:
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 5)) / 2
    s = stability(torch.from_numpy(A))
    ev = np.linalg.eigvals(A)
    assert np.allclose(np.sort_complex(s.eigenvalues[0].numpy()), np.sort_complex(ev))
    assert s.spectral_radius.item() == pytest.approx(np.abs(ev).max())
    # eigenvectors: J v = λ v, and sorted by modulus
    V, w = s.eigenvectors[0], s.eigenvalues[0]
    assert torch.allclose(s.jacobian[0].to(V.dtype) @ V, V * w, atol=1e-12)
    assert bool((w.abs()[:-1] >= w.abs()[1:]).all())


def test_multiplier_and_time_constants_of_the_lecture_systems() -> None:
    s = stability(Map.linear([[0.8]], [1.0]), torch.tensor([5.0], dtype=D))
    assert s.labels == ("stable",) and s.multiplier.item() == pytest.approx(0.8)
    assert s.time_constants.item() == pytest.approx(-1 / math.log(0.8))  # 4.48 steps
    s = stability(Map.linear([[1.4]], [1.0]), torch.tensor([-2.5], dtype=D))
    assert s.labels == ("unstable",) and s.multiplier.item() == pytest.approx(1.4)
    assert time_constants(torch.tensor([1.0, 0.0])).tolist() == [math.inf, 0.0]


def test_multiplier_of_the_logistic_map() -> None:
    r = 2.7
    f = Map.from_function(lambda h: r * h * (1 - h), 1)
    h_star = torch.tensor([[1 - 1 / r], [0.0]], dtype=D)
    assert multiplier(f, h_star).tolist() == pytest.approx([2 - r, r])


def test_linearisation_predicts_one_step_to_second_order() -> None:
    torch.manual_seed(0)
    cell = GRUCell(2, 4).double()
    f = Map.from_cell(cell)
    point = torch.randn(4, dtype=D) * 0.3
    x0 = torch.randn(2, dtype=D)
    lin = linearize(f, point, x0)
    assert lin.A.shape == (4, 4) and lin.B is not None and lin.B.shape == (4, 2)
    dh = torch.randn(4, dtype=D)
    dx = torch.randn(2, dtype=D)
    errs = []
    for eps in (1e-2, 1e-3):
        true = f(point + eps * dh, x0 + eps * dx)
        pred = lin.predict(point + eps * dh, x0 + eps * dx)
        errs.append(float((true - pred).norm()))
    assert errs[1] < errs[0] / 50  # O(eps²): 100x smaller for 10x smaller eps
    # exact for a linear map
    A = torch.tensor([[0.5, 0.1], [0.0, 0.9]], dtype=D)
    lin = linearize(Map.linear(A, [1.0, 2.0]), torch.zeros(2, dtype=D))
    h = torch.tensor([3.0, -1.0], dtype=D)
    assert torch.allclose(lin.predict(h), A @ h + torch.tensor([1.0, 2.0], dtype=D))


def test_tolerance_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"tol: expected 0.0 <= tol < 1.0, got 1.0"):
        stability(torch.eye(2), tol=1.0)
    with pytest.raises(ValueError, match=r"tol: expected 0.0 <= tol < 1.0, got -0.1"):
        classify(torch.ones(1, 1), tol=-0.1)
    with pytest.raises(TypeError, match="tol: expected a real number"):
        stability(torch.eye(2), tol="small")
    with pytest.raises(ValueError, match=r"f: expected Jacobians \(N, N\) or \(B, N, N\)"):
        stability(torch.ones(2, 3))
    with pytest.raises(ValueError, match="multiplier is for 1-D maps"):
        multiplier(Map.linear(torch.eye(2)), torch.zeros(2))
