"""``rnnlab analyze RUN_OR_CHECKPOINT``: the dynamic-systems view of a trained model.

Loads a run directory or checkpoint written by ``rnnlab train`` and analyses the system the
model *is* (:func:`rnnlab.dynamics.as_map` maps the recurrent core through its own cells):

* **closed loop** (default when the model's real-valued output is fed back as its next input,
  ``feedback: input``, e.g. examples/train_sine.yaml): the autonomous map
  h(t+1) = f(h(t), x = readout(g(h(t)))), the system ``rnnlab generate`` runs;
* **open loop** otherwise (or with ``--loop open``): h(t+1) = f(h(t), x) at a constant input x
  (zeros by default). Token models fed back by argmax or sampling are not differentiable maps,
  so they are analysed open-loop; models with ``feedback: state`` are autonomous already.

Every report says which system it analysed. ``--out`` (default ``RUN/analysis``) gets

* ``analysis.json``: the system; the long-run behaviour from the state ``generate`` reaches
  after priming (closed loop; open loop: from the zero state): a stable fixed point, a k-cycle,
  or quasi-periodic/chaotic with its largest Lyapunov exponent, and, closed loop, how far the
  map's outputs are from ``generate``'s; fixed points (points, residuals, eigenvalues, labels,
  non-converged seeds); the Lyapunov spectrum; the spectrum of each recurrent weight block
  (GRU's U_r, U_z, U_h; LSTM's gate blocks), or the reason it is omitted;
* ``fixed_points_pca.png`` and ``eigenvalues.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ._checks import check_choice

LOOPS = ("auto", "open", "closed")


def _system(model: Any, loop: str, input_value: float) -> tuple[str, str]:
    """("open" | "closed", a sentence saying which system is analysed and why)."""
    check_choice(loop, "loop", LOOPS)
    fb = model.feedback
    real_input = fb == "input" and not model.tokens and not model.seq2seq
    if loop == "closed" and not real_input:
        why = (
            "its tokens are fed back by argmax or sampling, which is not a differentiable map"
            if fb == "input" and model.tokens
            else (
                "an encoder-decoder's closed loop starts from the encoder's state"
                if model.seq2seq
                else f"its output is not fed back as its input (feedback {fb!r})"
            )
        )
        raise ValueError(
            f"loop: 'closed' needs a real-valued model whose output is its next input; {why}. "
            "Use loop 'open' (a constant input)"
        )
    if real_input and loop != "open":
        return "closed", (
            "closed loop: h(t+1) = f(h(t), x = readout(y(h(t)))), the output fed back as the "
            "next input, as `rnnlab generate` runs it"
        )
    note = f"open loop: h(t+1) = f(h(t), x) at the constant input x = {input_value:g}"
    if fb == "input" and model.tokens:
        note += (
            " (the model feeds back tokens by argmax or sampling, which is not a differentiable "
            "map, so its closed loop is not analysed)"
        )
    elif fb == "input":
        note += " (chosen with --loop open; the model runs its closed loop in generate)"
    elif fb == "state":
        note += (
            " (the output feeds back through the state, so this map is already the closed system)"
        )
    return "open", note


def _weight_blocks(cells: list[Any]) -> list[dict[str, Any]]:
    """The spectrum of every square recurrent block of each layer, or why it is omitted."""
    from .dynamics import spectrum

    rows: list[dict[str, Any]] = []
    for k, c in enumerate(cells):
        w = getattr(c, "weight_hh", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            rows.append(
                {
                    "layer": k,
                    "omitted": f"{type(c).__name__} has no recurrent weight matrix weight_hh "
                    "(its recurrence is inside a wrapped cell or a function)",
                }
            )
            continue
        n_out, n_in = w.shape
        if n_out % n_in != 0:
            rows.append(
                {
                    "layer": k,
                    "omitted": f"weight_hh is {tuple(w.shape)}: its blocks map {n_in} inputs "
                    f"(e.g. a projection or the previous output) to {n_out} units, not a state "
                    "onto itself, so they have no eigenvalues",
                }
            )
            continue
        G = n_out // n_in
        names = getattr(c, "blocks", None)
        if names is None or len(names) != G:
            names = ("r", "z", "n") if G == 3 else tuple(f"block{j}" for j in range(G))
        for j, name in enumerate(names):
            s = spectrum(w.detach()[j * n_in : (j + 1) * n_in])
            rows.append(
                {
                    "layer": k,
                    "block": name if G > 1 else "U",
                    "shape": [n_in, n_in],
                    "spectral_radius": s.spectral_radius,
                    "largest_singular_value": s.norm,
                    "spectrum": str(s),
                }
            )
    return rows


def _validation_prime(path: str | Path, steps: int) -> torch.Tensor:
    """The first ``steps`` inputs of the run's first validation sequence (as generate uses)."""
    from .training.trainer import trainer_from_checkpoint

    t = trainer_from_checkpoint(path)
    p = t._prepare(t.task.batch("val", torch.arange(1)))
    return p["x"][:, :steps].detach().cpu()


