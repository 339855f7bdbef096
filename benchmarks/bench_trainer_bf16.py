"""Trainer steps/s with ``train.precision: bf16`` (torch.autocast) against fp32 (issue 16,
docs/design/0018): whole training steps through :class:`rnnlab.training.Trainer` (data, forward,
loss, backward, clipping, optimizer), not a kernel alone. Both precisions are built in one
process and timed in interleaved rounds (fp32, bf16, fp32, bf16, ...); medians of the rounds,
after a warm-up round each.

Cases: an LSTM and a GRU SequenceModel on the series task (MSE, every step; no output
feedback, docs/design/0018), and a model of the
user's own (a GRU layer read at the last step, tests/fixtures/user_models.py) on digits
(cross-entropy, case 3), each also reporting the final loss of both precisions so a speed-up is
not bought with a broken run.

Run on a quiet machine (the lead's measurement):

    .venv/bin/python benchmarks/bench_trainer_bf16.py              # ~2-4 min
    .venv/bin/python benchmarks/bench_trainer_bf16.py --quick      # smoke run, seconds

Writes benchmarks/results/trainer_bf16.{json,md} (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rnnlab.timing import machine
from rnnlab.training import Trainer

HERE = Path(__file__).parent
QUIET = {"progress": False, "plots": False, "grad_monitor_every": 0}


def cases(quick: bool) -> dict[str, dict[str, Any]]:
    T, H, B = (12, 16, 16) if quick else (100, 128, 32)
    n = 64 if quick else 512
    series = {"name": "series", "length": T, "n_train": n, "n_val": 32}
    return {
        "lstm_series": {
            "task": series,
            "model": {"cell": "LSTMCell", "hidden_size": H, "feedback": "none"},
            "train": {"batch_size": B, **QUIET},
        },
        "gru_series": {
            "task": series,
            "model": {"cell": "GRUCell", "hidden_size": H, "feedback": "none"},
            "train": {"batch_size": B, **QUIET},
        },
        "user_gru_digits": {
            "task": {"name": "digits", "n_train": n, "n_val": 64},
            "model": {
                "factory": "user_models:make_classifier",
                "factory_kwargs": {"hidden_size": H},
            },
            "train": {"batch_size": B, **QUIET},
        },
    }


def timed_steps(trainer: Trainer, steps: int) -> float:
    """Seconds for ``steps`` more updates (the trainer continues from where it is)."""
    trainer.config["train"]["steps"] = trainer.step + steps
    trainer.config["train"]["eval_every"] = 10**9
    trainer.config["train"]["log_every"] = 10**9
    t0 = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per precision")
    ap.add_argument("--steps", type=int, default=None, help="updates per round")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    steps = args.steps or (3 if args.quick else 20)
    sys.path.insert(0, str(HERE.parent / "tests" / "fixtures"))  # the user model's factory
    results: dict[str, Any] = {"machine": machine(), "rounds": rounds, "steps": steps}
    rows = []
    for name, cfg in cases(args.quick).items():
        trainers = {p: Trainer(cfg, None, precision=p) for p in ("fp32", "bf16")}
        for t in trainers.values():  # warm-up
            timed_steps(t, steps)
        times: dict[str, list[float]] = {p: [] for p in trainers}
        for _ in range(rounds):
            for p, t in trainers.items():
                times[p].append(timed_steps(t, steps) / steps)
        med = {p: statistics.median(v) for p, v in times.items()}
        final = {p: t.evaluate()["loss"] for p, t in trainers.items()}
        row = {
            "case": name,
            "fp32_steps_per_s": 1.0 / med["fp32"],
            "bf16_steps_per_s": 1.0 / med["bf16"],
            "bf16_over_fp32": med["fp32"] / med["bf16"],
            "fp32_val_loss": final["fp32"],
            "bf16_val_loss": final["bf16"],
        }
        rows.append(row)
        print(
            f"{name:16s} fp32 {row['fp32_steps_per_s']:8.2f} steps/s  bf16 "
            f"{row['bf16_steps_per_s']:8.2f} steps/s  bf16/fp32 {row['bf16_over_fp32']:.2f}x  "
            f"val loss fp32 {final['fp32']:.4g} bf16 {final['bf16']:.4g}",
            flush=True,
        )
    results["rows"] = rows
    stem = "trainer_bf16-quick" if args.quick else "trainer_bf16"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        f"# Trainer steps/s, bf16 autocast vs fp32 ({'quick' if args.quick else 'full'})",
        "",
        f"{torch.__version__}; {rounds} rounds of {steps} updates, medians",
        "",
        "| case | fp32 steps/s | bf16 steps/s | bf16/fp32 | val loss fp32 | val loss bf16 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['fp32_steps_per_s']:.2f} | {r['bf16_steps_per_s']:.2f} | "
            f"{r['bf16_over_fp32']:.2f}x | {r['fp32_val_loss']:.4g} | {r['bf16_val_loss']:.4g} |"
        )
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
