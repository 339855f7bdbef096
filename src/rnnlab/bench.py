"""``rnnlab bench``: rnnlab's recurrences against torch.nn and the reference loop.

For each cell and shape, in one process: rnnlab (the engine behind ``Recurrent``), torch.nn
(impl "torch", where it computes the same maths), the reference loop with autograd (impl
"reference", ``rnnlab.engine.disabled()``) and, for every cell but the LSTM itself,
``torch.nn.LSTM`` of the same shape as the efficiency yardstick (impl "torch_lstm", its own
LSTM FLOPs in ``flop``), each in two modes: ``forward`` (no grad) and ``train`` (forward and
backward of a weighted sum of the outputs, gradients for inputs and parameters).
Implementations are interleaved (the order rotated every round), every timing is the median of
``--repeats`` runs after warm-up, and the results carry the machine and versions.

FLOPs: 2·T·B·G·H·(I+H) for the forward matrix products of a cell with G gate blocks (the
output layer of Elman/Jordan cells adds 2·T·B·O·H, a recurrent output adds its O to the
recurrent width); training counts 3x the forward (forward, and two products per weight in the
backward), i.e. 6·T·B·G·H·(I+H) as in the issue. Elementwise work is not counted.

Peak memory: the largest amount of CPU tensor memory alive at once during one run, from the
PyTorch profiler's allocation events (``profile_memory=True``), minus what was alive before.
It counts tensors from every source (the compiled kernels allocate theirs as tensors).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cells import Cell, ElmanCell, ElmanState, GRUCell, JordanCell, LSTMCell
from .cli import command
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


class MinimalGatedUnit(Cell):
    """A user-defined cell the engine has no kernel for (Zhou et al. 2016's MGU):
    f = σ(W_f x + U_f h + b_f), h̃ = tanh(W x + U (f ⊙ h) + b), h' = (1 - f) ⊙ h + f ⊙ h̃."""

    State = ElmanState

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.wx = nn.Linear(input_size, 2 * hidden_size)
        self.uf = nn.Linear(hidden_size, hidden_size, bias=False)
        self.uh = nn.Linear(hidden_size, hidden_size, bias=False)

    def state_sizes(self) -> dict[str, int]:
        return {"h": self.hidden_size}

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        a, b = self.wx(x).chunk(2, dim=1)
        f = torch.sigmoid(a + self.uf(state.h))
        h = (1 - f) * state.h + f * torch.tanh(b + self.uh(f * state.h))
        return h, ElmanState(h)

    def config(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size}


def bench_user_cell(
    shape: str, repeats: int, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """A user-defined cell on the reference loop vs CompiledCell (the generated C++ loop),
    training mode; the compile time is the first call's (the on-disk cache makes later
    processes load it instead: set RNNLAB_CACHE_DIR to an empty folder for the cold figure).
    The peer comparison with JAX is ``benchmarks/bench_user_cell_peers.py``."""
    from .engine import CompiledCell

    T, B, I, H = SHAPES[shape]
    torch.manual_seed(0)
    cell = MinimalGatedUnit(I, H)
    x = torch.randn(B, T, I, requires_grad=True)
    w = torch.randn(B, T, H)
    models = {
        "reference": _Ours(cell, reference=True),
        "compiled": _Ours(CompiledCell(cell), reference=False),
    }
    first = {k: _run_once(m, x, w, "train") for k, m in models.items()}
    med = _interleaved(_runs(models, x, w, "train"), repeats)
    ref = med["reference"]
    log(
        f"{shape} user cell (MGU) train: reference {ref:.1f} ms, compiled "
        f"{med['compiled']:.1f} ms ({ref / med['compiled']:.2f}x, first call "
        f"{first['compiled']:.1f} s)"
    )
    return [
        {
            "cell": "user_mgu",
            "shape": shape,
            "mode": "train",
            "impl": k,
            "median_ms": med[k],
            "flop": 6.0 * T * B * 2 * H * (I + H),
            "peak_mem_mb": None,
            "repeats": repeats,
            **({"compile_s": first[k]} if k != "reference" else {}),
        }
        for k in med
    ]


def bench_jordan_vs_elman(
    shapes: list[str], repeats: int, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Jordan (O = H, linear output) against Elman with an output layer of the same sizes,
    training, the two interleaved in one loop per shape (the issue's 1.15x target is a ratio
    of these two, so they share rounds rather than being timed minutes apart)."""
    records = []
    for shape in shapes:
        T, B, I, H = SHAPES[shape]
        torch.manual_seed(0)
        models = {
            "jordan": _Ours(JordanCell(I, H, H), reference=False),
            "elman_output": _Ours(ElmanCell(I, H, H), reference=False),
        }
        x = torch.randn(B, T, I, requires_grad=True)
        w = torch.randn(B, T, H)
        runs = _runs(models, x, w, "train")
        for f in runs.values():  # warm-up
            f()
        med = _interleaved(runs, repeats)
        log(
            f"{shape} train: jordan {med['jordan']:.1f} ms, elman+output "
            f"{med['elman_output']:.1f} ms ({med['jordan'] / med['elman_output']:.2f}x)"
        )
        records += [
            {
                "cell": "jordan_vs_elman_output",
                "shape": shape,
                "mode": "train",
                "impl": k,
                "median_ms": v,
                "flop": flop(CASES[k], shape, "train"),
                "peak_mem_mb": None,
                "repeats": repeats,
            }
            for k, v in med.items()
        ]
    return records


def bench_teacher_forced(repeats: int, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Jordan, T=200, B=32, I=H=O=128, training: the parallel teacher-forced path vs rnnlab's
    compiled sequential path (the same cell run free) — the lecture's "training can be
    parallelized"."""
    from .layers import TeacherForcing

    T, B, I = 200, 32, 128
    torch.manual_seed(0)
    cell = JordanCell(I, I, I)
    layer = Recurrent(cell)
    x = torch.randn(B, T, I, requires_grad=True)
    r = torch.randn(B, T, I)
    w = torch.randn(B, T, I)

    def seq() -> float:
        t0 = time.perf_counter()
        (layer(x)[0] * w).sum().backward()  # type: ignore[operator]
        return time.perf_counter() - t0

    def par() -> float:
        t0 = time.perf_counter()
        y = layer(x, feedback=TeacherForcing(), reference=r)[0]
        (y * w).sum().backward()  # type: ignore[operator]
        return time.perf_counter() - t0

    seq(), par()
    med = _interleaved({"sequential": seq, "teacher_forced_parallel": par}, repeats)
    log(
        f"jordan T=200 train: sequential {med['sequential']:.1f} ms, teacher-forced parallel "
        f"{med['teacher_forced_parallel']:.1f} ms "
        f"({med['sequential'] / med['teacher_forced_parallel']:.1f}x)"
    )
    return [
        {
            "cell": "jordan",
            "shape": "T200_B32_128",
            "mode": "train",
            "impl": k,
            "median_ms": v,
            "flop": 6.0 * T * B * 2 * I * I,
            "peak_mem_mb": None,
            "repeats": repeats,
        }
        for k, v in med.items()
    ]


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


def is_bench_file(path: Path) -> bool:
    """Whether ``path`` holds what ``rnnlab bench --json`` writes (a JSON object with
    ``machine`` and ``records``; newer files also say ``written_by``)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"machine", "records"} <= set(doc)


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help=f"S1 only, cells {', '.join(QUICK)}")
    p.add_argument("--cells", nargs="+", choices=sorted(CASES), help="cells (default: all)")
    p.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="shapes (default: all)")
    p.add_argument("--modes", nargs="+", choices=["forward", "train"], default=["forward", "train"])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument(
        "--json",
        type=Path,
        help="write the records (with the machine) to this file; an existing file is replaced "
        "only if rnnlab bench wrote it (else pass --force)",
    )
    p.add_argument("--force", action="store_true", help="--json may replace any file")
    p.add_argument(
        "--extras",
        action="store_true",
        help="also: a user-defined cell compiled vs reference, Jordan's "
        "teacher-forced parallel path vs its sequential path, and Jordan vs Elman with an "
        "output layer (interleaved)",
    )


@command("bench", "Time rnnlab's recurrences against torch.nn and the reference loop.")(_add)
def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise SystemExit(f"--repeats: expected a positive int, got {args.repeats}")
    if args.json:  # refused before minutes of timing, not after
        from ._files import UnsafePathError, check_new_or_own_file

        try:
            check_new_or_own_file(args.json, is_bench_file, what="--json", force=args.force)
        except UnsafePathError as err:
            raise SystemExit(f"rnnlab bench: error: {err}") from None
    cells = args.cells or (QUICK if args.quick else list(CASES))
    shapes = args.shapes or (["S1"] if args.quick else list(SHAPES))
    info = machine()
    print(f"# {info['cpu']}, {info['cores']} threads, torch {info['torch']}, {info['date']}")
    records = bench(cells, shapes, args.modes, args.repeats, memory=not args.no_memory)
    print(table(records))
    if args.extras:
        records += bench_user_cell("S1", args.repeats)
        records += bench_teacher_forced(args.repeats)
        records += bench_jordan_vs_elman(shapes, args.repeats)
    if args.json:
        from ._files import atomic_write_text

        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"written_by": "rnnlab bench", "machine": info, "records": records}
        atomic_write_text(args.json, json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0
