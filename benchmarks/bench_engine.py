"""Engine benchmark: rnnlab vs torch.nn vs the reference loop (see rnnlab/bench.py).

Run on a quiet machine:

    .venv/bin/python benchmarks/bench_engine.py            # every cell, S1-S3, ~15 min
    .venv/bin/python benchmarks/bench_engine.py --quick    # S1, six cells, < 2 min

Writes benchmarks/results/engine[-quick].json (records + machine) and .md (the table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnlab.bench import (
    CASES,
    QUICK,
    SHAPES,
    bench,
    bench_jordan_vs_elman,
    bench_teacher_forced,
    bench_user_cell,
    machine,
    table,
)

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cells", nargs="+", choices=sorted(CASES))
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument(
        "--extras-only",
        action="store_true",
        help="rerun only the extras (user cell, teacher forcing, Jordan vs Elman) and replace "
        "them in the existing results/engine.json and .md",
    )
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cells = args.cells or (QUICK if args.quick else list(CASES))
    shapes = ["S1"] if args.quick else list(SHAPES)
    info = machine()
    name = ("engine-quick" if args.quick else "engine") + (
        f"-{args.threads}t" if args.threads else ""
    )
    if args.extras_only:
        old = json.loads((HERE / "results" / f"{name}.json").read_text())
        records = [r for r in old["records"] if r["shape"] in SHAPES and r["cell"] in CASES]
        info = {**old["machine"], "extras_date": info["date"]}
    else:
        records = bench(cells, shapes, ["forward", "train"], args.repeats, memory=True)
    if not args.quick:
        records += bench_user_cell("S1", args.repeats)
        records += bench_teacher_forced(args.repeats)
        records += bench_jordan_vs_elman(list(SHAPES), args.repeats)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"machine": info, "records": records}, indent=1))
    write_markdown(out / f"{name}.md", info, records, args.repeats)


def write_markdown(path: Path, info: dict, records: list[dict], repeats: int) -> None:
    """The results table (and the extras) as markdown, from the records."""
    main_records = [r for r in records if r["shape"] in SHAPES and r["cell"] in CASES]
    extra = [r for r in records if r not in main_records]
    md = [
        f"# Engine benchmark ({info['date']})",
        "",
        f"{info['cpu']}, {info['cores']} threads, torch {info['torch']}, Python {info['python']}.",
        f"Medians of {repeats} interleaved runs after warm-up; see rnnlab/bench.py.",
        *(
            [f"Extras (second table) rerun on {info['extras_date']} with --extras-only."]
            if "extras_date" in info
            else []
        ),
        "",
        table(main_records),
        "",
    ]
    if extra:
        md += ["| cell | shape | impl | median ms | note |", "|---|---|---|---|---|"]
        for r in extra:
            note = f"first call incl. compile {r['compile_s']:.1f} s" if "compile_s" in r else ""
            cells = [r["cell"], r["shape"], r["impl"], f"{r['median_ms']:.1f}", note]
            md.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
