r"""Fixed points as a constant input varies: a bifurcation sweep by pseudo-arclength continuation.

The input moves along the segment x(s) = x₀ + s (x₁ - x₀), s ∈ [0, 1]. Branches of fixed points
G(h, s) = f(h, x(s)) - h = 0 are traced in the (h, s) space by pseudo-arclength continuation
(Keller 1977): a tangent predictor and a Newton corrector on the bordered system

.. math:: \begin{pmatrix} J - I & \partial_s f \\ \tau^\top \end{pmatrix} \Delta u
          = -\begin{pmatrix} G \\ \tau^\top (u - u_{pred}) \end{pmatrix},

so a branch is followed *around* folds, where it turns back in s (a natural-parameter sweep
would lose it there). Between consecutive points the sweep flags

* **fold** (saddle-node): the s-component of the tangent changes sign; an eigenvalue of J
  crosses +1 and two fixed points meet and vanish;
* **period doubling** (flip): det(J + I) changes sign; a real eigenvalue crosses -1 and a period-2
  orbit is born (the logistic map at r = 3);
* **Neimark–Sacker**: a complex pair crosses the unit circle;
* **branch point**: det(J - I) changes sign without a fold (transcritical, pitchfork),

and refines each location by bisection along the branch.

Branches start from the fixed points found at both ends (:func:`find_fixed_points`); a start
lying on an already traced branch is skipped. Isolas touching neither end are not found.

Shapes: P points on a branch, N state size, I input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_float, check_int
from ._checks import as_tensor, check_finite
from .fixedpoints import FixedPointSolver, find_fixed_points
from .maps import Map, as_map
from .stability import DEFAULT_STABILITY_TOL, classify, sorted_eig

FOLD, PERIOD_DOUBLING, NEIMARK_SACKER, BRANCH_POINT = (
    "fold",
    "period_doubling",
    "neimark_sacker",
    "branch_point",
)


@dataclass(frozen=True)
class Bifurcation:
    """One detected bifurcation.

    Attributes:
        kind: "fold", "period_doubling", "neimark_sacker" or "branch_point".
        parameter: s at the event.
        input: x(s) (I,).
        point: the fixed point there (N,).
        eigenvalue: the critical eigenvalue (nearest +1, -1 or the unit circle).
        branch: index into :attr:`Continuation.branches`.
    """

    kind: str
    parameter: float
    input: Tensor
    point: Tensor
    eigenvalue: complex
    branch: int


@dataclass(frozen=True)
class Branch:
    """A traced branch of fixed points, in the order of tracing.

    Attributes:
        parameters: (P,) s.
        inputs: (P, I) x(s).
        points: (P, N).
        eigenvalues: (P, N) of J, by modulus.
        labels: stability label per point.
        n_unstable: (P,).
        end: why tracing stopped: "boundary", "lost" (the corrector failed at the minimum
            step), "max_points" or "diverged".
    """

    parameters: Tensor
    inputs: Tensor
    points: Tensor
    eigenvalues: Tensor
    labels: tuple[str, ...]
    n_unstable: Tensor
    end: str

    def __len__(self) -> int:
        return int(self.parameters.shape[0])


@dataclass(frozen=True)
class Continuation:
    """Result of :func:`continue_fixed_points`."""

    start: Tensor
    end: Tensor
    branches: list[Branch]
    bifurcations: list[Bifurcation]

    def events(self, kind: str) -> list[Bifurcation]:
        """The bifurcations of one kind, by parameter."""
        return sorted((b for b in self.bifurcations if b.kind == kind), key=lambda b: b.parameter)

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for b in self.bifurcations:
            kinds[b.kind] = kinds.get(b.kind, 0) + 1
        return f"Continuation({len(self.branches)} branches, bifurcations {kinds or 'none'})"


class _System:
    """G(h, s) = f(h, x0 + s d) - h in float64, with its derivatives."""

    def __init__(self, m: Map, x0: Tensor, d: Tensor) -> None:
        self.m, self.x0, self.d = m, x0, d
        self.N = m.state_size
        self.eye = torch.eye(self.N, dtype=torch.float64)

    def x(self, s: float) -> Tensor:
        return self.x0 + s * self.d

    def G(self, u: Tensor) -> Tensor:
        h, s = u[: self.N], float(u[self.N])
        with torch.no_grad():
            return self.m.step(h[None], self.x(s)[None])[0] - h

    def jac(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """(J of f, the (N, N+1) extended Jacobian [J - I, ∂f/∂s])."""
        h, s = u[: self.N][None], float(u[self.N])
        x = self.x(s)[None]
        with torch.no_grad():
            J = self.m.jacobian(h, x)[0]
            Jx = self.m.input_jacobian(h, x)[0]
        return J, torch.cat([J - self.eye, (Jx @ self.d)[:, None]], dim=1)

    def tangent(self, E: Tensor, prev: Tensor) -> Tensor:
        A = torch.cat([E, prev[None]], dim=0)
        rhs = torch.zeros(self.N + 1, dtype=torch.float64)
        rhs[-1] = 1.0
        t, info = torch.linalg.solve_ex(A, rhs)
        if int(info) != 0 or not bool(torch.isfinite(t).all()):
            t = torch.linalg.svd(E)[2][-1]
        t = t / t.norm()
        return t if float(t @ prev) >= 0 else -t

    def correct(self, u_pred: Tensor, tau: Tensor, tol: float, iters: int = 12) -> Tensor | None:
        u = u_pred.clone()
        for _ in range(iters):
            G = self.G(u)
            if not bool(torch.isfinite(G).all()):
                return None
            _, E = self.jac(u)
            A = torch.cat([E, tau[None]], dim=0)
            rhs = -torch.cat([G, (tau @ (u - u_pred))[None]])
            du, info = torch.linalg.solve_ex(A, rhs)
            if int(info) != 0:
                return None
            u = u + du
            if float(self.G(u).norm()) <= tol and float(du.norm()) <= 1e-8 * max(
                1.0, float(u.norm())
            ):
                return u
        return u if float(self.G(u).norm()) <= tol else None

    def natural(self, h: Tensor, s: float, tol: float, iters: int = 30) -> Tensor | None:
        """Newton at fixed s."""
        h = h.clone()
        x = self.x(s)[None]
        for _ in range(iters):
            with torch.no_grad():
                F = self.m.step(h[None], x)[0] - h
                if float(F.norm()) <= tol:
                    return h
                J = self.m.jacobian(h[None], x)[0]
            dh, info = torch.linalg.solve_ex(J - self.eye, -F)
            if int(info) != 0 or not bool(torch.isfinite(dh).all()):
                return None
            h = h + dh
        with torch.no_grad():
            ok = float((self.m.step(h[None], x)[0] - h).norm()) <= tol
        return h if ok else None


def _tests(J: Tensor, E_tau_s: float, eye: Tensor) -> tuple[float, int, int, int]:
    w = torch.linalg.eigvals(J)
    ns = int(((w.abs() > 1) & (w.imag.abs() > 1e-12)).sum())
    return (
        E_tau_s,
        int(torch.linalg.slogdet(J + eye).sign),
        int(torch.linalg.slogdet(J - eye).sign),
        ns,
    )


def continue_fixed_points(
    f: Any,
    start: Any,
    end: Any,
    *,
    states: Any = None,
    n_seeds: int = 256,
    noise: float = 0.05,
    seed: int | None = 0,
    step: float = 0.01,
    max_step: float = 0.05,
    min_step: float = 1e-7,
    max_points: int = 5000,
    tol: float = 1e-10,
    stability_tol: float = DEFAULT_STABILITY_TOL,
    solver: FixedPointSolver | None = None,
) -> Continuation:
    """Trace the fixed points of ``f`` as its constant input moves from ``start`` to ``end``.

    Args:
        f: an input-driven map (anything :func:`as_map` accepts with I >= 1).
        start, end: the inputs x₀ and x₁ (I,).
        states: seed states for the fixed-point searches at both ends.
        step, max_step, min_step: arclength steps in (h, s) space (s spans [0, 1]).
        max_points: per branch.
        tol: residual of the corrector.
        stability_tol: the labels' marginal band.

    Example:
        >>> tanh_unit = Map.from_function(lambda h, x: torch.tanh(2 * h + x), 1, 1)
        >>> seeds = torch.linspace(-1, 1, 50)[:, None]
        >>> sweep = continue_fixed_points(tanh_unit, [-1.0], [1.0], states=seeds)
        >>> [round(b.input.item(), 4) for b in sweep.events("fold")]   # hysteresis
        [-0.5328, 0.5328]
    """
    m = as_map(f)
    if m.input_size == 0:
        raise ValueError("f: expected an input-driven map (input_size >= 1), got input_size=0")
    x0 = as_tensor(start, "start", dtype=torch.float64).reshape(-1)
    x1 = as_tensor(end, "end", dtype=torch.float64).reshape(-1)
    for name, v in (("start", x0), ("end", x1)):
        if v.shape != (m.input_size,):
            raise ValueError(f"{name}: expected shape ({m.input_size},), got {tuple(v.shape)}")
        check_finite(v, name)
    if bool((x0 == x1).all()):
        raise ValueError("end: expected an input different from start, got the same")
    ds0 = check_float(step, "step", low=0.0, low_open=True)
    ds_max = check_float(max_step, "max_step", low=0.0, low_open=True)
    ds_min = check_float(min_step, "min_step", low=0.0, low_open=True)
    if not ds_min <= ds0 <= ds_max:
        raise ValueError(
            f"step: expected min_step <= step <= max_step, got {ds_min}, {ds0}, {ds_max}"
        )
    tol = check_float(tol, "tol", low=0.0, low_open=True)
    stab = check_float(stability_tol, "stability_tol", low=0.0, high=1.0, high_open=True)
    max_points = check_int(max_points, "max_points", low=2)
    sys_ = _System(m.to(dtype=torch.float64), x0, x1 - x0)
    N = sys_.N

    solver = solver or FixedPointSolver(stability_tol=stab)
    starts: list[tuple[Tensor, float]] = []
    for s_end, x_end in ((0.0, x0), (1.0, x1)):
        fp = find_fixed_points(
            m, states, input=x_end, n_seeds=n_seeds, noise=noise, seed=seed, solver=solver
        )
        starts += [(p, s_end) for p in fp.points]

    branches: list[Branch] = []
    events: list[Bifurcation] = []
    traced: list[Tensor] = []  # (P, N+1) per branch
    for h_start, s_start in starts:
        u0 = torch.cat([h_start, torch.tensor([s_start], dtype=torch.float64)])
        if any(
            float((tr - u0).norm(dim=1).min()) <= 1e-6 * max(1.0, float(u0.norm())) for tr in traced
        ):
            continue
        direction = 1.0 if s_start == 0.0 else -1.0
        pts, end_reason, evs = _trace(sys_, u0, direction, ds0, ds_max, ds_min, max_points, tol)
        U = torch.stack(pts)  # (P, N+1)
        traced.append(U)
        k = len(branches)
        with torch.no_grad():
            Js = sys_.m.jacobian(U[:, :N], torch.stack([sys_.x(float(s)) for s in U[:, N]]))
        w, _ = sorted_eig(Js)
        labels, n_unst = classify(w, stab)
        branches.append(
            Branch(
                U[:, N].clone(),
                torch.stack([sys_.x(float(s)) for s in U[:, N]]),
                U[:, :N].clone(),
                w,
                labels,
                n_unst,
                end_reason,
            )
        )
        for kind, u, lam in evs:
            events.append(
                Bifurcation(kind, float(u[N]), sys_.x(float(u[N])), u[:N].clone(), lam, k)
            )
    return Continuation(x0, x1, branches, sorted(events, key=lambda e: (e.branch, e.parameter)))


def _trace(
    sys_: _System,
    u0: Tensor,
    direction: float,
    ds0: float,
    ds_max: float,
    ds_min: float,
    max_points: int,
    tol: float,
) -> tuple[list[Tensor], str, list[tuple[str, Tensor, complex]]]:
    N = sys_.N
    J, E = sys_.jac(u0)
    guess = torch.zeros(N + 1, dtype=torch.float64)
    guess[N] = direction
    tau = sys_.tangent(E, guess)
    if float(tau[N]) * direction < 0:
        tau = -tau
    pts = [u0]
    tests = _tests(J, float(tau[N]), sys_.eye)
    events: list[tuple[str, Tensor, complex]] = []
    ds = ds0
    u = u0
    reason = "max_points"
    while len(pts) < max_points:
        u_new = sys_.correct(u + ds * tau, tau, tol)
        ok = u_new is not None and float((u_new - u).norm()) <= 2.0 * ds
        if ok:
            assert u_new is not None
            J_new, E_new = sys_.jac(u_new)
            tau_new = sys_.tangent(E_new, tau)
            ok = float(tau_new @ tau) > 0.9  # a sharp turn: probably jumped branches
        if not ok:
            ds *= 0.5
            if ds < ds_min:
                reason = "lost"
                break
            continue
        assert u_new is not None
        s_new = float(u_new[N])
        if s_new < 0.0 or s_new > 1.0:
            # land exactly on the boundary with Newton at fixed s
            s_b = 1.0 if s_new > 1.0 else 0.0
            s_old = float(u[N])
            a = (s_b - s_old) / (s_new - s_old) if s_new != s_old else 1.0
            h_guess = u[:N] + a * (u_new[:N] - u[:N])
            h_b = sys_.natural(h_guess, s_b, tol)
            if h_b is not None:
                u_b = torch.cat([h_b, torch.tensor([s_b], dtype=torch.float64)])
                J_b, E_b = sys_.jac(u_b)
                tau_b = sys_.tangent(E_b, tau)
                events += _detect(sys_, u, tau, tests, J_b, u_b, tau_b, ds, tol)
                pts.append(u_b)
            reason = "boundary"
            break
        new_tests = _tests(J_new, float(tau_new[N]), sys_.eye)
        events += _detect(sys_, u, tau, tests, J_new, u_new, tau_new, ds, tol)
        pts.append(u_new)
        if float(u_new[:N].norm()) > 1e8:
            reason = "diverged"
            break
        u, tau, tests = u_new, tau_new, new_tests
        ds = min(ds * 1.5, ds_max)
    return pts, reason, events


def _detect(
    sys_: _System,
    u: Tensor,
    tau: Tensor,
    tests: tuple[float, int, int, int],
    J_new: Tensor,
    u_new: Tensor,
    tau_new: Tensor,
    ds: float,
    tol: float,
) -> list[tuple[str, Tensor, complex]]:
    """Test-function sign changes between u and u_new, each refined by bisection."""
    new = _tests(J_new, float(tau_new[sys_.N]), sys_.eye)
    dist = float(tau @ (u_new - u))  # the predictor's coordinate of u_new
    out: list[tuple[str, Tensor, complex]] = []
    fold = tests[0] * new[0] < 0
    if fold:
        out.append((FOLD, *_refine(sys_, u, tau, dist, tol, lambda t, J: t, tests[0], target=1.0)))
    if tests[1] != new[1]:
        out.append(
            (
                PERIOD_DOUBLING,
                *_refine(
                    sys_, u, tau, dist, tol, lambda t, J: _det_sign(J, 1.0), tests[1], target=-1.0
                ),
            )
        )
    if tests[2] != new[2] and not fold:
        out.append(
            (
                BRANCH_POINT,
                *_refine(
                    sys_, u, tau, dist, tol, lambda t, J: _det_sign(J, -1.0), tests[2], target=1.0
                ),
            )
        )
    if tests[3] != new[3]:
        out.append(
            (
                NEIMARK_SACKER,
                *_refine(
                    sys_,
                    u,
                    tau,
                    dist,
                    tol,
                    lambda t, J: abs(_n_complex_out(J) - tests[3]) - 0.5,
                    -0.5,
                    target=None,
                ),
            )
        )
    return out


def _det_sign(J: Tensor, shift: float) -> float:
    eye = torch.eye(J.shape[0], dtype=J.dtype)
    return float(torch.linalg.slogdet(J + shift * eye).sign)


def _n_complex_out(J: Tensor) -> int:
    w = torch.linalg.eigvals(J)
    return int(((w.abs() > 1) & (w.imag.abs() > 1e-12)).sum())


def _refine(
    sys_: _System,
    u: Tensor,
    tau: Tensor,
    dist: float,
    tol: float,
    test: Any,
    sign0: float,
    target: float | None,
    iters: int = 48,
) -> tuple[Tensor, complex]:
    """Bisection on the arclength from u along tau for a sign change of ``test``."""
    lo, hi = 0.0, dist
    best = u
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        v = sys_.correct(u + mid * tau, tau, tol)
        if v is None:
            break
        J, E = sys_.jac(v)
        t = sys_.tangent(E, tau)
        val = test(float(t[sys_.N]), J)
        if val * sign0 > 0:
            lo = mid
        else:
            hi = mid
        best = v
        if hi - lo <= 1e-13 * max(1.0, dist):
            break
    J, _ = sys_.jac(best)
    w = torch.linalg.eigvals(J)
    if target is None:
        k = int(torch.argmin((w.abs() - 1).abs() + (w.imag.abs() < 1e-12) * 1e9))
    else:
        k = int(torch.argmin((w - target).abs()))
    lam = complex(w[k].item())
    return best, lam


__all__ = [
    "BRANCH_POINT",
    "Bifurcation",
    "Branch",
    "Continuation",
    "FOLD",
    "NEIMARK_SACKER",
    "PERIOD_DOUBLING",
    "continue_fixed_points",
]
