"""Figures of the dynamic-systems toolkit (matplotlib, Agg canvas; PNG, SVG, PDF by suffix).

Every function returns a :class:`matplotlib.figure.Figure` and, given ``path``, also writes it.
Figures are built on an Agg canvas without pyplot, so nothing here touches global matplotlib
state or needs a display.

* :func:`cobweb`: a 1-D map's cobweb diagram (the lecture's h(t+1) = 0.8 h(t) + 1 converging
  to 5, and 1.4 h(t) + 1 running away from -2.5);
* :func:`trajectories_pca`: trajectories and fixed points in a PCA projection, fixed points
  coloured by stability;
* :func:`eigenvalues`: eigenvalues against the unit circle;
* :func:`bifurcation_diagram`: the attractor of a 1-D family against its parameter (the
  logistic map by default);
* :func:`gradient_norms`: ‖∂L/∂h(t)‖ (or ‖U^t h(0)‖) through time, measured vs predicted;
* :func:`continuation`: branches of a continuation sweep with their bifurcations.

Shapes: B batch, T time, N state size, M fixed points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as exc:  # pragma: no cover - optional dependency
    raise ImportError("rnnlab.plots needs matplotlib: pip install 'rnnlab[plots]'") from exc

from .._checks import check_float, check_int
from ..dynamics.continuation import Continuation
from ..dynamics.fixedpoints import FixedPoints
from ..dynamics.gradients import GradientFlow, NormPrediction
from ..dynamics.maps import as_map
from ..dynamics.stability import Stability

#: colours of the stability labels
COLORS = {"stable": "tab:blue", "marginal": "tab:orange", "unstable": "tab:red"}
PathLike = str | Path


def _figure(width: float = 5.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: PathLike | None) -> Figure:
    if path is not None:
        fig.savefig(Path(path))
    return fig


def _np(t: Any) -> Any:
    return (t.detach().cpu() if isinstance(t, Tensor) else torch.as_tensor(t)).numpy()


def cobweb(
    f: Any,
    h0: float,
    steps: int = 30,
    *,
    xlim: tuple[float, float] | None = None,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Cobweb diagram of a 1-D map: the graph of f, the diagonal and the orbit from ``h0``.

    Args:
        f: a 1-D map (anything :func:`rnnlab.dynamics.as_map` accepts, ``state_size`` 1; a plain
            function ``h -> h_new`` on tensors is wrapped).
        h0: the initial state.
        steps: number of iterations drawn (an orbit leaving ``xlim`` is drawn until it leaves).
        xlim: the h range (default: the orbit and its fixed points, with a margin).

    Example:
        >>> fig = cobweb(lambda h: 0.8 * h + 1, 0.0, 30)      # converges to h* = 5
    """
    m = as_map(f, state_size=1)
    if m.state_size != 1:
        raise ValueError(f"f: expected a 1-D map (state_size 1), got state_size {m.state_size}")
    h0 = check_float(h0, "h0")
    check_int(steps, "steps", low=1)
    m = m.to(dtype=torch.float64)
    with torch.no_grad():
        orbit = [float(h0)]
        h = torch.tensor([[float(h0)]], dtype=torch.float64)
        for _ in range(steps):
            h = m.step(h)
            v = float(h)
            if not math.isfinite(v):
                break
            orbit.append(v)
    if xlim is None:
        lo, hi = min(orbit), max(orbit)
        if len(orbit) > 2 and abs(orbit[-1]) > 10 * max(1.0, abs(orbit[0])):  # diverging
            lo, hi = min(orbit[:6]), max(orbit[:6])
        span = max(hi - lo, 1.0)
        lo, hi = lo - 0.25 * span, hi + 0.25 * span
    else:
        lo, hi = float(xlim[0]), float(xlim[1])
        if not lo < hi:
            raise ValueError(f"xlim: expected (low, high) with low < high, got {xlim!r}")
    grid = torch.linspace(lo, hi, 400, dtype=torch.float64)[:, None]
    with torch.no_grad():
        fg = m.step(grid)[:, 0]
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(_np(grid[:, 0]), _np(fg), color="tab:blue", label="h(t+1) = f(h(t))")
    ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", label="h(t+1) = h(t)")
    xs, ys = [orbit[0]], [orbit[0]]
    for a, b in zip(orbit[:-1], orbit[1:]):
        if not (lo - (hi - lo) <= b <= hi + (hi - lo)):
            xs += [a]
            ys += [b]
            break
        xs += [a, b]
        ys += [b, b]
    ax.plot(xs, ys, color="tab:red", linewidth=1.0, label=f"orbit from h(0) = {orbit[0]:g}")
    # fixed points: sign changes of f(h) - h on the grid, refined by bisection
    g = _np(fg - grid[:, 0])
    for i in range(len(g) - 1):
        if g[i] == 0 or g[i] * g[i + 1] < 0:
            a, b = float(grid[i]), float(grid[i + 1])
            for _ in range(60):
                c = 0.5 * (a + b)
                with torch.no_grad():
                    gc = float(m.step(torch.tensor([[c]], dtype=torch.float64))) - c
                    ga = float(m.step(torch.tensor([[a]], dtype=torch.float64))) - a
                if ga * gc <= 0:
                    b = c
                else:
                    a = c
            ax.plot([a], [a], "o", color="black", markersize=5)
            ax.annotate(f"h* = {a:.4g}", (a, a), textcoords="offset points", xytext=(6, -12))
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("h(t)")
    ax.set_ylabel("h(t+1)")
    ax.set_title(title or "cobweb diagram")
    ax.legend(loc="best", fontsize="small")
    return _finish(fig, path)


