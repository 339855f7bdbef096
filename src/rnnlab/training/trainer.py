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

import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._files import FolderLockedError, acquire_lock, release_lock
from . import evaluation, faults, loop, metrics, resume, step, user_model
from .build import (
    _make_optimizer,
    _make_scheduler,
    _memory_bytes,
    _seeded,
    check_model_size,
    estimated_bytes,
    resolve_device,
)
from .callbacks import EarlyStopping, GradMonitor, check_callbacks
from .callbacks import call as call_hooks
from .checkpoint import load_checkpoint, save_checkpoint
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
from .progress import Progress
from .resume import checkpoint_of
from .supervision import Supervision
from .tasks import TaskData, build_task
from .user_model import check_user_config, has_recurrent_layers, import_factory

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
        model: a model of your own, any ``nn.Module`` called as ``model(x, lengths=None)``
            returning (B, T, O) or (B, O) (docs/design/0018); without ``model.factory`` in the
            config it trains and saves but cannot be rebuilt by ``rnnlab eval``.
        callbacks: objects with some of ``on_step``, ``on_eval``, ``on_checkpoint``,
            ``on_end`` (:class:`~rnnlab.training.Callback`).
        precision: ``"fp32"`` or ``"bf16"`` (autocast), overriding ``train.precision``.
        loss: a function ``loss(prediction, target, mask)`` returning the loss summed over the
            masked steps, instead of the task's; it is divided by the same count (masked steps,
            x output features for MSE tasks). Checkpoints hold its import path when it has
            one (``"module:qualname"``, a module-level function) and resume and evaluation
            re-import it; a lambda or local function must be passed again (else ValueError).

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
        model: nn.Module | None = None,
        callbacks: Sequence[Any] | None = None,
        precision: str | None = None,
        loss: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        if resume and overwrite:
            raise ValueError("resume, overwrite: expected at most one of them, got both")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        self.callbacks = check_callbacks(callbacks)
        if loss is not None and not callable(loss):
            raise TypeError(
                f"loss: expected a function loss(prediction, target, mask), got "
                f"{type(loss).__name__}"
            )
        self.loss_fn = loss
        self.run_dir = None if run_dir is None else Path(run_dir)
        if precision is not None:
            config = merge(config, {"train": {"precision": precision}})
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
        self.user_model = model is not None or given["model"]["factory"] is not None
        if self.user_model:  # refused by name, before any work
            check_user_config(given)
            given["model"]["feedback"] = "none"
        self.config = resolve(given, self.task)
        if saved is not None:
            changed = [k for k in diff(saved, self.config) if k not in RESUMABLE]
            if changed:
                k = changed[0]
                sec, key = k.split(".")
                raise ConfigError(
                    f"{k}: a resumed run keeps its config; saved {saved.get(sec, {}).get(key)!r}, "
                    f"given "
                    f"{self.config[sec][key]!r} (only {sorted(RESUMABLE)} may change)"
                )
        c = self.config
        tr = c["train"]
        if tr["callback"] is not None:  # the config's callbacks, after the ones given
            made = import_factory(tr["callback"], "train.callback")()
            made = list(made) if isinstance(made, (list, tuple)) else [made]
            try:
                self.callbacks += check_callbacks(made)
            except TypeError as err:
                raise ConfigError(f"train.callback: {tr['callback']} returned {err}") from None
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
        self.spec: dict[str, Any] | None = None if self.user_model else model_spec(c, self.task)

        # the model: seeded initialisation, then (resume) the saved parameters
        seed = tr["seed"]
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        self.model: Any
        if self.spec is not None:
            check_model_size(self.spec)
            try:
                self.model = SequenceModel(self.spec).to(self.device)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        else:
            self.model = self._user_model(model)
        self.net: nn.Module = self.model.net if self.user_model else self.model
        self.optimizer = _make_optimizer(c, self.model.parameters())
        self.scheduler = _make_scheduler(c, self.optimizer)
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DDP(self.model, device_ids=ids)
        state_clip = c["clip"]["state_value"] is not None or c["clip"]["state_norm"] is not None
        self.tap: StateGradientTap | None = None
        if state_clip and self.user_model and not has_recurrent_layers(self.net):
            raise ConfigError(
                "clip.state_value, clip.state_norm: clip dL/dh(t) of rnnlab recurrent layers; "
                f"the model {type(self.net).__name__} has none inside"
            )
        taps = not self.user_model or has_recurrent_layers(self.net)
        if (tr["grad_monitor_every"] > 0 or state_clip) and taps:
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
        monitor = "loss" if tr["monitor"] == "val_loss" else "forced_loss"
        self.early_stopping = EarlyStopping(tr["patience"], tr["min_delta"], monitor)
        self._builtin = [self.early_stopping, GradMonitor()]
        self._stop: str | None = None
        self._last_ckpt: Path | None = None
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

    @property
    def best(self) -> float | None:
        """The best monitored validation loss so far (see :class:`EarlyStopping`)."""
        return self.early_stopping.best

    @property
    def best_step(self) -> int | None:
        return self.early_stopping.best_step

    @property
    def bad_evals(self) -> int:
        return self.early_stopping.bad_evals

    def request_stop(self, reason: str) -> None:
        """Stop after this batch (a checkpoint is written); ``FitResult.stopped`` = reason.

        A callback calls it, e.g. ``trainer.request_stop("target reached")``."""
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"reason: expected a non-empty string, got {reason!r}")
        self._stop = reason

    # the methods live in modules by job; bound here
    _user_model = user_model._user_model
    _fit = loop._fit
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
        """Train until ``train.steps`` updates (or a stop: early stopping, a callback's
        :meth:`request_stop`); return a summary."""
        tr = self.config["train"]
        nb = self._batches_per_epoch()
        if nb < 1:
            raise ConfigError(
                f"train.batch_size: no full batch of {tr['batch_size']} fits the training data"
            )
        locked = False
        if self.run_dir is not None and self.is_main:
            try:  # two trainers in one run folder would interleave their files
                acquire_lock(self.run_dir)
            except FolderLockedError as err:
                raise RunDirError(str(err)) from None
            locked = True
        bar = Progress(
            tr["steps"],
            self.step,
            enabled=bool(tr["progress"]) and self.is_main,
            every=tr["log_every"],
        )
        try:
            result = self._fit(bar, nb)
        finally:
            if locked:
                assert self.run_dir is not None
                release_lock(self.run_dir)
        self._call("on_end", result)
        return result

    def _call(self, hook: str, arg: Any) -> None:
        call_hooks(self._builtin, hook, self, arg)
        call_hooks(self.callbacks, hook, self, arg)

    def _checkpoint(self, last: Path | None) -> Path | None:
        path = self._guarded(self.save, last)
        self._last_ckpt = path or last
        self._call("on_checkpoint", path)
        return self._last_ckpt

    def _autocast(self) -> Any:
        """``torch.autocast`` in bfloat16 under ``train.precision: bf16``, else nothing."""
        if self.config["train"]["precision"] != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def trainer_from_checkpoint(
    path: str | Path,
    *,
    which: str = "latest",
    device: str | None = None,
    model: nn.Module | None = None,
    loss: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
) -> Trainer:
    """A :class:`Trainer` (writing nothing) with a run's config, data and saved state; for
    evaluation and generation. ``which``: ``"latest"`` or ``"best"`` of a run directory.
    ``loss``: the run's loss of your own, if it has one that cannot be re-imported.

    A model of the user's own is rebuilt from the run's ``model.factory``; one trained without a
    factory must be given as ``model`` (an instance of the same architecture), else ValueError.
    """
    ck = load_checkpoint(checkpoint_of(path, which))
    cfg = ck.meta.get("config")
    if not isinstance(cfg, dict):
        raise ValueError(f"checkpoint: {str(ck.path)!r} holds no run config")
    if ck.meta.get("user_model") and model is None and not cfg["model"].get("factory"):
        raise ValueError(
            f"checkpoint: {str(ck.path)!r} holds a model of the user's own that was given to "
            "Trainer(model=...) without model.factory, so it cannot be rebuilt here; record "
            "model.factory ('package.module:function') in the run's config, or build the model "
            "yourself and load the checkpoint's 'model' state (trainer_from_checkpoint(path, "
            "model=...))"
        )
    if device is not None:
        cfg["train"]["device"] = device
    t = Trainer(cfg, None, model=model, loss=loss)
    t._restore(ck.meta)
    t.checkpoint = ck.path
    t.model.eval()
    return t


def load_run(
    path: str | Path, *, which: str = "latest", device: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """Rebuild the model of a run directory or checkpoint file; return it and the meta data.

    The model is a :class:`SequenceModel`, or a model of the user's own rebuilt from the run's
    ``model.factory`` (a model given without a factory cannot be rebuilt: ValueError)."""
    ck = load_checkpoint(checkpoint_of(path, which))
    meta = ck.meta
    if "model_spec" not in meta or "model" not in meta:
        raise ValueError(f"checkpoint: {str(ck.path)!r} holds no rnnlab model")
    if meta.get("user_model"):
        net = trainer_from_checkpoint(ck.path, device=device).net
        meta["path"] = str(ck.path)
        return net.eval(), meta
    model = SequenceModel(meta["model_spec"])
    model.load_state_dict(meta["model"])
    meta["path"] = str(ck.path)
    return model.to(device).eval(), meta
