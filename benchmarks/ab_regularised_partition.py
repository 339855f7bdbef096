"""A/B of the regularised kernels' threaded loops (RNNLAB_ENGINE_PARTITION=1: the unit
partition of the dropout/zoneout LSTM and GRU, the batch-row team of the layer-norm ones and
of Elman) against their classic loops (=0), in one process, interleaved (docs/design/0007),
training steps of
``Recurrent(cell, dropout_input=0.25, dropout_state=0.25)``, ``Recurrent(ZoneoutCell(cell, 0.1))``
and the layer-norm cell at S1 and S2, with the plain cell (LSTM: torch's fused LSTM; GRU: the
engine's partitioned kernel; Elman: the engine's classic loop, which never partitions) for the
ratio of issue 18 (Elman has no layer-norm cell: no ``ln`` row); the LSTM runs also time the
engine's CIFG LSTM as a control (its partition is note 0007's). Needs >= 2 threads:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ab_regularised_partition.py --rounds 15
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ab_regularised_partition.py --cell gru
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ab_regularised_partition.py --cell elman

Prints medians (ms) and ratios; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from rnnlab.cells import (
    ElmanCell,
    GRUCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    ZoneoutCell,
)
from rnnlab.layers import Recurrent

SHAPES = {"S1": (100, 32, 128, 256), "S2": (500, 8, 64, 128), "tiny": (6, 2, 3, 20)}


def _step(layer: Recurrent, x: torch.Tensor, switch: str) -> float:
    """Seconds of one training step (forward, sum loss, backward) under the switch."""
    if switch:
        os.environ["RNNLAB_ENGINE_PARTITION"] = switch
    layer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    layer(x)[0].sum().backward()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--shapes", nargs="*", default=["S1", "S2"])
    p.add_argument("--cell", choices=["lstm", "gru", "elman"], default="lstm")
    p.add_argument("--quick", action="store_true", help="tiny shape, one round")
    args = p.parse_args()
    shapes, rounds = (["tiny"], 1) if args.quick else (args.shapes, args.rounds)
    for shape in shapes:
        T, B, I, H = SHAPES[shape]
        torch.manual_seed(0)
        x = torch.randn(B, T, I)
        cell, ln = {
            "lstm": (LSTMCell, LayerNormLSTMCell),
            "gru": (GRUCell, LayerNormGRUCell),
            "elman": (ElmanCell, None),
        }[args.cell]
        layers = {
            "plain": Recurrent(cell(I, H)),
            "dropout": Recurrent(cell(I, H), dropout_input=0.25, dropout_state=0.25),
            "zoneout": Recurrent(ZoneoutCell(cell(I, H), 0.1)),
        }
        if ln is not None:
            layers["ln"] = Recurrent(ln(I, H))
        if args.cell == "lstm":
            layers["cifg"] = Recurrent(LSTMCell(I, H, variant="CIFG"))
        runs = [("plain", "")] + [(k, v) for k in list(layers)[1:] for v in ("0", "1")]

        for name, switch in runs * 2:  # warm-up
            _step(layers[name], x, switch)
        times: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
        for i in range(rounds):
            for name, switch in runs[i % len(runs) :] + runs[: i % len(runs)]:
                times[(name, switch)].append(_step(layers[name], x, switch))
        os.environ.pop("RNNLAB_ENGINE_PARTITION", None)
        med = {r: 1e3 * statistics.median(v) for r, v in times.items()}
        plain = med[("plain", "")]
        print(f"{shape} training, {torch.get_num_threads()} threads: plain {plain:.1f} ms")
        for name in list(layers)[1:]:
            off, on = med[(name, "0")], med[(name, "1")]
            print(
                f"{shape} {name:8s} classic {off:7.1f} partitioned {on:7.1f} ms: "
                f"speed-up {off / on:.2f}x; vs plain {off / plain:.2f}x -> {on / plain:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
