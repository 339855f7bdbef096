"""System identification: a GRU learns the Hénon map and, run in closed loop, is studied as a
dynamic system of its own.

The lecture: "we use another dynamic system (RNN) to approximate the real dynamic system". A GRU
reads the Hénon series (x(t), y(t)) and predicts the next point (teacher forcing, one-step
loss). In closed loop its prediction is its next input, so the trained network is the
autonomous map on its hidden state

    F(h) = GRU(h, x = W h + b),      with the point in Hénon's coordinates read out as W h + b.

Its fixed points (found with the dynamics toolkit, seeded from the network's own states) are
read out into Hénon's coordinates and compared with Hénon's two fixed points
x* = (-(1-b) ± sqrt((1-b)^2 + 4a)) / 2a, y* = b x*; its largest Lyapunov exponent (QR method)
with Hénon's ≈ 0.42 (computed here with the same tool on the true map).

Shapes: B batch, T time, H hidden.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells import GRUState
from ..training import SequenceModel
from ._common import Timer, claim, figure, save, threads
from .registry import Claim, RunContext, experiment

A, B = 1.4, 0.3
SOURCE = "lecture, 'Modeling dynamic systems with RNN'"


def henon_fixed_points(a: float = A, b: float = B) -> Tensor:
    """Hénon's two fixed points (2, 2), the one on the attractor first."""
    r = math.sqrt((1 - b) ** 2 + 4 * a)
    xs = [(-(1 - b) + r) / (2 * a), (-(1 - b) - r) / (2 * a)]
    return torch.tensor([[x, b * x] for x in xs], dtype=torch.float64)


def henon_jacobian_eigenvalues(p: Tensor, a: float = A, b: float = B) -> Tensor:
    """Eigenvalues of [[-2a x, 1], [b, 0]] at p = (x, y), largest modulus first."""
    J = torch.tensor([[-2 * a * float(p[0]), 1.0], [b, 0.0]], dtype=torch.float64)
    w = torch.linalg.eigvals(J)
    return w[w.abs().argsort(descending=True)]


def _train(
    series: Tensor, hidden: int, steps: int, T: int, seed: int
) -> tuple[SequenceModel, list[float]]:
    windows = series.float().unfold(0, T + 1, 1).transpose(1, 2)  # (N, T+1, 2)
    torch.manual_seed(seed)
    model = SequenceModel(
        {
            "cell": "GRUCell",
            "input_size": 2,
            "hidden_size": hidden,
            "output_size": 2,
            "feedback": "input",
        }
    )
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    warm = 5  # the first steps have too little history to know the state: no loss there
    losses = []
    for _ in range(steps):
        w = windows[torch.randint(0, windows.shape[0], (64,), generator=g)]
        y = model(w[:, :-1]).output  # teacher forcing: the true point is every input
        loss = F.mse_loss(y[:, warm:], w[:, warm + 1 :])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model, losses


def closed_loop_map(model: SequenceModel) -> Any:
    """F(h) = GRU(h, W h + b) as a dynamics Map, in float32 or float64 as it is called."""
    from ..dynamics import Map

    copies = {torch.float32: model, torch.float64: copy.deepcopy(model).double()}

    def step(h: Tensor) -> Tensor:
        m = copies[h.dtype] if h.dtype in copies else copies[torch.float64]
        assert m.readout is not None
        return m.core.cell(m.readout(h), GRUState(h))[1].h  # type: ignore[union-attr,operator]

    hidden = int(model.spec["hidden_size"])
    return Map.from_function(step, state_size=hidden, name="GRU in closed loop")


def _nearest(points: Tensor, q: Tensor) -> tuple[float, int]:
    if points.shape[0] == 0:
        return math.inf, -1
    d = (points - q).norm(dim=1)
    i = int(d.argmin())
    return float(d[i]), i


@experiment(
    "henon",
    "System identification: a GRU learns the Hénon map; its fixed points and Lyapunov exponent",
    order=100,
)
def henon(ctx: RunContext) -> list[Claim]:
    with threads(1):  # small models: one thread is faster (see _common.threads)
        return _henon(ctx)


