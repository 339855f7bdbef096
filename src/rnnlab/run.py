"""``rnnlab run NAME``: run one registered experiment (or the tour) and write its report."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from ._files import UnsafePathError, check_replaceable, make_folder, remove_tree
from .experiments.registry import Experiment, RunContext, load_all
from .experiments.report import Section, load_full_claims, write_report


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="experiment name, or 'tour' for all (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--full", action="store_true", help="run the longer (GPU-sized) versions")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when a claim fails (by default only a crashed experiment does: "
        "a claim that does not reproduce is a result, reported in the report)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="parent folder; a run replaces its own folder OUT/NAME (OUT/tour for the tour), "
        "only if rnnlab made it (it carries .rnnlab-run.json)",
    )


def _run_one(
    exp: Experiment, out: Path, args: argparse.Namespace, prefix: str = "", tour: bool = False
) -> Section:
    remove_tree(out, "experiment", what="--out")
    make_folder(out, "experiment", experiment=exp.name)
    ctx = RunContext(
        name=exp.name,
        out_dir=out,
        full=args.full,
        seed=args.seed,
        tour=tour,
        progress=lambda msg: print(f"{prefix}{exp.name}: {msg}", flush=True),
    )
    t0 = time.perf_counter()
    error = None
    try:
        rows = [c.to_dict() for c in exp.run(ctx)]
    except Exception as exc:  # noqa: BLE001 - a failing experiment is reported, not hidden
        error = f"{type(exc).__name__}: {exc}"
        (out / "error.txt").write_text(traceback.format_exc())
        rows = [
            {
                "experiment": exp.name,
                "claim": "the experiment runs to the end",
                "measured": error,
                "expected": "no error",
                "source": "rnnlab",
                "status": "fail",
                "seconds": time.perf_counter() - t0,
            }
        ]
    seconds = time.perf_counter() - t0
    (out / "claims.json").write_text(json.dumps(rows, indent=2, default=str))
    (out / "config.json").write_text(
        json.dumps(
            {"experiment": exp.name, "full": args.full, "seed": args.seed, "tour": tour}, indent=2
        )
    )
    figs = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    sec = Section(exp.name, exp.description, rows, figs, load_full_claims(exp.name), seconds, error)
    write_report(out, f"rnnlab: {exp.name}", [sec])
    return sec


def run(args: argparse.Namespace) -> int:
    exps = load_all()
    if args.list or not args.name:
        for name, e in sorted(exps.items(), key=lambda kv: (kv[1].order, kv[0])):
            print(f"{name:18s} {e.description}")
        print(f"{'tour':18s} the quick version of every experiment above, one report")
        return 0
    if args.name == "tour":
        order = sorted((e for e in exps.values() if e.tour), key=lambda e: (e.order, e.name))
        root = args.out / "tour"
        try:
            remove_tree(root, "tour", what="--out")
        except UnsafePathError as err:
            print(f"rnnlab run: error: {err}", file=sys.stderr)
            return 2
        make_folder(root, "tour")
        sections = []
        t0 = time.perf_counter()
        for k, e in enumerate(order, 1):
            print(f"[{k}/{len(order)}] {e.name}: {e.description}", flush=True)
            sec = _run_one(e, root / e.name, args, prefix="    ", tour=True)
            # figures are referenced from the tour page, one folder up
            sec.figures = [f"{e.name}/{f}" for f in sec.figures]
            sections.append(sec)
            print(f"    done in {sec.seconds:.0f} s (total {time.perf_counter() - t0:.0f} s)")
        rows = [r for s in sections for r in s.claims]
        (root / "claims.json").write_text(json.dumps(rows, indent=2, default=str))
        page = write_report(root, "rnnlab: the lecture tour", sections)
        _summary(rows)
        print(f"report: {page.resolve()}")
        return _status(args, sections)
    if args.name not in exps:
        raise SystemExit(f"name: expected 'tour' or one of {sorted(exps)}, got {args.name!r}")
    try:  # refused before the experiment runs: only a folder rnnlab made is replaced
        check_replaceable(args.out / args.name, "experiment", what="--out")
    except UnsafePathError as err:
        print(f"rnnlab run: error: {err}", file=sys.stderr)
        return 2
    sec = _run_one(exps[args.name], args.out / args.name, args)
    _summary(sec.claims)
    print(f"report: {(args.out / args.name / 'report.html').resolve()}")
    return _status(args, [sec])


def _status(args: argparse.Namespace, sections: list[Section]) -> int:
    if any(s.error for s in sections):
        return 1
    if args.strict and any(r["status"] == "fail" for s in sections for r in s.claims):
        return 1
    return 0


def _summary(rows: list[dict]) -> None:
    for r in rows:
        print(
            f"[{r['status']:4s}] {r['experiment']}: {r['claim']}: {r['measured']} "
            f"(expected {r['expected']})"
        )


# The commands this module adds to ``rnnlab`` (cli.py reads this table; no import of cli.py
# here, so no import circle).
COMMANDS = {
    "run": (
        "Run an experiment or the lecture tour; it replaces its own folder runs/NAME.",
        _add,
        run,
    ),
}
