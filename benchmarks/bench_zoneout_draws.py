"""Zoneout's keep draws, old (torch.rand from mt19937, then a compare) against new (one key
per step, Philox4x32-10 in C++; docs/design/0020-zoneout-draws.md), interleaved in one process.

What is measured (medians over interleaved rounds, rotated order, warm-up discarded):

* ``draw``: :func:`rnnlab.engine.kernels_extra.zoneout_keep` alone for a zoneout run over
  (B, T) at the shape (LSTM: h and c; GRU: h), the old implementation (copied below) vs the
  current one;
* ``step``: a training step (forward, sum loss, backward) of ``Recurrent(ZoneoutCell(cell,
  0.1))`` with the old draw patched in vs the current one, and the plain cell's step, so
  that the ratio zoneout / plain of each draw is shown;
* ``dropout masks``: one ``VariationalDropoutCell.masks`` draw (per sequence), for scale.

    OMP_NUM_THREADS=2 python benchmarks/bench_zoneout_draws.py --shapes S2 --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from rnnlab.cells import GRUCell, LSTMCell, VariationalDropoutCell, ZoneoutCell
from rnnlab.engine import kernels_extra
from rnnlab.layers import Recurrent

SHAPES = {"S1": (100, 32, 128, 256), "S2": (500, 8, 64, 128), "tiny": (6, 2, 3, 4)}
NEW = kernels_extra.zoneout_keep


def old_keep(cell: ZoneoutCell, x: torch.Tensor, like: Any) -> dict[str, torch.Tensor]:
    """The draw before docs/design/0020: T · Σ n uniforms from the generator, then p-compare."""
    T = x.shape[1]
    zoned = [(f, p, getattr(like, f)) for f, p in cell.rates.items() if p > 0.0]
    if not cell.training:
        return {f: torch.full((T, *s.shape), p, dtype=s.dtype) for f, p, s in zoned}
    sizes = [s.numel() for _, _, s in zoned]
    u = torch.rand((T, sum(sizes)), device=zoned[0][2].device, generator=cell.generator)
    return {
        f: (part < p).to(s.dtype).view(T, *s.shape)
        for (f, p, s), part in zip(zoned, u.split(sizes, dim=1))
    }


def _interleave(runs: dict[str, Callable[[], Any]], rounds: int, warmup: int) -> dict[str, float]:
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {n: [] for n in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def _train_step(layer: Recurrent, x: torch.Tensor, keep: Any) -> Callable[[], None]:
    def run() -> None:
        kernels_extra.zoneout_keep = keep
        try:
            layer.zero_grad(set_to_none=True)
            y, _ = layer(x)
            y.sum().backward()
        finally:
            kernels_extra.zoneout_keep = NEW

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="*", default=["S2"])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    print(f"threads {torch.get_num_threads()}")
    for shape in args.shapes:
        T, B, I, H = SHAPES[shape]
        torch.manual_seed(0)
        x = torch.randn(B, T, I)
        for kind, cls in (("lstm", LSTMCell), ("gru", GRUCell)):
            zc = ZoneoutCell(cls(I, H), 0.1)
            like = zc.initial_state(B)
            draw = _interleave(
                {
                    "old": lambda zc=zc, x=x, like=like: old_keep(zc, x, like),
                    "new": lambda zc=zc, x=x, like=like: NEW(zc, x, like),
                },
                args.rounds * 4, args.warmup,
            )  # fmt: skip
            ratio = draw["new"] / draw["old"]
            print(f"{shape} {kind} draw   old {draw['old'] * 1e3:8.3f} ms  new "
                  f"{draw['new'] * 1e3:8.3f} ms  new/old {ratio:.3f}")  # fmt: skip
            zl, plain = Recurrent(zc), Recurrent(cls(I, H))
            step = _interleave(
                {
                    "plain": _train_step(plain, x, NEW),
                    "old": _train_step(zl, x, old_keep),
                    "new": _train_step(zl, x, NEW),
                },
                args.rounds, args.warmup,
            )  # fmt: skip
            print(f"{shape} {kind} step   plain {step['plain'] * 1e3:8.2f} ms  zoneout old "
                  f"{step['old'] * 1e3:8.2f} ms ({step['old'] / step['plain']:.2f}x)  new "
                  f"{step['new'] * 1e3:8.2f} ms ({step['new'] / step['plain']:.2f}x)  "
                  f"new/old {step['new'] / step['old']:.3f}")  # fmt: skip
        vd = VariationalDropoutCell(LSTMCell(I, H), 0.25, 0.25)
        masks = _interleave({"masks": lambda vd=vd, B=B: vd.masks(B)}, args.rounds * 4, args.warmup)
        print(f"{shape} dropout masks (B={B}, I={I}, H={H}) {masks['masks'] * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
