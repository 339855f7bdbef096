"""GPU benchmark, prepared for the day a CUDA machine is lent (docs/design/0014-gpu-engine.md).

    python benchmarks/gpu.py                 # on a CUDA device: a few minutes
    python benchmarks/gpu.py --tiny          # CPU, Triton interpreter, tiny shape: seconds

What it measures, in one process, interleaved (A B C, B C A, ...) after warm-up, medians:

* plain cells (rnnlab.nn-equivalent Elman/GRU/LSTM, which dispatch to cuDNN) against torch.nn
  (cuDNN): target rnnlab/torch <= 1.05;
* the lecture's cells (fused Triton ops) against the reference loop (target >= 30x at FlashRNN's
  shape) and against cuDNN's LSTM of the same shape at equal FLOPs: their time divided by the
  LSTM's time scaled to the same FLOP count (target <= 1.5);
* shapes (T, B, I, H): FLASH = FlashRNN's (1024, 16, 768, 768), S1 (100, 32, 128, 256),
  S3 (50, 128, 256, 512); float32 and bfloat16; forward (no grad) and train (forward + backward);
* before timing, each rnnlab output's largest deviation from the float32 reference loop (the bf16
  correctness check the interpreter cannot make).

Writes JSON (records + machine) and a Markdown table (``--out``, default
benchmarks/results/gpu[-tiny].json and .md) and prints the table. ``--tiny`` runs on CPU under
``TRITON_INTERPRET=1`` with the engine's device check patched to "cuda", so the very same
dispatch (cuDNN functions, Triton ops) runs: it proves the script works, its times mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SHAPES = {
    "FLASH": (1024, 16, 768, 768),
    "S1": (100, 32, 128, 256),
    "S3": (50, 128, 256, 512),
    "TINY": (4, 2, 4, 8),
}
PLAIN = ["lstm", "gru", "rnn_tanh"]
LECTURE = ["lstm_peephole", "gru_reset_before", "jordan", "elman_output", "lstm_cifg", "lstm_fgr"]
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", "--interpret", action="store_true", dest="tiny",
                   help="CPU, TRITON_INTERPRET=1, shape TINY, one repeat")  # fmt: skip
    p.add_argument("--cells", nargs="+", default=PLAIN + LECTURE)
    p.add_argument("--shapes", nargs="+", default=["FLASH", "S1", "S3"], choices=sorted(SHAPES))
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--modes", nargs="+", default=["forward", "train"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--reference-shapes", nargs="+", default=["FLASH"],
                   help="shapes at which the (slow) reference loop is timed too")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="JSON path (the .md beside it)")
    args = p.parse_args()
    if args.tiny:
        args.shapes, args.reference_shapes, args.repeats = ["TINY"], ["TINY"], 1
    return args


def main() -> int:
    args = _parse()
    if args.tiny:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import torch

    from rnnlab import bench, engine
    from rnnlab.engine import gpu, registry
    from rnnlab.layers import Recurrent

    if args.tiny:
        registry._device_type = lambda x: "cuda"  # the CUDA dispatch, on CPU tensors
        device = torch.device("cpu")
        sync: Callable[[], None] = lambda: None  # noqa: E731
    else:
        if not torch.cuda.is_available():
            print("benchmarks/gpu.py: no CUDA device (use --tiny to check the script on CPU)")
            return 2
        device = torch.device("cuda")
        sync = torch.cuda.synchronize
    unknown = [c for c in args.cells if c not in bench.CASES]
    if unknown:
        print(f"--cells: expected names from {sorted(bench.CASES)}, got {unknown}")
        return 2
    records: list[dict[str, Any]] = []
    for shape in args.shapes:
        T, B, I, H = SHAPES[shape]
        for dname in args.dtypes:
            dtype = getattr(torch, DTYPES[dname])
            for name in args.cells:
                case = bench.CASES[name]
                torch.manual_seed(0)
                cell = case.ours(I, H).to(device)
                path = gpu.plan(cell)
                ours = Recurrent(cell).to(dtype)
                ref32 = Recurrent(case.ours(I, H).to(device))
                ref32.load_state_dict(ours.state_dict())
                x = torch.randn(B, T, I, device=device)
                with torch.no_grad(), engine.disabled():
                    want = ref32(x)[0]
                with torch.no_grad():
                    err = float((ours(x.to(dtype))[0].float() - want).abs().max())
                models: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
                    "rnnlab": lambda x, m=ours: m(x)[0]
                }
                if shape in args.reference_shapes:
                    models["reference"] = lambda x, m=ours: _reference(engine, m, x)
                if case.torch_module is not None:
                    tm = case.torch_module(I, H).to(device, dtype)
                    models["torch"] = lambda x, m=tm: m(x)[0]
                lstm = torch.nn.LSTM(I, H, batch_first=True).to(device, dtype)
                models["torch_lstm"] = lambda x, m=lstm: m(x)[0]
                xd = x.to(dtype)
                for mode in args.modes:
                    w = torch.randn(B, T, H, device=device, dtype=dtype)
                    times = _interleaved(models, xd, w, mode, args.repeats, sync)
                    for impl, ms in times.items():
                        records.append({
                            "cell": name, "shape": shape, "dtype": dname, "mode": mode,
                            "impl": impl, "path": path if impl == "rnnlab" else None,
                            "median_ms": ms, "max_abs_err_vs_fp32_loop": err,
                            "flop": _flop(bench.CASES["lstm" if impl == "torch_lstm" else name],
                                          (T, B, I, H), mode),
                        })  # fmt: skip
                    print(f"{shape} {dname} {name:18s} {mode:7s} " + "  ".join(
                        f"{k} {v:.3f} ms" for k, v in times.items()), flush=True)  # fmt: skip
    info = _machine(torch, args.tiny)
    out = args.out or HERE / "results" / ("gpu-tiny.json" if args.tiny else "gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "records": records}, indent=1) + "\n")
    md = _table(records, info)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def _reference(engine: Any, model: Any, x: Any) -> Any:
    with engine.disabled():
        return model(x)[0]


def _flop(case: Any, shape: tuple[int, int, int, int], mode: str) -> float:
    """rnnlab.bench's count at any shape: 2·T·B·G·H·(I+H) (+ the output layer, + FGR's gate
    recurrence), x3 for training."""
    T, B, I, H = shape
    f = 2.0 * T * B * case.gates * H * (I + H) + 2.0 * T * B * H * H * case.out_extra
    if case.name.endswith("fgr"):
        f += 2.0 * T * B * (3 * H) ** 2
    return f * (3.0 if mode == "train" else 1.0)


def _interleaved(models: dict[str, Any], x: Any, w: Any, mode: str, repeats: int,
                 sync: Callable[[], None]) -> dict[str, float]:  # fmt: skip
    import torch

    def once(m: Any) -> float:
        sync()
        t0 = time.perf_counter()
        if mode == "forward":
            with torch.no_grad():
                m(x)
        else:
            (m(x) * w).sum().backward()
        sync()
        return time.perf_counter() - t0

    keys = list(models)
    for k in keys:  # warm-up: Triton compiles, cuDNN picks its algorithms, the allocator grows
        once(models[k])
    times: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(repeats):
        for k in keys[i % len(keys) :] + keys[: i % len(keys)]:
            times[k].append(once(models[k]))
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _machine(torch: Any, tiny: bool) -> dict[str, Any]:
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = None
    cuda = torch.cuda.is_available() and not tiny
    return {
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()})",
        "mode": "TRITON_INTERPRET=1, device check patched (times meaningless)" if tiny else "cuda",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "triton": tv,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def _table(records: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """One row per (shape, dtype, mode, cell): times, rnnlab/torch, x faster than the loop, and
    the time against cuDNN's LSTM at equal FLOPs, each with its target."""
    rows = [f"GPU benchmark on {info['device']} ({info['mode']}), torch {info['torch']}, "
            f"triton {info['triton']}, {info['date']}", "",
            "| shape | dtype | mode | cell | path | rnnlab ms | torch.nn ms | rnnlab/torch "
            "(<=1.05) | loop/rnnlab (>=30 at FLASH) | vs cuDNN LSTM at equal FLOPs (<=1.5) "
            "| max err vs fp32 loop |", "|" + "---|" * 11]  # fmt: skip
    groups: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["shape"], r["dtype"], r["mode"], r["cell"]), {})[r["impl"]] = r

    def num(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for (shape, dt, mode, cell), d in groups.items():
        ours, lstm = d["rnnlab"], d["torch_lstm"]
        t, ref = d.get("torch"), d.get("reference")
        ms = ours["median_ms"]
        equal = ms / (lstm["median_ms"] * ours["flop"] / lstm["flop"])
        cols = [
            shape, dt, mode, cell, ours["path"] or "loop", num(ms, ".3f"),
            num(t and t["median_ms"], ".3f"), num(t and ms / t["median_ms"], ".2f"),
            num(ref and ref["median_ms"] / ms, ".1f"), num(None if t else equal, ".2f"),
            num(ours["max_abs_err_vs_fp32_loop"], ".1e"),
        ]  # fmt: skip
        rows.append("| " + " | ".join(cols) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
