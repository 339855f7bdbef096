"""Training cost of layer norm, variational dropout and zoneout against the same cell without.

What is measured: seconds per training step (forward over T steps, a sum loss, backward) of
``Recurrent(cell)`` at the engine's shapes S1 (T=100, B=32, I=128, H=256) and S2 (T=500, B=8,
I=64, H=128), for the LSTM, the GRU and the Elman cell (tanh):

* ``plain``: the cell itself (the engine's compiled kernel where it has one);
* ``plain_ref``: the same under ``engine.disabled()`` (the reference loop with autograd);
* ``layer_norm``: LayerNormLSTMCell / LayerNormGRUCell (the Elman cell has no layer-norm
  form in rnnlab.cells: its rows have no ``layer_norm`` line);
* ``dropout``: ``Recurrent(cell, dropout_input=0.25, dropout_state=0.25)``;
* ``zoneout``: ``ZoneoutCell(cell, 0.1)`` (every state field).

Issue 18's target is at most 1.15x ``plain``. Dropout, zoneout and layer norm run the engine's
regularised operators (engine/regularised.py, regularised_ln.py; Elman:
``rnnlab::elman_reg_*``). Note that ``plain`` for the
float32 LSTM without lengths is torch's fused LSTM (oneDNN), not the engine's own loop; the
``plain_ref`` column gives the reference loop for scale.

Threading (docs/design/0007): the dropout/zoneout LSTM and GRU kernels (csrc/regularised.h)
give each thread its own hidden units for the whole sequence, as the plain GRU kernel does; the
layer-norm kernels (csrc/layernorm.h) and the dropout/zoneout Elman and Jordan kernels give each
thread a block of batch rows instead (no barrier: a row's recurrence reads only its own row).
``RNNLAB_ENGINE_PARTITION=0`` turns both off; ``benchmarks/ab_regularised_partition.py``
alternates the two in one process.
Zoneout's keep decisions come from a Philox generator in C++ (docs/design/0020), not from T·B·H
serial torch.rand draws. Known remaining cost: the layer-norm LSTM's input norm LN(W x) runs
in autograd outside the kernel, which the plain cell does not pay (the GRU's runs inside its
kernel, row by row).

Noise control: implementations are interleaved (each round times every one, in a rotated
order), warm-up steps are discarded, the median over rounds is reported. Run it on a quiet
machine, e.g.

    OMP_NUM_THREADS=2 python benchmarks/bench_regularised.py --out benchmarks/results/regularised

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
from rnnlab.cells import (
    Cell,
    ElmanCell,
    GRUCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    ZoneoutCell,
)
from rnnlab.layers import Recurrent

SHAPES = {"S1": (100, 32, 128, 256), "S2": (500, 8, 64, 128), "tiny": (6, 2, 3, 4)}


# kind -> (the plain cell, its layer-norm form or None where rnnlab.cells has none)
CELLS: dict[str, tuple[type[Cell], type[Cell] | None]] = {
    "lstm": (LSTMCell, LayerNormLSTMCell),
    "gru": (GRUCell, LayerNormGRUCell),
    "elman": (ElmanCell, None),  # tanh, no output layer
}


def _variants(kind: str, I: int, H: int) -> dict[str, tuple[Recurrent, bool]]:
    plain_cls, ln_cls = CELLS[kind]
    plain = plain_cls(I, H)
    made = {
        "plain": (Recurrent(plain), True),
        "plain_ref": (Recurrent(plain), False),
    }
    if ln_cls is not None:
        made["layer_norm"] = (Recurrent(ln_cls(I, H)), True)
    made["dropout"] = (Recurrent(plain_cls(I, H), dropout_input=0.25, dropout_state=0.25), True)
    made["zoneout"] = (Recurrent(ZoneoutCell(plain_cls(I, H), 0.1)), True)
    return made


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


Variants = Callable[[str, int, int], dict[str, tuple[Recurrent, bool]]]


def measure(
    shape: str, kind: str, rounds: int, warmup: int, variants: Variants | None = None,
    shapes: dict[str, tuple[int, int, int, int]] = SHAPES,
) -> dict[str, float]:  # fmt: skip
    """Median seconds per training step of each of ``variants(kind, I, H)`` (default: this
    file's LSTM/GRU/Elman variants) at ``shapes[shape]``: interleaved rounds in rotated order."""
    T, B, I, H = shapes[shape]
    torch.manual_seed(0)
    x = torch.randn(B, T, I)
    made = (variants or _variants)(kind, I, H)
    runs = {name: _step(layer, x, eng) for name, (layer, eng) in made.items()}
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def main(
    description: str | None = None, column: str = "cell", kinds: tuple[str, ...] = tuple(CELLS),
    variants: Variants | None = None, shapes: dict[str, tuple[int, int, int, int]] = SHAPES,
) -> None:  # fmt: skip
    """The command line: each kind (a table column named ``column``) at each shape, as a
    Markdown table, and with ``--out`` OUT.json / OUT.md (also bench_regularised_jordan.py's)."""
    p = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="*", default=["S1", "S2"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny shapes, one round")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args()
    names = ["tiny"] if args.quick else args.shapes
    rounds, warmup = (1, 0) if args.quick else (args.rounds, args.warmup)
    records = []
    lines = [
        f"| shape | {column} | variant | s/step | vs plain | vs plain_ref |",
        "|---|---|---|---|---|---|",
    ]
    for shape in names:
        for kind in kinds:
            med = measure(shape, kind, rounds, warmup, variants, shapes)
            for name, sec in med.items():
                rec = {
                    "shape": shape,
                    column: kind,
                    "variant": name,
                    "seconds": sec,
                    "vs_plain": sec / med["plain"],
                    "vs_plain_ref": sec / med["plain_ref"],
                }
                records.append(rec)
                lines.append(
                    f"| {shape} | {kind} | {name} | {sec:.4f} | {rec['vs_plain']:.2f}x | "
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
