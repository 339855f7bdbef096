r"""Fixed points h* = f(h*, x*) of any map: closed form for linear maps, search otherwise.

The search (Sussillo & Barak 2013, made certain): from many seeds (states sampled from
trajectories plus noise, and points on segments between them, where saddles lie),

1. **descent** on the speed :math:`q(h) = \tfrac12\lVert f(h) - h\rVert^2` with a batched
   Adam in the model's dtype, one learning rate per seed (halved when q rises), each seed
   stopping on its own when q is below ``descent_tol``. It is short by default (30 steps): it
   pulls seeds off the noise, but long descent drives them into *slow points*, minima of q
   that are not zeros (measured on the trained flip-flop GRU fixture: of 512 seeds, 4 failed
   without descent, 6-7 after 30 steps, 74-103 after 100 and about 165 after 300);
2. seeds that landed within ``merge_tol`` of each other are merged (one candidate each);
3. **polishing** in float64: Newton steps on F(h) = f(h) - h with backtracking, and a
   Levenberg–Marquardt step where the Newton direction does not reduce ‖F‖, per seed until ‖F‖
   <= ``residual_tol``; a seed whose residual does not halve in 5 iterations is stopped (a
   slow point). Jacobians are reused while a seed moves less than 1% of the state scale, and
   come from the model's own dtype (float32) when ``fast_jacobians``. Large maps are polished
   in batches: after each batch, chord iterations with a known point's factorised Jacobian
   assign the remaining candidates that it attracts, so that only candidates leading
   somewhere new pay for Jacobians of their own;
4. a seed converged when its residual ‖f(h*) - h*‖ <= ``residual_tol`` *and* the Newton step
   from h* (the estimated distance to the exact zero) is <= ``step_tol``·max(1, ‖h*‖); the
   pair is the point's certificate. The step test rejects non-isolated zeros, where J - I is
   singular: a degenerate fixed point, or a floating-point artefact such as a GRU state far
   outside (-1, 1)^N whose update gate rounds to exactly 1, so that f(h) = h there;
5. converged points within ``unique_tol`` are one fixed point, with its float64 Jacobian's
   eigenvalues and stability label.

Newton converges to zeros of F whatever their stability, so saddles are found as readily as
attractors. Seeds that do not reach the residual threshold are reported in
:attr:`FixedPoints.failed`, never returned as fixed points.

Shapes: S seeds, M fixed points, N state size, I input size.

Example:
    >>> from rnnlab.dynamics import Map
    >>> fp = find_fixed_points(Map.linear([[0.8]], [1.0]))    # the lecture: h* = 5, stable
    >>> fp.points.item(), fp.labels
    (5.000000000000001, ('stable',))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .._checks import check_float, check_int
from ._checks import check_finite, check_states
from ._fixedpoint_results import FixedPoints, NonConverged, RawSearch, _assemble
from ._fixedpoint_search import search_zeros
from .maps import LinearMap, as_map, autonomous, simulate
from .stability import DEFAULT_STABILITY_TOL


@dataclass
class FixedPointSolver:
    """Settings of the fixed-point search (a strategy object; see the module docstring).

    Attributes:
        descent_iters: Adam iterations on q (0 skips the descent; see the module docstring).
        lr: Adam's initial learning rate (per seed; halved each time that seed's q rises).
        descent_tol: a seed stops descending once q < descent_tol.
        merge_tol: candidates closer than merge_tol·max(1, ‖h‖) are polished once (0: never).
        newton_iters: float64 Newton / Levenberg–Marquardt iterations.
        residual_tol: a seed converged when ‖f(h) - h‖₂ <= residual_tol (float64) ...
        step_tol: ... and the Newton step from h is <= step_tol·max(1, ‖h‖).
        unique_tol: converged points closer than unique_tol·max(1, ‖h‖) are one fixed point.
        stability_tol: the marginal band of the labels.
        max_norm: seeds whose state norm exceeds this are dropped as diverged.
        fast_jacobians: the Jacobians that choose the polishing steps come from the map in its
            own dtype (float32 models: float32, ~3x cheaper); residuals, the certificate and the
            eigenvalues are always float64.
    """

    descent_iters: int = 30
    lr: float = 0.05
    descent_tol: float = 1e-12
    merge_tol: float = 1e-4
    newton_iters: int = 40
    residual_tol: float = 1e-10
    step_tol: float = 1e-6
    unique_tol: float = 1e-6
    stability_tol: float = DEFAULT_STABILITY_TOL
    max_norm: float = 1e6
    fast_jacobians: bool = True

    def __post_init__(self) -> None:
        check_int(self.descent_iters, "descent_iters", low=0)
        check_int(self.newton_iters, "newton_iters", low=1)
        check_float(self.lr, "lr", low=0.0, low_open=True)
        check_float(self.descent_tol, "descent_tol", low=0.0)
        check_float(self.merge_tol, "merge_tol", low=0.0)
        check_float(self.residual_tol, "residual_tol", low=0.0, low_open=True)
        check_float(self.step_tol, "step_tol", low=0.0, low_open=True)
        check_float(self.unique_tol, "unique_tol", low=0.0, low_open=True)
        check_float(self.stability_tol, "stability_tol", low=0.0, high=1.0, high_open=True)
        check_float(self.max_norm, "max_norm", low=0.0, low_open=True)

    def solve(self, f: Any, seeds: Any, *, input: Any = None) -> FixedPoints:
        """Search from exactly these ``seeds`` (S, N) (no sampling, no noise).

        ``f`` is anything :func:`rnnlab.dynamics.as_map` accepts; an input-driven map is
        studied at ``input`` (default: absent, zeros).
        """
        m = autonomous(as_map(f), input)
        t = check_states(seeds, m.state_size, "seeds")
        if t.dim() != 2:
            raise ValueError(f"seeds: expected (S, {m.state_size}), got {tuple(t.shape)}")
        t = t.detach().to(m.dtype or torch.float64)
        raw = search_zeros(m, t, self)
        return _assemble(m, raw, self)


# --- seeds ---------------------------------------------------------------------------------------


def sample_seeds(
    states: Any,
    n_seeds: int,
    *,
    noise: float = 0.05,
    interpolate: float = 0.8,
    generator: torch.Generator | None = None,
    state_size: int | None = None,
) -> Tensor:
    """``n_seeds`` seeds from ``states`` (..., N) (e.g. trajectories (B, T, N)) plus noise.

    A fraction ``interpolate`` of the seeds are random points a·h_i + (1 - a)·h_j, a ~ U(0, 1),
    on segments between two drawn states: saddles sit between attractors (on the boundaries
    of their basins), where trajectories pass only briefly, so segment points seed them far
    better than noise around visited states. The others are drawn states. ``noise`` is the
    standard deviation of the Gaussian added to every seed, in state units.
    """
    n = check_int(n_seeds, "n_seeds", low=1)
    nz = check_float(noise, "noise", low=0.0)
    mix = check_float(interpolate, "interpolate", low=0.0, high=1.0)
    t = check_states(states, state_size if state_size is not None else _last_dim(states), "states")
    pool = t.reshape(-1, t.shape[-1])  # (P, N)
    P = pool.shape[0]
    if P >= n:
        pick = torch.randperm(P, generator=generator)[:n]
    else:
        pick = torch.cat([torch.arange(P), torch.randint(P, (n - P,), generator=generator)])
    seeds = pool[pick].clone()
    n_mix = int(round(mix * n))
    if n_mix and P > 1:
        other = pool[torch.randint(P, (n_mix,), generator=generator)]
        a = torch.rand(n_mix, 1, generator=generator, dtype=seeds.dtype)
        seeds[n - n_mix :] = a * seeds[n - n_mix :] + (1 - a) * other
    if nz > 0:
        seeds = seeds + nz * torch.randn(seeds.shape, generator=generator, dtype=seeds.dtype)
    return seeds


def _last_dim(states: Any) -> int:
    shape = getattr(states, "shape", None)
    if shape is None or len(shape) == 0:
        return 1
    return int(shape[-1])


def find_fixed_points(
    f: Any,
    states: Any = None,
    *,
    input: Any = None,
    n_seeds: int = 512,
    noise: float = 0.05,
    interpolate: float = 0.8,
    seed: int | None = 0,
    solver: FixedPointSolver | None = None,
    **settings: Any,
) -> FixedPoints:
    """All fixed points of ``f`` that the seeds lead to (closed form for linear maps).

    Args:
        f: anything :func:`rnnlab.dynamics.as_map` accepts. An input-driven map is studied with
            ``input`` held constant (default: absent input, zeros).
        states: states to seed from, (..., N) (e.g. hidden-state trajectories (B, T, N) of the
            network on its task); None: trajectories of the map itself from N(0, 1) states.
        input: the constant input x* (I,).
        n_seeds: seeds drawn from ``states``.
        noise: standard deviation of the Gaussian noise added to each seed.
        interpolate: fraction of seeds drawn on segments between two states (see
            :func:`sample_seeds`; they find the saddles between attractors).
        seed: seeds the random draws (None: torch's global generator).
        solver: a :class:`FixedPointSolver`; other keyword arguments override its settings.

    Returns:
        :class:`FixedPoints`.
    """
    m = autonomous(as_map(f), input)
    s = solver if solver is not None else FixedPointSolver()
    if settings:
        unknown = sorted(set(settings) - set(FixedPointSolver.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"settings: unknown solver setting(s) {unknown}; expected any of "
                f"{sorted(FixedPointSolver.__dataclass_fields__)}"
            )
        s = replace(s, **settings)
    if isinstance(m, LinearMap):
        return linear_fixed_points(m, stability_tol=s.stability_tol)
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(int(seed))
    dtype = m.dtype or torch.float64  # plain functions are searched in float64 throughout
    if states is None:
        h0 = torch.randn(
            check_int(n_seeds, "n_seeds", low=1), m.state_size, generator=gen, dtype=dtype
        )
        pool = simulate(m, h0, 30)
        pool = pool[torch.isfinite(pool).all(dim=-1)]
        if pool.numel() == 0:
            raise ValueError("states: every trajectory of f diverged; pass seed states explicitly")
    else:
        pool = check_states(states, m.state_size, "states").detach()
    seeds = sample_seeds(
        pool, n_seeds, noise=noise, interpolate=interpolate, generator=gen, state_size=m.state_size
    )
    return s.solve(m, seeds.to(dtype))


def linear_fixed_points(
    f: Any, b: Any = None, *, input: Any = None, stability_tol: float = DEFAULT_STABILITY_TOL
) -> FixedPoints:
    r"""The fixed point of h' = A h + c in closed form: h* = (I - A)^{-1} c, eigenvalues of A.

    Args:
        f: a :class:`LinearMap` (its input fixed or absent), or the matrix ``A`` with ``b``.
        input: a constant input for a LinearMap with ``B``.

    Raises:
        ValueError: I - A is singular (an eigenvalue is 1): no isolated fixed point.
    """
    m = f if isinstance(f, LinearMap) else LinearMap(f, b)
    if input is not None:
        m = m.with_input(input)  # type: ignore[assignment]
    assert isinstance(m, LinearMap)
    A = m.A.to(torch.float64)
    c = m.offset().to(torch.float64)
    N = A.shape[0]
    IA = torch.eye(N, dtype=torch.float64) - A
    sv = torch.linalg.svdvals(IA)
    if float(sv[-1]) <= N * torch.finfo(torch.float64).eps * max(float(sv[0]), 1.0):
        raise ValueError(
            "f: I - A is singular (A has the eigenvalue 1), so the fixed points are not isolated "
            f"(a continuum or none); smallest singular value of I - A: {float(sv[-1]):.3e}"
        )
    h = torch.linalg.solve(IA, c)
    check_finite(h, "h*")
    res = (A @ h + c - h).norm()[None]
    raw = RawSearch(
        points=h[None],
        residuals=res,
        newton_steps=torch.zeros(1, dtype=torch.float64),
        jacobians=A[None],
        seed_counts=torch.zeros(1, dtype=torch.long),
        failed=NonConverged(
            *(torch.zeros(0, N, dtype=torch.float64),) * 2,
            *(torch.zeros(0, dtype=torch.float64),) * 2,
        ),
        n_seeds=0,
    )
    s = FixedPointSolver(stability_tol=stability_tol)
    return _assemble(m, raw, s, method="closed form")


__all__ = [
    "FixedPointSolver",
    "FixedPoints",
    "NonConverged",
    "find_fixed_points",
    "linear_fixed_points",
    "sample_seeds",
]
