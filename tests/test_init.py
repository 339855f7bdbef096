"""Initialisers give the spectra they promise (checked with numpy's eigvals, independently)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab import GRUCell, LSTMCell, init


def np_radius(w: torch.Tensor) -> float:
    return float(np.abs(np.linalg.eigvals(w.detach().double().numpy())).max())


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.3])
def test_spectral_radius_scaling(radius):
    w = torch.randn(20, 20)
    init.spectral_radius_(w, radius)
    assert np_radius(w) == pytest.approx(radius, rel=1e-5)


def test_orthogonal_has_unit_eigenvalues_and_is_orthogonal():
    w = torch.empty(16, 16, dtype=torch.float64)
    init.orthogonal_(w, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(w.T @ w, np.eye(16), atol=1e-12)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(w.numpy())), 1.0, atol=1e-10)


def test_identity_irnn():
    w = torch.empty(5, 5)
    init.identity_(w, 0.9)
    np.testing.assert_allclose(w.numpy(), 0.9 * np.eye(5))


def test_recurrent_blocks_are_views_for_gated_cells():
    cell = LSTMCell(3, 4)
    for block in init.recurrent_blocks(cell):
        init.orthogonal_(block)
    for block in cell.weight_hh.detach().split(4):
        np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)


def test_chrono_and_forget_bias():
    g = torch.Generator().manual_seed(0)
    cell = LSTMCell(3, 50)
    init.chrono_(cell, t_max=100, generator=g)
    bf = (cell.bias_ih + cell.bias_hh)[50:100]
    bi = (cell.bias_ih + cell.bias_hh)[:50]
    assert bf.min() >= 0 and bf.max() <= math.log(99) + 1e-6
    torch.testing.assert_close(bi, -bf)
    gru = GRUCell(3, 50)
    init.chrono_(gru, t_max=20, generator=g)
    bz = (gru.bias_ih + gru.bias_hh)[50:100]
    assert bz.min() >= 0 and bz.max() <= math.log(19) + 1e-6
    init.forget_bias_(cell, 2.0)
    torch.testing.assert_close((cell.bias_ih + cell.bias_hh)[50:100], torch.full((50,), 2.0))


def test_initialiser_errors():
    with pytest.raises(
        ValueError, match=r"weight: expected a square matrix \(n, n\), got \(3, 4\)"
    ):
        init.spectral_radius_(torch.randn(3, 4), 1.0)
    with pytest.raises(ValueError, match="radius: expected a positive finite number, got -1"):
        init.spectral_radius_(torch.randn(3, 3), -1)
    with pytest.raises(ValueError, match="t_max"):
        init.chrono_(LSTMCell(2, 3), 1)
    with pytest.raises(ValueError, match="has no 'f' gate"):
        init.forget_bias_(LSTMCell(2, 3, variant="CIFG"))
