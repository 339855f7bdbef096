"""``rnnlab analyze RUN_OR_CHECKPOINT``: the dynamic-systems view of a trained model.

Loads a run directory or checkpoint written by ``rnnlab train``, takes the recurrent part of the
model as the autonomous map h(t+1) = f(h(t), x) with a constant input x (zeros by default), and
writes into ``--out`` (default ``RUN/analysis``):

* ``analysis.json``: fixed points (points, residuals, eigenvalues, stability labels, number of
  unstable directions, non-converged seeds), the Lyapunov spectrum with its convergence report,
  the spectral radius and singular values of each layer's recurrent weight;
* ``fixed_points_pca.png``: trajectories and fixed points in a PCA projection, coloured by
  stability; ``eigenvalues.png``: the Jacobians' eigenvalues against the unit circle.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from .cli import command


def _cells_of(model: Any) -> list[Any]:
    from .layers import Bidirectional, Recurrent, Stacked

    core = model.core
    if isinstance(core, Recurrent):
        return [core.cell]
    if isinstance(core, Stacked) and all(isinstance(m, Recurrent) for m in core.layers):
        if core.input_skip or core.residual:
            raise ValueError(
                "model: skip or residual connections between layers are not a plain stack of "
                "cells; analyze supports Recurrent and plain Stacked models"
            )
        return [m.cell for m in core.layers]
    if isinstance(core, (Bidirectional, Stacked)):
        raise ValueError(
            "model: a bidirectional model is not a causal dynamic system h(t+1) = f(h(t), x(t)); "
            "analyze needs a unidirectional model"
        )
    raise ValueError(f"model: unsupported recurrent core {type(core).__name__}")


def analyze(
    path: str | Path,
    out: Path | None = None,
    *,
    input_value: float = 0.0,
    seeds: int = 512,
    steps: int = 300,
) -> dict[str, Any]:
    """Run the analysis; return the JSON-able summary (also written to ``out``)."""
    from .dynamics import as_map, find_fixed_points, lyapunov_spectrum, simulate, spectrum
    from .plots import dynamics as plots
    from .training import load_run

    if seeds < 1:
        raise ValueError(f"seeds: expected a positive int, got {seeds}")
    if steps < 10:
        raise ValueError(f"steps: expected at least 10, got {steps}")
    model, meta = load_run(path)
    cells = _cells_of(model)
    out = (
        Path(out)
        if out is not None
        else (
            Path(path) / "analysis"
            if Path(path).is_dir()
            else Path(path).with_suffix("") / "analysis"
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    x = torch.full((cells[0].input_size,), float(input_value))
    f = as_map(cells if len(cells) > 1 else cells[0], input=x)
    g = torch.Generator().manual_seed(0)
    h0 = 0.5 * torch.randn(64, f.state_size, generator=g)
    with torch.no_grad():
        traj = simulate(f, h0, steps)  # (B, T+1, n)
    fp = find_fixed_points(f, traj, n_seeds=seeds)
    ly = lyapunov_spectrum(f, h0[:1], steps, k=min(f.state_size, 8))
    summary: dict[str, Any] = {
        "checkpoint": meta.get("path"),
        "input": float(input_value),
        "state_size": f.state_size,
        "fixed_points": fp.to_dict(),
        "lyapunov": {
            "exponents_nats_per_step": [float(v) for v in ly.exponents],
            "converged": bool(ly.converged),
            "stderr": [float(v) for v in ly.stderr],
            "steps": ly.steps,
        },
        "recurrent_weights": [],
    }
    for k, c in enumerate(cells):
        w = getattr(c, "weight_hh", None)
        if w is not None and w.shape[0] == w.shape[1]:
            s = spectrum(w.detach())
            summary["recurrent_weights"].append({"layer": k, "spectrum": str(s)})
    (out / "analysis.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["out"] = str(out)
    plots.trajectories_pca(
        traj, fp, title="trajectories and fixed points", path=out / "fixed_points_pca.png"
    )
    if len(fp.points):
        plots.eigenvalues(
            fp.eigenvalues,
            labels=fp.labels,
            title="Jacobian eigenvalues",
            path=out / "eigenvalues.png",
        )
    return summary


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run directory or a checkpoint file of `rnnlab train`")
    p.add_argument("--out", type=Path, help="output folder (default RUN/analysis)")
    p.add_argument("--input", type=float, default=0.0, help="the constant input x")
    p.add_argument("--seeds", type=int, default=512, help="fixed-point search seeds")
    p.add_argument("--steps", type=int, default=300, help="simulation / Lyapunov steps")


@command("analyze", "Fixed points, stability and Lyapunov spectrum of a trained model.")(_add)
def run(args: argparse.Namespace) -> int:
    s = analyze(args.run, args.out, input_value=args.input, seeds=args.seeds, steps=args.steps)
    fp = s["fixed_points"]
    labels = fp.get("labels", [])
    counts = {k: labels.count(k) for k in sorted(set(labels))}
    print(
        f"{len(labels)} fixed points {counts}; {fp.get('n_failed', 0)} of "
        f"{fp.get('n_seeds', 0)} seeds did not converge"
    )
    ly = s["lyapunov"]["exponents_nats_per_step"]
    print(f"largest Lyapunov exponents (nats/step): {[round(v, 4) for v in ly[:3]]}")
    print(f"wrote {s['out']}/analysis.json, fixed_points_pca.png, eigenvalues.png")
    return 0
