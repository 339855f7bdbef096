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
    >>> fp = find_fixed_points(Map.linear([[0.8]], [1.0]))    # the lecture: h* = 5, stable
    >>> fp.points.item(), fp.labels
    (5.000000000000001, ('stable',))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import check_finite, check_fraction, check_int, check_states, check_tolerance
from ._linalg import solve_ex
from .maps import LinearMap, Map, as_map, autonomous, check_output, simulate
from .stability import DEFAULT_STABILITY_TOL, classify, sorted_eig, time_constants


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
        check_int(self.descent_iters, "descent_iters", minimum=0)
        check_int(self.newton_iters, "newton_iters", minimum=1)
        check_tolerance(self.lr, "lr", inclusive_low=False)
        check_tolerance(self.descent_tol, "descent_tol")
        check_tolerance(self.merge_tol, "merge_tol")
        check_tolerance(self.residual_tol, "residual_tol", inclusive_low=False)
        check_tolerance(self.step_tol, "step_tol", inclusive_low=False)
        check_tolerance(self.unique_tol, "unique_tol", inclusive_low=False)
        check_tolerance(self.stability_tol, "stability_tol", high=1.0)
        check_tolerance(self.max_norm, "max_norm", inclusive_low=False)

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


# --- the search --------------------------------------------------------------------------------


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


def search_zeros(f: Map, seeds: Tensor, s: FixedPointSolver) -> RawSearch:
    """Descent + merge + polish + de-duplication on an autonomous map (see module docstring)."""
    if not f.autonomous:
        raise ValueError("f: expected an autonomous map (fixed or absent input)")
    S, N = seeds.shape
    work = f.to(dtype=f.dtype or seeds.dtype) if f.dtype is not None else f
    h0 = seeds.to(dtype=f.dtype or seeds.dtype)
    check_output(work.step(h0[:1]), h0[:1], f.name)
    with torch.no_grad():
        h, alive = _descent(work, h0.clone(), s)
    f64 = f.to(dtype=torch.float64)
    h = h.to(torch.float64)
    alive &= torch.isfinite(h).all(dim=1) & (h.norm(dim=1) < s.max_norm)

    # 2. merge candidates that landed together
    idx_alive = torch.nonzero(alive).flatten()
    with torch.no_grad():
        F_all = f64.step(h[idx_alive]) - h[idx_alive]
    q_alive = 0.5 * (F_all * F_all).sum(dim=1)
    rep_of = torch.full((S,), -1, dtype=torch.long)  # seed -> candidate index
    order = idx_alive[torch.argsort(q_alive, stable=True)]
    cand_seeds = _greedy_clusters(h[order], s.merge_tol)
    reps = order[cand_seeds[0]]  # seed indices of candidates
    rep_of[order] = cand_seeds[1]

    # 3. polish in float64, batch by batch; candidates that a chord iteration carries onto an
    #    already certified point are assigned to it without a Jacobian of their own
    fast = work if s.fast_jacobians and work.dtype not in (None, torch.float64) else None
    prog = _progressive_polish(f64, h[reps].clone(), s, fast)
    seed_point = torch.full((S,), -1, dtype=torch.long)
    has = rep_of >= 0
    seed_point[has] = prog.assign[rep_of[has]]
    M = prog.points.shape[0]
    counts = torch.bincount(seed_point[seed_point >= 0], minlength=M)

    bad = torch.nonzero(seed_point < 0).flatten()
    final = h.clone()
    final[has] = prog.final[rep_of[has]]
    step_all = torch.full((S,), math.inf, dtype=torch.float64)
    step_all[has] = prog.final_steps[rep_of[has]]
    with torch.no_grad():
        fin = final[bad]
        fin_ok = torch.isfinite(fin).all(dim=1)
        r_bad = torch.full((bad.shape[0],), math.inf, dtype=torch.float64)
        if bool(fin_ok.any()):
            r_bad[fin_ok] = (f64.step(fin[fin_ok]) - fin[fin_ok]).norm(dim=1)
    failed = NonConverged(seeds[bad].detach().to(torch.float64), fin, r_bad, step_all[bad])
    return RawSearch(prog.points, prog.residuals, prog.steps, prog.jacobians, counts, failed, S)


@dataclass
class _Progress:
    points: Tensor  # (M, N) certified unique points
    residuals: Tensor  # (M,)
    steps: Tensor  # (M,)
    jacobians: Tensor  # (M, N, N)
    assign: Tensor  # (C,) candidate -> point index, -1 failed
    final: Tensor  # (C, N) where each candidate ended
    final_steps: Tensor  # (C,) Newton step there


# chord iterations per capture attempt, and how many known points each candidate tries
_CHORD_ITERS = 50
_CAPTURE_TRIES = 3
# step lengths tried along the Newton direction
_BACKTRACK = (1.0, 0.5, 0.25, 0.125)
# relative distance within which a polishing Jacobian is reused
_JAC_REUSE = 1e-2
# iterations over which a polished seed must halve its residual
_STALL_WINDOW = 5
# Jacobian entries polished per batch (N = 16: all candidates at once; N = 256: 32 per batch).
_POLISH_ENTRIES = 1 << 21


def _progressive_polish(
    m: Map, cands: Tensor, s: FixedPointSolver, jac_map: Map | None = None
) -> _Progress:
    """Polish candidates (sorted best first) in batches, capturing the rest by chord steps."""
    C, N = cands.shape
    eye = torch.eye(N, dtype=torch.float64)
    assign = torch.full((C,), -1, dtype=torch.long)
    final = cands.clone()
    final_steps = torch.full((C,), math.inf, dtype=torch.float64)
    pts: list[Tensor] = []
    res: list[float] = []
    stp: list[float] = []
    jacs: list[Tensor] = []
    lus: list[tuple[Tensor, Tensor]] = []
    cap = max(8, _POLISH_ENTRIES // (N * N))
    # everything at once when it fits (small maps); otherwise small first batches, since many
    # candidates may share a few points and the rest are then captured without a Jacobian
    size = cap if C <= cap else 8
    pending = torch.arange(C)
    while pending.numel():
        if pts:
            caught, nearest = _capture(m, cands[pending], torch.stack(pts), lus, s)
            idx, which = pending[caught], nearest[caught]
            assign[idx] = which
            final[idx] = torch.stack(pts)[which]
            final_steps[idx] = torch.as_tensor(stp, dtype=torch.float64)[which]
            pending = pending[~caught]
            if pending.numel() == 0:
                break
        pick = _spread(cands[pending], size)
        batch = pending[pick]
        keep = torch.ones(pending.numel(), dtype=torch.bool)
        keep[pick] = False
        pending = pending[keep]
        h, r, step, J, ok = _polish(m, cands[batch].clone(), s, jac_map)
        n_before = len(pts)
        final[batch], final_steps[batch] = h, step
        for j in torch.argsort(r).tolist():
            if not bool(ok[j]):
                continue
            scale = max(1.0, float(h[j].norm()))
            k = -1
            if pts:
                d = (torch.stack(pts) - h[j]).norm(dim=1)
                kk = int(torch.argmin(d))
                if float(d[kk]) <= s.unique_tol * scale:
                    k = kk
            if k < 0:
                k = len(pts)
                pts.append(h[j].clone())
                res.append(float(r[j]))
                stp.append(float(step[j]))
                jacs.append(J[j])
                lus.append(torch.linalg.lu_factor(J[j] - eye))
            assign[batch[j]] = k
        # grow the batches while they keep finding new points, shrink when they do not
        new = len(pts) - n_before
        size = min(cap, 2 * size) if 2 * new >= len(batch) else max(8, size // 2)
    if pts:
        P, R, St, Jm = (
            torch.stack(pts),
            torch.as_tensor(res, dtype=torch.float64),
            torch.as_tensor(stp, dtype=torch.float64),
            torch.stack(jacs),
        )
    else:
        P = torch.zeros(0, N, dtype=torch.float64)
        R = St = torch.zeros(0, dtype=torch.float64)
        Jm = torch.zeros(0, N, N, dtype=torch.float64)
    return _Progress(P, R, St, Jm, assign, final, final_steps)


def _spread(c: Tensor, cap: int) -> Tensor:
    """Up to ``cap`` indices, best first, skipping near-duplicates of already picked rows
    (1% of the state scale) while there are others; topped up in order."""
    n = c.shape[0]
    if n <= cap:
        return torch.arange(n)
    picked: list[int] = [0]
    radius = 1e-2 * max(1.0, float(c.norm(dim=1).max()))
    for i in range(1, n):
        if len(picked) == cap:
            break
        if float((c[picked] - c[i]).norm(dim=1).min()) > radius:
            picked.append(i)
    if len(picked) < cap:
        rest = [i for i in range(n) if i not in set(picked)]
        picked += rest[: cap - len(picked)]
    return torch.as_tensor(picked, dtype=torch.long)


def _capture(
    m: Map, c: Tensor, pts: Tensor, lus: list[tuple[Tensor, Tensor]], s: FixedPointSolver
) -> tuple[Tensor, Tensor]:
    """Chord iterations x <- x - (J_k - I)^{-1} F(x) with the LU of a known point k.

    A candidate is captured by k when the iteration approaches h_k at every step and lands
    within unique_tol of it: it lies in h_k's basin of attraction under Newton-like steps, and
    h_k is certified already. The _CAPTURE_TRIES nearest known points are tried in turn.
    Returns (captured mask, point index).
    """
    P = c.shape[0]
    K = pts.shape[0]
    order = torch.cdist(c, pts).argsort(dim=1)[:, : min(K, _CAPTURE_TRIES)]  # (P, tries)
    caught = torch.zeros(P, dtype=torch.bool)
    which = order[:, 0].clone()
    for attempt in range(order.shape[1]):
        todo = ~caught
        for k in torch.unique(order[todo, attempt]).tolist():
            idx = torch.nonzero(todo & (order[:, attempt] == k)).flatten()
            x = c[idx].clone()
            target = pts[k]
            tol = s.unique_tol * max(1.0, float(target.norm()))
            d0 = (x - target).norm(dim=1)
            alive = torch.isfinite(d0)
            d = prev = d0
            for _ in range(_CHORD_ITERS):
                with torch.no_grad():
                    F = m.step(x) - x
                dx = torch.linalg.lu_solve(*lus[k], -F.T).T
                x = torch.where(alive[:, None], x + dx, x)
                d = (x - target).norm(dim=1)
                alive &= torch.isfinite(d) & ((d < prev) | (d <= tol))  # approach h_k steadily
                prev = torch.where(alive, d, prev)
                if bool(((d <= tol) | ~alive).all()):
                    break
            hit = alive & (d <= tol)
            caught[idx[hit]] = True
            which[idx[hit]] = k
    return caught, which


def _descent(m: Map, h: Tensor, s: FixedPointSolver) -> tuple[Tensor, Tensor]:
    """Batched Adam on q(h) = ½‖f(h) - h‖², one learning rate per seed; returns (h, alive)."""
    S = h.shape[0]
    alive = torch.ones(S, dtype=torch.bool)
    if s.descent_iters == 0:
        return h, alive
    b1, b2, eps = 0.9, 0.999, 1e-8
    idx = torch.arange(S)
    ha = h.clone()
    m1 = torch.zeros_like(h)
    v = torch.zeros_like(h)
    lr = torch.full((S, 1), s.lr, dtype=h.dtype)
    q_prev = torch.full((S,), math.inf, dtype=h.dtype)
    for it in range(1, s.descent_iters + 1):
        with torch.enable_grad():
            x = ha.detach().requires_grad_(True)
            F = m.step(x) - x
            q = 0.5 * (F * F).sum(dim=1)
            (g,) = torch.autograd.grad(q.sum(), x)
        q = q.detach()
        finite = torch.isfinite(q) & torch.isfinite(g).all(dim=1)
        done = (q < s.descent_tol) | ~finite
        if bool(done.any()):
            alive[idx[~finite]] = False
            h[idx] = ha
            keep = ~done
            idx, ha, m1, v, lr, q, g = (
                idx[keep],
                ha[keep],
                m1[keep],
                v[keep],
                lr[keep],
                q[keep],
                g[keep],
            )
            q_prev = q_prev[keep]
            if idx.numel() == 0:
                break
        # a seed whose q rose overshot: smaller steps for it from now on
        lr = torch.where((q > q_prev)[:, None], lr * 0.5, lr)
        q_prev = q
        m1 = b1 * m1 + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m1 / (1 - b1**it)
        v_hat = v / (1 - b2**it)
        ha = ha - lr * m_hat / (v_hat.sqrt() + eps)
    h[idx] = ha
    return h, alive


def _polish(
    m: Map, h: Tensor, s: FixedPointSolver, jac_map: Map | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Float64 Newton with Levenberg–Marquardt fallback on F(h) = f(h) - h, per seed.

    States and residuals are float64. The Jacobians and linear solves that choose the steps may
    run in ``jac_map``'s cheaper dtype (the model's float32): an inexact step only slows
    Newton's convergence, since every residual is evaluated in float64 and a step is accepted
    only if it reduces it. The certificate at the end uses the float64 Jacobian.

    Returns (h, residual, last Newton step length, float64 Jacobian of f at h, converged).
    """
    M, N = h.shape
    jm = jac_map if jac_map is not None else m
    ld = jm.dtype or torch.float64  # dtype of the step computations (Jacobians, solves)
    eye = torch.eye(N, dtype=ld)
    with torch.no_grad():
        F = m.step(h) - h
    r = F.norm(dim=1)
    J = _jac(jm, h, ld)  # of f, (M, N, N)
    J_at = h.clone()  # where each Jacobian was computed
    mu = torch.full((M,), 1e-3, dtype=torch.float64)
    # rounding level of ‖F‖: no step can do better
    floor = 4 * torch.finfo(torch.float64).eps * math.sqrt(N) * h.norm(dim=1).clamp_min(1.0)
    done = r <= floor
    dead = ~torch.isfinite(r)
    # residuals of the last _STALL_WINDOW iterations: a seed that did not halve its residual
    # over that window is creeping along a slow region (a minimum of q above zero), not
    # converging; it stops and is reported as not converged
    hist = r[:, None].repeat(1, _STALL_WINDOW)
    it = 0
    for it in range(s.newton_iters):
        act = torch.nonzero(~done & ~dead).flatten()
        if act.numel() == 0:
            break
        ha, Fa, ra, Ja = h[act], F[act], r[act], J[act] - eye
        Fs = Fa.to(ld)
        # Newton step first
        dn, info = solve_ex(Ja, -Fs[..., None])
        dn = dn[..., 0].to(torch.float64)
        dn = torch.where((info == 0)[:, None] & torch.isfinite(dn), dn, torch.zeros_like(dn))
        # ... with backtracking: the Newton direction descends on q wherever J - I is regular
        A_ = act.numel()
        ts = torch.tensor(_BACKTRACK, dtype=torch.float64)  # (K,)
        with torch.no_grad():
            trial = (ha[None] + ts[:, None, None] * dn[None]).reshape(-1, N)  # (K·A, N)
            Ft = (m.step(trial) - trial).reshape(len(_BACKTRACK), A_, N)
        rt = Ft.norm(dim=2)
        rt = torch.where(torch.isfinite(rt), rt, torch.full_like(rt, math.inf))
        ok_t = rt < (1 - 1e-4 * ts[:, None]) * ra[None]  # (K, A) sufficient decrease
        first = torch.where(ok_t.any(dim=0), ok_t.to(torch.uint8).argmax(dim=0), 0)  # largest t
        ar = torch.arange(A_)
        hn = ha + ts[first][:, None] * dn
        Fn, rn = Ft[first, ar], rt[first, ar]
        use_n = ok_t.any(dim=0)
        h_new = torch.where(use_n[:, None], hn, ha)
        F_new = torch.where(use_n[:, None], Fn, Fa)
        r_new = torch.where(use_n, rn, ra)
        # where Newton did not reduce ‖F‖: refresh a reused Jacobian first, else
        # Levenberg–Marquardt (scaled damping)
        stale = (ha != J_at[act]).any(dim=1)
        retry = ~use_n & stale
        lm = torch.nonzero(~use_n & ~stale).flatten()
        use_l = torch.zeros_like(use_n)
        if lm.numel():
            Jl = Ja[lm]
            JtJ = Jl.transpose(1, 2) @ Jl
            scale = torch.diagonal(JtJ, dim1=1, dim2=2).mean(dim=1).clamp_min(1e-30)
            A = JtJ + (mu[act[lm]].to(ld) * scale)[:, None, None] * eye
            dl = solve_ex(A, -(Jl.transpose(1, 2) @ Fs[lm][..., None]))[0][..., 0]
            dl = dl.to(torch.float64)
            dl = torch.where(torch.isfinite(dl), dl, torch.zeros_like(dl))
            with torch.no_grad():
                hl = ha[lm] + dl
                Fl = m.step(hl) - hl
            rl = Fl.norm(dim=1)
            rl = torch.where(torch.isfinite(rl), rl, torch.full_like(rl, math.inf))
            good = rl < ra[lm]
            use_l[lm] = good
            h_new[lm] = torch.where(good[:, None], hl, h_new[lm])
            F_new[lm] = torch.where(good[:, None], Fl, F_new[lm])
            r_new[lm] = torch.where(good, rl, r_new[lm])
        moved = use_n | use_l
        mu_a = mu[act]
        mu_a = torch.where(
            moved, (mu_a * 0.3).clamp_min(1e-12), torch.where(retry, mu_a, mu_a * 10)
        )
        h[act], F[act], r[act], mu[act] = h_new, F_new, r_new, mu_a
        # a Jacobian is reused while the state stays within _JAC_REUSE of where it was taken
        # (then Newton's last steps cost no Jacobian), and refreshed after a failed step
        far = (h[act] - J_at[act]).norm(dim=1) > _JAC_REUSE * h[act].norm(dim=1).clamp_min(1.0)
        mv = act[(moved & far) | retry]
        if mv.numel():
            J[mv] = _jac(jm, h[mv], ld)
            J_at[mv] = h[mv]
        # below the threshold, stop once Newton no longer gains much (quadratic phase over)
        settled = (r_new <= s.residual_tol) & (r_new > 0.1 * ra)
        done[act] |= settled | (r_new <= floor[act])
        dead |= (mu > 1e12) & ~done  # stuck where q has a non-zero minimum (a slow point)
        hist = torch.cat([r[:, None], hist[:, :-1]], dim=1)
        if it + 1 >= _STALL_WINDOW:
            dead |= ~done & (r > s.residual_tol) & (r > 0.5 * hist[:, -1])
    ok = r <= s.residual_tol
    J = J.to(torch.float64)
    # exact float64 Jacobians at the converged points: certificate and eigenvalues
    fresh = torch.nonzero(ok & ((J_at != h).any(dim=1) | (ld != torch.float64))).flatten()
    if fresh.numel():
        J[fresh] = _jac(m, h[fresh])
    eye = torch.eye(N, dtype=torch.float64)
    # certificate: the Newton step from the returned point
    step = torch.full((M,), math.inf, dtype=torch.float64)
    if M:
        d, info = solve_ex(J - eye, -F[..., None])
        norms = d[..., 0].norm(dim=1)
        step = torch.where((info == 0) & torch.isfinite(norms), norms, step)
    ok = ok & (step <= s.step_tol * h.norm(dim=1).clamp_min(1.0))
    return h, r, step, J, ok


def _jac(m: Map, h: Tensor, out: torch.dtype = torch.float64) -> Tensor:
    """Jacobians of ``m`` at ``h``, computed in ``m``'s dtype, returned in ``out``."""
    if h.shape[0] == 0:
        return h.new_zeros(0, h.shape[1], h.shape[1], dtype=out)
    with torch.no_grad():
        dt = m.dtype or h.dtype
        return m.jacobian(h.to(dt)).detach().to(out)


def _greedy_clusters(points: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """Greedy clustering in the given order: returns (indices of representatives, label per row).

    Row i joins the first representative within tol·max(1, ‖rep‖); otherwise it starts one.
    """
    n = points.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    P = points.detach().to(torch.float64).cpu().numpy()
    label = np.full(n, -1, dtype=np.int64)
    reps: list[int] = []
    if tol <= 0:
        return torch.arange(n), torch.arange(n)
    for i in range(n):
        if label[i] >= 0:
            continue
        k = len(reps)
        reps.append(i)
        d2 = ((P - P[i]) ** 2).sum(axis=1)  # exact differences: tol may be near rounding
        radius = tol * max(1.0, float(np.linalg.norm(P[i])))
        near = (d2 <= radius * radius) & (label < 0)
        label[near] = k
    return torch.as_tensor(reps, dtype=torch.long), torch.as_tensor(label)


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
    n = check_int(n_seeds, "n_seeds")
    nz = check_tolerance(noise, "noise")
    mix = check_fraction(interpolate, "interpolate")
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
        h0 = torch.randn(check_int(n_seeds, "n_seeds"), m.state_size, generator=gen, dtype=dtype)
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
