"""Figures of a training run: the loss curves and the per-step gradient norms ‖∂L/∂h(t)‖
(moved here from rnnlab/training/plots.py, issue 16: every figure lives in rnnlab.plots).

Uses matplotlib's Agg canvas directly (no pyplot, no global backend change), so it works on
machines without a display and leaves a user's own matplotlib set-up alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return out


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)


def plot_loss(run_dir: str | Path) -> Path | None:
    """``loss.png``: training and validation loss against the update step (log scale)."""
    run_dir = Path(run_dir)
    rows = _rows(run_dir / "metrics.jsonl")
    if not rows:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for split, key, style in (
        ("train", "loss", "-"),
        ("val", "loss", "o-"),
        ("val", "forced_loss", "s--"),
    ):
        pts = [
            (r["step"], r[key])
            for r in rows
            if r.get("split") == split
            and isinstance(r.get(key), (int, float))
            and math.isfinite(r[key])
            and r[key] > 0
        ]
        if pts:
            label = f"{split} {key.replace('_', ' ')}"
            if split == "val" and key == "loss":
                label = (
                    "val loss (free running)"
                    if any("forced_loss" in r for r in rows if r.get("split") == "val")
                    else "val loss"
                )
            ax.plot(*zip(*pts), style, label=label, markersize=3)
    ax.set_yscale("log")
    ax.set_xlabel("update step")
    ax.set_ylabel("loss")
    ax.set_title(run_dir.name)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.grid(True, alpha=0.3)
    out = run_dir / "loss.png"
    _save(fig, out)
    return out


def plot_grad_norms(run_dir: str | Path, max_curves: int = 8) -> Path | None:
    """``grad_norms.png``: ‖∂L/∂h(t)‖ against t, one curve per recorded update (log scale)."""
    from matplotlib import colormaps

    run_dir = Path(run_dir)
    rows = [r for r in _rows(run_dir / "grad_norms.jsonl") if r.get("window_start", 0) == 0]
    if not rows:
        return None
    keys = sorted({r["key"] for r in rows})
    fig = _figure(6.4, 2.6 * len(keys) + 0.8)
    cmap = colormaps["viridis"]
    for i, key in enumerate(keys):
        ax = fig.add_subplot(len(keys), 1, i + 1)
        mine = [r for r in rows if r["key"] == key]
        if len(mine) > max_curves:
            pick = [round(j * (len(mine) - 1) / (max_curves - 1)) for j in range(max_curves)]
            mine = [mine[j] for j in sorted(set(pick))]
        for j, r in enumerate(mine):
            norms = [v if v > 0 else float("nan") for v in r["norms"]]
            color = cmap(j / max(1, len(mine) - 1))
            ax.plot(range(len(norms)), norms, color=color, label=f"step {r['step']}")
        ax.set_yscale("log")
        ax.set_ylabel(f"|dL/d{key.rsplit('.', 1)[-1]}(t)|")
        ax.set_title(key, fontsize=9)
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, ncol=2)
    fig.axes[-1].set_xlabel("time step t")
    fig.tight_layout()
    out = run_dir / "grad_norms.png"
    _save(fig, out)
    return out
