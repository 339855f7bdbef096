"""Training speed of rnnlab's ConvLSTM against a plain PyTorch ConvLSTM.

What is measured: seconds per training step (forward over T frames, MSE to random targets,
backward) at B=8, T=10, C=1, F=32 hidden channels, 32x32 frames, 3x3 kernels (a moving-shapes
sized model):

* ``plain``: the ConvLSTM found in public code (one nn.Conv2d over cat([x, h]) per step, then
  the four gates), no peepholes;
* ``rnnlab``: ``Recurrent(ConvLSTMCell(C, F, 3))`` (the reference loop over torch's conv2d:
  separate input and recurrent convolutions, summed);
* ``rnnlab_peephole``: the same with Shi et al.'s Hadamard peepholes.

Both compute the same function (checked at start-up with copied weights). Interleaved rounds in
a rotated order, warm-up discarded, medians reported. On a quiet machine:

    OMP_NUM_THREADS=2 python benchmarks/bench_convlstm.py --out benchmarks/results/convlstm

``--quick`` runs a tiny size once (a smoke test).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnlab.cells import ConvLSTMCell
from rnnlab.layers import Recurrent


class PlainConvLSTM(nn.Module):
    """The common public implementation: one conv over the concatenation [x, h]."""

    def __init__(self, c: int, f: int, k: int) -> None:
        super().__init__()
        self.f = f
        self.conv = nn.Conv2d(c + f, 4 * f, k, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _, Hs, Ws = x.shape
        h = x.new_zeros(B, self.f, Hs, Ws)
        c = torch.zeros_like(h)
        ys = []
        for t in range(T):
            i, f, g, o = self.conv(torch.cat([x[:, t], h], 1)).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys, 1)


def _copy_weights(plain: PlainConvLSTM, cell: ConvLSTMCell, c: int) -> None:
    with torch.no_grad():
        cell.weight_ih.copy_(plain.conv.weight[:, :c])
        cell.weight_hh.copy_(plain.conv.weight[:, c:])
        assert cell.bias_ih is not None and plain.conv.bias is not None
        cell.bias_ih.copy_(plain.conv.bias)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    B, T, C, F, S = (2, 3, 1, 4, 8) if args.quick else (8, 10, 1, 32, 32)
    rounds, warmup = (1, 0) if args.quick else (args.rounds, args.warmup)
    torch.manual_seed(0)
    plain = PlainConvLSTM(C, F, 3)
    cell = ConvLSTMCell(C, F, 3)
    _copy_weights(plain, cell, C)
    models: dict[str, nn.Module] = {
        "plain": plain,
        "rnnlab": Recurrent(cell),
        "rnnlab_peephole": Recurrent(ConvLSTMCell(C, F, 3, peephole=True, spatial_size=(S, S))),
    }
    x = torch.randn(B, T, C, S, S)
    target = torch.randn(B, T, F, S, S)
    torch.testing.assert_close(models["rnnlab"](x)[0], plain(x), atol=1e-5, rtol=1e-4)

    def step(name: str) -> float:
        m = models[name]
        m.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = m(x)
        y = out[0] if isinstance(out, tuple) else out
        ((y - target) ** 2).mean().backward()
        return time.perf_counter() - t0

    names = list(models)
    for n in names:
        for _ in range(warmup):
            step(n)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            times[n].append(step(n))
    med = {n: statistics.median(v) for n, v in times.items()}
    lines = ["| implementation | s/step | vs plain |", "|---|---|---|"]
    lines += [f"| {n} | {s:.4f} | {s / med['plain']:.2f}x |" for n, s in med.items()]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "size": {"B": B, "T": T, "C": C, "F": F, "S": S},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "seconds": med}, indent=1)
        )
        args.out.with_suffix(".md").write_text(f"{json.dumps(meta)}\n\n{table}\n")


if __name__ == "__main__":
    main()
