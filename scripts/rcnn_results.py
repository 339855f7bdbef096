"""Regenerate ``results/rcnn/`` (the committed CPU-preset run of ``rnnlab run rcnn``) with its
provenance: date, machine, load average and wall time go into ``config.json``, which the tour's
report shows beside the quick (smoke) run.

Run on a quiet machine (about 10 minutes on 2 cores):

    OMP_NUM_THREADS=1 python scripts/rcnn_results.py [OUT]   # default OUT: results/rcnn

It writes ``results.md``, ``results.json``, ``curves.png`` (the experiment's outputs),
``claims.json`` and ``config.json`` into OUT; results/rcnn/README.md describes the run.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

from rnnlab import bench
from rnnlab.experiments import rcnn
from rnnlab.experiments.registry import RunContext


def main(out: Path) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows = rcnn.run(RunContext("rcnn", out, full=False, tour=False))
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    (out / "claims.json").write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    info = bench.machine()
    machine = (
        f"{info['cpu']}, {torch.get_num_threads()} thread(s), torch {info['torch']}, "
        f"{os.cpu_count()} cores (load average {load0:.1f} at the start, {load1:.1f} at the end)"
    )
    config = {
        "experiment": "rcnn",
        "full": False,
        "seed": 0,
        "tour": False,
        "preset": "the CPU preset (CPU_CONFIG; --full is GPU-sized)",
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "wall_seconds": round(wall, 1),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {out}: {wall:.0f} s on {machine}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/rcnn"))
