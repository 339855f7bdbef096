"""``rnnlab run NAME``: run one registered experiment and write its claims."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from .cli import command
from .experiments.registry import load_all


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--full", action="store_true", help="run the longer (GPU-sized) version")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="parent folder; the experiment REPLACES its own folder OUT/NAME",
    )


@command("run", "Run a registered experiment; it replaces its own folder runs/NAME.")(_add)
def run(args: argparse.Namespace) -> int:
    from .experiments.registry import RunContext

    exps = load_all()
    if args.list or not args.name:
        for name, e in sorted(exps.items()):
            print(f"{name:16s} {e.description}")
        return 0
    if args.name not in exps:
        raise SystemExit(f"name: expected one of {sorted(exps)}, got {args.name!r}")
    out = args.out / args.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    ctx = RunContext(name=args.name, out_dir=out, full=args.full, seed=args.seed)
    claims = exps[args.name].run(ctx)
    rows = [c.to_dict() for c in claims]
    (out / "claims.json").write_text(json.dumps(rows, indent=2, default=str))
    for r in rows:
        print(
            f"[{r['status']:4s}] {r['claim']}: measured {r['measured']} (expected {r['expected']})"
        )
    print(f"{args.name}: {len(rows)} claims in {time.perf_counter() - t0:.1f} s -> {out}")
    return 0 if all(r["status"] != "fail" for r in rows) else 1
