"""Checkpoints that load without running code, written so that a crash never leaves a broken one.

A checkpoint is one safetensors file: the tensors (model parameters and buffers, optimizer
state, RNG states, a carried recurrent state) in the safetensors body, and everything else
(the run's config, step and epoch, optimizer hyper-parameters, the scheduler, numpy's and
Python's RNG states, early-stopping state) as JSON in its metadata header. Loading parses a JSON
header and reads raw tensor bytes: unlike ``pickle`` (``torch.load`` without
``weights_only``), a checkpoint cannot execute code.

Writing is atomic: the file is written under a temporary name in the same folder, flushed to
disk, then renamed over the final name (``os.replace``), and the folder is flushed. A process
killed at any instant leaves either the previous checkpoints only, or the new one complete;
stray temporary files are ignored by :func:`latest_checkpoint` and removed by the next write
when the process that wrote them is gone.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

FORMAT = "rnnlab-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step-(\d{8})\.safetensors$")


class Checkpoint(NamedTuple):
    """A loaded checkpoint: ``meta`` (JSON values, tensors restored in place) and the path."""

    meta: dict[str, Any]
    path: Path


def encode(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """JSON-able form of nested dicts/lists/tuples with tensors and numpy arrays.

    Tensors go to ``tensors`` under ``prefix``-derived keys and are replaced by references.
    """
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, encode(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    raise TypeError(f"{prefix}: cannot store a {type(obj).__name__} in a checkpoint")


def decode(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        if "__items__" in obj:
            return {k: decode(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(decode(v, tensors) for v in obj["__tuple__"])
        if "__dtype__" in obj:
            return getattr(torch, obj["__dtype__"])
        return {k: decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    return obj


def checkpoint_path(folder: str | os.PathLike[str], step: int) -> Path:
    return Path(folder) / f"step-{step:08d}.safetensors"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` (nested dicts of JSON values and tensors) atomically to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    meta = encode(dict(state), "", tensors)
    header = {"format": FORMAT, "version": str(VERSION), "meta": json.dumps(meta)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=header)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no code is executed)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint: expected a checkpoint file, got {str(path)!r} (no such file)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            header = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"checkpoint: {str(path)!r} is not a readable checkpoint ({err})"
        ) from None
    if header.get("format") != FORMAT:
        raise ValueError(
            f"checkpoint: expected an {FORMAT} file, got {str(path)!r} with format "
            f"{header.get('format')!r}"
        )
    if int(header.get("version", "0")) > VERSION:
        raise ValueError(
            f"checkpoint: {str(path)!r} has format version {header.get('version')}, newer than "
            f"this rnnlab's {VERSION}"
        )
    meta = decode(json.loads(header["meta"]), tensors)
    return Checkpoint(meta, path)


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """The complete checkpoints ``step-NNNNNNNN.safetensors`` in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


class CheckpointWarning(UserWarning):
    """A newer checkpoint was truncated or corrupt and an older one was used."""


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint of ``folder`` that loads, or None.

    A newer one that does not load (cut short by a full disk, damaged) is skipped with a
    :class:`CheckpointWarning` naming it and the older checkpoint used instead.
    """
    import warnings

    broken: list[str] = []
    for p in reversed(list_checkpoints(folder)):
        try:
            load_checkpoint(p)
        except (ValueError, KeyError, json.JSONDecodeError) as err:
            broken.append(f"{p.name} ({err})")
            continue
        if broken:
            warnings.warn(
                f"checkpoint: skipped the newer {'; '.join(broken)}: truncated or corrupt; "
                f"using the older {str(p)!r}",
                CheckpointWarning,
                stacklevel=2,
            )
        return p
    if broken:
        warnings.warn(
            f"checkpoint: no checkpoint of {str(folder)!r} loads: {'; '.join(broken)}",
            CheckpointWarning,
            stacklevel=2,
        )
    return None


def prune_checkpoints(folder: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and temporary files of dead processes."""
    folder = Path(folder)
    for p in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
    if folder.is_dir():
        from .._files import pid_alive

        for p in folder.glob(".*.tmp-*"):
            pid = p.name.rsplit("-", 1)[-1]
            # only a file left by a dead process: a live one (this or another process, e.g. a
            # second trainer refused by the lock but still writing) may be renaming it now
            if pid.isdigit() and not pid_alive(int(pid)):
                p.unlink(missing_ok=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (a hard link where the file system allows)."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)
    _fsync_dir(dst.parent)


# --- random number generators ----------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every global RNG's state: torch (CPU and CUDA), numpy, Python's random."""
    import random

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state` output."""
    import random

    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    np.random.set_state(tuple(state["numpy"]))  # type: ignore[arg-type]
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
