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
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cells import Cell, ElmanCell, ElmanState, JordanCell
from .layers import Recurrent
from .timing import (
    CASES,
    QUICK,
    SHAPES,
    Case,
    _interleaved,
    _Ours,
    _run_once,
    _runs,
    bench,
    efficiency,
    flop,
    machine,
    table,
)


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


# The commands this module adds to ``rnnlab`` (cli.py reads this table; no import of cli.py
# here, so no import circle).
COMMANDS = {
    "bench": (
        "Time rnnlab's recurrences against torch.nn and the reference loop.",
        _add,
        run,
    ),
}


__all__ = [
    "CASES",
    "COMMANDS",
    "QUICK",
    "SHAPES",
    "Case",
    "MinimalGatedUnit",
    "bench",
    "bench_jordan_vs_elman",
    "bench_teacher_forced",
    "bench_user_cell",
    "efficiency",
    "flop",
    "is_bench_file",
    "machine",
    "run",
    "table",
]
