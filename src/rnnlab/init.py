"""Initialisers tied to the lecture's eigenvalue story.

With identity σ_h and b = 0, h(t) = U^t h(0): eigenvalues of U away from modulus 1 make states
(and, through Uᵀ, gradients) vanish or explode. These initialisers set U's spectrum on purpose.
For gated cells, functions taking a cell act on each gate block of ``weight_hh`` separately.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_float
from .cells.base import Cell

__all__ = [
    "chrono_",
    "forget_bias_",
    "identity_",
    "orthogonal_",
    "recurrent_blocks",
    "spectral_radius",
    "spectral_radius_",
]


def _check_square(weight: Tensor, argument: str = "weight") -> None:
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{argument}: expected a square matrix (n, n), got {got}")


def spectral_radius(weight: Tensor) -> float:
    """max |λ| over the eigenvalues of a square matrix (computed in float64)."""
    _check_square(weight)
    return float(torch.linalg.eigvals(weight.detach().double().cpu()).abs().max())


@torch.no_grad()
def orthogonal_(
    weight: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """A random orthogonal U (all |λ| = 1, scaled by ``gain``; Saxe et al. 2014)."""
    _check_square(weight)
    n = weight.shape[0]
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # uniform (Haar) distribution
    weight.copy_(gain * q)
    return weight


@torch.no_grad()
def identity_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """U = scale · I (IRNN, Le, Jaitly & Hinton 2015: ReLU units, identity U, zero bias)."""
    _check_square(weight)
    weight.copy_(scale * torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device))
    return weight


@torch.no_grad()
def spectral_radius_(weight: Tensor, radius: float) -> Tensor:
    """Scale ``weight`` so that its spectral radius is exactly ``radius`` (> 0)."""
    _check_square(weight)
    check_float(radius, "radius", low=0.0, low_open=True, what="a positive finite number")
    rho = spectral_radius(weight)
    if rho == 0.0:
        raise ValueError("weight: has spectral radius 0 (nilpotent); it cannot be rescaled")
    weight.mul_(radius / rho)
    return weight


def recurrent_blocks(cell: Cell) -> list[Tensor]:
    """The square recurrent blocks of a cell's ``weight_hh`` (one per gate block), as views."""
    w = getattr(cell, "weight_hh", None)
    if not isinstance(w, Tensor):
        raise TypeError(f"cell: expected a cell with weight_hh, got {type(cell).__name__}")
    n = w.shape[1]
    if w.shape[0] % n != 0:
        raise ValueError(f"cell: weight_hh {tuple(w.shape)} does not split into square blocks")
    return list(w.data.split(n, dim=0))


def _gate_bias_slices(cell: Cell, gate: str) -> tuple[Tensor, Tensor]:
    blocks = getattr(cell, "blocks", None)
    if blocks is None:  # GRU: r, z, n
        blocks = ("r", "z", "n")
    if gate not in blocks:
        raise ValueError(
            f"cell: {type(cell).__name__} has no {gate!r} gate (blocks {tuple(blocks)})"
        )
    b_ih, b_hh = getattr(cell, "bias_ih", None), getattr(cell, "bias_hh", None)
    if b_ih is None or b_hh is None:
        raise ValueError(f"cell: {type(cell).__name__} has no biases (bias=False)")
    H = cell.hidden_size
    k = list(blocks).index(gate)
    return b_ih.data[k * H : (k + 1) * H], b_hh.data[k * H : (k + 1) * H]


@torch.no_grad()
def forget_bias_(cell: Cell, value: float = 1.0) -> Cell:
    """Set an LSTM's forget-gate bias b_f to ``value`` (b_ih's block; b_hh's block to 0)."""
    b_ih, b_hh = _gate_bias_slices(cell, "f")
    b_ih.fill_(value)
    b_hh.zero_()
    return cell


@torch.no_grad()
def chrono_(cell: Cell, t_max: float, generator: torch.Generator | None = None) -> Cell:
    """Chrono initialisation (Tallec & Ollivier 2018) for an expected range of time scales.

    LSTM: b_f = log(u), u ~ U[1, t_max - 1], and b_i = -b_f. GRU (h = z h + (1-z) h̃, z keeps
    the memory): b_z = log(u). The forget/keep gate then starts with time constants between 1 and
    t_max steps.
    """
    if not (isinstance(t_max, (int, float)) and t_max > 2):
        raise ValueError(f"t_max: expected a number > 2, got {t_max!r}")
    H = cell.hidden_size
    u = torch.empty(H, dtype=torch.float64).uniform_(1.0, t_max - 1.0, generator=generator)
    b = torch.log(u)
    if hasattr(cell, "blocks"):
        b_ih, b_hh = _gate_bias_slices(cell, "f")
        b_ih.copy_(b)
        b_hh.zero_()
        if "i" in cell.blocks:  # type: ignore[operator]
            i_ih, i_hh = _gate_bias_slices(cell, "i")
            i_ih.copy_(-b)
            i_hh.zero_()
    else:
        z_ih, z_hh = _gate_bias_slices(cell, "z")
        z_ih.copy_(b)
        z_hh.zero_()
    return cell
