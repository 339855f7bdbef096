"""Progress on the terminal: a tqdm bar on a TTY that stays on screen when the run ends, plain
one-line progress lines elsewhere (CI, log files), and every validation result printed as it
happens. Everything goes to stderr (stdout stays for the commands' results).

tqdm comes with the ``train`` extra; without it the plain lines are used on a TTY too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``loss 0.123 forced_loss 0.1 accuracy 0.875`` (numbers at 5 significant digits).

    Example:
        >>> format_metrics({"loss": 0.123456, "accuracy": 0.875})
        'loss 0.12346 accuracy 0.875'
    """
    parts = []
    for k, v in metrics.items():
        parts.append(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}")
    return " ".join(parts)


class Progress:
    """The run's progress display (rank 0; ``enabled=False``: silent)."""

    def __init__(
        self,
        total: int,
        initial: int,
        *,
        enabled: bool,
        every: int,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.enabled, self.every = total, enabled, max(1, every)
        self.stream = stream if stream is not None else sys.stderr
        self.bar: Any = None
        self.n = initial
        self._t0 = time.perf_counter()
        if enabled and _isatty(self.stream):
            try:
                from tqdm.auto import tqdm
            except ImportError:  # the plain lines
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=total,
                    initial=min(initial, total),
                    desc="train",
                    dynamic_ncols=True,
                    leave=True,  # the last state stays on screen
                    file=self.stream,
                )

    def update(self, step: int, loss: float) -> None:
        before, self.n = self.n, step
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - before)
            self.bar.set_postfix(loss=f"{loss:.4g}")
        elif step // self.every > before // self.every or step >= self.total:
            rate = step / max(time.perf_counter() - self._t0, 1e-9)
            self._line(f"train step {step}/{self.total} loss {loss:.5g} ({rate:.3g} steps/s)")

    def validation(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self.enabled:
            self._line(f"val   step {step}/{self.total} {format_metrics(metrics)}")

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
