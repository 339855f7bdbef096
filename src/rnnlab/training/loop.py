"""The training loop: batches until ``train.steps`` updates or a stop, with logging, validation,
checkpoints, the callbacks and the fault paths at their places. The function is the
:class:`~rnnlab.training.Trainer`'s ``_fit`` (bound in trainer.py; :meth:`fit` opens and closes
around it)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import link_or_copy, list_checkpoints
from .faults import FitResult

if TYPE_CHECKING:
    from .progress import Progress
    from .trainer import Trainer


def _fit(self: Trainer, bar: Progress, nb: int) -> FitResult:
    tr = self.config["train"]
    last_ckpt = None
    if self.run_dir is not None:
        if self._ckpt is None:
            last_ckpt = self._checkpoint(None)  # always a checkpoint to go back to
        else:
            last_ckpt = Path(self._ckpt.path)
    self._last_ckpt = last_ckpt
    last_val: dict[str, float] = {}
    t0 = time.perf_counter() - self.elapsed
    self._signal, self._stop = None, None
    restore = self._catch_signals()
    try:
        while self.step < tr["steps"]:
            if self.batch_in_epoch >= nb:
                self.epoch += 1
                self.batch_in_epoch = 0
                self.carry, self.carry_out = None, None
            before = self.step
            try:
                with self._autocast():
                    loss, gnorm, eps, records = self._train_batch()
            except FloatingPointError as err:
                self._diverged(err, last_ckpt)
            factor = tr["divergence_factor"]
            if self.lowest_loss is not None and loss > factor * self.lowest_loss:
                # finite but exploded: as good as NaN (the checkpoint is not overwritten)
                self._diverged(
                    FloatingPointError(
                        f"the training loss {loss:.6g} is above train.divergence_factor "
                        f"({factor:g}) x the lowest loss so far ({self.lowest_loss:.6g})"
                    ),
                    last_ckpt,
                    updated=True,
                )
            self.lowest_loss = loss if self.lowest_loss is None else min(self.lowest_loss, loss)
            self.batch_in_epoch += 1
            self.elapsed = time.perf_counter() - t0
            self.run_losses.append(loss)
            info: dict[str, Any] = {"step": self.step, "epoch": self.epoch, "loss": loss}
            info |= {"grad_norm": gnorm, "epsilon": eps, "grad_norms": records}
            self._call("on_step", info)  # the grad monitor writes grad_norms.jsonl
            bar.update(self.step, loss)

            def crossed(k: int, before: int = before) -> bool:
                return self.step // k > before // k

            done = self.step >= tr["steps"]
            if crossed(tr["log_every"]) or done:
                train_row = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "split": "train",
                    "loss": sum(self.run_losses) / len(self.run_losses),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "grad_norm": gnorm,
                    "epsilon": eps,
                    "elapsed_s": round(self.elapsed, 3),
                }
                self._guarded(lambda r=train_row: self.writer.row(r), last_ckpt)
                self.run_losses = []
            if crossed(tr["eval_every"]) or done:
                last_val = self.evaluate()
                row: dict[str, Any] = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "split": "val",
                    "loss": last_val["loss"],
                    "elapsed_s": round(self.elapsed, 3),
                }
                if self.model.feedback != "none":
                    row["forced_loss"] = last_val["forced_loss"]
                if "accuracy" in last_val:
                    row["accuracy"] = last_val["accuracy"]
                self._guarded(lambda r=row: self.writer.row(r), last_ckpt)
                bar.validation(self.step, {k: v for k, v in row.items() if k in last_val})
                bad = [k for k, v in last_val.items() if not math.isfinite(v)]
                if bad:
                    self._diverged(
                        FloatingPointError(f"the validation {bad[0]} is {last_val[bad[0]]}"),
                        last_ckpt,
                        updated=True,
                    )
                self._call("on_eval", last_val)  # early stopping decides `improved`
                improved = self.early_stopping.improved
                stop = self._stop is not None
                if crossed(tr["checkpoint_every"]) or done or improved or stop:
                    last_ckpt = self._checkpoint(last_ckpt)
                    if improved and last_ckpt is not None and self.is_main:
                        self._guarded(
                            lambda b=last_ckpt: link_or_copy(b, b.parent / "best.safetensors"),
                            last_ckpt,
                        )
            elif crossed(tr["checkpoint_every"]) or (self._stop is not None and not done):
                last_ckpt = self._checkpoint(last_ckpt)
            if self._stop is not None:
                break
            if self._interrupted():
                self._stop_on_signal(last_ckpt)
    finally:
        restore()
        bar.close()
        self.writer.close()
        self._plots()
    if not last_val:  # nothing left to train (a resume at its last step): still report
        last_val = self.evaluate()
    if self.run_dir is not None and self.is_main:
        done_ckpts = list_checkpoints(self.run_dir / "checkpoints")
        last_ckpt = done_ckpts[-1] if done_ckpts else last_ckpt
    return FitResult(
        self.run_dir,
        self.step,
        self.epoch,
        self._stop or "steps",
        self.best,
        self.best_step,
        last_val,
        last_ckpt,
    )
