"""What stops a run, and how: the trainer's errors, its summary, and the fault paths.

A NaN or exploding loss (:class:`TrainingDiverged`), SIGINT/SIGTERM (a checkpoint at the next
batch boundary, then :class:`TrainingInterrupted`), a failed write (:class:`RunWriteError`,
naming the path and errno), and the run's ``history.jsonl`` of events. The functions taking
``self`` are :class:`~rnnlab.training.Trainer` methods (bound in trainer.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .distributed import all_sum, barrier
from .metrics import _json_line

if TYPE_CHECKING:
    from .trainer import Trainer


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or infinite; the run stopped (message: where, and the
    last good checkpoint)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the run wrote a checkpoint at the next batch boundary and stopped.

    ``signum``: the signal; ``checkpoint``: the checkpoint written (resume from it). The CLI
    exits with 128 + signum.

    Example:
        >>> import signal
        >>> err = TrainingInterrupted("stopped by SIGTERM", signal.SIGTERM, None)
        >>> 128 + err.signum, isinstance(err, KeyboardInterrupt)
        (143, True)
    """

    def __init__(self, message: str, signum: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signum, self.checkpoint = signum, checkpoint


class RunWriteError(OSError):
    """A checkpoint, config or metrics write failed (disk full, read-only folder); the message
    names the path and errno. The last good checkpoint and the trainer's state are kept.

    Example:
        >>> import errno
        >>> cause = OSError(errno.ENOSPC, "No space left on device", "runs/a/metrics.jsonl")
        >>> err = RunWriteError("could not write runs/a/metrics.jsonl: disk full (ENOSPC)", cause)
        >>> err.errno == errno.ENOSPC, str(err)
        (True, 'could not write runs/a/metrics.jsonl: disk full (ENOSPC)')
    """

    def __init__(self, message: str, cause: OSError) -> None:
        super().__init__(cause.errno, message)
        self.cause = cause

    def __str__(self) -> str:
        return str(self.strerror)


class RunDirError(ValueError):
    """The run directory exists (and neither resume nor overwrite was asked), or cannot be
    resumed."""


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    run_dir: Path | None
    step: int
    epoch: int
    stopped: str  # "steps" or "early_stopping"
    best: float | None
    best_step: int | None
    last_val: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


def _keep_text(self: Trainer, last: Path | None) -> str:
    if last is None:
        why = " (run_dir is None)" if self.run_dir is None else ""
        return f"no checkpoint was written{why}"
    return f"the last good checkpoint is {last} (step {int(last.stem.split('-')[1])})"


def _guarded(self: Trainer, write: Any, last: Path | None) -> Any:
    """Run a file write; an OSError (disk full, read-only folder, ...) stops the run with
    :class:`RunWriteError` naming the path and errno. The last good checkpoint stays (each
    write is atomic or append-only) and so does the trainer's state in memory."""
    try:
        return write()
    except OSError as err:
        from .._files import describe_os_error

        raise RunWriteError(
            f"could not write {describe_os_error(err)} at update step {self.step}; "
            f"{self._keep_text(last)}; the trainer's state in memory is unchanged "
            "(free space or fix the folder, then resume)",
            err,
        ) from None


def _catch_signals(self: Trainer) -> Any:
    """SIGINT and SIGTERM only set a flag; the loop checkpoints at the next batch boundary.
    (Handlers can only be installed from the main thread; elsewhere signals are not caught.)"""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {}

    def flag(signum: int, frame: Any) -> None:
        self._signal = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, flag)

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    return restore


def _interrupted(self: Trainer) -> bool:
    """Whether any process got a signal (one collective per batch under DDP, so that every
    rank stops at the same step and joins the checkpoint's collective)."""
    got = self._signal is not None
    if self.dist.enabled:
        flag = torch.tensor([float(self._signal or 0)], device=self.device)
        total = float(all_sum(flag, self.dist)[0])
        if total > 0 and self._signal is None:
            import signal

            self._signal = int(signal.SIGTERM)
        got = total > 0
    return got


def _stop_on_signal(self: Trainer, last: Path | None) -> None:
    assert self._signal is not None
    signum = int(self._signal)
    if last is None or int(last.stem.split("-")[1]) != self.step:
        last = self._guarded(self.save, last) or last
    self._history("interrupted", signal=signum)
    # no rank leaves before rank 0 has written: torchrun stops the others when one exits
    barrier(self.dist)
    import signal

    raise TrainingInterrupted(
        f"stopped by {signal.Signals(signum).name} at update step {self.step} (epoch "
        f"{self.epoch}); {self._keep_text(last)}; resume with --resume",
        signum,
        last,
    )


def _history(self: Trainer, event: str, **info: Any) -> None:
    """Append an event (created, resumed, interrupted, diverged) to history.jsonl."""
    if self.run_dir is None or not self.is_main:
        return
    import datetime

    row = {
        "event": event,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "step": self.step,
        **info,
    }
    try:
        with (self.run_dir / "history.jsonl").open("a", encoding="utf-8") as f:
            f.write(_json_line(row))
    except OSError:  # the history is a courtesy: never lose a run over it
        pass


def _diverged(self: Trainer, err: Exception, last: Path | None, updated: bool = False) -> None:
    where = f"at update step {self.step if updated else self.step + 1} (epoch {self.epoch})"
    keep = self._keep_text(last)
    try:
        self.writer.row(
            {"step": self.step, "epoch": self.epoch, "split": "diverged", "loss": float("nan")}
        )
    except OSError:
        pass
    self._history("diverged", reason=str(err))
    stopped = (
        "Stopped; the checkpoint is not overwritten"
        if updated
        else "Stopped before updating the parameters"
    )
    raise TrainingDiverged(
        f"training diverged {where}: {err}. {stopped}; {keep}. "
        "Try a lower optim.lr, clip.grad_norm, or a smaller spectral radius."
    ) from None