def _henon(ctx: RunContext) -> list[Claim]:
    from ..data import henon_map, henon_series
    from ..dynamics import Map, find_fixed_points, lyapunov_spectrum

    tm = Timer()
    hidden = 64 if ctx.full else 32
    steps = 6000 if ctx.full else 1500
    n_seeds = 1024 if ctx.full else 512
    series = henon_series(20000).values  # (L, 2) float64, on the attractor
    model, losses = _train(series[:15000], hidden, steps, 20, ctx.seed)
    test = series[15000:]
    with torch.no_grad():
        pred = model(test[None, :-1].float()).output[0, 5:]
        one_step = float(F.mse_loss(pred.double(), test[6:]))
    ctx.progress(f"trained: one-step test MSE {one_step:.2e}")

    fmap = closed_loop_map(model)
    f64 = copy.deepcopy(model).double()
    R = f64.readout
    assert R is not None
    P = henon_fixed_points()
    with torch.no_grad():
        states, _ = f64.core(test[None, :300])  # (1, 300, H) states on the true orbit
        loop = fmap.simulate(states[:, -1], 3000)[0]  # (3001, H): the closed loop
        loop_xy = R(loop[500:])  # (2501, 2) in Hénon's coordinates
        # the network's states under other inputs: random points of the box, and each of
        # Hénon's fixed points held constant (the orbit that stays there)
        g = torch.Generator().manual_seed(ctx.seed)
        u = torch.rand(128, 40, 2, generator=g, dtype=torch.float64)
        u = u * torch.tensor([3.0, 0.9], dtype=torch.float64) - torch.tensor([1.5, 0.45])
        driven, _ = f64.core(u)
        held, _ = f64.core(P[:, None, :].expand(2, 100, 2).contiguous())  # (2, 100, H)
        held_pred = R(held[:, -1])  # what the network predicts after p, p, p, ...
    seeds = torch.cat(
        [loop[500:], driven[:, 5:].reshape(-1, hidden), held[:, 50:].reshape(-1, hidden)]
    )
    fps = find_fixed_points(fmap, seeds, n_seeds=n_seeds, interpolate=0.5, seed=ctx.seed)
    with torch.no_grad():
        fp_xy = R(fps.points)  # (M, 2)
    ctx.progress(f"closed-loop fixed points: {fps}; in Hénon coordinates {fp_xy.tolist()}")

    k = min(2, hidden)
    # independent trajectories: states of the attractor nudged by 1e-6; chaos decorrelates
    # them within the warm-up (starts along one orbit would share most of their steps)
    gl = torch.Generator().manual_seed(ctx.seed + 1)
    starts = loop[500::50][:16]
    starts = starts + 1e-6 * torch.randn(starts.shape, generator=gl, dtype=starts.dtype)
    # long enough for the running estimate to settle (its drift below tol): 2000 steps left it
    # unconverged in the committed full run
    lyap = lyapunov_spectrum(fmap, starts, 8000 if ctx.full else 4000, k=k, warmup=200)
    per = lyap.per_seed[:, 0]  # (16,) each trajectory's λ₁
    n_regular = int((per < 0.05).sum())
    henon_f = Map.from_function(henon_map(A, B), state_size=2, name="Hénon")
    starts = test[::50][:32] + 1e-6 * torch.randn(32, 2, generator=gl, dtype=torch.float64)
    lyap_true = lyapunov_spectrum(henon_f, starts, 10000 if ctx.full else 5000, warmup=200)
    ctx.progress(f"learned: {lyap.report()}; Hénon: {lyap_true.report()}")

    # how close the closed-loop orbit stays to Hénon's attractor, against a fresh true sample
    ref = series[:5000]
    fresh = henon_series(2500, x0=0.1, y0=0.1, transient=500).values
    d_loop = torch.cdist(loop_xy, ref).min(dim=1).values.median()
    d_true = torch.cdist(fresh, ref).min(dim=1).values.median()
    # Errors across the attractor shrink by e^λ₂ per step (λ₂ < 0, the contracting exponent),
    # so one-step errors ε add up to at most ε / (1 - e^λ₂) off the attractor.
    lam2 = float(lyap_true.exponents[1])
    gain = 1.0 / (1.0 - math.exp(lam2))
    step_err = math.sqrt(2.0 * one_step)  # RMS Euclidean error of a predicted point (x, y)
    threshold = float(d_true) + gain * step_err

    rows = [
        claim(
            "henon",
            "one-step test MSE of the trained GRU (teacher forcing)",
            f"{one_step:.2e}",
            "< 1e-3 (variance of x ≈ 0.5)",
            SOURCE,
            one_step < 1e-3,
        ),
        claim(
            "henon",
            "closed-loop attractor error: median distance of the closed loop's points to a "
            f"{len(ref)}-point sample of Hénon's attractor. Threshold: the sample's resolution "
            f"(a fresh true orbit lies {float(d_true):.4f} from it) plus the one-step error "
            f"{step_err:.4f} (RMS distance) amplified by 1 / (1 - e^λ₂) = {gain:.2f}, λ₂ = "
            f"{lam2:.3f} Hénon's contracting exponent: each step's error is pulled back to the "
            "attractor at that rate, so a loop that errs only by its one-step error stays "
            "within this distance",
            round(float(d_loop), 4),
            f"< {threshold:.4f}",
            SOURCE,
            float(d_loop) < threshold,
        ),
    ]
    names = ["on the attractor", "off the attractor"]
    for j in range(2):
        # Hénon's second fixed point lies off the attractor: a model trained on attractor
        # data never sees its neighbourhood, so what it does there is a note, not a claim.
        note = j == 1
        p = P[j]
        d, i = _nearest(fp_xy, p)
        where = f"({float(p[0]):.4f}, {float(p[1]):.4f})"
        if i < 0:
            found: Any = "no fixed point found"
        elif d < 0.02:
            found = [round(v, 4) for v in fp_xy[i].tolist()]
        else:
            found = f"none within 0.02 (nearest {[round(v, 4) for v in fp_xy[i].tolist()]})"
        pre = "note (not a claim: no training data near it): " if note else ""
        rows.append(
            claim(
                "henon",
                f"{pre}a fixed point of the learned map at Hénon's {where} ({names[j]}); "
                f"distance {d:.4f}",
                found,
                f"{where} ± 0.02",
                "Hénon 1976",
                None if note else d < 0.02,
            )
        )
        if i >= 0 and d < 0.02:
            w = fps.eigenvalues[i, :2]
            true_w = henon_jacobian_eigenvalues(p)
            rows.append(
                claim(
                    "henon",
                    f"largest Jacobian eigenvalue there (learned map: {fps.labels[i]}, "
                    f"{int(fps.n_unstable[i])} unstable direction(s); "
                    f"next: {float(w[1].real):.3f})",
                    round(float(w[0].real), 4),
                    f"Hénon's {float(true_w[0].real):.4f} ± 5% (next: {float(true_w[1].real):.3f})",
                    "Hénon 1976",
                    None if note else abs(float(w[0].real) / float(true_w[0].real) - 1) < 0.05,
                )
            )
        hp = [round(v, 4) for v in held_pred[j].tolist()]
        rows.append(
            claim(
                "henon",
                f"{pre}learned map's prediction after the input is held at Hénon's fixed "
                f"point {where}",
                hp,
                f"{where} (f(p) = p)",
                "Hénon 1976",
                None if note else float((held_pred[j] - p).norm()) < 0.02,
            )
        )
    rows.append(
        claim(
            "henon",
            f"fixed points of the learned closed-loop map ({len(fps.failed)} of {fps.n_seeds} "
            "seeds did not converge), in Hénon's coordinates",
            [[round(v, 4) for v in r] for r in fp_xy.tolist()],
            [[round(v, 4) for v in r] for r in P.tolist()],
            "Hénon 1976",
            None,
        )
    )
    rows.append(
        claim(
            "henon",
            f"largest Lyapunov exponent of the learned closed loop, mean ± standard error over "
            f"{lyap.per_seed.shape[0]} trajectories of {lyap.steps} steps (drift "
            f"{float(lyap.drift[0]):.4f} {'≤' if lyap.converged else '>'} tol {lyap.tol}: "
            f"{'converged' if lyap.converged else 'NOT converged'}); per trajectory "
            f"{float(per.min()):.3f} to {float(per.max()):.3f}, {n_regular} of them below 0.05 "
            "(a periodic or slowly converging orbit of the learned map, not Hénon's chaos)",
            f"{lyap.maximal:.4f} ± {float(lyap.stderr[0]):.4f}",
            f"Hénon's {lyap_true.maximal:.4f} ± 0.05 (literature ≈ 0.42), converged",
            "Hénon 1976; Benettin et al. 1980",
            bool(lyap.converged) and abs(lyap.maximal - lyap_true.maximal) < 0.05,
        )
    )
    rows.append(
        claim(
            "henon",
            "largest Lyapunov exponent of the true Hénon map (same tool)",
            round(lyap_true.maximal, 4),
            "0.42 ± 0.01",
            "Hénon 1976",
            abs(lyap_true.maximal - 0.42) < 0.01,
        )
    )

    fig = figure(ctx.out_dir / "henon_attractor.png")
    fig.set_size_inches(9.0, 4.0)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax, pts, title in (
        (ax1, ref, "Hénon map (a=1.4, b=0.3)"),
        (ax2, loop_xy, f"GRU (H={hidden}) in closed loop"),
    ):
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=0.3, color="0.3")
        ax.scatter(
            P[:, 0].numpy(),
            P[:, 1].numpy(),
            s=60,
            facecolors="none",
            edgecolors="r",
            label="Hénon's fixed points",
        )
        ax.set(xlabel="x", ylabel="y", title=title, xlim=(-1.6, 1.6), ylim=(-0.5, 0.5))
    if len(fps):
        ax2.scatter(
            fp_xy[:, 0].numpy(),
            fp_xy[:, 1].numpy(),
            s=25,
            marker="x",
            color="b",
            label="learned map's fixed points",
        )
    ax2.legend(fontsize=7, loc="lower left")
    save(fig)

    fig = figure(ctx.out_dir / "henon_lyapunov.png")
    fig.set_size_inches(9.0, 3.6)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(losses, lw=0.6)
    ax1.set(xlabel="step", ylabel="training MSE", yscale="log", title="teacher-forced training")
    ax2.plot(lyap.history_steps.numpy(), lyap.history[:, 0].numpy(), label="learned map λ₁")
    ax2.plot(lyap_true.history_steps.numpy(), lyap_true.history[:, 0].numpy(), label="Hénon λ₁")
    ax2.axhline(0.42, color="k", ls="--", lw=0.8, label="0.42")
    ax2.set(
        xlabel="accumulated steps", ylabel="running estimate", title="largest Lyapunov exponent"
    )
    ax2.legend(fontsize=7)
    save(fig)
    rows[-1].seconds = round(tm.lap(), 2)
    return rows
