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

import csv
import json
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from .._files import (
    FolderLockedError,
    UnsafePathError,
    acquire_lock,
    check_replaceable,
    lock_holder,
    make_folder,
    read_marker,
    release_lock,
    remove_tree,
    write_marker,
)
from ._state import detach_state, slice_state, state_from_leaves, state_leaves
from .checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    link_or_copy,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
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
from .distributed import (
    all_gather_rows,
    all_sum,
    barrier,
    env_world_size,
    init_distributed,
)
from .forcing import feed_mask, schedule_at, teacher_probability
from .gradients import StateGradientTap, clip_gradients
from .model import SequenceModel
from .supervision import IGNORE_INDEX, Supervision, masked_loss_sum
from .tasks import TaskData, build_task
from .tbptt import TruncatedBPTT, Window

CSV_COLUMNS = (
    "step",
    "epoch",
    "split",
    "loss",
    "forced_loss",
    "lr",
    "grad_norm",
    "epsilon",
    "elapsed_s",
)


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


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` as an available device.

    Under torchrun, ``"cuda"`` is the process's own GPU, ``cuda:LOCAL_RANK``.
    """
    if local_rank is None:
        try:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            local_rank = 0
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: expected an available device (cpu), got {name!r} "
                "(CUDA is not available)"
            )
        if name == "cuda":
            return torch.device("cuda", local_rank if env_world_size() > 1 else 0)
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"train.device: expected cuda:N, got {name!r}") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device: expected cuda:0..cuda:{torch.cuda.device_count() - 1}, got {name!r}"
            )
        return dev
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(
                "train.device: expected an available device, got 'mps' (MPS is not available)"
            )
        return torch.device("mps")
    raise ConfigError(f"train.device: expected one of auto, cpu, cuda, cuda:N, mps, got {name!r}")


_GATES = {"LSTMCell": 4, "GRUCell": 3}


def estimated_bytes(spec: Mapping[str, Any]) -> int:
    """A lower estimate of the float32 bytes training ``spec`` needs: the recurrent weights
    (gates x H x (I + H + 2) per layer and direction) and the output layer, counted four times
    (parameters, gradients and Adam's two moments).

    Example:
        >>> estimated_bytes({"cell": "GRUCell", "input_size": 1, "hidden_size": 10,
        ...                  "output_size": 1, "num_layers": 1, "bidirectional": False})
        6416
    """
    H, I, O = int(spec["hidden_size"]), int(spec["input_size"]), int(spec["output_size"])
    g = _GATES.get(str(spec["cell"]), 1)
    dirs = 2 if spec.get("bidirectional") else 1
    n = 0
    for layer in range(int(spec["num_layers"])):
        width = I if layer == 0 else H * dirs
        n += dirs * g * H * (width + H + 2)
    n += O * (H * dirs + 1)
    return 4 * 4 * n


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_model_size(spec: Mapping[str, Any]) -> None:
    """Refuse a model that cannot fit in this machine's memory, *before* allocating it (a
    hidden size of 10^6 would otherwise fail deep inside torch, or swap the machine)."""
    need, have = estimated_bytes(spec), _memory_bytes()
    if have is not None and need > have:
        raise ConfigError(
            f"model.hidden_size: {spec['hidden_size']} needs about {need / 2**30:.1f} GiB for "
            f"the parameters, gradients and optimizer state ({spec['num_layers']} layer(s) of "
            f"{spec['cell']}), more than this machine's {have / 2**30:.1f} GiB; choose a smaller "
            "hidden size"
        )


def checkpoint_of(path: str | Path, which: str = "latest") -> Path:
    """A checkpoint file from a run directory (``"latest"`` or ``"best"``) or the file itself."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(
            f"run: expected a run directory or a checkpoint file, got "
            f"{str(p)!r} (no such file or directory)"
        )
    folder = p / "checkpoints"
    if which == "best" and (folder / "best.safetensors").is_file():
        return folder / "best.safetensors"
    found = latest_checkpoint(folder)
    if found is None:
        raise FileNotFoundError(
            f"run: {str(p)!r} holds no checkpoint (checkpoints/step-*.safetensors)"
        )
    return found


def _make_optimizer(c: Mapping[str, Any], params: Any) -> torch.optim.Optimizer:
    o = c["optim"]
    lr, wd, mom = o["lr"], o["weight_decay"], o["momentum"]
    if o["name"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if o["name"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if o["name"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, momentum=mom, weight_decay=wd)


def _make_scheduler(c: Mapping[str, Any], opt: torch.optim.Optimizer) -> Any:
    o = c["optim"]
    if o["scheduler"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, o["step_size"], o["gamma"])
    if o["scheduler"] == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, o["gamma"])
    if o["scheduler"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, o["t_max"])
    return None


def _seeded(seed: int, *salt: int) -> torch.Generator:
    v = seed
    for s in salt:
        v = (v * 1_000_003 + s + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(v)


class _Writer:
    """metrics.jsonl + metrics.csv (+ TensorBoard), rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.tb: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: the files are enough
                self.tb = None

    def truncate(self, step: int) -> None:
        """Drop rows past ``step`` (written after the checkpoint a resume starts from) and
        lines cut by a kill; metrics.csv is rebuilt from metrics.jsonl."""
        if not self.enabled:
            return
        kept: dict[str, list[dict[str, Any]]] = {}
        # metrics rows carry the step after their update (kept up to the checkpoint's step);
        # grad_norms rows the step before it: the row labelled `step` belongs to the update
        # after the checkpoint and is written again by the resumed run
        for name, keep in (
            ("metrics.jsonl", lambda k: k <= step),
            ("grad_norms.jsonl", lambda k: k < step),
        ):
            p = self.run_dir / name
            rows = []
            if p.is_file():
                for line in p.read_text(encoding="utf-8").splitlines():
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(r, dict) and keep(r.get("step", 0)):
                        rows.append(r)
                from .._files import atomic_write_text

                atomic_write_text(p, "".join(_json_line(r) for r in rows))
            kept[name] = rows
        with (self.run_dir / "metrics.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in kept["metrics.jsonl"]:
                w.writerow({k: _csv_value(r.get(k)) for k in CSV_COLUMNS})

    def row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(_json_line(row))
        p = self.run_dir / "metrics.csv"
        new = not p.is_file()
        with p.open("a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "split") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def grad_norms(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        with (self.run_dir / "grad_norms.jsonl").open("a", encoding="utf-8") as f:
            for r in rows:
                f.write(_json_line(r))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


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
        saved: dict[str, Any] | None = None
        self._ckpt: Any = None
        self.checkpoint: Path | None = None
        if self.run_dir is not None:
            exists = self.run_dir.exists() and (
                not self.run_dir.is_dir() or any(self.run_dir.iterdir())
            )
            if resume:
                found = latest_checkpoint(self.run_dir / "checkpoints")
                if found is None:
                    raise RunDirError(
                        f"run_dir: {str(self.run_dir)!r} has no checkpoint to resume from "
                        "(checkpoints/step-*.safetensors)"
                    )
                self._ckpt = load_checkpoint(found)
                saved = self._ckpt.meta["config"]
            elif exists and not overwrite:
                raise RunDirError(
                    f"run_dir: {str(self.run_dir)!r} exists and is not empty; pass --resume to "
                    "continue it or --overwrite to replace it (nothing was changed)"
                )
            elif overwrite:
                # refused before anything is touched: only a folder rnnlab made is deleted
                try:
                    check_replaceable(self.run_dir, "run", what="run_dir")
                except UnsafePathError as err:
                    raise RunDirError(str(err)) from None
            holder = lock_holder(self.run_dir) if self.run_dir.is_dir() else None
            if holder is not None:
                raise RunDirError(
                    f"run_dir: {str(self.run_dir)!r} is in use by another trainer (pid {holder}, "
                    "lock file .rnnlab-lock); nothing was changed"
                )
            self.run_id = self._check_run_id(resume)
        elif resume:
            raise RunDirError("run_dir: resume needs a run directory, got None")
        if self.run_dir is None:
            self.run_id = None
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
        self.is_main = self.dist.is_main
        self.writer = _Writer(self.run_dir or Path("."), self.run_dir is not None and self.is_main)
        if self.run_dir is not None:
            barrier(self.dist)
            if self.is_main:
                if overwrite:
                    remove_tree(self.run_dir, "run", what="run_dir")
                if read_marker(self.run_dir) is None:
                    if resume:  # a run made before markers: adopt it under its checkpoint's id
                        keep = {"run_id": self.run_id} if self.run_id is not None else {}
                        self.run_id = write_marker(self.run_dir, "run", **keep)["run_id"]
                    else:
                        self.run_id = make_folder(self.run_dir, "run")["run_id"]
                (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
                if saved is None:
                    self._write_config(self.config)
                    self._history("created", run_id=self.run_id)
                else:
                    # only the keys that may change on resume are rewritten
                    kept = {sec: dict(v) for sec, v in saved.items()}
                    moved: dict[str, list[Any]] = {}
                    for k in diff(saved, self.config):
                        sec, key = k.split(".")
                        moved[k] = [saved[sec][key], self.config[sec][key]]
                        kept[sec][key] = self.config[sec][key]
                    self._write_config(kept)
                    self._history("resumed", checkpoint=str(self._ckpt.path), changed=moved)
                if resume:
                    self.writer.truncate(self.step)
            barrier(self.dist)
            self.writer = _Writer(self.run_dir, self.is_main)

    # --- the run's identity ------------------------------------------------------------------
    def _check_run_id(self, resume: bool) -> str | None:
        """The run id this trainer writes into its checkpoints; on resume the checkpoint's, and
        a checkpoint of another run (its id differs from the folder's marker) is refused."""
        if not resume:
            return None  # a new run: the id of the marker written when the folder is made
        assert self.run_dir is not None
        marker = read_marker(self.run_dir)
        ck_id = self._ckpt.meta.get("run_id")
        if marker is not None and ck_id is not None and marker["run_id"] != ck_id:
            raise RunDirError(
                f"run_dir: the checkpoint {str(self._ckpt.path)!r} belongs to run {ck_id}, but "
                f"{str(self.run_dir)!r} is run {marker['run_id']} (its .rnnlab-run.json); a "
                "checkpoint copied from another run is not resumed (nothing was changed)"
            )
        if marker is not None:
            return str(marker["run_id"])
        return None if ck_id is None else str(ck_id)

    # --- state -------------------------------------------------------------------------------
    def _restore(self, meta: Mapping[str, Any]) -> None:
        self.model.load_state_dict({k: v.to(self.device) for k, v in meta["model"].items()})
        self.optimizer.load_state_dict(meta["optimizer"])
        if self.scheduler is not None and meta.get("scheduler") is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        p = meta["progress"]
        self.step, self.epoch, self.batch_in_epoch = p["step"], p["epoch"], p["batch_in_epoch"]
        self.best, self.best_step, self.bad_evals = p["best"], p["best_step"], p["bad_evals"]
        self.elapsed = p.get("elapsed", 0.0)
        self.lowest_loss = p.get("lowest_loss")
        self.run_losses = list(p.get("run_losses", []))
        set_rng_state(meta["rng"])
        if meta.get("carry") is not None:
            B = self.config["train"]["batch_size"]
            template = self.model.initial_state(B)
            full = state_from_leaves(template, [t.to(self.device) for t in meta["carry"]])
            b = B // self.dist.world_size
            rows = slice(self.dist.rank * b, (self.dist.rank + 1) * b)
            self.carry = slice_state(full, rows)
            out = meta.get("carry_out")
            self.carry_out = None if out is None else out.to(self.device)[rows]

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds (collective under DDP for a stream's carry)."""
        carry = carry_out = None
        if self.carry is not None:
            carry = [all_gather_rows(t, self.dist) for t in state_leaves(self.carry)]
            if self.carry_out is not None:
                carry_out = all_gather_rows(self.carry_out, self.dist)
        return {
            "format": "rnnlab-run",
            "rnnlab_version": __version__,
            "run_id": self.run_id,
            "config": self.config,
            "model_spec": self.spec,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": rng_state(),
            "progress": {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "best": self.best,
                "best_step": self.best_step,
                "bad_evals": self.bad_evals,
                "elapsed": self.elapsed,
                "lowest_loss": self.lowest_loss,
                "run_losses": list(self.run_losses),
            },
            "carry": carry,
            "carry_out": carry_out,
            "task": {
                "vocab": None if self.task.vocab is None else "".join(self.task.vocab.chars),
                "params": _jsonable(self.task.params),
            },
            "world_size": self.dist.world_size,
        }

    def _write_config(self, config: Mapping[str, Any]) -> None:
        import yaml

        from .._files import atomic_write_text

        assert self.run_dir is not None
        text = yaml.safe_dump(dict(config), sort_keys=False)
        atomic_write_text(self.run_dir / "config.yaml", text)

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0; all ranks must call under DDP)."""
        st = self.state()
        if self.run_dir is None or not self.is_main:
            return None
        folder = self.run_dir / "checkpoints"
        path = save_checkpoint(checkpoint_path(folder, self.step), st)
        prune_checkpoints(folder, self.config["train"]["keep"])
        return path

    # --- data -------------------------------------------------------------------------------
    def _batches_per_epoch(self) -> int:
        B = self.config["train"]["batch_size"]
        if self.stream:
            assert self.task.stream is not None
            width = len(self.task.stream) // B
            return max(1, (width - 1) // self.config["task"]["length"])
        return len(self.task.train) // B

    def _global_batch(self) -> dict[str, Any]:
        B = self.config["train"]["batch_size"]
        if self.stream:
            from ..data import batchify

            assert self.task.stream is not None
            streams = batchify(self.task.stream, B)  # (B, L // B)
            T = self.config["task"]["length"]
            a = self.batch_in_epoch * T
            k = min(T, streams.shape[1] - 1 - a)
            return {
                "x": self.task.inputs(streams[:, a : a + k]),
                "y": streams[:, a + 1 : a + 1 + k],
                "lengths": None,
            }
        order = torch.randperm(
            len(self.task.train), generator=_seeded(self.config["train"]["seed"], self.epoch)
        )
        idx = order[self.batch_in_epoch * B : (self.batch_in_epoch + 1) * B]
        return self.task.batch("train", idx)

    def _prepare(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Unfolded inputs, step targets, loss mask, reference (global batch)."""
        sup = self.supervision
        x = sup.inputs(batch["x"])
        y = batch["y"]
        lengths = batch["lengths"]
        out: dict[str, Any] = {"lengths": lengths, "source": None}
        if sup.case == "seq2seq":
            out["source"] = x
            x = self._decoder_inputs(y)  # (B, T, O): start, then r(0..T-2)
        T = x.shape[1]
        target, mask = sup.targets(y, T, lengths)
        out.update(x=x, target=target, mask=mask)
        out["reference"] = target.float() if self.model.feedback == "state" else None
        return out

    def _decoder_inputs(self, y: Tensor) -> Tensor:
        O = self.model.output_size
        if self.model.tokens:
            r = F.one_hot(y.clamp(min=0), O).float()
            r = r * (y != IGNORE_INDEX).unsqueeze(-1)
        else:
            r = y.float()
        return torch.cat([torch.zeros_like(r[:, :1]), r[:, :-1]], 1)

    def _shard(self, t: Any) -> Any:
        if t is None or not self.dist.enabled:
            return t
        b = t.shape[0] // self.dist.world_size
        return t[self.dist.rank * b : (self.dist.rank + 1) * b]

    def _to(self, t: Any) -> Any:
        return None if t is None else t.to(self.device)

    # --- training ---------------------------------------------------------------------------
    def _train_batch(self) -> tuple[float, float, float | None, list[Any]]:
        c = self.config
        p = self._prepare(self._global_batch())
        B, T = p["x"].shape[0], p["x"].shape[1]
        schedule = schedule_at(self.forcing, self.step, self.epoch)
        gen = _seeded(c["train"]["seed"], 7919, self.step)
        fm = feed_mask(schedule, B, T, generator=gen)
        warm = c["forcing"]["warmup"]
        if fm is not None and warm > 0:
            fm[:, :warm] = True
        per = p["target"].shape[2:].numel() if self.supervision.loss == "mse" else 1
        count = int(p["mask"].sum()) * per
        W = self.dist.world_size
        x, target, mask, lengths, reference, source = (
            self._to(self._shard(p[k]))
            for k in ("x", "target", "mask", "lengths", "reference", "source")
        )
        fm = self._to(self._shard(fm))
        k1 = c["bptt"]["k1"]
        tbptt = TruncatedBPTT(k1, c["bptt"]["k2"]) if k1 is not None else TruncatedBPTT.full(T)
        n_windows = len(tbptt.windows(T))
        every = c["train"]["grad_monitor_every"]
        # a multiple of `every` among this batch's updates (a function of the step: resumable)
        monitor = every > 0 and (self.step + n_windows - 1) // every * every >= self.step
        grad_norms: list[float] = []
        records: list[Any] = []
        tap = self.tap
        use_tap = tap is not None and (monitor or self._state_clip)
        if tap is not None:
            tap.record = monitor

        def before(w: Window) -> None:
            if tap is not None:
                tap.reset()

        def after(n: int, loss: Tensor) -> None:
            if use_tap and monitor:
                assert tap is not None
                w = windows[n]
                for key, sq in tap.squared_norms().items():
                    norms = all_sum(sq.to(self.device), self.dist).sqrt().cpu()
                    records.append(
                        {
                            "step": self.step,
                            "window_start": w.start,
                            "key": key,
                            "norms": [round(float(v), 8) for v in norms],
                        }
                    )
            norm = clip_gradients(
                self.model.parameters(),
                max_norm=c["clip"]["grad_norm"],
                max_value=c["clip"]["grad_value"],
            )
            if not math.isfinite(norm):
                raise FloatingPointError(f"the gradient norm is {norm}")
            grad_norms.append(norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.scheduler is not None:
                self.scheduler.step()
            self.step += 1

        windows = tbptt.windows(T)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        detach = schedule.detach if schedule is not None else True
        carry = self.carry if self.stream else None
        prev_out = self.carry_out if self.stream else None
        model = self.train_model
        if source is not None:
            # encoder-decoder: the encoder's final state starts the decoder
            model = _WithSource(self.train_model, source, lengths)
        ctx = tap if use_tap and tap is not None else _Null()
        with ctx:
            res = tbptt.run(
                model,
                x,
                target,
                mask,
                loss=self.supervision.loss,
                state=carry,
                lengths=lengths,
                feed_mask=fm,
                detach=detach,
                reference=reference,
                prev_output=prev_out,
                normalizer=count / W,
                sample=c["forcing"]["token_feedback"] == "sample",
                generator=gen,
                after_backward=after,
                before_forward=before,
                reduce_loss=(lambda v: all_sum(v, self.dist) / W) if self.dist.enabled else None,
            )
        if self.stream:
            self.carry = detach_state(res.state)
            self.carry_out = res.last_output
        return (
            res.loss,
            grad_norms[-1] if grad_norms else 0.0,
            teacher_probability(schedule),
            records,
        )

    # --- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Validation (or training-set) losses of the current parameters.

        ``loss``: free-running for a model with output feedback (feeding its own outputs, as at
        test time), plain otherwise; ``forced_loss`` (feedback models): feeding the reference.
        Every process computes the same numbers.
        """
        if split not in ("train", "val"):
            raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
        part = self.task.train if split == "train" else self.task.val
        B = self.config["train"]["batch_size"]
        self.model.eval()
        sums = {"loss": 0.0, "forced_loss": 0.0}
        total = 0
        fb = self.model.feedback != "none"
        for a in range(0, len(part), B):
            idx = torch.arange(a, min(a + B, len(part)))
            p = self._prepare(self.task.batch(split, idx))
            x, target, mask = self._to(p["x"]), self._to(p["target"]), self._to(p["mask"])
            lengths, ref, source = self._to(p["lengths"]), self._to(p["reference"]), None
            if p["source"] is not None:
                source = self._to(p["source"])
            per = target.shape[2:].numel() if self.supervision.loss == "mse" else 1
            total += int(mask.sum()) * per
            modes = [("loss", False), ("forced_loss", True)] if fb else [("loss", None)]
            for key, teacher in modes:
                fm = None
                if teacher is not None:
                    fm = torch.full(x.shape[:2], teacher, dtype=torch.bool, device=x.device)
                    fm[:, : self.config["forcing"]["warmup"]] = True
                y = self.model(
                    x,
                    lengths=lengths,
                    feed_mask=fm,
                    reference=ref,
                    source=source,
                    source_lengths=lengths if source is not None else None,
                ).output
                s, _ = masked_loss_sum(y, target, mask, self.supervision.loss)
                sums[key] += float(s)
        out = {"loss": sums["loss"] / max(total, 1)}
        out["forced_loss"] = sums["forced_loss"] / max(total, 1) if fb else out["loss"]
        self.model.train()
        return out

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

    # --- faults -----------------------------------------------------------------------------
    def _keep_text(self, last: Path | None) -> str:
        if last is None:
            why = " (run_dir is None)" if self.run_dir is None else ""
            return f"no checkpoint was written{why}"
        return f"the last good checkpoint is {last} (step {int(last.stem.split('-')[1])})"

    def _guarded(self, write: Any, last: Path | None) -> Any:
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

    def _catch_signals(self) -> Any:
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

    def _interrupted(self) -> bool:
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

    def _stop_on_signal(self, last: Path | None) -> None:
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

    def _history(self, event: str, **info: Any) -> None:
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

    def _diverged(self, err: Exception, last: Path | None, updated: bool = False) -> None:
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

    def _plots(self) -> None:
        if self.run_dir is None or not self.is_main or not self.config["train"]["plots"]:
            return
        from .plots import plot_grad_norms, plot_loss

        try:
            plot_loss(self.run_dir)
            plot_grad_norms(self.run_dir)
        except Exception as err:  # a figure must never lose a run
            print(f"rnnlab: could not draw the plots: {err}")


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _WithSource(nn.Module):
    """Binds an encoder-decoder's source to the calls truncated BPTT makes."""

    def __init__(self, model: nn.Module, source: Tensor, lengths: Tensor | None) -> None:
        super().__init__()
        self.inner = [model]
        self.source, self.lengths = source, lengths

    def forward(self, x: Tensor, state: Any = None, **kw: Any) -> Any:
        return self.inner[0](x, state, source=self.source, source_lengths=self.lengths, **kw)


def _finite_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with NaN and infinities replaced by null and their keys listed in ``nonfinite``
    (JSON has no NaN token; a bare ``NaN`` makes the file unreadable for strict parsers)."""
    out: dict[str, Any] = {}
    bad: list[str] = []
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
            bad.append(f"{k}={v}")
        elif isinstance(v, list) and any(isinstance(e, float) and not math.isfinite(e) for e in v):
            out[k] = [e if not isinstance(e, float) or math.isfinite(e) else None for e in v]
            bad.append(f"{k}[]")
        else:
            out[k] = v
    if bad:
        out["nonfinite"] = bad
    return out


def _json_line(row: Mapping[str, Any]) -> str:
    """One JSONL line, strictly valid JSON."""
    return json.dumps(_finite_row(row), allow_nan=False) + "\n"


def _csv_value(v: Any) -> Any:
    return "" if v is None else v


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    return str(obj)


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


def load_run(
    path: str | Path, *, which: str = "latest", device: str = "cpu"
) -> tuple[SequenceModel, dict[str, Any]]:
    """Rebuild the model of a run directory or checkpoint file; return it and the meta data."""
    ck = load_checkpoint(checkpoint_of(path, which))
    meta = ck.meta
    if "model_spec" not in meta or "model" not in meta:
        raise ValueError(f"checkpoint: {str(ck.path)!r} holds no rnnlab model")
    model = SequenceModel(meta["model_spec"])
    model.load_state_dict(meta["model"])
    meta["path"] = str(ck.path)
    return model.to(device).eval(), meta
