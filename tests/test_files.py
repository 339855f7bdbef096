"""The one safe-delete helper (rnnlab._files) on every case a destructive flag can meet, and
its use by ``rnnlab train --overwrite``, ``Trainer(overwrite=True)`` and ``rnnlab run``:
only a folder rnnlab made is deleted; everything else is refused before anything is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab import _files
from rnnlab._files import (
    MARKER,
    UnsafePathError,
    check_replaceable,
    make_folder,
    read_marker,
    remove_tree,
)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content (files) or '<dir>' / '-> target' (links)."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[key] = "<dir>"
        else:
            out[key] = p.read_bytes().decode("latin-1")
    return out


def user_folder(root: Path) -> Path:
    d = root / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    return d


def run_layout(root: Path, extra: str | None = None) -> Path:
    """A run folder as an rnnlab without markers left it."""
    d = root / "oldrun"
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.yaml").write_text("task: {}\n")
    (d / "metrics.jsonl").write_text("{}\n")
    (d / "metrics.csv").write_text("step\n")
    (d / "loss.png").write_bytes(b"png")
    (d / "checkpoints" / "step-00000010.safetensors").write_bytes(b"x")
    (d / "checkpoints" / "best.safetensors").write_bytes(b"x")
    if extra:
        (d / extra).write_text("user's")
    return d


# --- the helper -----------------------------------------------------------------------------
def test_marker_content(tmp_path):
    m = make_folder(tmp_path / "a" / "b", "run")
    assert read_marker(tmp_path / "a" / "b") == m
    assert set(m) >= {"rnnlab_version", "run_id", "kind", "created"}
    assert len(m["run_id"]) == 32 and int(m["run_id"], 16) >= 0
    assert make_folder(tmp_path / "c", "run")["run_id"] != m["run_id"], "ids are random"
    with pytest.raises(ValueError, match="kind: expected one of"):
        make_folder(tmp_path / "d", "bogus")


def test_marked_folder_is_deleted_and_absent_is_a_no_op(tmp_path):
    d = tmp_path / "run"
    make_folder(d, "run")
    (d / "anything.bin").write_bytes(b"rnnlab's own")
    remove_tree(d, "run")
    assert not d.exists()
    assert check_replaceable(d, "run") is False
    remove_tree(d, "run")  # absent: nothing to do, no error


def test_empty_folder_may_be_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    remove_tree(tmp_path / "empty", "run")
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("where", ["cwd", "parent", "home"])
def test_working_folder_its_parents_and_home_are_refused_even_marked(tmp_path, monkeypatch, where):
    top = tmp_path / "top"
    cwd = top / "work"
    make_folder(top, "run")
    make_folder(cwd, "run")
    (cwd / "code.py").write_text("print('mine')")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(top))
    target = {"cwd": Path("."), "parent": Path(".."), "home": top}[where]
    if where == "home":
        monkeypatch.chdir(tmp_path)  # so that only the home rule applies
    before = snapshot(tmp_path)
    why = {"cwd": "working folder", "parent": "parent of the working", "home": "home folder"}
    with pytest.raises(UnsafePathError, match=why[where]):
        remove_tree(target, "run", what="--run-dir")
    assert snapshot(tmp_path) == before


def test_folder_without_marker_is_refused(tmp_path):
    d = user_folder(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(UnsafePathError, match=rf"has no {MARKER} marker .* Delete it by hand"):
        remove_tree(d, "run", what="--run-dir")
    assert snapshot(tmp_path) == before


def test_file_is_refused_not_replaced(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    with pytest.raises(UnsafePathError, match="it is a file"):
        remove_tree(f, "run")
    assert f.read_text() == "mine"


@pytest.mark.parametrize("to", ["marked", "file", "dangling"])
def test_symlink_is_refused_neither_followed_nor_unlinked(tmp_path, to):
    target = tmp_path / "target"
    if to == "marked":
        make_folder(target, "run")
    elif to == "file":
        target.write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(target)
    before = snapshot(tmp_path)
    with pytest.raises(UnsafePathError, match="is a symlink; rnnlab neither follows nor deletes"):
        remove_tree(link, "run")
    assert link.is_symlink() and snapshot(tmp_path) == before


def test_symlink_inside_a_marked_folder_is_unlinked_not_followed(tmp_path):
    keep = user_folder(tmp_path)
    d = tmp_path / "run"
    make_folder(d, "run")
    (d / "data").symlink_to(keep)
    remove_tree(d, "run")
    assert not d.exists() and (keep / "thesis.tex").read_text() == "years of work"


def test_migration_of_an_unmarked_run_with_exactly_rnnlabs_layout(tmp_path):
    remove_tree(run_layout(tmp_path), "run")
    assert not (tmp_path / "oldrun").exists()


@pytest.mark.parametrize("extra", ["notes.txt", "checkpoints/model.pt", "config.yaml.bak"])
def test_unmarked_run_with_anything_else_is_refused(tmp_path, extra):
    d = run_layout(tmp_path, extra)
    before = snapshot(tmp_path)
    with pytest.raises(UnsafePathError, match="exactly rnnlab's run layout"):
        remove_tree(d, "run")
    assert snapshot(tmp_path) == before


def test_unmarked_run_layout_needs_its_config(tmp_path):
    d = run_layout(tmp_path)
    (d / "config.yaml").unlink()
    with pytest.raises(UnsafePathError):
        remove_tree(d, "run")


def test_migration_of_unmarked_experiment_and_tour_folders(tmp_path):
    e = tmp_path / "maps"
    e.mkdir()
    for n in ("claims.json", "config.json", "report.html", "cobweb.png", "error.txt"):
        (e / n).write_text("x")
    remove_tree(e, "experiment")
    assert not e.exists()
    tour = tmp_path / "tour"
    (tour / "maps").mkdir(parents=True)
    (tour / "claims.json").write_text("[]")
    (tour / "maps" / "claims.json").write_text("[]")
    (tour / "report.html").write_text("x")
    remove_tree(tour, "tour")
    assert not tour.exists()
    # a subfolder the user put there, or a file of another kind: refused
    e.mkdir()
    (e / "claims.json").write_text("[]")
    (e / "src").mkdir()
    with pytest.raises(UnsafePathError, match="experiment layout"):
        remove_tree(e, "experiment")
    assert (e / "src").is_dir()
    (e / "src").rmdir()
    (e / "train.py").write_text("x")
    with pytest.raises(UnsafePathError):
        remove_tree(e, "experiment")


def test_committed_results_folders_carry_markers():
    root = Path(__file__).resolve().parents[1] / "results"
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert folders
    for d in folders:
        m = read_marker(d)
        assert m is not None and m["kind"] == "experiment", d


# --- bench --json and analyze --out ------------------------------------------------------------
def test_file_writer_replaces_only_its_own_file(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("user data")
    with pytest.raises(UnsafePathError, match="was not written by rnnlab; pass --force"):
        _files.check_new_or_own_file(f, lambda p: False, what="--json", force=False)
    _files.check_new_or_own_file(f, lambda p: False, what="--json", force=True)
    _files.check_new_or_own_file(f, lambda p: True, what="--json", force=False)
    link = tmp_path / "l.json"
    link.symlink_to(f)
    with pytest.raises(UnsafePathError, match="symlink"):
        _files.check_new_or_own_file(link, lambda p: True, what="--json", force=True)
    assert f.read_text() == "user data"


# --- the lock file ---------------------------------------------------------------------------
def test_lock_names_a_live_holder_and_a_stale_lock_is_taken_over(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (d / _files.LOCK).write_text(json.dumps({"pid": child.pid}))
        assert _files.lock_holder(d) == child.pid
        with pytest.raises(_files.FolderLockedError, match=rf"pid {child.pid}"):
            _files.acquire_lock(d)
    finally:
        child.kill()
        child.wait()
    assert _files.lock_holder(d) is None, "its process is gone: the lock is stale"
    _files.acquire_lock(d)
    assert json.loads((d / _files.LOCK).read_text()) == {"pid": os.getpid()}
    with pytest.raises(_files.FolderLockedError, match=rf"pid {os.getpid()}"):
        _files.acquire_lock(d)  # a second trainer of this very process
    _files.release_lock(d)
    assert not (d / _files.LOCK).exists()
