r"""What a trajectory of an autonomous map does in the long run: the attractor it reaches.

From a state h(0) (for a closed-loop model: the state ``generate`` reaches after priming), the
map is iterated N steps and the tail is classified:

* **fixed point**: h(t) converges to h*; h* is refined by one Newton-free check
  ‖f(h*) - h*‖ and its stability read from the eigenvalues of ∂f/∂h at h* (|λ| < 1: stable);
* **k-cycle**: the tail repeats with least period k > 1 (Floquet multipliers of the cycle);
* **quasi-periodic or chaotic**: neither; the largest Lyapunov exponent λ₁ tells them apart
  (λ₁ ≈ 0: a torus / quasi-periodic, λ₁ > 0: chaos, λ₁ < 0: still converging);
* **diverges**: the trajectory leaves every bound (inf/NaN).

Shapes: N state size, T steps.

Example:
    >>> from rnnlab.dynamics import Map
    >>> b = long_run_behaviour(Map.linear([[0.8]], [1.0]), torch.zeros(1))   # the lecture's
    >>> b.kind, round(b.point.item(), 6), b.stable                             # h(t+1)=0.8h+1
    ('fixed point', 5.0, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._checks import check_float, check_int
from ._checks import check_states
from .lyapunov import lyapunov_spectrum
from .maps import Map, as_map, autonomous, simulate
from .periodic import detect_period, monodromy
from .stability import sorted_eig

KINDS = ("fixed point", "k-cycle", "quasi-periodic or chaotic", "diverges")


@dataclass(frozen=True)
class Behaviour:
    """The long-run behaviour of one trajectory of an autonomous map.

    Attributes:
        kind: one of ``KINDS``.
        period: 1 for a fixed point, k for a k-cycle, 0 otherwise.
        point: h* (N,) for a fixed point, the cycle's first point for a cycle, else the last state.
        cycle: (k, N) the cycle's points (k = 1 for a fixed point), or None.
        multipliers: complex eigenvalues of ∂f/∂h at h* (or of the cycle's monodromy), by
            modulus; None when there is no fixed point or cycle.
        stable: all multipliers inside the unit circle (None without a fixed point or cycle).
        residual: ‖f^k(h*) - h*‖ for a fixed point or cycle (its certificate).
        lyapunov: largest Lyapunov exponent (nats/step) along the tail, with ``lyapunov_stderr``
            (over ``lyapunov_seeds`` nearby starts) and ``lyapunov_converged``; NaN if diverging.
        steps: N simulated steps; tol: the relative tolerance of the period detection.
    """

    kind: str
    period: int
    point: Tensor
    cycle: Tensor | None
    multipliers: Tensor | None
    stable: bool | None
    residual: float
    lyapunov: float
    lyapunov_stderr: float
    lyapunov_converged: bool
    steps: int
    tol: float
    trajectory: Tensor = field(repr=False)

    def describe(self) -> str:
        """One sentence for reports."""
        if self.kind == "fixed point":
            lab = "stable" if self.stable else "unstable"
            rho = float(self.multipliers.abs().max()) if self.multipliers is not None else math.nan
            return f"converges to a {lab} fixed point (spectral radius {rho:.4f})"
        if self.kind == "k-cycle":
            lab = "stable" if self.stable else "unstable"
            return f"settles on a {lab} {self.period}-cycle (no attracting fixed point)"
        if self.kind == "diverges":
            return "diverges (no attractor)"
        regime = (
            "chaotic"
            if self.lyapunov > 1e-2
            else ("quasi-periodic" if self.lyapunov > -1e-2 else "slowly converging")
        )
        return (
            f"no attracting fixed point or cycle: {regime} (largest Lyapunov exponent "
            f"{self.lyapunov:.4f} ± {self.lyapunov_stderr:.4f} nats/step)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "kind": self.kind,
            "period": self.period,
            "description": self.describe(),
            "point": self.point.tolist(),
            "cycle": None if self.cycle is None else self.cycle.tolist(),
            "multiplier_moduli": None
            if self.multipliers is None
            else self.multipliers.abs().tolist(),
            "stable": self.stable,
            "residual": self.residual,
            "largest_lyapunov_nats_per_step": self.lyapunov,
            "largest_lyapunov_stderr": self.lyapunov_stderr,
            "lyapunov_converged": self.lyapunov_converged,
            "steps": self.steps,
            "tol": self.tol,
        }


def long_run_behaviour(
    f: Any,
    h0: Any,
    steps: int = 2000,
    *,
    input: Any = None,
    max_period: int = 64,
    tol: float = 1e-6,
    lyapunov_steps: int = 1000,
    lyapunov_seeds: int = 8,
) -> Behaviour:
    """Iterate ``f`` from ``h0`` for ``steps`` steps and say what the trajectory settles on.

    Args:
        f: an autonomous map (or anything :func:`as_map` accepts, with ``input`` fixed).
        h0: the start (N,) or (1, N).
        steps: iterations (the second half is the tail that is classified).
        max_period: the longest cycle looked for.
        tol: relative tolerance of the period detection (float64 iterations).
        lyapunov_steps: steps of the Lyapunov estimate from the tail's end.
        lyapunov_seeds: starts for it (the end state and tiny perturbations of it), whose
            spread gives the standard error.

    Returns:
        :class:`Behaviour`.
    """
    m: Map = autonomous(as_map(f), input).to(dtype=torch.float64)
    n = check_int(steps, "steps", low=20)
    kmax = check_int(max_period, "max_period", low=1)
    tol = check_float(tol, "tol", low=0.0, low_open=True)
    h = check_states(h0, m.state_size, "h0").to(torch.float64).reshape(-1, m.state_size)
    if h.shape[0] != 1:
        raise ValueError(f"h0: expected one state (N,) or (1, N), got {tuple(h.shape)}")
    with torch.no_grad():
        traj = simulate(m, h, n)[0]  # (T+1, N)
    last = traj[-1]
    nan = math.nan
    if not bool(torch.isfinite(traj).all()):
        return Behaviour("diverges", 0, last, None, None, None, nan, nan, nan, False, n, tol, traj)
    p = int(detect_period(traj, max_period=min(kmax, n // 4), tol=tol))
    if p >= 1:
        cycle = traj[-p:]  # (k, N), in time order
        with torch.no_grad():
            back = simulate(m, cycle[:1], p)[0, -1]
        residual = float((back - cycle[0]).norm())
        mono = monodromy(m, cycle)
        w, _ = sorted_eig(mono)
        stable = bool(w.abs().max() < 1)
        kind = "fixed point" if p == 1 else "k-cycle"
        return Behaviour(
            kind, p, cycle[0], cycle, w, stable, residual, nan, nan, True, n, tol, traj
        )
    g = torch.Generator().manual_seed(0)
    starts = last + 1e-6 * torch.randn(lyapunov_seeds, m.state_size, generator=g, dtype=last.dtype)
    starts[0] = last
    ly = lyapunov_spectrum(m, starts, lyapunov_steps, k=1, warmup=10)
    return Behaviour(
        "quasi-periodic or chaotic",
        0,
        last,
        None,
        None,
        None,
        nan,
        float(ly.exponents[0]),
        float(ly.stderr[0]),
        bool(ly.converged),
        n,
        tol,
        traj,
    )


__all__ = ["KINDS", "Behaviour", "long_run_behaviour"]
