"""Checkpoint and resume: the run directory's identity, what a checkpoint holds, and putting it
back.

A resume reloads parameters, optimizer, scheduler, counters, the callbacks' states, a
stream's carried state and, last, the RNG states, so that restoring draws nothing from the
generators a resumed run goes on with. The functions taking ``self`` are
:class:`~rnnlab.training.Trainer` methods (bound in trainer.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import (
    UnsafePathError,
    check_replaceable,
    lock_holder,
    make_folder,
    read_marker,
    remove_tree,
    write_marker,
)
from .._sequences import slice_state, state_from_leaves, state_leaves
from .._version import __version__
from .callbacks import callback_states, load_callback_states
from .checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import diff
from .distributed import all_gather_rows, barrier
from .faults import RunDirError
from .metrics import _jsonable, _Writer
from .user_model import import_factory

if TYPE_CHECKING:
    from .trainer import Trainer


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


def _check_run_dir(self: Trainer, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Refuse a run directory that cannot be used, before anything is touched; on resume, load
    the latest checkpoint and return its saved config."""
    saved: dict[str, Any] | None = None
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
    return saved


def _open_run_dir(
    self: Trainer, resume: bool, overwrite: bool, saved: dict[str, Any] | None
) -> None:
    """Only now, with everything checked: make (or adopt) the run directory and write its
    config and history (rank 0)."""
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


def _check_run_id(self: Trainer, resume: bool) -> str | None:
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


def loss_reference(fn: Any) -> str | None:
    """``"module:qualname"`` of a loss function that importing gives back, else None (a
    lambda, a local function, a callable object)."""
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or "<" in qual:
        return None
    try:
        return f"{mod}:{qual}" if import_factory(f"{mod}:{qual}", "loss") is fn else None
    except Exception:  # noqa: BLE001 (any import failure: not importable)
        return None


def _saved_loss(self: Trainer, meta: Mapping[str, Any]) -> None:
    """The run's loss of the user's own, when none is given again: re-imported from its saved
    reference, or refused by name (a lambda or local function cannot be saved)."""
    saved = meta.get("loss")
    if saved is None or self.loss_fn is not None:
        return
    if saved.get("ref") is not None:
        self.loss_fn = import_factory(saved["ref"], "loss")
        return
    raise ValueError(
        f"loss: this run was trained with a loss of your own ({saved.get('name')!r}) that "
        "cannot be imported (a lambda or a function defined inside another), so it was not "
        "saved; pass it again: Trainer(..., resume=True, loss=fn) or "
        "trainer_from_checkpoint(path, loss=fn). `rnnlab eval` cannot take a function: define "
        "the loss at module level in an importable module, and it is saved and reloaded"
    )


def _restore(self: Trainer, meta: Mapping[str, Any]) -> None:
    """Put a checkpoint's state back; the RNG states last, so that restoring draws nothing."""
    _saved_loss(self, meta)
    self.net.load_state_dict({k: v.to(self.device) for k, v in meta["model"].items()})
    self.optimizer.load_state_dict(meta["optimizer"])
    if self.scheduler is not None and meta.get("scheduler") is not None:
        self.scheduler.load_state_dict(meta["scheduler"])
    p = meta["progress"]
    self.step, self.epoch, self.batch_in_epoch = p["step"], p["epoch"], p["batch_in_epoch"]
    self.early_stopping.load_state_dict(p)
    load_callback_states(self.callbacks, meta.get("callbacks"))
    self.elapsed = p.get("elapsed", 0.0)
    self.lowest_loss = p.get("lowest_loss")
    self.run_losses = list(p.get("run_losses", []))
    if meta.get("carry") is not None:
        B = self.config["train"]["batch_size"]
        template = self.model.initial_state(B)
        full = state_from_leaves(template, [t.to(self.device) for t in meta["carry"]])
        b = B // self.dist.world_size
        rows = slice(self.dist.rank * b, (self.dist.rank + 1) * b)
        self.carry = slice_state(full, rows)
        out = meta.get("carry_out")
        self.carry_out = None if out is None else out.to(self.device)[rows]
    # last: building the carry's template (initial_state may draw, e.g. dropout masks) must not
    # move the generators the resumed run goes on with
    set_rng_state(meta["rng"])


def state(self: Trainer) -> dict[str, Any]:
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
        "model": self.net.state_dict(),
        "user_model": self.user_model,
        "optimizer": self.optimizer.state_dict(),
        "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        "rng": rng_state(),
        "progress": {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            **self.early_stopping.state_dict(),  # best, best_step, bad_evals
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
        "callbacks": callback_states(self.callbacks),
        "loss": None
        if self.loss_fn is None
        else {
            "ref": loss_reference(self.loss_fn),
            "name": getattr(self.loss_fn, "__qualname__", type(self.loss_fn).__name__),
        },
    }


def _write_config(self: Trainer, config: Mapping[str, Any]) -> None:
    import yaml

    from .._files import atomic_write_text

    assert self.run_dir is not None
    text = yaml.safe_dump(dict(config), sort_keys=False)
    atomic_write_text(self.run_dir / "config.yaml", text)


def save(self: Trainer) -> Path | None:
    """Write a checkpoint of the current step (rank 0; all ranks must call under DDP)."""
    st = self.state()
    if self.run_dir is None or not self.is_main:
        return None
    folder = self.run_dir / "checkpoints"
    path = save_checkpoint(checkpoint_path(folder, self.step), st)
    prune_checkpoints(folder, self.config["train"]["keep"])
    return path
