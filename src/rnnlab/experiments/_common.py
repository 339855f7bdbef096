"""Small helpers shared by the lecture experiments: training loops, claims, figures."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .registry import Claim


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def lap(self) -> float:
        t, self.t0 = time.perf_counter() - self.t0, time.perf_counter()
        return t


def claim(
    exp: str,
    text: str,
    measured: Any,
    expected: Any,
    source: str,
    ok: bool | None,
    seconds: float = 0.0,
) -> Claim:
    """A claims row; ``ok=None`` marks an informational row."""
    status = "info" if ok is None else ("pass" if ok else "fail")
    return Claim(exp, text, measured, expected, source, status, round(seconds, 2))  # type: ignore[arg-type]


def fit(
    model: nn.Module,
    batches: Callable[[int], tuple[Tensor, ...]],
    loss_fn: Callable[[nn.Module, tuple[Tensor, ...]], Tensor],
    steps: int,
    lr: float = 1e-2,
    clip: float | None = 1.0,
    log_every: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[float]:
    """Adam for ``steps`` steps on ``batches(step)``; returns the loss per step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for k in range(steps):
        loss = loss_fn(model, batches(k))
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
        if progress and log_every and (k + 1) % log_every == 0:
            progress(f"step {k + 1}/{steps} loss {losses[-1]:.4f}")
    return losses


def figure(path: Path) -> Any:
    """A fresh matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6.4, 4.0), dpi=100)
    fig._rnnlab_path = path  # type: ignore[attr-defined]
    return fig


def save(fig: Any) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(fig._rnnlab_path)
    plt.close(fig)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous setting.

    Small recurrent models step through time one small matrix product at a time; there, extra
    threads cost more in synchronisation than they gain (3x slower with 2 threads on a busy
    2-core machine), so the tour's small experiments run on one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
