"""The lecture's two 1-D maps: h(t+1) = 0.8 h(t) + 1 converges to h* = 5 from any start;
h(t+1) = 1.4 h(t) + 1 has the fixed point h* = -2.5 and runs away from it.

Everything is measured with the dynamics toolkit: fixed points in closed form (a linear map)
and by the numerical search (the same map as a plain function), their multipliers f'(h*) and
labels, orbits from many starts, and the Lyapunov exponent ln|f'| (the rate at which nearby
orbits separate; the Hénon experiment measures the same quantity on a chaotic map).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import Timer, claim, figure, save
from .registry import Claim, RunContext, experiment

SOURCE = "lecture, 'Examples about stability'"


def _map_rows(a: float, ctx: RunContext, starts: Tensor, steps: int) -> tuple[list[Claim], Tensor]:
    from ..dynamics import Map, find_fixed_points, lyapunov_spectrum, multiplier

    b = 1.0
    h_star = b / (1.0 - a)  # the lecture's fixed point, by hand: 5 or -2.5
    name = f"h(t+1) = {a}h(t) + 1"
    # float64 parameters: Python floats would become float32 tensors, and 0.8 in float32
    # moves the closed-form h* by 3e-7
    f64 = torch.float64
    linear = Map.linear(torch.tensor([[a]], dtype=f64), torch.tensor([b], dtype=f64))
    closed = find_fixed_points(linear)  # closed form for a linear map
    func = Map.from_function(lambda h: a * h + b, state_size=1, name=name)
    search = find_fixed_points(func, torch.linspace(-20, 20, 41)[:, None], n_seeds=64)
    mult = float(multiplier(func, torch.tensor([[h_star]], dtype=torch.float64))[0])
    orbits = func.simulate(starts.to(torch.float64), steps)[..., 0]  # (B, T+1)
    lyap = lyapunov_spectrum(func, torch.tensor([[h_star + 0.1]]), 200, warmup=0).maximal
    stable = abs(a) < 1
    rows = [
        claim(
            "maps",
            f"{name}: fixed point (closed form; search: {len(search)} point(s))",
            [round(float(p), 6) for p in closed.points[:, 0]],
            f"[{h_star:g}]",
            SOURCE,
            len(closed) == 1
            and abs(float(closed.points[0, 0]) - h_star) < 1e-9
            and len(search) == 1
            and abs(float(search.points[0, 0]) - h_star) < 1e-8,
        ),
        claim(
            "maps",
            f"{name}: multiplier f'(h*) and label ({closed.labels[0]})",
            round(mult, 6),
            f"{a} ({'|f′| < 1: stable' if stable else '|f′| > 1: unstable'})",
            SOURCE,
            abs(mult - a) < 1e-9 and closed.labels[0] == ("stable" if stable else "unstable"),
        ),
        claim(
            "maps",
            f"{name}: Lyapunov exponent (separation rate of nearby orbits)",
            round(lyap, 6),
            f"ln {a} = {math.log(a):.6f}",
            "ln|f′| for a 1-D linear map",
            abs(lyap - math.log(a)) < 1e-6,
        ),
    ]
    if stable:
        err = float((orbits[:, -1] - h_star).abs().max())
        lo, hi = float(starts.min()), float(starts.max())
        rows.append(
            claim(
                "maps",
                f"{name}: max |h({steps}) - 5| over {len(starts)} starts in [{lo:g}, {hi:g}]",
                f"{err:.1e}",
                f"≤ 0.8^{steps}·max|h(0) - 5| = {0.8**steps * float((starts - 5).abs().max()):.1e}",
                SOURCE,
                err <= 1.01 * 0.8**steps * float((starts - 5).abs().max()) + 1e-12,
            )
        )
    else:
        away = orbits[(starts[:, 0] != h_star)]
        t = min(steps, 40)
        grown = float((away[:, t] - h_star).abs().min())
        rate = float(
            torch.log((away[:, t] - h_star).abs() / (away[:, 0] - h_star).abs()).mean() / t
        )
        rows.append(
            claim(
                "maps",
                f"{name}: growth rate of |h(t) - h*| per step, starts ≠ h* (min |h({t}) - h*| "
                f"= {grown:.2e})",
                round(rate, 6),
                f"ln 1.4 = {math.log(a):.6f} (diverges)",
                SOURCE,
                abs(rate - math.log(a)) < 1e-6
                and grown > 1e3 * float((away[:, 0] - h_star).abs().min()),
            )
        )
    return rows, orbits


@experiment("maps", "The 1-D maps: 0.8h+1 converges to 5 from any start, 1.4h+1 diverges", order=10)
def maps(ctx: RunContext) -> list[Claim]:
    from ..plots.dynamics import cobweb

    tm = Timer()
    n = 201 if ctx.full else 41
    steps = 100
    starts = torch.linspace(-100.0, 100.0, n, dtype=torch.float64)[:, None]
    rows_s, orb_s = _map_rows(0.8, ctx, starts, steps)
    # the unstable map from near its fixed point (it leaves float range quickly from far away)
    near = -2.5 + torch.linspace(-1.0, 1.0, n, dtype=torch.float64)[:, None]
    near = near[near[:, 0] != -2.5]
    rows_u, orb_u = _map_rows(1.4, ctx, near, 40)

    cobweb(lambda h: 0.8 * h + 1, 0.0, 30, title="h(t+1) = 0.8h(t) + 1 from h(0) = 0").savefig(
        ctx.out_dir / "cobweb_stable.png"
    )
    cobweb(lambda h: 0.8 * h + 1, 12.0, 30, title="h(t+1) = 0.8h(t) + 1 from h(0) = 12").savefig(
        ctx.out_dir / "cobweb_stable_from_above.png"
    )
    cobweb(lambda h: 1.4 * h + 1, -2.4, 12, title="h(t+1) = 1.4h(t) + 1 from h(0) = -2.4").savefig(
        ctx.out_dir / "cobweb_unstable.png"
    )

    fig = figure(ctx.out_dir / "map_orbits.png")
    fig.set_size_inches(9.0, 3.6)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for row in orb_s[:: max(1, n // 10)]:
        ax1.plot(row[:40].numpy(), lw=0.8)
    ax1.axhline(5, color="k", ls="--", lw=0.8)
    ax1.set(xlabel="t", ylabel="h(t)", title="0.8h + 1: every orbit goes to h* = 5")
    for row in orb_u[:: max(1, n // 10)]:
        ax2.plot((row - (-2.5)).abs().numpy(), lw=0.8)
    ax2.set(
        xlabel="t", ylabel="|h(t) - h*|", yscale="log", title="1.4h + 1: orbits leave h* = -2.5"
    )
    save(fig)
    rows = rows_s + rows_u
    rows[-1].seconds = round(tm.lap(), 2)
    return rows
