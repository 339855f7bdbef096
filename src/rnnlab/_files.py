"""Files rnnlab may replace: the marker of its own folders and the one safe-delete helper.

Every folder rnnlab creates (a training run, an experiment folder, the tour, an analysis)
carries a marker file :data:`MARKER` (``.rnnlab-run.json``) holding the rnnlab version, a
random run id, the kind of folder and the creation time. A destructive operation
(``rnnlab train --overwrite``, ``Trainer(overwrite=True)``, ``rnnlab run``) goes through
:func:`remove_tree`, which deletes a folder only when it carries the marker, or — a folder made
by an rnnlab without markers — when its layout is exactly rnnlab's. Everything else is refused
*before anything is touched*: the working folder or one of its parents, the home folder, a
folder without the marker, a plain file, a symlink (neither followed nor unlinked).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> _ = make_folder(d, "run")
    >>> remove_tree(d, "run")  # carries the marker: deleted
    >>> d.exists()
    False
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._checks import check_choice

MARKER = ".rnnlab-run.json"
KINDS = ("run", "experiment", "tour", "analysis")


class UnsafePathError(ValueError):
    """A destructive operation was asked for a path rnnlab did not make; nothing was touched."""


def _version() -> str:
    from ._version import __version__

    return __version__


def write_marker(folder: str | os.PathLike[str], kind: str, **extra: Any) -> dict[str, Any]:
    """Write ``folder/.rnnlab-run.json`` (atomic) and return its content.

    Args:
        folder: an existing folder rnnlab has just made.
        kind: one of :data:`KINDS`.
        extra: more JSON values to record (e.g. the experiment's name).

    Returns:
        ``{"rnnlab_version", "run_id" (32 hex digits), "kind", "created" (ISO 8601, UTC), ...}``.
    """
    check_choice(kind, "kind", KINDS)
    data = {
        "rnnlab_version": _version(),
        "run_id": uuid.uuid4().hex,
        "kind": kind,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    atomic_write_text(Path(folder) / MARKER, json.dumps(data, indent=1) + "\n")
    return data


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of ``folder`` (a dict with a ``run_id``), or None when it has none."""
    p = Path(folder) / MARKER
    if p.is_symlink() or not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
        return None
    return data


def make_folder(folder: str | os.PathLike[str], kind: str, **extra: Any) -> dict[str, Any]:
    """Create ``folder`` (and its parents) and mark it as rnnlab's; return the marker."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return write_marker(folder, kind, **extra)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` under a temporary name, then rename it over ``path``: a reader
    (or a crash) sees the old file or the new one, never half of it."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


# --- layouts of folders made before the marker existed -----------------------------------------
_RUN_FILES = {
    "config.yaml",
    ".config.yaml.tmp",
    "metrics.jsonl",
    "metrics.csv",
    "grad_norms.jsonl",
    "loss.png",
    "grad_norms.png",
    "history.jsonl",
    ".rnnlab-lock",
}
_RUN_TMP = re.compile(r"^\.(config\.yaml|metrics\.jsonl|grad_norms\.jsonl)\.tmp-\d+$")
_CKPT = re.compile(r"^(step-\d{8}|best)\.safetensors$|^\.(step-\d{8}|best)\.safetensors\.tmp-\d+$")
_EXPERIMENT_FILE = re.compile(r"^[\w.-]+\.(json|png|html|md|txt|csv)$")


def _is_run_layout(p: Path) -> bool:
    """config.yaml, rnnlab's metrics files and plots, checkpoints/ with rnnlab's names (and
    tensorboard/ with event files), nothing else."""
    if not (p / "config.yaml").is_file():
        return False
    for e in p.iterdir():
        if e.is_symlink():
            return False
        if e.is_file() and (e.name in _RUN_FILES or _RUN_TMP.match(e.name)):
            continue
        if e.is_dir() and e.name == "checkpoints":
            if all(c.is_file() and not c.is_symlink() and _CKPT.match(c.name) for c in e.iterdir()):
                continue
        if e.is_dir() and e.name == "analysis" and (read_marker(e) or _is_analysis_layout(e)):
            continue
        if e.is_dir() and e.name == "tensorboard":
            if all(
                c.is_file() and not c.is_symlink() and c.name.startswith("events.out.tfevents.")
                for c in e.iterdir()
            ):
                continue
        return False
    return True


def _is_experiment_layout(p: Path, depth: int = 0) -> bool:
    """claims.json plus rnnlab's report files (json, png, html, md, txt, csv); the tour also
    holds experiment folders of that layout."""
    if not (p / "claims.json").is_file():
        return False
    for e in p.iterdir():
        if e.is_symlink():
            return False
        if e.is_file() and _EXPERIMENT_FILE.match(e.name):
            continue
        if e.is_dir() and depth == 0 and (read_marker(e) or _is_experiment_layout(e, 1)):
            continue
        return False
    return True


def _is_analysis_layout(p: Path) -> bool:
    names = {e.name for e in p.iterdir()}
    allowed = {"analysis.json", "fixed_points_pca.png", "eigenvalues.png"}
    return "analysis.json" in names and names <= allowed and all(e.is_file() for e in p.iterdir())


_LAYOUTS: dict[str, Callable[[Path], bool]] = {
    "run": _is_run_layout,
    "experiment": _is_experiment_layout,
    "tour": _is_experiment_layout,
    "analysis": _is_analysis_layout,
}
_LAYOUT_TEXT = {
    "run": "config.yaml, metrics files and checkpoints/",
    "experiment": "claims.json and report files",
    "tour": "claims.json and experiment folders",
    "analysis": "analysis.json and its figures",
}


def _protected(p: Path) -> str | None:
    """Why ``p`` (resolved) may never be deleted, or None."""
    cwd = Path.cwd().resolve()
    if p == cwd:
        return "it is the working folder"
    if p in cwd.parents:
        return "it is a parent of the working folder"
    home = Path.home().resolve()
    if p == home:
        return "it is the home folder"
    if p == Path(p.anchor):
        return "it is the root of the file system"
    return None


def check_replaceable(path: str | os.PathLike[str], kind: str, *, what: str = "path") -> bool:
    """Raise :class:`UnsafePathError` unless ``path`` is absent or an rnnlab folder of ``kind``.

    Args:
        path: the folder a destructive operation would delete.
        kind: what rnnlab would have made there (one of :data:`KINDS`); a marker of any kind
            is accepted, the layout of an unmarked folder must be this kind's.
        what: the argument's name, for the message (e.g. ``"--run-dir"``).

    Returns:
        True when ``path`` exists (and may be deleted), False when there is nothing there.
    """
    p = Path(path)
    if p.is_symlink():
        raise UnsafePathError(
            f"{what}: {str(p)!r} is a symlink; rnnlab neither follows nor deletes it "
            "(nothing was changed)"
        )
    if not p.exists():
        return False
    rp = p.resolve()
    why = _protected(rp)
    if why is not None:
        raise UnsafePathError(f"{what}: refusing to delete {str(p)!r}: {why} (nothing was changed)")
    if not p.is_dir():
        raise UnsafePathError(
            f"{what}: refusing to replace {str(p)!r}: it is a file, not a folder rnnlab made "
            "(nothing was changed)"
        )
    if read_marker(p) is not None:
        return True
    if not any(p.iterdir()):
        return True  # an empty folder holds nothing to lose
    if _LAYOUTS[kind](p):
        return True  # made by an rnnlab before markers: exactly rnnlab's layout
    raise UnsafePathError(
        f"{what}: refusing to delete {str(p)!r}: it has no {MARKER} marker and does not hold "
        f"exactly rnnlab's {kind} layout ({_LAYOUT_TEXT[kind]}), so rnnlab did not make it. "
        "Delete it by hand if you mean to, or choose another path (nothing was changed)"
    )


def remove_tree(path: str | os.PathLike[str], kind: str, *, what: str = "path") -> None:
    """Delete the rnnlab folder ``path`` after :func:`check_replaceable` (no-op when absent).

    Symlinks inside the folder are unlinked, never followed (``shutil.rmtree``'s behaviour).
    """
    if check_replaceable(path, kind, what=what):
        shutil.rmtree(Path(path))


def check_new_or_own_file(
    path: str | os.PathLike[str], is_own: Callable[[Path], bool], *, what: str, force: bool
) -> None:
    """Refuse to replace a file rnnlab did not write (``is_own`` says), unless ``force``."""
    p = Path(path)
    if p.is_symlink():
        raise UnsafePathError(f"{what}: {str(p)!r} is a symlink; rnnlab does not write through it")
    if p.is_dir():
        raise UnsafePathError(f"{what}: expected a file path, got the folder {str(p)!r}")
    if p.exists() and not force and not is_own(p):
        raise UnsafePathError(
            f"{what}: {str(p)!r} exists and was not written by rnnlab; pass --force to "
            "replace it (nothing was changed)"
        )


def describe_os_error(err: OSError) -> str:
    """``"PATH: disk full (ENOSPC)"``: the path and the errno's name, for a one-line message."""
    name = errno.errorcode.get(err.errno or 0, str(err.errno))
    hint = {
        errno.ENOSPC: "disk full",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EDQUOT: "disk quota exceeded",
    }.get(err.errno or 0, err.strerror or str(err))
    where = err.filename if err.filename is not None else "a file"
    return f"{where}: {hint} ({name})"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


LOCK = ".rnnlab-lock"


class FolderLockedError(ValueError):
    """Another live process holds the folder's lock file."""


def lock_holder(folder: str | os.PathLike[str]) -> int | None:
    """The pid of the live process holding ``folder/.rnnlab-lock``, or None (no lock, or a stale
    one left by a process that died)."""
    p = Path(folder) / LOCK
    try:
        text = p.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    try:
        pid = int(json.loads(text)["pid"]) if text.startswith("{") else int(text)
    except (ValueError, KeyError, TypeError):
        return None
    return pid if pid_alive(pid) else None


def acquire_lock(folder: str | os.PathLike[str], *, what: str = "run_dir") -> Path:
    """Create ``folder/.rnnlab-lock`` holding this process's pid; refuse when a live process
    (this one included: a second trainer in the same folder) holds it. A stale lock is taken
    over."""
    p = Path(folder) / LOCK
    for _ in range(2):
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(folder)
            if holder is not None:
                raise FolderLockedError(
                    f"{what}: {str(folder)!r} is in use by another trainer (pid {holder}, "
                    f"lock file {str(p)!r}); wait for it to finish or stop it "
                    "(nothing was changed)"
                ) from None
            p.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid()}) + "\n")
        return p
    raise FolderLockedError(f"{what}: could not take the lock {str(p)!r} (raced twice)")


def release_lock(folder: str | os.PathLike[str]) -> None:
    """Remove the lock file if this process holds it."""
    p = Path(folder) / LOCK
    try:
        text = p.read_text(encoding="utf-8")
        if int(json.loads(text)["pid"]) == os.getpid():
            p.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass
