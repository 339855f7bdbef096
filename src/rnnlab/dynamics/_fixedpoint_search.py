"""The fixed-point finder: descent, merge, polish and de-duplication of zeros of f(h) - h on an
autonomous map (the steps of fixedpoints.py's module docstring; split from it by job, issue 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ._fixedpoint_results import NonConverged, RawSearch
from ._linalg import solve_ex
from ._map_base import Map, check_output

if TYPE_CHECKING:
    from .fixedpoints import FixedPointSolver


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
