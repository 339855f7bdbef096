"""Vanishing/exploding diagnostics against the lecture's U^t formulas and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab.cells import ElmanCell, GRUCell
from rnnlab.dynamics import (
    Map,
    gradient_flow,
    jacobian_products,
    predict_gradient_norms,
    predict_state_norms,
    recurrent_weight,
    spectrum,
)

D = torch.float64


def test_spectrum_against_numpy() -> None:
    rng = np.random.default_rng(0)
    U = rng.normal(size=(5, 5)) / math.sqrt(5)
    s = spectrum(torch.from_numpy(U))
    assert s.spectral_radius == pytest.approx(np.abs(np.linalg.eigvals(U)).max())
    assert np.allclose(s.singular_values.numpy(), np.linalg.svd(U, compute_uv=False))
    assert s.norm == pytest.approx(np.linalg.norm(U, 2))
    assert spectrum(0.5 * torch.eye(3)).regime() == "vanishing"
    assert spectrum(torch.diag(torch.tensor([0.5, 1.1]))).regime() == "exploding"
    assert spectrum(torch.eye(2)).regime() == "marginal"


def test_state_norms_closed_form_for_a_diagonal_U() -> None:
    U = torch.diag(torch.tensor([0.5, 2.0], dtype=D))
    h0 = torch.tensor([3.0, 1e-6], dtype=D)
    p = predict_state_norms(U, h0, 40)
    t = np.arange(41)
    exact = np.sqrt((3 * 0.5**t) ** 2 + (1e-6 * 2.0**t) ** 2)
    assert np.allclose(p.measured.numpy(), exact, rtol=1e-12)
    assert np.allclose(p.predicted.numpy(), exact, rtol=1e-12)
    # first vanishing (the 0.5 mode dominates), then exploding (the 2.0 mode takes over)
    assert p.measured[10] < p.measured[0] and p.measured[40] > 1e5
    assert p.spectral_radius == 2.0


def test_eigendecomposition_predicts_measured_norms_of_a_random_U() -> None:
    rng = np.random.default_rng(1)
    U = torch.from_numpy(rng.normal(size=(6, 6)) / math.sqrt(6))
    v = torch.from_numpy(rng.normal(size=6))
    p = predict_state_norms(U, v, 60)
    g = predict_gradient_norms(U, v, 60)
    assert p.max_relative_error < 1e-9 and g.max_relative_error < 1e-9
    # the gradient recursion uses Uᵀ: compare with numpy directly
    want = [np.linalg.norm(np.linalg.matrix_power(U.numpy().T, k) @ v.numpy()) for k in (0, 7, 60)]
    assert g.measured[[0, 7, 60]].numpy() == pytest.approx(want, rel=1e-10)


def test_gradient_flow_of_a_linear_elman_network_equals_the_lecture() -> None:
    torch.manual_seed(0)
    cell = ElmanCell(2, 4, activation="identity", bias=False).double()
    with torch.no_grad():
        cell.weight_hh.copy_(torch.randn(4, 4, dtype=D) * 0.4)
    x = torch.zeros(20, 2, dtype=D)  # the input only sets h(0)
    flow = gradient_flow(cell, torch.randn(3, 4, dtype=D), inputs=x)
    assert flow.linear is not None
    assert torch.allclose(flow.linear, flow.measured, rtol=1e-10)
    assert torch.allclose(flow.predicted, flow.measured, rtol=1e-10)
    U = cell.weight_hh.detach()
    assert flow.spectral_radius == pytest.approx(float(torch.linalg.eigvals(U).abs().max()))


def test_gradient_flow_of_a_gru_follows_the_jacobian_products() -> None:
    torch.manual_seed(1)
    cell = GRUCell(2, 5).double()
    x = torch.randn(2, 30, 2, dtype=D)
    flow = gradient_flow(cell, torch.zeros(2, 5, dtype=D), inputs=x, loss=lambda h: h.sum(dim=1))
    assert flow.linear is None  # a GRU has no single U
    assert torch.allclose(flow.predicted, flow.measured, rtol=1e-10)
    assert torch.allclose(flow.measured[:, -1], torch.full((2,), math.sqrt(5), dtype=D))


def test_jacobian_products_of_a_linear_map_and_no_overflow() -> None:
    rng = np.random.default_rng(2)
    A = rng.normal(size=(3, 3)) / 2
    jp = jacobian_products(Map.linear(torch.from_numpy(A)), torch.zeros(1, 3, dtype=D), 12)
    for t in (1, 5, 12):
        sv = np.linalg.svd(np.linalg.matrix_power(A, t), compute_uv=False)
        assert np.allclose(jp.singular_values[0, t - 1].numpy(), sv, rtol=1e-9)
    big = jacobian_products(Map.linear(2 * torch.eye(2, dtype=D)), torch.zeros(1, 2, dtype=D), 2000)
    assert big.log_singular_values[0, -1].tolist() == pytest.approx([2000 * math.log(2)] * 2)
    assert big.growth_rates[0, -1].tolist() == pytest.approx([math.log(2)] * 2)


def test_recurrent_weight_sources() -> None:
    cell = ElmanCell(2, 3)
    assert recurrent_weight(cell) is not None and torch.equal(
        recurrent_weight(cell), cell.weight_hh
    )
    rnn = nn.RNN(2, 3)
    assert torch.equal(recurrent_weight(Map.from_torch(rnn)), rnn.weight_hh_l0)
    with pytest.raises(TypeError, match="f: expected an ElmanCell"):
        recurrent_weight(GRUCell(2, 3))
    with pytest.raises(ValueError, match=r"U: expected a square matrix \(N, N\), got \(2, 3\)"):
        spectrum(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="h0: expected finite values"):
        predict_state_norms(torch.eye(2), torch.tensor([1.0, math.nan]), 3)
