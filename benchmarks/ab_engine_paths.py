"""A/B of the engine's two size-dependent paths (docs/design/0007), in one process, interleaved:

- the unit-partitioned loop (RNNLAB_ENGINE_PARTITION=1) against the classic loop (=0) at the
  small shapes S1 and S2, where it is used by default;
- oneDNN's matmul for the per-step products (RNNLAB_ENGINE_DNNL=1) against MKL's sgemm (=0) at
  S3, where it is used by default.

Both switches are read by the kernels on every call, so one process can alternate them.

    .venv/bin/python benchmarks/ab_engine_paths.py            # ~5 min
    .venv/bin/python benchmarks/ab_engine_paths.py --repeats 21

Writes benchmarks/results/ab_engine_paths.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from rnnlab import GRUCell, LSTMCell, Recurrent
from rnnlab.bench import SHAPES, machine

HERE = Path(__file__).parent

CELLS = {
    "lstm_cifg": lambda i, h: LSTMCell(i, h, variant="CIFG"),
    "lstm_peephole": lambda i, h: LSTMCell(i, h, peephole=True),
    "gru": lambda i, h: GRUCell(i, h),
    "gru_reset_before": lambda i, h: GRUCell(i, h, reset="before"),
}
# (switch, value of the default path, value of the other path, shapes)
SWITCHES = [
    ("RNNLAB_ENGINE_PARTITION", "1", "0", ["S2", "S1"]),
    ("RNNLAB_ENGINE_DNNL", "1", "0", ["S3"]),
]


def _time(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=11)
    args = p.parse_args()
    info = machine()
    records = []
    for var, on, off, shapes in SWITCHES:
        for shape in shapes:
            T, B, I, H = SHAPES[shape]
            for name, make in CELLS.items():
                torch.manual_seed(0)
                layer = Recurrent(make(I, H))
                x = torch.randn(B, T, I, requires_grad=True)

                def forward(layer: Recurrent = layer, x: torch.Tensor = x) -> None:
                    with torch.no_grad():
                        layer(x)

                def train(layer: Recurrent = layer, x: torch.Tensor = x) -> None:
                    layer(x)[0].sum().backward()

                for mode, f in (("forward", forward), ("train", train)):
                    ts: dict[str, list[float]] = {on: [], off: []}
                    for v in ts:
                        os.environ[var] = v
                        f()
                    for _ in range(args.repeats):
                        for v in ts:
                            os.environ[var] = v
                            ts[v].append(_time(f))
                    med = {v: 1e3 * statistics.median(t) for v, t in ts.items()}
                    rec = {
                        "switch": var,
                        "shape": shape,
                        "cell": name,
                        "mode": mode,
                        "default_ms": med[on],
                        "other_ms": med[off],
                        "speedup": med[off] / med[on],
                        "repeats": args.repeats,
                    }
                    records.append(rec)
                    print(
                        f"{var}={on} vs {off} {shape} {name:16s} {mode:7s} "
                        f"{med[on]:7.1f} vs {med[off]:7.1f} ms ({rec['speedup']:.2f}x)",
                        flush=True,
                    )
            os.environ.pop(var, None)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "ab_engine_paths.json").write_text(
        json.dumps({"machine": info, "records": records}, indent=1)
    )
    md = [
        f"# Engine paths A/B ({info['date']})",
        "",
        f"{info['cpu']}, {info['cores']} threads, torch {info['torch']}; medians of "
        f"{args.repeats} interleaved runs. Speed-up = time of the other path / time of the "
        "default path at that shape.",
        "",
        "| switch | shape | cell | mode | default ms | other ms | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        md.append(
            f"| {r['switch']} | {r['shape']} | {r['cell']} | {r['mode']} | "
            f"{r['default_ms']:.1f} | {r['other_ms']:.1f} | {r['speedup']:.2f} |"
        )
    (out / "ab_engine_paths.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
