"""The results of a fixed-point search and their classification: :class:`FixedPoints` (points,
certificates, eigenvalues, stability labels), :class:`NonConverged`, and the step that sorts and
labels raw zeros (split from fixedpoints.py by job, issue 16; the search itself is in
_fixedpoint_search.py, the public entry points in fixedpoints.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .maps import Map
from .stability import DEFAULT_STABILITY_TOL, classify, sorted_eig, time_constants

if TYPE_CHECKING:
    from .fixedpoints import FixedPointSolver


@dataclass(frozen=True)
class NonConverged:
    """Seeds whose search did not reach the residual threshold (never fixed points).

    Attributes:
        seeds: (F, N) where they started.
        states: (F, N) where they ended.
        residuals: (F,) ‖f(h) - h‖ there (inf for a seed that diverged).
        newton_steps: (F,) the Newton step length there (inf where J - I is singular).
    """

    seeds: Tensor
    states: Tensor
    residuals: Tensor
    newton_steps: Tensor

    def __len__(self) -> int:
        return int(self.seeds.shape[0])


@dataclass(frozen=True)
class FixedPoints:
    """Fixed points of a map with certificates and linear stability.

    Attributes:
        points: (M, N) float64, sorted by number of unstable directions, then spectral radius.
        residuals: (M,) ‖f(h*) - h*‖₂ in float64.
        newton_steps: (M,) ‖Δ‖ of the Newton step from h* (0 for the closed form).
        jacobians: (M, N, N) ∂f/∂h at h*.
        eigenvalues: (M, N) complex, by modulus, largest first.
        labels: "stable" / "marginal" / "unstable" per point.
        n_unstable: (M,) eigenvalues with |λ| > 1 + tol.
        seed_counts: (M,) seeds that converged to each point.
        failed: the seeds that did not converge.
        input: the constant input x* (I,), or None for a map without input.
        tol: the stability tolerance of the labels.
        residual_tol: the residual threshold.
        n_seeds: seeds used (0 for the closed form).
    """

    points: Tensor
    residuals: Tensor
    newton_steps: Tensor
    jacobians: Tensor
    eigenvalues: Tensor
    labels: tuple[str, ...]
    n_unstable: Tensor
    seed_counts: Tensor
    failed: NonConverged
    input: Tensor | None = None
    tol: float = DEFAULT_STABILITY_TOL
    residual_tol: float = 0.0
    n_seeds: int = 0
    method: str = "search"
    _extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def spectral_radius(self) -> Tensor:
        """(M,) max |λ| of each Jacobian."""
        if len(self) == 0:
            return self.residuals.new_zeros(0)
        return self.eigenvalues.abs().max(dim=-1).values

    @property
    def stable(self) -> Tensor:
        """(M,) bool: label "stable"."""
        return torch.tensor([lab == "stable" for lab in self.labels], dtype=torch.bool)

    @property
    def time_constants(self) -> Tensor:
        """(M, N) -1/ln|λ| per eigenvalue, in steps."""
        return time_constants(self.eigenvalues)

    @property
    def multipliers(self) -> Tensor:
        """(M,) f'(h*) of a 1-D map."""
        if self.points.shape[-1] != 1:
            raise ValueError(
                f"multipliers: defined for 1-D maps, got state size {self.points.shape[-1]}"
            )
        return self.jacobians[:, 0, 0]

    def counts(self) -> dict[int, int]:
        """Number of fixed points by number of unstable directions, e.g. {0: 8, 1: 12, ...}."""
        out: dict[int, int] = {}
        for k in self.n_unstable.tolist():
            out[int(k)] = out.get(int(k), 0) + 1
        return dict(sorted(out.items()))

    def eigenvectors(self) -> Tensor:
        """(M, N, N) complex eigenvectors (columns), in the order of :attr:`eigenvalues`."""
        _, V = sorted_eig(self.jacobians, vectors=True)
        assert V is not None
        return V

    def select(self, mask: Tensor) -> FixedPoints:
        """The points where ``mask`` (M,) is true (or the given indices)."""
        idx = torch.arange(len(self))[mask] if mask.dtype == torch.bool else mask
        li = idx.tolist()
        return replace(
            self,
            points=self.points[idx],
            residuals=self.residuals[idx],
            newton_steps=self.newton_steps[idx],
            jacobians=self.jacobians[idx],
            eigenvalues=self.eigenvalues[idx],
            labels=tuple(self.labels[i] for i in li),
            n_unstable=self.n_unstable[idx],
            seed_counts=self.seed_counts[idx],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (points, certificates, eigenvalue moduli, labels)."""
        return {
            "points": self.points.tolist(),
            "residuals": self.residuals.tolist(),
            "newton_steps": self.newton_steps.tolist(),
            "spectral_radius": self.spectral_radius.tolist(),
            "eigenvalues_real": self.eigenvalues.real.tolist(),
            "eigenvalues_imag": self.eigenvalues.imag.tolist(),
            "labels": list(self.labels),
            "n_unstable": self.n_unstable.tolist(),
            "seed_counts": self.seed_counts.tolist(),
            "n_failed": len(self.failed),
            "n_seeds": self.n_seeds,
            "input": None if self.input is None else self.input.tolist(),
            "tol": self.tol,
            "residual_tol": self.residual_tol,
            "method": self.method,
        }

    def __repr__(self) -> str:
        by = ", ".join(f"{v} with {k} unstable" for k, v in self.counts().items())
        worst = float(self.residuals.max()) if len(self) else 0.0
        return (
            f"FixedPoints({len(self)} points: {by or 'none'}; max residual {worst:.1e}; "
            f"{len(self.failed)} of {self.n_seeds} seeds did not converge)"
        )


@dataclass
class RawSearch:
    """Internal result of :func:`search_zeros` (float64 tensors)."""

    points: Tensor  # (M, N) unique converged points
    residuals: Tensor  # (M,)
    newton_steps: Tensor  # (M,)
    jacobians: Tensor  # (M, N, N) of the searched map
    seed_counts: Tensor  # (M,)
    failed: NonConverged
    n_seeds: int


def _assemble(f: Map, raw: RawSearch, s: FixedPointSolver, method: str = "search") -> FixedPoints:
    M, N = raw.points.shape
    if M:
        w, _ = sorted_eig(raw.jacobians)
        labels, n_unstable = classify(w, s.stability_tol)
        rho = w.abs().max(dim=-1).values
        key = sorted(
            range(M), key=lambda i: (int(n_unstable[i]), float(rho[i]), raw.points[i].tolist())
        )
        order = torch.as_tensor(key, dtype=torch.long)
    else:
        w = torch.zeros(0, N, dtype=torch.complex128)
        labels, n_unstable = (), torch.zeros(0, dtype=torch.long)
        order = torch.zeros(0, dtype=torch.long)
    li = order.tolist()
    return FixedPoints(
        points=raw.points[order],
        residuals=raw.residuals[order],
        newton_steps=raw.newton_steps[order],
        jacobians=raw.jacobians[order],
        eigenvalues=w[order],
        labels=tuple(labels[i] for i in li),
        n_unstable=n_unstable[order],
        seed_counts=raw.seed_counts[order],
        failed=raw.failed,
        input=None if f.input is None else f.input.to(torch.float64),
        tol=s.stability_tol,
        residual_tol=s.residual_tol,
        n_seeds=raw.n_seeds,
        method=method,
    )
