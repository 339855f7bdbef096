"""Trainer steps per second: rnnlab's fast paths against the reference loop, per schedule.

What is measured: the wall time of ``Trainer.fit()`` for ``--steps`` training updates (forward,
loss, backward, optimiser step; the final evaluation of 8 validation sequences included), the
trainer built beforehand, once with the fast paths on and once inside
``rnnlab.engine.disabled()`` (the same as RNNLAB_ENGINE=0: the reference loop ``unroll``
everywhere), on the same seed. Interleaved rounds (engine, reference, reference, engine, ...),
one warm-up round discarded, medians, ratio = engine time / reference time (< 1: faster).

Cases, on next-step prediction of a sine (task ``series``, T = ``--length``, B = 32, H = 32;
the GRU/LSTM state-feedback cases on the flip-flop, below):

* ``jordan_<mode>``: a Jordan net with its output fed back into its state (``feedback:
  state``) under forcing ``teacher`` (the parallel path), ``free``, ``alternating``, ``mixed``
  and ``scheduled`` (the masked kernel, rnnlab::fed_forward);
* ``jordan_teacher_monitor``: teacher forcing with ``grad_monitor_every: 50`` (the default; the
  monitored updates run the reference loop, docs/design note on the trainer's fast paths);
* ``jordan_teacher_clip``: teacher forcing with ``clip.state_value`` (every update on the
  reference loop: the measured cost of state-gradient clipping);
* ``gru_none``: a GRU without forcing (the GRU kernel);
* ``gru_input_teacher`` / ``gru_input_mixed`` / ``gru_input_free``: a GRU feeding its readout
  back as its next input (``feedback: input``): teacher forcing is one plain run of the core; a
  mixture and free running are one ``rnnlab::fed_input`` call per window (the readout applied
  per step inside the C++ loop, docs/design/0019);
* ``gru2_input_mixed``: the same with two layers, which the op does not cover: the model-level
  loop, one step at a time (the documented, counted fallback);
* ``gru_state_<mode>`` / ``lstm_state_<mode>`` (``teacher``, ``mixed``, ``free``): a GRU or
  LSTM whose state h holds y(t-1) (``feedback: state``, readout none; the masked kernels
  rnnlab::gru_fed_* / lstm_fed_*). The fed-back reference is the target, so these cases need
  as many outputs as hidden units: they run the 32-bit flip-flop (task ``flipflop``,
  ``n_bits`` = H = 32, inputs and targets (B, T, 32)) instead of the one-output sine.

The issue-16 target: ``jordan_teacher`` at T = 200, 100 steps, ratio <= 0.35. On a quiet
machine:

    OMP_NUM_THREADS=2 python benchmarks/bench_trainer.py --out benchmarks/results/trainer

``--quick`` runs tiny sizes once (a smoke test); ``--cases`` picks cases.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import rnnlab
from rnnlab.training import Trainer

MODES = ("teacher", "free", "alternating", "mixed", "scheduled")


HIDDEN = 32
#: the task of the GRU/LSTM state-feedback cases: as many outputs as hidden units (the target
#: is fed into h), where the sine has one
STATE_TASK = {"name": "flipflop", "options": {"n_bits": HIDDEN}}


def case_configs(length: int, steps: int) -> dict[str, dict[str, Any]]:
    def cfg(cell: str, mode: str, feedback: str | None = None, **extra: Any) -> dict[str, Any]:
        train = {"steps": steps, "batch_size": 32, "progress": False, "eval_every": 10**9,
                 "plots": False, "grad_monitor_every": 0, "log_every": 10**9}  # fmt: skip
        train.update(extra.pop("train", {}))
        model = {} if feedback is None else {"feedback": feedback}
        if feedback == "state":
            model["readout"] = "none"
        task = {"name": "series", **extra.pop("task", {})}
        return {
            "task": {**task, "length": length, "n_train": 128, "n_val": 8},
            "model": {"cell": cell, "hidden_size": HIDDEN, **model},
            "forcing": {"mode": mode},
            "train": train,
            **extra,
        }

    cases = {f"jordan_{m}": cfg("JordanCell", m, "state") for m in MODES}
    cases["jordan_teacher_monitor"] = cfg(
        "JordanCell", "teacher", "state", train={"grad_monitor_every": 50}
    )
    cases["jordan_teacher_clip"] = cfg("JordanCell", "teacher", "state", clip={"state_value": 1.0})
    cases["gru_none"] = cfg("GRUCell", "none")
    cases["gru_input_teacher"] = cfg("GRUCell", "teacher", "input")
    cases["gru_input_mixed"] = cfg("GRUCell", "mixed", "input")
    cases["gru_input_free"] = cfg("GRUCell", "free", "input")
    cases["gru2_input_mixed"] = cfg("GRUCell", "mixed", "input")
    cases["gru2_input_mixed"]["model"]["num_layers"] = 2
    for cell in ("GRUCell", "LSTMCell"):
        for m in ("teacher", "mixed", "free"):
            name = f"{cell[:-4].lower()}_state_{m}"
            cases[name] = cfg(cell, m, "state", task=STATE_TASK)
    return cases


def time_fit(config: dict[str, Any], engine_on: bool) -> float:
    trainer = Trainer(config, None)
    if "feedback" in config["model"]:
        assert trainer.model.feedback == config["model"]["feedback"]
    if engine_on:
        t0 = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - t0
    with rnnlab.engine.disabled():
        t0 = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--cases", nargs="*", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.length, args.steps = 1, 0, 20, 3
    cases = case_configs(args.length, args.steps)
    names = args.cases or list(cases)
    unknown = sorted(set(names) - set(cases))
    if unknown:
        raise SystemExit(f"--cases: unknown {unknown}; expected some of {sorted(cases)}")
    times: dict[str, dict[str, list[float]]] = {n: {"engine": [], "reference": []} for n in names}
    for r in range(args.warmup + args.rounds):
        for name in names:
            order = [True, False] if r % 2 == 0 else [False, True]
            for on in order:
                s = time_fit(cases[name], on)
                if r >= args.warmup:
                    times[name]["engine" if on else "reference"].append(s)
    rows = []
    for name in names:
        e = statistics.median(times[name]["engine"])
        ref = statistics.median(times[name]["reference"])
        rows.append({"case": name, "engine_s": e, "reference_s": ref, "ratio": e / ref,
                     "engine_steps_per_s": args.steps / e,
                     "reference_steps_per_s": args.steps / ref})  # fmt: skip
    header = "| case | engine steps/s | reference steps/s | engine / reference time |"
    lines = [header, "|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['engine_steps_per_s']:.1f} | "
            f"{row['reference_steps_per_s']:.1f} | {row['ratio']:.2f}x |"
        )
    table = "\n".join(lines)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "length": args.length,
        "steps": args.steps,
        "rounds": args.rounds,
        "quick": args.quick,
    }
    print(json.dumps(meta))
    print(table)
    target = next((row for row in rows if row["case"] == "jordan_teacher"), None)
    if target is not None and not args.quick:
        ok = "meets" if target["ratio"] <= 0.35 else "misses"
        print(f"issue 16 target (jordan_teacher <= 0.35x): {target['ratio']:.2f}x, {ok} it")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "rows": rows, "seconds": times}, indent=1)
        )
        args.out.with_suffix(".md").write_text(f"{json.dumps(meta)}\n\n{table}\n")


if __name__ == "__main__":
    main()
