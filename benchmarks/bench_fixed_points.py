"""Fixed-point finder speed: the trained 16-unit GRU fixture and 1024 seeds on 256-unit GRUs.

Targets (issue 5, on the 2-core machine): the full reference set of the trained 16-unit GRU
flip-flop fixture in at most 1 s; 1024 seeds on a 256-unit GRU in at most 10 s.

Cases, each timed after a warm-up, implementations interleaved round by round, medians:

* ``gru16``: ``find_fixed_points(cell, trajectories)`` with the defaults on the committed
  fixture (``tests/fixtures/flipflop_gru16.*``), checked against its reference set (27
  points from a 10^4-seed float64 Newton search). Compared in the same run with the finder
  without descent, and with a FixedPointFinder-style search: Adam on q only (5000 steps,
  float32), whose "fixed points" are the candidates with q < 1e-10;
* ``rnn16``: the same for the tanh-RNN fixture;
* ``gru256-*``: 1024 seeds from trajectories (16 x 200 steps of random input) of a 256-unit
  GRU: torch's default initialisation (``init``); U_h drawn N(0, 4/N) (``gain2``); and a
  GRU trained here on the 3-bit flip-flop for 300 Adam steps (``flipflop``, seeded);
* ``--stress`` adds ``gru256-gain3`` (U_h ~ N(0, 9/N): chaotic, hundreds of unstable points).

Run::

    nice -n 10 .venv/bin/python benchmarks/bench_fixed_points.py

Writes ``benchmarks/results/fixed_points.json`` with the machine (CPU, torch, date) and one run
per thread count (``--threads 1,2``), each with its load average: the machine is shared, and two
OpenMP threads stall badly whenever another process holds a core, so the 1-thread run is the
conservative number.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.flipflop import load, pulses  # noqa: E402
from rnnlab.cells import GRUCell  # noqa: E402
from rnnlab.dynamics import FixedPointSolver, Map, find_fixed_points, simulate  # noqa: E402
from rnnlab.dynamics._fixedpoint_search import _descent, _greedy_clusters  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def descent_only(cell: Any, traj: torch.Tensor, iters: int = 5000) -> dict[str, Any]:
    """FixedPointFinder-style: Adam on q alone; q < 1e-10 counts as a fixed point."""
    m = Map.from_cell(cell).with_input(torch.zeros(cell.input_size)).to(torch.float32)
    from rnnlab.dynamics import sample_seeds

    seeds = sample_seeds(traj, 512, noise=0.05, generator=torch.Generator().manual_seed(0))
    s = FixedPointSolver(descent_iters=iters, descent_tol=0.0, lr=0.05)
    with torch.no_grad():
        h, alive = _descent(m, seeds.clone(), s)
        q = 0.5 * ((m.step(h) - h) ** 2).sum(dim=1)
    small = h[alive & (q < 1e-10)].double()
    reps, _ = _greedy_clusters(small, 1e-6)
    return {"points": int(reps.numel()), "pts": small[reps]}


def match(found: torch.Tensor, ref: torch.Tensor, tol: float) -> tuple[int, int]:
    """(reference points found within tol, found points matching no reference point)."""
    if found.numel() == 0:
        return 0, 0
    d = (ref[:, None] - found[None]).norm(dim=-1)
    return int((d.min(dim=1).values <= tol).sum()), int((d.min(dim=0).values > tol).sum())


def fixture_case(kind: str, rounds: int) -> dict[str, Any]:
    cell, meta = load(kind)
    ref = torch.tensor(meta["reference_fixed_points"]["points"], dtype=torch.float64)
    traj = simulate(cell, torch.zeros(32, 16), inputs=pulses(32, 100, seed=5))
    impls: dict[str, Callable[[], Any]] = {
        "rnnlab": lambda: find_fixed_points(cell, traj),
        "rnnlab_no_descent": lambda: find_fixed_points(cell, traj, descent_iters=0),
        "descent_only_5000": lambda: descent_only(cell, traj),
    }
    for fn in impls.values():  # warm-up
        fn()
    wall: dict[str, list[float]] = {k: [] for k in impls}
    cpu: dict[str, list[float]] = {k: [] for k in impls}
    last: dict[str, Any] = {}
    for r in range(rounds):
        for name, fn in impls.items():
            if name == "descent_only_5000" and r >= 2:
                continue  # slow and deterministic: two rounds suffice
            w, c, out = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
            last[name] = out
    res: dict[str, Any] = {"reference_points": len(ref)}
    for name in impls:
        out = last[name]
        pts = out["pts"] if isinstance(out, dict) else out.points
        tol = 1e-3 if isinstance(out, dict) else 1e-8
        found, extra = match(pts, ref, tol)
        res[name] = {
            "wall_s_median": round(statistics.median(wall[name]), 4),
            "cpu_s_median": round(statistics.median(cpu[name]), 4),
            "wall_s_samples": [round(v, 4) for v in wall[name]],
            "points": int(pts.shape[0]),
            "reference_found": found,
            "extra_points": extra,
            "match_tol": tol,
        }
        if not isinstance(out, dict):
            res[name]["failed_seeds"] = len(out.failed)
            res[name]["counts_by_unstable"] = {str(k): v for k, v in out.counts().items()}
    base = res["descent_only_5000"]["wall_s_median"]
    res["speedup_vs_descent_only"] = round(base / res["rnnlab"]["wall_s_median"], 1)
    return res


def gru256(kind: str) -> tuple[GRUCell, torch.Tensor]:
    torch.manual_seed(0)
    N = 256
    cell = GRUCell(3, N)
    if kind.startswith("gain"):
        g = float(kind[4:])
        with torch.no_grad():
            cell.weight_hh[2 * N :].normal_(0, g / N**0.5)
    if kind == "flipflop":
        readout = nn.Linear(N, 3)
        opt = torch.optim.Adam([*cell.parameters(), *readout.parameters()], lr=3e-3)
        for it in range(300):
            x = pulses(32, 48, seed=1000 + it)
            y = torch.empty_like(x)
            last = x[:, 0]
            for t in range(48):
                last = torch.where(x[:, t] != 0, x[:, t], last)
                y[:, t] = last
            s = cell.initial_state(32)
            outs = []
            for t in range(48):
                h, s = cell.step(x[:, t], s)
                outs.append(readout(h))
            loss = ((torch.stack(outs, 1) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        x = pulses(16, 200, seed=5)
    else:
        x = torch.randn(16, 200, 3, generator=torch.Generator().manual_seed(1))
    traj = simulate(cell, torch.zeros(16, N), inputs=x)
    return cell, traj


def big_case(kind: str, rounds: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    cell, traj = gru256(kind)
    setup = time.perf_counter() - t0
    find_fixed_points(cell, traj, n_seeds=64)  # warm-up
    wall, cpu = [], []
    out = None
    for _ in range(rounds):
        w, c, out = timed(lambda: find_fixed_points(cell, traj, n_seeds=1024))
        wall.append(w)
        cpu.append(c)
    assert out is not None
    return {
        "setup_s": round(setup, 1),
        "seeds": 1024,
        "wall_s_median": round(statistics.median(wall), 3),
        "cpu_s_median": round(statistics.median(cpu), 3),
        "wall_s_samples": [round(v, 3) for v in wall],
        "points": len(out),
        "counts_by_unstable": {str(k): v for k, v in out.counts().items()},
        "failed_seeds": len(out.failed),
        "max_residual": float(out.residuals.max()) if len(out) else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--big-rounds", type=int, default=3)
    ap.add_argument("--stress", action="store_true", help="add the chaotic gain-3 GRU")
    ap.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated torch thread counts, one full run each (1 is the conservative "
        "number on a shared 2-core machine: two OpenMP threads stall badly whenever another "
        "process holds a core)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fixed_points.json"))
    args = ap.parse_args()
    runs = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        load_start = list(os.getloadavg())
        results: dict[str, Any] = {}
        for kind in ("gru", "rnn"):
            results[f"{kind}16"] = r = fixture_case(kind, args.rounds)
            short = {k: v.get("wall_s_median") if isinstance(v, dict) else v for k, v in r.items()}
            print(f"threads={threads} {kind}16", json.dumps(short), flush=True)
        kinds = ["init", "gain2", "flipflop"] + (["gain3"] if args.stress else [])
        for kind in kinds:
            results[f"gru256-{kind}"] = r = big_case(kind, args.big_rounds)
            print(f"threads={threads} gru256-{kind}", json.dumps(r), flush=True)
        runs.append(
            {
                "threads": threads,
                "loadavg_1_5_15_min_at_start": load_start,
                "loadavg_1_5_15_min_at_end": list(os.getloadavg()),
                "results": results,
            }
        )
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    record = {
        "benchmark": "bench_fixed_points.py",
        "what": "find_fixed_points wall time (median), defaults unless stated",
        "targets": {"gru16_full_reference_set_s": 1.0, "gru256_1024_seeds_s": 10.0},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