def _own_folder(out: Path) -> None:
    """``out`` as a folder of rnnlab analyze: a new one, an empty one, one it made before (its
    marker, or exactly its files); anything else is refused before any work."""
    from ._files import UnsafePathError, check_replaceable, make_folder, read_marker

    if out.is_symlink() or out.is_file():
        raise ValueError(
            f"--out: expected a folder for the analysis, got the file or link {str(out)!r}"
        )
    if out.is_dir() and read_marker(out) is not None:
        return
    try:
        check_replaceable(out, "analysis", what="--out")
    except UnsafePathError:
        raise ValueError(
            f"--out: {str(out)!r} exists and rnnlab analyze did not make it (no .rnnlab-run.json, "
            "other files than analysis.json and its figures); choose a new folder (nothing was "
            "changed)"
        ) from None
    make_folder(out, "analysis")


def analyze(
    path: str | Path,
    out: Path | None = None,
    *,
    input_value: float = 0.0,
    seeds: int = 512,
    steps: int = 300,
    loop: str = "auto",
    prime: torch.Tensor | None = None,
    prime_steps: int = 10,
    behaviour_steps: int = 2000,
) -> dict[str, Any]:
    """Run the analysis; return the JSON-able summary (also written to ``out``).

    Args:
        path: a run directory or checkpoint of ``rnnlab train``.
        out: the output folder (default ``RUN/analysis``).
        input_value: the constant input of the open loop.
        seeds: fixed-point search seeds; steps: simulation and Lyapunov steps.
        loop: "auto" (closed when a real-valued output is fed back as the input), "open",
            "closed".
        prime: (1, P, I) inputs read first (closed loop), as ``generate``'s ``prime``; default
            the first ``prime_steps`` inputs of the run's first validation sequence.
        behaviour_steps: closed-loop steps from the primed state whose tail is classified.
    """
    from .dynamics import as_map, find_fixed_points, lyapunov_spectrum, simulate
    from .dynamics.behaviour import long_run_behaviour
    from .dynamics.maps import Map
    from .dynamics.modules import ClosedLoopMap
    from .plots import dynamics as plots
    from .training import load_run

    if seeds < 1:
        raise ValueError(f"seeds: expected a positive int, got {seeds}")
    if steps < 10:
        raise ValueError(f"steps: expected at least 10, got {steps}")
    if behaviour_steps < 20:
        raise ValueError(f"behaviour_steps: expected at least 20, got {behaviour_steps}")
    check_choice(loop, "loop", LOOPS)
    model, meta = load_run(path)
    if meta.get("user_model"):  # rebuilt by its factory, but no core/readout to study
        raise ValueError(
            f"run: the model is one of your own ({meta['config']['model']['factory']}); analyze "
            "studies a SequenceModel's core and readout. Call rnnlab.dynamics.as_map on the "
            "rnnlab layers inside it (load_run(path) gives the model back)"
        )
    kind, system = _system(model, loop, input_value)
    core = as_map(model.core)  # the core's own cells; bidirectional cores say why not
    mod = getattr(core, "module", None)
    cells = list(mod) if isinstance(mod, torch.nn.ModuleList) else [mod]
    out = (
        Path(out)
        if out is not None
        else (
            Path(path) / "analysis"
            if Path(path).is_dir()
            else Path(path).with_suffix("") / "analysis"
        )
    )
    _own_folder(out)
    dtype = torch.float64
    f: Map
    behaviour_start: torch.Tensor
    agreement: dict[str, Any] | None = None
    if kind == "closed":
        f = ClosedLoopMap(
            core, model.readout, output_skip=getattr(model.core, "output_skip", False)
        )
        if prime is None:
            prime = _validation_prime(path, prime_steps)
        p_dtype = next(model.parameters()).dtype
        with torch.no_grad():
            _, state = model.core(prime.to(p_dtype), None)
        behaviour_start = core.flatten(state).to(dtype)[:1]
        # agreement with generate: the map's outputs from the primed state are generate's
        n_cmp = min(behaviour_steps, 200)
        with torch.no_grad():
            gen = model.generate(n_cmp, prime=prime[:1].to(p_dtype)).values[0]  # (n, O)
            fm = f.to(dtype=p_dtype)
            traj_p = simulate(fm, core.flatten(state)[:1], n_cmp - 1)[0]  # (n, N)
            y_map = fm._fed(traj_p)  # type: ignore[attr-defined]  # readout(g(h(t)))
        agreement = {
            "steps": n_cmp,
            "max_abs_difference": float((y_map - gen).abs().max()),
            "dtype": str(p_dtype).replace("torch.", ""),
        }
    else:
        x = torch.full((core.input_size,), float(input_value))
        f = core.with_input(x)
        behaviour_start = torch.zeros(1, f.state_size, dtype=dtype)
    f = f.to(dtype=dtype)
    behaviour = long_run_behaviour(f, behaviour_start, behaviour_steps)
    g = torch.Generator().manual_seed(0)
    h0 = 0.5 * torch.randn(64, f.state_size, generator=g, dtype=dtype)
    h0[0] = behaviour_start[0]
    with torch.no_grad():
        traj = simulate(f, h0, steps)  # (B, T+1, n)
    fp = find_fixed_points(f, traj, n_seeds=seeds)
    ly = lyapunov_spectrum(f, behaviour.trajectory[-1:], steps, k=min(f.state_size, 8))
    summary: dict[str, Any] = {
        "checkpoint": meta.get("path"),
        "system": {"loop": kind, "description": system},
        "input": None if kind == "closed" else float(input_value),
        "state_size": f.state_size,
        "behaviour": {
            "start": "the state generate reaches after priming"
            if kind == "closed"
            else "the zero state",
            **behaviour.to_dict(),
        },
        "generate_agreement": agreement,
        "fixed_points": fp.to_dict(),
        "lyapunov": {
            "exponents_nats_per_step": [float(v) for v in ly.exponents],
            "converged": bool(ly.converged),
            "stderr": [float(v) for v in ly.stderr],
            "steps": ly.steps,
        },
        "recurrent_weights": _weight_blocks(cells),
    }
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
    p.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="closed: the output fed back as the next input (default for feedback: input on "
        "real values); open: the constant input --input",
    )
    p.add_argument(
        "--prime-steps", type=int, default=10, help="closed loop: validation inputs read first"
    )


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        s = analyze(
            args.run,
            args.out,
            input_value=args.input,
            seeds=args.seeds,
            steps=args.steps,
            loop=args.loop,
            prime_steps=args.prime_steps,
        )
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"rnnlab analyze: error: {err}", file=sys.stderr)
        return 2
    print(f"system: {s['system']['description']}")
    print(f"from {s['behaviour']['start']}: {s['behaviour']['description']}")
    if s["generate_agreement"] is not None:
        a = s["generate_agreement"]
        print(
            f"the map's outputs vs rnnlab generate over {a['steps']} steps: max |difference| "
            f"{a['max_abs_difference']:.2g}"
        )
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


# The commands this module adds to ``rnnlab`` (cli.py reads this table; no import of cli.py
# here, so no import circle).
COMMANDS = {
    "analyze": (
        "Fixed points, stability and Lyapunov spectrum of a trained model.",
        _add,
        run,
    ),
}
