"""bf16 and fp16 training speed against float32 (issue 15), rnnlab's engine and torch.nn side by
side, S1-S3, one process, interleaved (rnnlab.bench's rotation), medians.

Modes per cell and shape: float32 weights; bf16 weights; fp16 weights; float32 weights under
``torch.autocast("cpu", torch.bfloat16)``. One training step = forward + backward of
sum(y * w). The engine runs half precision by casting at the op boundary (float32 inside,
docs/design/0015); a native bf16 kernel would have to beat the "bf16" rows here.

Run on a quiet machine (the lead's final measurement):

    .venv/bin/python benchmarks/bench_half.py                         # S1 S2 S3, ~5 min
    .venv/bin/python benchmarks/bench_half.py --tiny                  # smoke run, seconds

Writes benchmarks/results/half.{json,md} (or --out DIR).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

import rnnlab
from rnnlab.timing import SHAPES, _interleaved, machine

HERE = Path(__file__).parent
CELLS: dict[str, tuple[Callable[..., torch.nn.Module], Callable[..., torch.nn.Module]]] = {
    "lstm": (rnnlab.nn.LSTM, torch.nn.LSTM),
    "gru": (rnnlab.nn.GRU, torch.nn.GRU),
    "rnn_tanh": (rnnlab.nn.RNN, torch.nn.RNN),
}
MODES = ("fp32", "bf16", "fp16", "autocast_bf16")


def _step(
    model: torch.nn.Module, x: torch.Tensor, w: torch.Tensor, mode: str
) -> Callable[[], float]:
    ctx = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if mode == "autocast_bf16"
        else contextlib.nullcontext
    )

    def run() -> float:
        t0 = time.perf_counter()
        with ctx():
            y, _ = model(x)
        (y.float() * w).sum().backward()
        return time.perf_counter() - t0

    return run


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=sorted(SHAPES))
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--tiny", action="store_true", help="smoke run: tiny sizes, 2 repeats")
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args()
    records = []
    for shape in a.shapes:
        T, B, I, H = (6, 2, 4, 8) if a.tiny else SHAPES[shape]
        for cell in a.cells:
            ours_cls, torch_cls = CELLS[cell]
            torch.manual_seed(0)
            base = {"rnnlab": ours_cls(I, H), "torch.nn": torch_cls(I, H)}
            base["rnnlab"].load_state_dict(base["torch.nn"].state_dict())
            x32 = torch.randn(T, B, I)
            w = torch.randn(T, B, H)
            runs = {}
            for impl, m in base.items():
                for mode in MODES:
                    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
                    mm = copy.deepcopy(m).to(dtype)
                    runs[f"{impl}/{mode}"] = _step(mm, x32.to(dtype), w, mode)
            ms = _interleaved(runs, 2 if a.tiny else a.repeats)
            for impl in base:
                fp32 = ms[f"{impl}/fp32"]
                for mode in MODES:
                    t = ms[f"{impl}/{mode}"]
                    records.append({"shape": shape, "cell": cell, "impl": impl, "mode": mode,
                                    "ms": round(t, 3), "vs_fp32": round(fp32 / t, 3)})  # fmt: skip
                    print(f"{shape} {cell:8s} {impl:8s} {mode:14s} {t:9.2f} ms  "
                          f"{fp32 / t:5.2f}x fp32", flush=True)  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "half.json").write_text(
        json.dumps({"machine": machine(), "records": records}, indent=1)
    )
    lines = ["| shape | cell | impl | " + " | ".join(MODES) + " |", "|---" * (3 + len(MODES)) + "|"]
    for shape in a.shapes:
        for cell in a.cells:
            for impl in ("rnnlab", "torch.nn"):
                row = {r["mode"]: r for r in records
                       if (r["shape"], r["cell"], r["impl"]) == (shape, cell, impl)}  # fmt: skip
                cells = [f"{row[m]['ms']:.1f} ms ({row[m]['vs_fp32']:.2f}x)" for m in MODES]
                lines.append(f"| {shape} | {cell} | {impl} | " + " | ".join(cells) + " |")
    (a.out / "half.md").write_text(
        "Training step (forward + backward), median ms and speed relative to float32 "
        "(higher is faster).\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
