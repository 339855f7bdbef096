"""Training cost of variational dropout and zoneout around a Jordan network, against without.

What is measured: seconds per training step (forward over T steps, a sum loss, backward) of
``Recurrent(JordanCell(I, H, O))`` at the engine's shapes S1 (T=100, B=32, I=128, H=256) and
S2 (T=500, B=8, I=64, H=128), O = H / 4, for a tanh and a linear output layer:

* ``plain``: the cell on its own kernel (``rnnlab::jordan_*``; with a linear output the
  recurrence folds into Elman's, one product per step);
* ``plain_ref``: the same under ``engine.disabled()`` (the reference loop with autograd);
* ``dropout``: ``Recurrent(cell, dropout_input=0.25, dropout_state=0.25)``;
* ``zoneout``: ``ZoneoutCell(cell, 0.1)``.

Dropout and zoneout run ``rnnlab::jordan_reg_*`` (engine/regularised_jordan.py): two
dependent products per step whatever the output layer (a mask on y(t-1) breaks the fold), so
the linear-output rows measure that too. Issue 18's target is at most 1.15x ``plain``.

Noise control as benchmarks/bench_regularised.py: interleaved rounds in rotated order, warm-up
discarded, medians. On a quiet machine:

    OMP_NUM_THREADS=2 python benchmarks/bench_regularised_jordan.py \\
        --out benchmarks/results/regularised_jordan

``--quick`` runs tiny shapes once (a smoke test, seconds).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rnnlab import engine
from rnnlab.cells import JordanCell, ZoneoutCell
from rnnlab.layers import Recurrent

SHAPES = {"S1": (100, 32, 128, 256), "S2": (500, 8, 64, 128), "tiny": (6, 2, 3, 8)}


def _variants(I: int, H: int, oact: str) -> dict[str, tuple[Recurrent, bool]]:
    def cell() -> JordanCell:
        return JordanCell(I, H, H // 4, output_activation=oact)

    plain = cell()
    return {
        "plain": (Recurrent(plain), True),
        "plain_ref": (Recurrent(plain), False),
        "dropout": (Recurrent(cell(), dropout_input=0.25, dropout_state=0.25), True),
        "zoneout": (Recurrent(ZoneoutCell(cell(), 0.1)), True),
    }


def _step(layer: Recurrent, x: torch.Tensor, use_engine: bool) -> Callable[[], None]:
    def run() -> None:
        layer.zero_grad(set_to_none=True)
        if use_engine:
            y, _ = layer(x)
        else:
            with engine.disabled():
                y, _ = layer(x)
        y.sum().backward()

    return run


def measure(shape: str, oact: str, rounds: int, warmup: int) -> dict[str, float]:
    T, B, I, H = SHAPES[shape]
    torch.manual_seed(0)
    x = torch.randn(B, T, I)
    runs = {n: _step(layer, x, eng) for n, (layer, eng) in _variants(I, H, oact).items()}
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {n: [] for n in runs}
    names = list(runs)
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runs[n]()
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="*", default=["S1", "S2"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny shapes, one round")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args()
    shapes = ["tiny"] if args.quick else args.shapes
    rounds, warmup = (1, 0) if args.quick else (args.rounds, args.warmup)
    records = []
    lines = [
        "| shape | output | variant | s/step | vs plain | vs plain_ref |",
        "|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        for oact in ("tanh", "identity"):
            med = measure(shape, oact, rounds, warmup)
            for n, sec in med.items():
                rec = {
                    "shape": shape,
                    "output": oact,
                    "variant": n,
                    "seconds": sec,
                    "vs_plain": sec / med["plain"],
                    "vs_plain_ref": sec / med["plain_ref"],
                }
                records.append(rec)
                lines.append(
                    f"| {shape} | {oact} | {n} | {sec:.4f} | {rec['vs_plain']:.2f}x | "
                    f"{rec['vs_plain_ref']:.2f}x |"
                )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "rounds": rounds,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "records": records}, indent=1)
        )
        args.out.with_suffix(".md").write_text(f"{json.dumps(meta)}\n\n{table}\n")


if __name__ == "__main__":
    main()
