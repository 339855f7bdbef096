r"""Periodic points: orbits h, f(h), ..., f^{k-1}(h) with f^k(h) = h, and their stability.

A period-k orbit is found as a fixed point of the k-fold composition F^k with the fixed-point
search (:class:`rnnlab.dynamics.FixedPointSolver`); its stability comes from the *monodromy*
matrix, the product of the Jacobians along the orbit,

.. math:: M = J(h_{k-1}) \cdots J(h_1) J(h_0), \qquad J = \partial f / \partial h,

whose eigenvalues (Floquet multipliers) play the role of a fixed point's eigenvalues: the orbit
is stable when all lie inside the unit circle. The lecture defines periodic points as
h*(t + T) = h*(t).

Shapes: M orbits, k period, N state size, B batch, T time.

Example:
    >>> from rnnlab.dynamics import Map
    >>> logistic = Map.from_function(lambda h: 3.2 * h * (1 - h), state_size=1)
    >>> orbits = find_periodic_orbits(logistic, 2, torch.rand(64, 1))
    >>> [round(v, 4) for v in orbits.orbits[0, :, 0].tolist()], orbits.labels
    ([0.513, 0.7995], ('stable',))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .._checks import check_float, check_int
from ._checks import check_states
from ._fixedpoint_search import search_zeros
from .fixedpoints import FixedPointSolver, NonConverged, sample_seeds
from .maps import as_map, autonomous, simulate
from .stability import DEFAULT_STABILITY_TOL, classify, sorted_eig


@dataclass(frozen=True)
class PeriodicOrbits:
    """Period-k orbits of a map with certificates and Floquet stability.

    Attributes:
        period: k.
        orbits: (M, k, N) float64; orbit m visits ``orbits[m, 0]``, ``orbits[m, 1]``, ...; it
            starts at its point with the smallest first coordinate.
        residuals: (M,) ‖F^k(h) - h‖ at the first point.
        newton_steps: (M,) the Newton step length from it (certificate).
        monodromy: (M, N, N) the product of Jacobians along the orbit.
        multipliers: (M, N) complex eigenvalues of the monodromy, by modulus, largest first.
        labels: "stable" / "marginal" / "unstable".
        n_unstable: (M,) multipliers with modulus > 1 + tol.
        seed_counts: (M,) seeds that converged onto each orbit.
        failed: seeds that did not converge.
        tol: the stability tolerance.
    """

    period: int
    orbits: Tensor
    residuals: Tensor
    newton_steps: Tensor
    monodromy: Tensor
    multipliers: Tensor
    labels: tuple[str, ...]
    n_unstable: Tensor
    seed_counts: Tensor
    failed: NonConverged
    input: Tensor | None = None
    tol: float = DEFAULT_STABILITY_TOL

    def __len__(self) -> int:
        return int(self.orbits.shape[0])

    @property
    def points(self) -> Tensor:
        """All periodic points, (M·k, N)."""
        return self.orbits.reshape(-1, self.orbits.shape[-1])

    def __repr__(self) -> str:
        return (
            f"PeriodicOrbits(period {self.period}: {len(self)} orbits, labels {list(self.labels)}; "
            f"{len(self.failed)} seeds did not converge)"
        )


def monodromy(f: Any, orbit: Any, *, input: Any = None) -> Tensor:
    """The product of Jacobians J(h_{k-1}) ... J(h_0) along an orbit (k, N) or orbits (M, k, N)."""
    m = autonomous(as_map(f), input).to(dtype=torch.float64)
    o = check_states(orbit, m.state_size, "orbit").to(torch.float64)
    single = o.dim() == 2
    o = o[None] if single else o
    if o.dim() != 3:
        raise ValueError(f"orbit: expected (k, N) or (M, k, N), got {tuple(o.shape)}")
    M, k, N = o.shape
    with torch.no_grad():
        J = m.jacobian(o.reshape(M * k, N)).reshape(M, k, N, N)
    P = torch.eye(N, dtype=torch.float64).expand(M, N, N).clone()
    for j in range(k):
        P = J[:, j] @ P
    return P[0] if single else P


def find_periodic_orbits(
    f: Any,
    period: int,
    states: Any = None,
    *,
    input: Any = None,
    n_seeds: int = 512,
    noise: float = 0.05,
    interpolate: float = 0.8,
    seed: int | None = 0,
    prime: bool = True,
    solver: FixedPointSolver | None = None,
    **settings: Any,
) -> PeriodicOrbits:
    """Orbits of period ``period`` (fixed points of F^k), their multipliers and stability.

    Args:
        f: anything :func:`rnnlab.dynamics.as_map` accepts (input fixed to ``input`` or absent).
        period: k >= 1.
        states: seed states (..., N); None: trajectories of the map from N(0, 1) states.
        n_seeds, noise, interpolate, seed: the seeds, as for
            :func:`rnnlab.dynamics.find_fixed_points`.
        prime: keep only orbits whose least period is k (drop fixed points when k = 2, ...).
        solver, settings: as for :func:`rnnlab.dynamics.find_fixed_points`.
    """
    k = check_int(period, "period", low=1)
    m = autonomous(as_map(f), input)
    s = solver if solver is not None else FixedPointSolver()
    if settings:
        s = replace(s, **settings)
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    dtype = m.dtype or torch.float64
    if states is None:
        h0 = torch.randn(
            check_int(n_seeds, "n_seeds", low=1), m.state_size, generator=gen, dtype=dtype
        )
        pool = simulate(m, h0, 30 + k)
        pool = pool[torch.isfinite(pool).all(dim=-1)]
    else:
        pool = check_states(states, m.state_size, "states").detach()
    seeds = sample_seeds(
        pool, n_seeds, noise=noise, interpolate=interpolate, generator=gen, state_size=m.state_size
    )
    raw = search_zeros(m.iterate(k), seeds.to(dtype), s)

    m64 = m.to(dtype=torch.float64)
    N = m.state_size
    kept: list[Tensor] = []
    kept_idx: list[int] = []
    counts: list[int] = []
    with torch.no_grad():
        for i in range(raw.points.shape[0]):
            h = raw.points[i : i + 1]
            orbit = [h]
            for _ in range(k - 1):
                orbit.append(m64.step(orbit[-1]))
            o = torch.cat(orbit)  # (k, N)
            scale = max(1.0, float(o.norm(dim=1).max()))
            # least period: the first p with f^p(h) = h
            least = next(
                (
                    p
                    for p in range(1, k)
                    if k % p == 0 and float((o[p] - o[0]).norm()) <= s.unique_tol * scale
                ),
                k,
            )
            if prime and least < k:
                continue
            dup = None
            for j, other in enumerate(kept):
                if float(torch.cdist(o[:1], other).min()) <= s.unique_tol * scale:
                    dup = j
                    break
            if dup is not None:
                counts[dup] += int(raw.seed_counts[i])
                continue
            start = int(torch.argmin(o[:, 0]))
            kept.append(torch.roll(o, -start, dims=0))
            kept_idx.append(i)
            counts.append(int(raw.seed_counts[i]))
    if kept:
        orbits = torch.stack(kept)  # (M, k, N)
        mono = monodromy(m64, orbits)
        w, _ = sorted_eig(mono)
        labels, n_unstable = classify(w, s.stability_tol)
        idx = torch.as_tensor(kept_idx, dtype=torch.long)
        res, steps = raw.residuals[idx], raw.newton_steps[idx]
    else:
        orbits = torch.zeros(0, k, N, dtype=torch.float64)
        mono = torch.zeros(0, N, N, dtype=torch.float64)
        w = torch.zeros(0, N, dtype=torch.complex128)
        labels, n_unstable = (), torch.zeros(0, dtype=torch.long)
        res = steps = torch.zeros(0, dtype=torch.float64)
    return PeriodicOrbits(
        period=k,
        orbits=orbits,
        residuals=res,
        newton_steps=steps,
        monodromy=mono,
        multipliers=w,
        labels=labels,
        n_unstable=n_unstable,
        seed_counts=torch.as_tensor(counts, dtype=torch.long),
        failed=raw.failed,
        input=None if m.input is None else m.input.to(torch.float64),
        tol=s.stability_tol,
    )


def detect_period(
    trajectory: Any,
    *,
    max_period: int | None = None,
    tol: float = 1e-6,
    window: int | None = None,
) -> Tensor:
    """The period of the tail of each trajectory, 0 if none up to ``max_period``.

    Period p is found when ‖h(t + p) - h(t)‖ <= tol·max(1, ‖h‖) for every t of the last
    ``window`` steps (default: the second half); the smallest such p is returned (1: a fixed
    point). Chaotic, quasi-periodic, still-transient or diverging tails give 0.

    Args:
        trajectory: (T,) for a 1-D map, (T, N), or (B, T, N).
        max_period: the largest period tried (default window // 2).
        tol: relative tolerance, > 0.
        window: number of final steps examined.

    Returns:
        (B,) int64 periods (a 0-d tensor for one trajectory).
    """
    t = torch.as_tensor(trajectory)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    single = t.dim() <= 2
    if t.dim() == 1:
        t = t[:, None]
    if single:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"trajectory: expected (T,), (T, N) or (B, T, N), got {tuple(t.shape)}")
    tol = check_float(tol, "tol", low=0.0, low_open=True)
    T = t.shape[1]
    w = T // 2 if window is None else check_int(window, "window", low=2)
    if w > T:
        raise ValueError(f"window: expected at most the trajectory length {T}, got {w}")
    pmax = max(1, w // 2) if max_period is None else check_int(max_period, "max_period", low=1)
    if pmax >= w:
        raise ValueError(f"max_period: expected < window = {w}, got {pmax}")
    tail = t[:, T - w :].to(torch.float64)  # (B, w, N)
    scale = tail.norm(dim=-1).amax(dim=1).clamp_min(1.0)  # (B,)
    finite = torch.isfinite(tail).all(dim=-1).all(dim=-1)
    out = torch.zeros(t.shape[0], dtype=torch.long)
    for p in range(pmax, 0, -1):  # smallest p wins: overwrite downwards
        d = (tail[:, p:] - tail[:, :-p]).norm(dim=-1).amax(dim=1)  # (B,)
        out = torch.where((d <= tol * scale) & finite, torch.full_like(out, p), out)
    return out[0] if single else out


__all__ = ["PeriodicOrbits", "detect_period", "find_periodic_orbits", "monodromy"]
