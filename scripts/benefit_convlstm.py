"""ConvLSTM against a per-frame CNN on moving shapes: next-frame prediction.

Task: ``rnnlab.data.MovingShapes`` (bouncing sprites, generated offline; Fashion-MNIST
sprites with ``--data-root``), predict frame t+1 from frames 0..t. A single frame does not show
where a sprite is heading, so a model that sees one frame at a time can at best blur it; the
recurrent state can carry the motion.

Models, similar parameter counts, same batches, Adam, MSE on pixels after a sigmoid:

* ``convlstm``: ``Recurrent(ConvLSTMCell(1, F, 5))`` then a 1x1 convolution to one channel;
* ``cnn``: the same read-out after two 5x5 convolutions (ReLU) applied to each frame alone.

Reported: validation MSE (all steps but the first, where neither model has seen motion yet)
beside the two trivial baselines, "nothing moves" (frame t as frame t+1) and "empty frame".

What the paper reports on its own task: Shi et al. 2015 (NeurIPS, arXiv:1506.04214) compare
ConvLSTM networks with an FC-LSTM on Moving MNIST (their Table 1, cross-entropy loss) and on
radar echo nowcasting; their abstract: "Experiments show that our ConvLSTM network captures
spatiotemporal correlations better and consistently outperforms FC-LSTM and the
state-of-the-art operational ROVER algorithm for precipitation nowcasting" (abstract as listed
at https://www.paperswithcode.com/paper/convolutional-lstm-network-a-machine-learning). The
table's figures are not quoted here: the paper was not available offline to check them.

Run (about 3-4 minutes of CPU with the defaults):

    OMP_NUM_THREADS=2 python scripts/benefit_convlstm.py --out scripts/results/issue18/convlstm
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlab.cells import ConvLSTMCell
from rnnlab.data import MovingShapes
from rnnlab.layers import Recurrent


class ConvLSTMModel(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rnn = Recurrent(ConvLSTMCell(1, channels, 5))
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)  # (B, T, F, S, S)
        B, T = y.shape[:2]
        return torch.sigmoid(self.out(y.flatten(0, 1))).view(B, T, 1, *y.shape[3:])


class FrameCNN(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            # Widths chosen for the ConvLSTM's parameter count (27.1k against 27.3k at F = 16).
            nn.Conv2d(1, 3 * channels // 2, 5, padding=2),
            nn.ReLU(),
            nn.Conv2d(3 * channels // 2, 11 * channels // 4, 5, padding=2),
            nn.ReLU(),
            nn.Conv2d(11 * channels // 4, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        return torch.sigmoid(self.net(x.flatten(0, 1))).view_as(x)


def _mse(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(((pred[:, 1:] - y[:, 1:]) ** 2).mean())  # skip t = 0 (no motion seen)


def run(
    kind: str, args: argparse.Namespace, train: MovingShapes, val: MovingShapes
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model: nn.Module = (
        ConvLSTMModel(args.channels) if kind == "convlstm" else FrameCNN(args.channels)
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    t0, curve = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train), (args.batch,), generator=g)
        loss = ((model(train.x[idx]) - train.y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            with torch.no_grad():
                curve.append((step, _mse(model(val.x), val.y)))
    return {
        "model": kind,
        "parameters": sum(p.numel() for p in model.parameters()),
        "val_mse": curve[-1][1],
        "curve": curve,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=512)
    p.add_argument("--val", type=int, default=128)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--size", type=int, default=24)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder for sprites")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args()
    kw: dict[str, Any] = {"size": args.size, "sprite_size": 6, "data_root": args.data_root}
    train = MovingShapes(args.train, args.frames, seed=1, **kw)
    val = MovingShapes(args.val, args.frames, seed=2, **kw)
    rows = [run(kind, args, train, val) for kind in ("convlstm", "cnn")]
    still = _mse(val.baseline_prediction(), val.y)
    empty = _mse(torch.zeros_like(val.y), val.y)
    lines = [
        f"MovingShapes {args.train} train / {args.val} val sequences of {args.frames} frames "
        f"{args.size}x{args.size} ({'fashion-mnist' if args.data_root else 'shapes'}), "
        f"{args.steps} Adam steps of {args.batch}",
        "",
        "| model | parameters | val MSE (t >= 1) | seconds |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['parameters']} | {r['val_mse']:.5f} | {r['seconds']:.0f} |"
        for r in rows
    ]
    lines += [
        f"| baseline: nothing moves | 0 | {still:.5f} | |",
        f"| baseline: empty frame | 0 | {empty:.5f} | |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: str(v) for k, v in vars(args).items()}
        out = {"args": meta, "runs": rows, "baselines": {"still": still, "empty": empty}}
        args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
