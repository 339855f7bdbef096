"""The timing core that ``rnnlab bench`` and ``rnnlab run speed`` share: the cells and shapes
timed, FLOP counts, interleaved medians, peak memory, the machine's description and the table
(split from bench.py, issue 16, so that experiments need not import a CLI module). The
methodology is in bench.py's docstring.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cells import ElmanCell, GRUCell, JordanCell, LSTMCell
from .layers import Recurrent

SHAPES: dict[str, tuple[int, int, int, int]] = {
    "S1": (100, 32, 128, 256),
    "S2": (500, 8, 64, 128),
    "S3": (50, 128, 256, 512),
}


@dataclass
class Case:
    name: str
    gates: int  # G
    ours: Callable[[int, int], nn.Module]  # (I, H) -> cell
    torch_module: Callable[[int, int], nn.Module] | None
    out_extra: int = 0  # 1 when an output layer of size H is added (Elman/Jordan with O = H)


def _lstm(variant: str, **kw: Any) -> Callable[[int, int], nn.Module]:
    return lambda i, h: LSTMCell(i, h, variant=variant, **kw)


CASES: dict[str, Case] = {
    "lstm": Case("lstm", 4, _lstm("NP"), lambda i, h: nn.LSTM(i, h, batch_first=True)),
    "gru": Case("gru", 3, lambda i, h: GRUCell(i, h), lambda i, h: nn.GRU(i, h, batch_first=True)),
    "rnn_tanh": Case(
        "rnn_tanh", 1, lambda i, h: ElmanCell(i, h), lambda i, h: nn.RNN(i, h, batch_first=True)
    ),
    "rnn_relu": Case(
        "rnn_relu",
        1,
        lambda i, h: ElmanCell(i, h, activation="relu"),
        lambda i, h: nn.RNN(i, h, nonlinearity="relu", batch_first=True),
    ),
    "lstm_peephole": Case("lstm_peephole", 4, _lstm("V"), None),
    "gru_reset_before": Case(
        "gru_reset_before", 3, lambda i, h: GRUCell(i, h, reset="before"), None
    ),
    "elman_sigmoid": Case(
        "elman_sigmoid", 1, lambda i, h: ElmanCell(i, h, activation="sigmoid"), None
    ),
    "elman_output": Case("elman_output", 1, lambda i, h: ElmanCell(i, h, h), None, out_extra=1),
    "jordan": Case("jordan", 1, lambda i, h: JordanCell(i, h, h), None, out_extra=1),
}
for _v, _g in [
    ("NIG", 3),
    ("NFG", 3),
    ("NOG", 3),
    ("NIAF", 4),
    ("NOAF", 4),
    ("CIFG", 3),
    ("FGR", 4),
]:
    CASES[f"lstm_{_v.lower()}"] = Case(f"lstm_{_v.lower()}", _g, _lstm(_v), None)

QUICK = ["lstm", "gru", "rnn_tanh", "lstm_peephole", "gru_reset_before", "jordan"]


def flop(case: Case, shape: str, mode: str) -> float:
    T, B, I, H = SHAPES[shape]
    f = 2.0 * T * B * case.gates * H * (I + H) + 2.0 * T * B * H * H * case.out_extra
    if case.name.endswith("fgr"):
        f += 2.0 * T * B * (3 * H) ** 2
    return f * (3.0 if mode == "train" else 1.0)


class _Torch(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)[0]


class _Ours(nn.Module):
    def __init__(self, cell: nn.Module, reference: bool) -> None:
        super().__init__()
        self.layer = Recurrent(cell)  # type: ignore[arg-type]
        self.reference = reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference:
            from . import engine

            with engine.disabled():
                return self.layer(x)[0]  # type: ignore[return-value]
        return self.layer(x)[0]  # type: ignore[return-value]


def _run_once(model: nn.Module, x: torch.Tensor, w: torch.Tensor | None, mode: str) -> float:
    t0 = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            model(x)
    else:
        y = model(x)
        (y * w).sum().backward()
    return time.perf_counter() - t0


def _interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Call each run ``repeats`` times, taking turns, the order rotated every round (A B C,
    B C A, C A B, ...) so that no implementation always runs right after the same other one
    (the reference loop leaves caches and the allocator in a different state than a fused
    kernel); each run returns its own time in seconds. The median of each, in ms."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    keys = list(runs)
    for i in range(repeats):
        for k in keys[i % len(keys) :] + keys[: i % len(keys)]:
            times[k].append(runs[k]())
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _runs(
    models: Mapping[str, nn.Module], x: torch.Tensor, w: torch.Tensor | None, mode: str
) -> dict[str, Callable[[], float]]:
    """One timed call per model (see _run_once), for _interleaved."""

    def run(m: nn.Module) -> Callable[[], float]:
        return lambda: _run_once(m, x, w, mode)

    return {k: run(m) for k, m in models.items()}


def _peak_mb(model: nn.Module, x: torch.Tensor, w: torch.Tensor | None, mode: str) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _run_once(model, x, w, mode)
    events = sorted(
        (e for e in prof.events() if getattr(e, "cpu_memory_usage", 0) != 0),
        key=lambda e: e.time_range.start,
    )
    cur = peak = 0
    for e in events:
        cur += e.cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2**20


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from .engine import build

    return {
        "cpu": cpu,
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "engine": build.status(),
    }


def bench(
    cells: list[str],
    shapes: list[str],
    modes: list[str],
    repeats: int = 5,
    warmup: int = 1,
    memory: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    records = []
    for shape in shapes:
        T, B, I, H = SHAPES[shape]
        for name in cells:
            case = CASES[name]
            torch.manual_seed(0)
            impls: dict[str, nn.Module] = {}
            cell = case.ours(I, H)
            impls["rnnlab"] = _Ours(cell, reference=False)
            if case.torch_module is not None:
                tm = case.torch_module(I, H)
                tm.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
                impls["torch"] = _Torch(tm)
            impls["reference"] = _Ours(cell, reference=True)
            if name != "lstm":
                # the efficiency yardstick, timed in the same interleaved rounds
                impls["torch_lstm"] = _Torch(nn.LSTM(I, H, batch_first=True))
            x = torch.randn(B, T, I, requires_grad=True)
            w = torch.randn(B, T, _out(cell))
            for mode in modes:
                runs = _runs(impls, x, w, mode)
                for _ in range(warmup):
                    for f in runs.values():
                        f()
                med = _interleaved(runs, repeats)
                for k, m in impls.items():
                    rec = {
                        "cell": name,
                        "shape": shape,
                        "mode": mode,
                        "impl": k,
                        "median_ms": med[k],
                        "flop": flop(CASES["lstm"] if k == "torch_lstm" else case, shape, mode),
                        "peak_mem_mb": (
                            _peak_mb(m, x, w, mode) if memory and k != "torch_lstm" else None
                        ),
                        "repeats": repeats,
                    }
                    records.append(rec)
                line = "  ".join(f"{k} {v:7.1f} ms" for k, v in med.items())
                log(f"{shape} {name:18s} {mode:7s} {line}")
    return records


def _out(cell: nn.Module) -> int:
    return int(cell.output_size)  # type: ignore[arg-type]


def efficiency(d: dict[str, dict[str, Any]]) -> float | None:
    """rnnlab's GFLOP/s over torch.nn.LSTM's at the same shape and mode, from one interleaved
    run: the "torch_lstm" yardstick record, or the "torch" one for the LSTM itself."""
    o = d["rnnlab"]
    y = d.get("torch_lstm") or (d.get("torch") if o["cell"] == "lstm" else None)
    if y is None:
        return None
    return (o["flop"] / o["median_ms"]) / (y["flop"] / y["median_ms"])


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: per cell/shape/mode, each implementation's median, GFLOP/s, the ratio to
    torch.nn, the efficiency against torch.nn.LSTM and the reference loop's slowdown."""
    keyed: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        keyed.setdefault((r["cell"], r["shape"], r["mode"]), {})[r["impl"]] = r
    lines = [
        "| cell | shape | mode | rnnlab ms | GFLOP/s | torch.nn ms | rnnlab/torch | "
        "GFLOP/s vs torch.nn.LSTM | reference ms | reference/rnnlab | peak MB rnnlab / torch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (cell, shape, mode), d in keyed.items():
        o = d["rnnlab"]
        t = d.get("torch")
        ref = d["reference"]
        gf = o["flop"] / (o["median_ms"] * 1e6)
        eff = efficiency(d)
        mem = f"{o['peak_mem_mb']:.0f}" if o["peak_mem_mb"] is not None else "-"
        if t is not None and t["peak_mem_mb"] is not None:
            mem += f" / {t['peak_mem_mb']:.0f}"
        lines.append(
            f"| {cell} | {shape} | {mode} | {o['median_ms']:.1f} | {gf:.0f} | "
            + (
                f"{t['median_ms']:.1f} | {o['median_ms'] / t['median_ms']:.2f} | "
                if t
                else "- | - | "
            )
            + (f"{eff:.2f} | " if eff is not None else "- | ")
            + f"{ref['median_ms']:.1f} | {ref['median_ms'] / o['median_ms']:.1f} | {mem} |"
        )
    return "\n".join(lines)