def trajectories_pca(
    trajectories: Any,
    fixed_points: FixedPoints | None = None,
    *,
    components: tuple[int, int] = (0, 1),
    max_trajectories: int = 50,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Trajectories (B, T, N) and fixed points in the plane of two principal components.

    The PCA is fitted on the trajectories' states. Fixed points are coloured by label
    (stable blue, marginal orange, unstable red) and marked by their number of unstable
    directions (0 filled circle, 1 triangle, 2 square, 3+ diamond).
    """
    X = torch.as_tensor(trajectories).detach().to(torch.float64)
    if X.dim() == 2:
        X = X[None]
    if X.dim() != 3:
        raise ValueError(f"trajectories: expected (B, T, N) or (T, N), got {tuple(X.shape)}")
    N = X.shape[-1]
    c0, c1 = components
    if not (0 <= c0 < N and 0 <= c1 < N and c0 != c1):
        raise ValueError(f"components: expected two distinct indices below {N}, got {components!r}")
    flat = X.reshape(-1, N)
    flat = flat[torch.isfinite(flat).all(dim=1)]
    mean = flat.mean(dim=0)
    _, S, Vh = torch.linalg.svd(flat - mean, full_matrices=False)
    P = Vh[[c0, c1]].T  # (N, 2)
    var = (S**2) / (S**2).sum()
    fig = _figure(5.5, 4.5)
    ax = fig.add_subplot()
    for traj in X[:max_trajectories]:
        z = (traj - mean) @ P
        ax.plot(_np(z[:, 0]), _np(z[:, 1]), color="0.6", linewidth=0.6, alpha=0.7)
    if fixed_points is not None and len(fixed_points):
        if fixed_points.points.shape[-1] != N:
            raise ValueError(
                f"fixed_points: expected points of size {N} (the trajectories'), "
                f"got {fixed_points.points.shape[-1]}"
            )
        Z = (fixed_points.points.to(torch.float64) - mean) @ P
        markers = {0: "o", 1: "^", 2: "s"}
        seen = set()
        for z, lab, k in zip(Z, fixed_points.labels, fixed_points.n_unstable.tolist()):
            key = (lab, min(k, 3))
            name = f"{lab}" + (f", {k} unstable dir." if k else "")
            ax.scatter(
                [float(z[0])],
                [float(z[1])],
                s=45,
                marker=markers.get(k, "D"),
                color=COLORS.get(lab, "k"),
                edgecolor="k",
                zorder=3,
                label=None if key in seen else name,
            )
            seen.add(key)
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel(f"PC{c0 + 1} ({100 * float(var[c0]):.0f}% var.)")
    ax.set_ylabel(f"PC{c1 + 1} ({100 * float(var[c1]):.0f}% var.)")
    ax.set_title(title or "trajectories and fixed points (PCA)")
    return _finish(fig, path)


def eigenvalues(
    values: Any,
    *,
    labels: tuple[str, ...] | None = None,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Eigenvalues in the complex plane against the unit circle |λ| = 1.

    Args:
        values: a :class:`FixedPoints` or :class:`Stability` (one colour per point's label), or
            eigenvalues (N,) or (M, N) (complex or real).
        labels: a label per row of ``values`` when it is a tensor.
    """
    if isinstance(values, (FixedPoints, Stability)):
        ev, labels = values.eigenvalues, values.labels
    else:
        ev = torch.as_tensor(values)
    if ev.dim() == 1:
        ev = ev[None]
    if ev.dim() != 2:
        raise ValueError(f"values: expected (N,) or (M, N) eigenvalues, got {tuple(ev.shape)}")
    if labels is not None and len(labels) != ev.shape[0]:
        raise ValueError(f"labels: expected {ev.shape[0]} labels, got {len(labels)}")
    ev = ev.to(torch.complex128)
    fig = _figure(4.5, 4.5)
    ax = fig.add_subplot()
    th = torch.linspace(0, 2 * math.pi, 400)
    ax.plot(_np(th.cos()), _np(th.sin()), color="0.4", linewidth=1.0, label="|λ| = 1")
    seen = set()
    for i, row in enumerate(ev):
        lab = labels[i] if labels is not None else None
        color = COLORS.get(lab, "tab:blue") if lab else "tab:blue"
        ax.scatter(
            _np(row.real),
            _np(row.imag),
            s=14,
            color=color,
            alpha=0.8,
            label=lab if lab and lab not in seen else None,
        )
        if lab:
            seen.add(lab)
    r = max(1.1, float(ev.abs().max()) * 1.1) if ev.numel() else 1.1
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", linewidth=0.5)
    ax.axvline(0, color="0.85", linewidth=0.5)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(title or "eigenvalues and the unit circle")
    ax.legend(loc="upper right", fontsize="small")
    return _finish(fig, path)


def _logistic(h: Tensor, r: Tensor) -> Tensor:
    return r * h * (1 - h)


def bifurcation_diagram(
    f: Callable[[Tensor, Tensor], Tensor] | None = None,
    parameters: Any = None,
    *,
    h0: float = 0.5,
    transient: int = 500,
    keep: int = 200,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """The attractor of a 1-D family h' = f(h, r) against r: the last ``keep`` states after
    ``transient`` iterations, for every r at once.

    Args:
        f: ``(h (R,), r (R,)) -> h_new (R,)``; default the logistic map r h (1 - h).
        parameters: the r values (default 1000 values in [2.5, 4]).

    Example:
        >>> fig = bifurcation_diagram()   # period doubling from r = 3, chaos near 3.57
    """
    fn = _logistic if f is None else f
    if not callable(fn):
        raise TypeError(f"f: expected a callable (h, r) -> h_new, got {type(fn).__name__}")
    r = (
        torch.linspace(2.5, 4.0, 1000, dtype=torch.float64)
        if parameters is None
        else (torch.as_tensor(parameters, dtype=torch.float64).reshape(-1))
    )
    if r.numel() == 0:
        raise ValueError("parameters: expected at least one value, got none")
    check_int(transient, "transient", low=0)
    check_int(keep, "keep", low=1)
    h = torch.full_like(r, float(h0))
    out = torch.empty(keep, r.numel(), dtype=torch.float64)
    with torch.no_grad():
        for _ in range(transient):
            h = fn(h, r)
        for k in range(keep):
            h = fn(h, r)
            out[k] = h
    if out.shape != (keep, r.numel()):
        raise ValueError(f"f: expected output of shape ({r.numel()},), got another shape")
    fig = _figure(6.5, 4.0)
    ax = fig.add_subplot()
    R = r[None].expand_as(out)
    ok = torch.isfinite(out)
    ax.scatter(_np(R[ok]), _np(out[ok]), s=0.1, color="black", alpha=0.4, rasterized=True)
    ax.set_xlabel("r")
    ax.set_ylabel("h (attractor)")
    ax.set_title(title or ("logistic map h' = r h (1 - h)" if f is None else "bifurcation diagram"))
    return _finish(fig, path)


def gradient_norms(
    result: GradientFlow | NormPrediction,
    *,
    log: bool = True,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Norms through time, measured and predicted.

    A :class:`GradientFlow` gives ‖∂L/∂h(t)‖ against t (mean over the batch): autograd, the
    Jacobian-product prediction and the lecture's ‖(Uᵀ)^{T-t} δ(T)‖. A
    :class:`NormPrediction` gives ‖U^t v‖: eigen-decomposition, measured and ρ^t‖v‖.
    """
    fig = _figure(5.5, 4.0)
    ax = fig.add_subplot()
    if isinstance(result, GradientFlow):
        t = _np(result.steps)
        ax.plot(
            t, _np(result.measured.mean(0)), "o", ms=3, color="black", label="measured (autograd)"
        )
        ax.plot(t, _np(result.predicted.mean(0)), color="tab:blue", label="Jacobian products")
        if result.linear is not None:
            ax.plot(
                t,
                _np(result.linear.mean(0)),
                "--",
                color="tab:red",
                label=f"(Uᵀ)^(T-t) δ(T), ρ(U) = {result.spectral_radius:.3g}",
            )
        ax.set_ylabel("‖∂L/∂h(t)‖")
        default = "gradient norm through time"
    elif isinstance(result, NormPrediction):
        t = _np(result.steps)
        ax.plot(t, _np(result.measured), "o", ms=3, color="black", label="measured")
        ax.plot(t, _np(result.predicted), color="tab:blue", label="V diag(λ)^t V⁻¹ v")
        ax.plot(
            t,
            _np(result.asymptotic),
            "--",
            color="tab:red",
            label=f"ρ^t ‖v‖, ρ = {result.spectral_radius:.3g}",
        )
        ax.set_ylabel("norm")
        default = "‖U^t v‖ through time"
    else:
        raise TypeError(
            f"result: expected a GradientFlow or NormPrediction, got {type(result).__name__}"
        )
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_title(title or default)
    ax.legend(loc="best", fontsize="small")
    return _finish(fig, path)


def continuation(
    result: Continuation,
    *,
    component: int = 0,
    title: str | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Branches of a :class:`Continuation` (one state component against s), coloured by
    stability, with folds (x), period doublings (o) and other bifurcations (*) marked."""
    if not isinstance(result, Continuation):
        raise TypeError(f"result: expected a Continuation, got {type(result).__name__}")
    fig = _figure(5.5, 4.0)
    ax = fig.add_subplot()
    for br in result.branches:
        N = br.points.shape[1]
        if not 0 <= component < N:
            raise ValueError(f"component: expected an index below {N}, got {component}")
        s, y = _np(br.parameters), _np(br.points[:, component])
        for i in range(len(s) - 1):
            ax.plot(
                s[i : i + 2],
                y[i : i + 2],
                color=COLORS.get(br.labels[i], "k"),
                linestyle="-" if br.labels[i] == "stable" else "--",
            )
    style = {"fold": ("x", "black"), "period_doubling": ("o", "tab:green")}
    for ev in result.bifurcations:
        mk, col = style.get(ev.kind, ("*", "tab:purple"))
        ax.plot(
            [ev.parameter],
            [float(ev.point[component])],
            mk,
            color=col,
            ms=8,
            mfc="none",
            label=ev.kind,
        )
    handles, names = ax.get_legend_handles_labels()
    uniq = dict(zip(names, handles))
    if uniq:
        ax.legend(uniq.values(), uniq.keys(), loc="best", fontsize="small")
    ax.set_xlabel("s  (input = start + s · (end - start))")
    ax.set_ylabel(f"h[{component}]")
    ax.set_title(title or "fixed points along the input (solid: stable)")
    return _finish(fig, path)


__all__ = [
    "COLORS",
    "bifurcation_diagram",
    "cobweb",
    "continuation",
    "eigenvalues",
    "gradient_norms",
    "trajectories_pca",
]
