"""bf16 and fp16 training speed against float32 (issue 15), rnnlab's engine and torch.nn side by
side, S1-S3, one process, interleaved (rnnlab.bench's rotation), medians, ratios to float32.

Modes per cell and shape (one training step = forward + backward of sum(y * w)):

- ``fp32``: float32 weights and input;
- ``bf16``: bf16 weights and input. rnnlab: the engine's native bf16 path (the float32 kernels
  with their matrix products in oneDNN's bf16 matmul, csrc/half.h; the plain drop-in LSTM runs
  torch's fused bf16 LSTM); ``bf16_cast``: the same, cast to float32 at the op boundary
  (``rnnlab.engine.half.NATIVE_BF16 = False``, the path before native bf16);
- ``fp16``: float16 weights (rnnlab: cast at the op boundary, no fast fp16 product on this CPU);
- ``autocast_bf16``: float32 weights under ``torch.autocast("cpu", torch.bfloat16)`` (rnnlab:
  the ops run the bf16 path); ``autocast_cast``: rnnlab with the ops cast to float32 instead.

The ``cast`` modes are rnnlab's only (torch.nn has one path). ``bf16 products`` counts the
engine's bf16 products per step (0: that mode did not run them).

Run on a quiet machine (the lead's final measurement):

    .venv/bin/python benchmarks/bench_half.py                  # S1 S2 S3, ~10 min
    .venv/bin/python benchmarks/bench_half.py --quick          # smoke run, seconds

Writes benchmarks/results/half.{json,md} (or --out DIR; --quick writes nothing unless --out).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

import rnnlab
from rnnlab.bench import SHAPES, _interleaved, machine
from rnnlab.engine import half

HERE = Path(__file__).parent
CELLS: dict[str, tuple[Callable[..., torch.nn.Module], Callable[..., torch.nn.Module]]] = {
    "lstm": (rnnlab.nn.LSTM, torch.nn.LSTM),
    "gru": (rnnlab.nn.GRU, torch.nn.GRU),
    "rnn_tanh": (rnnlab.nn.RNN, torch.nn.RNN),
}
MODES = ("fp32", "bf16", "bf16_cast", "fp16", "autocast_bf16", "autocast_cast")
OURS_ONLY = ("bf16_cast", "autocast_cast")
DTYPE = {"bf16": torch.bfloat16, "bf16_cast": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def _mode(mode: str) -> Iterator[None]:
    native = half.NATIVE_BF16
    half.NATIVE_BF16 = not mode.endswith("_cast")
    try:
        if mode.startswith("autocast"):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        half.NATIVE_BF16 = native


def _step(
    model: torch.nn.Module, x: torch.Tensor, w: torch.Tensor, mode: str, products: list[int]
) -> Callable[[], float]:
    def run() -> float:
        n = half.gemms()
        t0 = time.perf_counter()
        with _mode(mode):
            y, _ = model(x)
            (y.float() * w).sum().backward()  # the backward under the same choice
        dt = time.perf_counter() - t0
        products.append(half.gemms() - n)
        return dt

    return run


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=sorted(SHAPES))
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", "--tiny", action="store_true", help="smoke run: tiny, 2 repeats")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results")
    a = p.parse_args()
    out = a.out if a.out is not None else (None if a.quick else HERE / "results")
    records = []
    for shape in a.shapes:
        T, B, I, H = (6, 2, 4, 8) if a.quick else SHAPES[shape]
        for cell in a.cells:
            ours_cls, torch_cls = CELLS[cell]
            torch.manual_seed(0)
            base = {"rnnlab": ours_cls(I, H), "torch.nn": torch_cls(I, H)}
            base["rnnlab"].load_state_dict(base["torch.nn"].state_dict())
            x32 = torch.randn(T, B, I)
            w = torch.randn(T, B, H)
            runs, products = {}, {}
            for impl, m in base.items():
                for mode in MODES:
                    if impl != "rnnlab" and mode in OURS_ONLY:
                        continue
                    dtype = DTYPE.get(mode, torch.float32)
                    key = f"{impl}/{mode}"
                    products[key] = []
                    runs[key] = _step(copy.deepcopy(m).to(dtype), x32.to(dtype), w, mode,
                                      products[key])  # fmt: skip
            ms = _interleaved(runs, 2 if a.quick else a.repeats)
            for key, t in ms.items():
                impl, mode = key.split("/")
                fp32 = ms[f"{impl}/fp32"]
                n = max(products[key]) if products[key] else 0
                records.append({"shape": shape, "cell": cell, "impl": impl, "mode": mode,
                                "ms": round(t, 3), "vs_fp32": round(fp32 / t, 3),
                                "bf16_products": n})  # fmt: skip
                print(f"{shape} {cell:8s} {impl:8s} {mode:14s} {t:9.2f} ms  "
                      f"{fp32 / t:5.2f}x fp32  bf16 products {n}", flush=True)  # fmt: skip
    lines = ["| shape | cell | impl | " + " | ".join(MODES) + " |", "|---" * (3 + len(MODES)) + "|"]
    for shape in a.shapes:
        for cell in a.cells:
            for impl in ("rnnlab", "torch.nn"):
                row = {r["mode"]: r for r in records
                       if (r["shape"], r["cell"], r["impl"]) == (shape, cell, impl)}  # fmt: skip
                cells = [f"{row[m]['ms']:.1f} ms ({row[m]['vs_fp32']:.2f}x)" if m in row else "-"
                         for m in MODES]  # fmt: skip
                lines.append(f"| {shape} | {cell} | {impl} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "half.json").write_text(json.dumps({"machine": machine(), "records": records}, indent=1))
    (out / "half.md").write_text(
        "Training step (forward + backward), median ms and speed relative to float32 "
        "(higher is faster); '-': not a mode of that implementation.\n\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
