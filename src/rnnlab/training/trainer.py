"""The trainer: a run directory with its config, metrics, checkpoints and plots.

Shapes: B batch (global; b per process), T time, I input, O output.

``Trainer(config, run_dir).fit()`` checks the whole config, the run directory and the data
*before* it touches a file, then trains:

* every batch is cut into truncated-BPTT windows (one window: full BPTT), each a forward, a
  backward, gradient clipping and an optimizer update (:class:`TruncatedBPTT`);
* the forcing schedule in force at the step (teacher / free / alternating / mixed /
  scheduled sampling) draws its (B, T) mask from a generator seeded by the step;
* ``metrics.jsonl`` and ``metrics.csv`` get the training loss every ``log_every`` updates and
  the validation losses every ``eval_every`` (free-running for models with output feedback,
  plus the teacher-forced one); ``grad_norms.jsonl`` the per-step norms ‖∂L/∂h(t)‖ every
  ``grad_monitor_every`` updates; TensorBoard event files too if ``tensorboard`` is installed;
* checkpoints (``checkpoints/step-NNNNNNNN.safetensors``, atomic, no pickle) every
  ``checkpoint_every`` updates, at the start and at the end; ``best.safetensors`` follows the
  monitored validation loss; early stopping after ``patience`` validations without progress;
* a NaN or infinite loss or gradient stops the run before the parameters change, with a message
  naming the step and the last good checkpoint (:class:`TrainingDiverged`).

Resuming reloads parameters, optimizer, scheduler, RNG states, counters, early-stopping state
and a stream's carried state, and takes the data order from the epoch number, so on CPU a run
of 2N updates equals N updates, a resume and N more, bit for bit.

Under torchrun each process trains on its slice of the global batch (see
:mod:`rnnlab.training.distributed`); rank 0 alone writes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._files import FolderLockedError, acquire_lock, release_lock
from . import evaluation, faults, metrics, resume, step
from .build import (
    _make_optimizer,
    _make_scheduler,
    _memory_bytes,
    _seeded,
    check_model_size,
    estimated_bytes,
    resolve_device,
)
from .checkpoint import link_or_copy, list_checkpoints, load_checkpoint, save_checkpoint
from .config import (
    RESUMABLE,
    ConfigError,
    check_config,
    diff,
    make_forcing,
    merge,
    model_spec,
    resolve,
)
from .distributed import init_distributed
from .faults import (
    FitResult,
    RunDirError,
    RunWriteError,
    TrainingDiverged,
    TrainingInterrupted,
)
from .gradients import StateGradientTap
from .metrics import CSV_COLUMNS, _Writer
from .model import SequenceModel
from .resume import checkpoint_of, load_run
from .supervision import Supervision
from .tasks import TaskData, build_task

__all__ = [  # the names importable from here before the split stay importable
    "CSV_COLUMNS",
    "FitResult",
    "RunDirError",
    "RunWriteError",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "_Writer",
    "_make_optimizer",
    "_make_scheduler",
    "_memory_bytes",
    "_seeded",
    "check_model_size",
    "checkpoint_of",
    "estimated_bytes",
    "load_checkpoint",
    "load_run",
    "resolve_device",
    "save_checkpoint",
    "trainer_from_checkpoint",
]


class Trainer:
    """Train a :class:`SequenceModel` on a task as a config says (module docstring).

    Args:
        config: a mapping of sections (see :data:`rnnlab.training.config.OPTIONS`); missing keys
            take their defaults. With ``resume``, only the keys given here override the saved
            config, and only those of :data:`~rnnlab.training.config.RESUMABLE` may differ.
        run_dir: the run directory (None: train without writing anything).
        resume: continue the run in ``run_dir`` from its latest checkpoint.
        overwrite: delete an existing ``run_dir`` first.
        task: use this :class:`TaskData` instead of building ``config["task"]``.

    Example:
        >>> cfg = {"task": {"name": "series", "n_train": 32, "n_val": 8},
        ...        "model": {"cell": "GRUCell", "hidden_size": 8},
        ...        "train": {"steps": 20, "batch_size": 8, "progress": False}}
        >>> result = Trainer(cfg, None).fit()  # doctest: +SKIP
    """

    # set by the run-directory steps (resume.py)
    run_id: str | None
    is_main: bool
    writer: _Writer

    def __init__(
        self,
        config: Mapping[str, Any],
        run_dir: str | Path | None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        task: TaskData | None = None,
    ) -> None:
        if resume and overwrite:
            raise ValueError("resume, overwrite: expected at most one of them, got both")
        self.run_dir = None if run_dir is None else Path(run_dir)
        given = check_config(config)  # unknown keys and bad values fail here, before anything
        self._ckpt: Any = None
        self.checkpoint: Path | None = None
        saved = self._check_run_dir(resume, overwrite)
        if saved is not None:
            explicit = {s: dict(v) for s, v in config.items() if isinstance(v, Mapping)}
            given = check_config(merge(saved, explicit))
        self.device_name = given["train"]["device"]
        self.dist = init_distributed(resolve_device(self.device_name))
        self.device = resolve_device(self.device_name, self.dist.local_rank)
        t = given["task"]
        self.task = (
            task
            if task is not None
            else build_task(
                t["name"],
                length=t["length"],
                n_train=t["n_train"],
                n_val=t["n_val"],
                seed=t["seed"],
                options=t["options"],
            )
        )
        self.config = resolve(given, self.task)
        if saved is not None:
            changed = [k for k in diff(saved, self.config) if k not in RESUMABLE]
            if changed:
                k = changed[0]
                sec, key = k.split(".")
                raise ConfigError(
                    f"{k}: a resumed run keeps its config; saved {saved[sec][key]!r}, given "
                    f"{self.config[sec][key]!r} (only {sorted(RESUMABLE)} may change)"
                )
        c = self.config
        tr = c["train"]
        W = self.dist.world_size
        if tr["batch_size"] % W:
            raise ConfigError(
                f"train.batch_size: expected a multiple of the {W} processes, "
                f"got {tr['batch_size']}"
            )
        self.stream = bool(c["bptt"]["stream"])
        if not self.stream and tr["batch_size"] > len(self.task.train):
            raise ConfigError(
                f"train.batch_size: expected at most the {len(self.task.train)} training "
                f"sequences (task.n_train), got {tr['batch_size']}"
            )
        self.supervision = Supervision(
            c["supervision"]["case"], c["supervision"]["loss"], c["supervision"]["steps"]
        )
        self.forcing = make_forcing(c)
        self.spec = model_spec(c, self.task)

        # the model: seeded initialisation, then (resume) the saved parameters
        seed = tr["seed"]
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        check_model_size(self.spec)
        try:
            self.model = SequenceModel(self.spec).to(self.device)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.optimizer = _make_optimizer(c, self.model.parameters())
        self.scheduler = _make_scheduler(c, self.optimizer)
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DDP(self.model, device_ids=ids)
        state_clip = c["clip"]["state_value"] is not None or c["clip"]["state_norm"] is not None
        self.tap: StateGradientTap | None = None
        if tr["grad_monitor_every"] > 0 or state_clip:
            self.tap = StateGradientTap(
                self.model,
                record=False,
                clip_value=c["clip"]["state_value"],
                clip_norm=c["clip"]["state_norm"],
                scale=1.0 / W,
            )
        self._state_clip = state_clip

        # counters
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.elapsed = 0.0
        self.carry: Any = None
        self.carry_out: Tensor | None = None
        self.lowest_loss: float | None = None  # divergence_factor's reference
        self.run_losses: list[float] = []  # training losses since the last log row
        self._signal: int | None = None
        if self._ckpt is not None:
            self._restore(self._ckpt.meta)

        # only now: the run directory
        self._open_run_dir(resume, overwrite, saved)

    # the methods live in modules by job; bound here
    _check_run_dir = resume._check_run_dir
    _open_run_dir = resume._open_run_dir
    _check_run_id = resume._check_run_id
    _restore = resume._restore
    state = resume.state
    _write_config = resume._write_config
    save = resume.save
    _batches_per_epoch = step._batches_per_epoch
    _global_batch = step._global_batch
    _prepare = step._prepare
    _decoder_inputs = step._decoder_inputs
    _shard = step._shard
    _to = step._to
    _train_batch = step._train_batch
    evaluate = evaluation.evaluate
    _keep_text = faults._keep_text
    _guarded = faults._guarded
    _catch_signals = faults._catch_signals
    _interrupted = faults._interrupted
    _stop_on_signal = faults._stop_on_signal
    _history = faults._history
    _diverged = faults._diverged
    _plots = metrics._plots

    # --- the loop ---------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train until ``train.steps`` updates (or early stopping); return a summary."""
        c = self.config
        tr = c["train"]
        nb = self._batches_per_epoch()
        if nb < 1:
            raise ConfigError(
                f"train.batch_size: no full batch of {tr['batch_size']} fits the training data"
            )
        from tqdm.auto import tqdm

        bar = tqdm(
            total=tr["steps"],
            initial=min(self.step, tr["steps"]),
            desc="train",
            disable=None if (tr["progress"] and self.is_main) else True,  # None: TTY only
            dynamic_ncols=True,
            leave=False,
        )
        locked = False
        if self.run_dir is not None and self.is_main:
            try:  # two trainers in one run folder would interleave their files
                acquire_lock(self.run_dir)
            except FolderLockedError as err:
                bar.close()
                raise RunDirError(str(err)) from None
            locked = True
        try:
            return self._fit(bar, nb)
        finally:
            if locked:
                assert self.run_dir is not None
                release_lock(self.run_dir)

    def _fit(self, bar: Any, nb: int) -> FitResult:
        c = self.config
        tr = c["train"]
        last_ckpt = None
        if self.run_dir is not None:
            if self._ckpt is None:
                last_ckpt = self._guarded(self.save, None)  # always a checkpoint to go back to
            else:
                last_ckpt = Path(self._ckpt.path)
        stopped = "steps"
        last_val: dict[str, float] = {}
        t0 = time.perf_counter() - self.elapsed
        self._signal = None
        restore = self._catch_signals()
        try:
            while self.step < tr["steps"]:
                if self.batch_in_epoch >= nb:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self.carry, self.carry_out = None, None
                before = self.step
                try:
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
                self._guarded(lambda r=records: self.writer.grad_norms(r), last_ckpt)
                bar.update(self.step - before)
                bar.set_postfix(loss=f"{loss:.4g}")

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
                    self._guarded(lambda r=row: self.writer.row(r), last_ckpt)
                    bad = [k for k, v in last_val.items() if not math.isfinite(v)]
                    if bad:
                        self._diverged(
                            FloatingPointError(f"the validation {bad[0]} is {last_val[bad[0]]}"),
                            last_ckpt,
                            updated=True,
                        )
                    value = last_val["loss" if tr["monitor"] == "val_loss" else "forced_loss"]
                    improved = self.best is None or value < self.best - tr["min_delta"]
                    if improved:
                        self.best, self.best_step, self.bad_evals = value, self.step, 0
                    else:
                        self.bad_evals += 1
                    stop_early = tr["patience"] is not None and self.bad_evals >= tr["patience"]
                    if crossed(tr["checkpoint_every"]) or done or improved or stop_early:
                        last_ckpt = self._guarded(self.save, last_ckpt) or last_ckpt
                        if improved and last_ckpt is not None and self.is_main:
                            self._guarded(
                                lambda b=last_ckpt: link_or_copy(b, b.parent / "best.safetensors"),
                                last_ckpt,
                            )
                    if stop_early:
                        stopped = "early_stopping"
                        break
                elif crossed(tr["checkpoint_every"]):
                    last_ckpt = self._guarded(self.save, last_ckpt) or last_ckpt
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
            stopped,
            self.best,
            self.best_step,
            last_val,
            last_ckpt,
        )


def trainer_from_checkpoint(
    path: str | Path, *, which: str = "latest", device: str | None = None
) -> Trainer:
    """A :class:`Trainer` (writing nothing) with a run's config, data and saved state; for
    evaluation and generation. ``which``: ``"latest"`` or ``"best"`` of a run directory."""
    ck = load_checkpoint(checkpoint_of(path, which))
    cfg = ck.meta.get("config")
    if not isinstance(cfg, dict):
        raise ValueError(f"checkpoint: {str(ck.path)!r} holds no run config")
    if device is not None:
        cfg["train"]["device"] = device
    t = Trainer(cfg, None)
    t._restore(ck.meta)
    t.checkpoint = ck.path
    t.model.eval()
    return t
