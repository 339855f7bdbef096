"""Lyapunov spectra by the QR method: logistic (ln 2), Hénon (0.42, sum ln 0.3), linear maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.cells import ElmanCell
from rnnlab.dynamics import Map, lyapunov_spectrum

D = torch.float64


def henon(h: torch.Tensor, a: float = 1.4, b: float = 0.3) -> torch.Tensor:
    return torch.stack([1 - a * h[:, 0] ** 2 + h[:, 1], b * h[:, 0]], dim=1)


def test_logistic_at_r4_has_exponent_ln2() -> None:
    f = Map.from_function(lambda h: 4 * h * (1 - h), 1)
    h0 = torch.rand(32, 1, dtype=D, generator=torch.Generator().manual_seed(0))
    L = lyapunov_spectrum(f, h0, 3000)
    assert L.maximal == pytest.approx(math.log(2), abs=0.01)
    assert L.converged and float(L.stderr[0]) < 0.01
    bits = lyapunov_spectrum(f, h0, 3000, unit="bits")
    assert bits.maximal == pytest.approx(1.0, abs=0.015)
    assert "converged" in L.report()


def test_henon_largest_exponent_and_sum() -> None:
    f = Map.from_function(henon, 2)
    h0 = 0.1 * torch.rand(32, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    L = lyapunov_spectrum(f, h0, 3000)
    assert L.maximal == pytest.approx(0.42, abs=0.01)  # 0.4192 (Sprott, Chaos and Time-Series)
    # the Jacobian's determinant is -b at every point: the sum is exactly ln 0.3
    assert L.sum == pytest.approx(math.log(0.3), abs=1e-10)
    assert 1.2 < L.kaplan_yorke_dimension < 1.3  # 1.26


def test_linear_map_exponents_are_log_moduli_of_eigenvalues() -> None:
    A = torch.tensor([[0.9, 0.5], [0.0, 0.5]], dtype=D)  # non-normal, eigenvalues 0.9 and 0.5
    L = lyapunov_spectrum(Map.linear(A), torch.ones(1, 2, dtype=D), 400, warmup=0)
    assert L.exponents.tolist() == pytest.approx([math.log(0.9), math.log(0.5)], abs=5e-3)
    assert L.converged


def test_input_driven_linear_rnn_matches_weight_eigenvalues() -> None:
    torch.manual_seed(0)
    cell = ElmanCell(2, 3, activation="identity").double()
    U = torch.tensor([[0.6, 0.2, 0.0], [0.2, -0.7, 0.1], [0.0, 0.1, 0.3]], dtype=D)
    with torch.no_grad():
        cell.weight_hh.copy_(U)
    x = torch.randn(600, 2, dtype=D)
    L = lyapunov_spectrum(cell, torch.zeros(2, 3, dtype=D), inputs=x, warmup=100)
    ev = np.sort(np.log(np.abs(np.linalg.eigvalsh(U.numpy()))))[::-1]
    assert L.steps == 500
    assert L.exponents.tolist() == pytest.approx(ev.tolist(), abs=1e-2)


def test_input_driven_tanh_rnn_agrees_with_an_independent_qr_loop() -> None:
    torch.manual_seed(1)
    cell = ElmanCell(2, 4).double()
    with torch.no_grad():
        cell.weight_hh.mul_(3.0)
    x = torch.randn(150, 2, dtype=D)
    h0 = torch.zeros(1, 4, dtype=D)
    L = lyapunov_spectrum(cell, h0, inputs=x, warmup=50)
    # independent: autograd.functional Jacobians and numpy QR
    h, Q, acc = h0[0], np.eye(4), np.zeros(4)
    for t in range(150):
        J = torch.autograd.functional.jacobian(
            lambda v, t=t: cell(x[t : t + 1], (v[None],))[1].h[0], h
        )
        Q, R = np.linalg.qr(J.numpy() @ Q)
        if t >= 50:
            acc += np.log(np.abs(np.diag(R)))
        with torch.no_grad():
            h = cell(x[t : t + 1], (h[None],))[1].h[0]
    assert L.exponents.numpy() == pytest.approx(acc / 100, abs=1e-9)


def test_bad_arguments() -> None:
    f = Map.from_function(henon, 2)
    with pytest.raises(ValueError, match=r"unit: expected one of 'nats', 'bits', got 'dB'"):
        lyapunov_spectrum(f, torch.zeros(1, 2), 10, unit="dB")
    with pytest.raises(ValueError, match="h0: a trajectory diverged"):
        lyapunov_spectrum(f, torch.full((1, 2), 5.0, dtype=D), 200, warmup=0)
    with pytest.raises(ValueError, match="k: expected at most the state size 2, got 3"):
        lyapunov_spectrum(f, torch.zeros(1, 2), 10, k=3)
    with pytest.raises(ValueError, match=r"tol: expected 0.0 < tol, got 0.0"):
        lyapunov_spectrum(f, torch.zeros(1, 2), 10, tol=0)
