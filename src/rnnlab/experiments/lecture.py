"""The lecture's claims about simple RNNs, measured: vanishing/exploding and Elman's temporal XOR
(bidirectional, deep and long-memory variants are in experiments/architectures.py)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import init
from ..cells import ElmanCell, JordanCell
from ..layers import Recurrent
from ._common import Timer, claim, figure, fit, save, threads
from .registry import Claim, RunContext, experiment

LECTURE = "lecture, 'Challenges'"


# ----------------------------------------------------------------------------- vanishing ----
def _slope(values: list[float], t0: int) -> float:
    y = np.log(np.asarray(values[t0:]))
    t = np.arange(len(y))
    return float(np.polyfit(t, y, 1)[0])


@experiment(
    "vanishing", "States and gradients vanish or explode at the rate of U's eigenvalues", order=20
)
def vanishing(ctx: RunContext) -> list[Claim]:
    """Elman network with identity σ_h, b = 0, input only at t = 0 and a symmetric U with
    spectral radius ρ: h(t) = U^t h(0) and ∂L/∂h(T-k) = (Uᵀ)^k δ(T) (the lecture's equations);
    the measured log-norms fall or grow with slope log ρ."""
    tm = Timer()
    H, T = (128, 200) if ctx.full else (32, 60)
    g = torch.Generator().manual_seed(ctx.seed)
    Q = init.orthogonal_(torch.empty(H, H, dtype=torch.float64), generator=g)
    rows: list[Claim] = []
    fig = figure(ctx.out_dir / "vanishing_exploding.png")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    h0 = torch.randn(1, H, generator=g, dtype=torch.float64)
    v = torch.randn(1, H, generator=g, dtype=torch.float64)
    for rho, act in [(0.9, "identity"), (1.0, "identity"), (1.1, "identity"), (1.5, "tanh")]:
        lam = torch.empty(H, dtype=torch.float64).uniform_(-0.8, 0.8, generator=g) * rho
        lam[0] = rho
        U = Q @ torch.diag(lam) @ Q.T  # symmetric, spectral radius rho
        cell = ElmanCell(H, H, activation=act, bias=False).double()
        with torch.no_grad():
            cell.weight_hh.copy_(U)
            cell.weight_ih.copy_(torch.eye(H, dtype=torch.float64))
        hs, state = [], cell.initial_state(1, dtype=torch.float64)
        for t in range(T):
            x = h0 if t == 0 else torch.zeros_like(h0)
            _, state = cell(x, state)
            hs.append(state.h)
        loss = (v * hs[-1]).sum()
        grads = torch.autograd.grad(loss, hs)
        hn = [float(h.norm()) for h in hs]
        gn = [float(d.norm()) for d in grads]
        label = f"ρ={rho} ({act})"
        ax1.semilogy(range(1, T + 1), hn, label=label)
        ax2.semilogy(range(1, T + 1), gn, label=label)
        if act == "identity":
            # the lecture's prediction from the eigen-decomposition U = V diag(λ) V^-1
            Ut = [torch.linalg.matrix_power(U, t) for t in range(T)]
            pred_h = [float((Ut[t] @ h0[0]).norm()) for t in range(T)]
            pred_g = [float((Ut[T - 1 - t].T @ v[0]).norm()) for t in range(T)]
            err = max(abs(a - b) / b for a, b in zip(hn + gn, pred_h + pred_g))
            s_h = _slope(hn, T // 3)
            s_g = _slope(gn[::-1], T // 3)  # growth of the gradient going back in time
            rows.append(
                claim(
                    "vanishing",
                    f"ρ={rho}: ‖h(t)‖ = ‖U^t h(0)‖ (prediction)",
                    f"max rel. err {err:.1e}",
                    "< 1e-8",
                    LECTURE,
                    err < 1e-8,
                )
            )
            rows.append(
                claim(
                    "vanishing",
                    f"ρ={rho}: slope of log‖h(t)‖",
                    round(s_h, 4),
                    round(math.log(rho), 4),
                    LECTURE,
                    abs(s_h - math.log(rho)) < 0.01,
                )
            )
            rows.append(
                claim(
                    "vanishing",
                    f"ρ={rho}: slope of log‖∂L/∂h(T-k)‖ in k",
                    round(s_g, 4),
                    round(math.log(rho), 4),
                    LECTURE,
                    abs(s_g - math.log(rho)) < 0.01,
                )
            )
        else:
            bound = math.sqrt(H)
            rows.append(
                claim(
                    "vanishing",
                    f"tanh, ρ={rho}: the state saturates instead of exploding",
                    f"max ‖h‖ = {max(hn):.2f}",
                    f"≤ √H = {bound:.2f}",
                    LECTURE,
                    max(hn) <= bound,
                )
            )
            rows.append(
                claim(
                    "vanishing",
                    f"tanh, ρ={rho}: gradient slope (saturated units pass little)",
                    round(_slope(gn[::-1], T // 3), 4),
                    f"< log ρ = {math.log(rho):.3f}",
                    LECTURE,
                    _slope(gn[::-1], T // 3) < math.log(rho),
                )
            )
    ax1.set(xlabel="t", ylabel="‖h(t)‖", title="forward: h(t) = U^t h(0)")
    ax2.set(xlabel="t", ylabel="‖∂L/∂h(t)‖", title="backward: (Uᵀ)^(T-t) δ(T)")
    ax1.legend(fontsize=7)
    save(fig)
    for r in rows:
        r.seconds = round(tm.lap(), 2) if r is rows[-1] else 0.0
    return rows


# ------------------------------------------------------------------------ temporal XOR ----
def _xor_net(kind: str, hidden: int) -> nn.Module:
    if kind == "elman":
        cell: nn.Module = ElmanCell(1, hidden, 1, activation="sigmoid", output_activation="sigmoid")
    else:
        cell = JordanCell(1, hidden, 1, activation="sigmoid", output_activation="sigmoid")
    return Recurrent(cell)  # type: ignore[arg-type]


@experiment("xor", "Elman's temporal XOR: low error on every third bit; Jordan vs Elman", order=30)
def xor(ctx: RunContext) -> list[Claim]:
    with threads(1):  # small models: one thread beats two on a shared 2-core machine
        return _xor(ctx)


def _xor(ctx: RunContext) -> list[Claim]:
    """Elman (1990): a 1-2-1 network with 2 context units reads a 3,000-bit stream of triples
    (a, b, a XOR b) and predicts the next bit; only every third bit is predictable."""
    from ..data import TemporalXOR

    tm = Timer()
    passes = 600
    train = TemporalXOR(100, 30, seed=ctx.seed)  # 3,000 bits as 100 chunks of 30
    test = TemporalXOR(50, 30, seed=ctx.seed + 1)
    pred_mask = test.predictable  # (T,)
    rows: list[Claim] = []
    fig = figure(ctx.out_dir / "xor_error_by_phase.png")
    ax = fig.add_subplot(1, 1, 1)
    results = {}
    for kind, hidden in [("elman", 2), ("jordan", 2), ("elman", 8)]:
        torch.manual_seed(ctx.seed)
        net = _xor_net(kind, hidden)
        losses = fit(
            net,
            lambda k: (train.x, train.y),
            lambda m, b: F.mse_loss(m(b[0])[0], b[1]),
            passes,
            lr=0.05,
            clip=None,
        )
        with torch.no_grad():
            err = (net(test.x)[0] - test.y).pow(2).mean(dim=(0, 2))  # (T,)
        e_pred, e_other = float(err[pred_mask].mean()), float(err[~pred_mask].mean())
        results[(kind, hidden)] = (e_pred, e_other, losses[-1])
        phase = [float(err[p::3].mean()) for p in range(3)]
        ax.plot(range(3), phase, "o-", label=f"{kind} 1-{hidden}-1")
    e_pred, e_other, _ = results[("elman", 2)]
    rows.append(
        claim(
            "xor",
            "Elman 1-2-1: squared error on the predictable (XOR) bits",
            round(e_pred, 4),
            f"well below the other bits' {e_other:.3f}",
            "Elman 1990, Fig. 3",
            e_pred < 0.5 * e_other,
        )
    )
    rows.append(
        claim(
            "xor",
            "unpredictable bits stay at chance (MSE of guessing 0.5 is 0.25)",
            round(e_other, 4),
            "≈ 0.25",
            "Elman 1990",
            abs(e_other - 0.25) < 0.05,
        )
    )
    j_pred, j_other, _ = results[("jordan", 2)]
    rows.append(
        claim(
            "xor",
            "Jordan 1-2-1 (state = its 1-d output): error on the XOR bits",
            round(j_pred, 4),
            f"Elman's {e_pred:.4f}",
            "lecture: Jordan is less powerful",
            None,
        )
    )
    b_pred, _, _ = results[("elman", 8)]
    rows.append(
        claim(
            "xor",
            "Elman with 8 hidden units: error on the XOR bits",
            round(b_pred, 4),
            "near 0",
            "Elman 1990",
            None,
        )
    )
    # Position p = t mod 3 of the input; the target is the *next* bit. Name each position by
    # the bit it predicts, from the data's own mask (the predictable one is a XOR b).
    p_star = int(torch.nonzero(pred_mask[:3])[0])
    names = {p_star: "a XOR b (predictable)", (p_star - 1) % 3: "b", (p_star + 1) % 3: "next a"}
    ax.set(
        xticks=[0, 1, 2],
        xticklabels=[f"t mod 3 = {p}\npredict {names[p]}" for p in range(3)],
        xlabel="phase of the input bit (the target is the next bit)",
        ylabel="test MSE of the next-bit prediction",
        title=f"temporal XOR after {passes} passes",
    )
    ax.legend()
    save(fig)
    rows[-1].seconds = round(tm.lap(), 2)
    return rows
