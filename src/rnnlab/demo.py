"""``rnnlab demo``: train an Elman and a Jordan network on a small sequence task and print the
loss falling (case 4 of the lecture: time-varying input, a target at every step).

The task: sine waves of random frequency and phase; predict the next sample, x(t+1), from the
samples so far. A network that has learnt the dynamics reaches an MSE far below the variance
of the target (0.5), the loss of predicting the constant 0.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from .cells import ElmanCell, JordanCell
from .layers import Recurrent


def sine_batch(batch: int, steps: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """x (B, T, 1) and target (B, T, 1) = x shifted by one step."""
    w = 0.1 + 0.4 * torch.rand(batch, 1, generator=generator)
    phi = 6.2832 * torch.rand(batch, 1, generator=generator)
    t = torch.arange(steps + 1, dtype=torch.float32).unsqueeze(0)
    s = torch.sin(w * t + phi).unsqueeze(-1)  # (B, T+1, 1)
    return s[:, :-1], s[:, 1:]


def train(name: str, layer: Recurrent, steps: int, seed: int, log_every: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for k in range(1, steps + 1):
        x, r = sine_batch(32, 40, g)
        y, _ = layer(x)
        loss = nn.functional.mse_loss(y, r)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(layer.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if k == 1 or k % log_every == 0:
            print(f"  {name:7s} step {k:4d}  mse {loss.item():.5f}", flush=True)
    return losses


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=300, help="training steps per network")
    p.add_argument("--seed", type=int, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise SystemExit(f"--steps: expected a positive int, got {args.steps}")
    torch.manual_seed(args.seed)
    print("rnnlab demo: predict x(t+1) of a sine wave (B=32, T=40); constant-0 baseline MSE 0.5")
    t0 = time.perf_counter()
    nets = {
        "Elman": Recurrent(ElmanCell(1, 32, 1)),
        "Jordan": Recurrent(JordanCell(1, 32, 1)),
    }
    results = {}
    for name, layer in nets.items():
        print(f"{name} network ({sum(p.numel() for p in layer.parameters())} parameters):")
        results[name] = train(name, layer, args.steps, args.seed, max(1, args.steps // 6))
    print()
    for name, losses in results.items():
        first, last = losses[0], sum(losses[-10:]) / min(10, len(losses))
        print(f"{name:7s} mse {first:.4f} -> {last:.5f}  ({first / max(last, 1e-12):.0f}x lower)")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


# The commands this module adds to ``rnnlab`` (cli.py reads this table; no import of cli.py
# here, so no import circle).
COMMANDS = {
    "demo": (
        "Train an Elman and a Jordan network on next-step sine prediction; print the loss.",
        _add,
        run,
    ),
}
