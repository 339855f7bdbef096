"""Destructive flags through the real entry points: ``rnnlab train --overwrite``,
``Trainer(overwrite=True)``, ``rnnlab run NAME`` / ``run tour``, the lock file, foreign
checkpoints and checkpoint pruning. Each case checks that nothing of the user's changed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rnnlab._files import LOCK, MARKER, make_folder, read_marker
from rnnlab.cli import main
from rnnlab.training import RunDirError, Trainer
from rnnlab.training.checkpoint import prune_checkpoints
from test_files import snapshot, user_folder

TINY = {
    "task": {"name": "adding", "length": 4, "n_train": 8, "n_val": 4},
    "model": {"cell": "ElmanCell", "hidden_size": 4},
    "train": {
        "steps": 2,
        "batch_size": 4,
        "progress": False,
        "grad_monitor_every": 0,
        "plots": False,
        "eval_every": 2,
    },
}
TRAIN = [
    "train",
    "--task",
    "adding",
    "--length",
    "4",
    "--n-train",
    "8",
    "--n-val",
    "4",
    "--hidden-size",
    "4",
    "--cell",
    "ElmanCell",
    "--steps",
    "2",
    "--batch-size",
    "4",
    "--no-progress",
    "--no-plots",
    "--grad-monitor-every",
    "0",
]


def test_train_overwrite_of_the_working_folder_is_refused(tmp_path, monkeypatch, capsys):
    work = tmp_path / "project"
    work.mkdir()
    (work / "model.py").write_text("my code")
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    assert main([*TRAIN, "--run-dir", ".", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "refusing to delete '.': it is the working folder (nothing was changed)" in err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["user", "file", "symlink", "parent"])
def test_trainer_overwrite_refuses_what_rnnlab_did_not_make(tmp_path, monkeypatch, kind):
    if kind == "user":
        target = user_folder(tmp_path)
    elif kind == "file":
        target = tmp_path / "notes.txt"
        target.write_text("mine")
    elif kind == "symlink":
        real = tmp_path / "real"
        make_folder(real, "run")
        target = tmp_path / "link"
        target.symlink_to(real)
    else:
        make_folder(tmp_path / "top", "run")
        (tmp_path / "top" / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "top" / "sub")
        target = tmp_path / "top"
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match=r"nothing was changed"):
        Trainer(TINY, target, overwrite=True)
    assert snapshot(tmp_path) == before


def test_trainer_overwrite_replaces_its_own_run_and_migrates_an_old_one(tmp_path):
    run = tmp_path / "run"
    Trainer(TINY, run).fit()
    first = read_marker(run)
    assert first is not None and first["kind"] == "run"
    Trainer(TINY, run, overwrite=True).fit()
    second = read_marker(run)
    assert second is not None and second["run_id"] != first["run_id"], "a new run, a new id"
    # a run of an rnnlab without markers: exactly rnnlab's layout, so it may be replaced
    (run / MARKER).unlink()
    Trainer(TINY, run, overwrite=True).fit()
    assert read_marker(run) is not None


def test_run_experiment_and_tour_refuse_a_folder_rnnlab_did_not_make(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("maps", "tour"):
        d = out / name
        d.mkdir()
        (d / "paper.tex").write_text("mine")
    before = snapshot(tmp_path)
    assert main(["run", "maps", "--out", str(out)]) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert main(["run", "tour", "--out", str(out)]) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_second_trainer_in_one_run_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(TINY, run).fit()
    assert not (run / LOCK).exists(), "fit releases its lock"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK).write_text(json.dumps({"pid": child.pid}))
        before = snapshot(tmp_path)
        with pytest.raises(RunDirError, match=rf"in use by another trainer \(pid {child.pid}"):
            Trainer({"train": {"steps": 4}}, run, resume=True)
        with pytest.raises(RunDirError, match=rf"pid {child.pid}"):
            Trainer(TINY, run, overwrite=True)
        assert snapshot(tmp_path) == before
    finally:
        child.kill()
        child.wait()
    res = Trainer({"train": {"steps": 4}}, run, resume=True).fit()  # stale lock: taken over
    assert res.step == 4


def test_checkpoint_of_another_run_is_refused_as_foreign(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    Trainer(TINY, a).fit()
    Trainer(TINY, b).fit()
    ck = sorted((a / "checkpoints").glob("step-*.safetensors"))[-1]
    (b / "checkpoints" / "step-00000009.safetensors").write_bytes(ck.read_bytes())
    with pytest.raises(RunDirError, match="belongs to run .* checkpoint copied from another run"):
        Trainer({"train": {"steps": 12}}, b, resume=True)


def test_pruning_keeps_temporary_files_of_live_processes(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = folder / f".step-00000005.safetensors.tmp-{child.pid}"
        mine = folder / f".step-00000006.safetensors.tmp-{os.getpid()}"
        dead_pid = 2**22 + 12345  # above the default pid_max: no such process
        dead = folder / f".step-00000004.safetensors.tmp-{dead_pid}"
        for p in (live, mine, dead):
            p.write_bytes(b"partial")
        prune_checkpoints(folder, keep=1)
        assert live.exists() and mine.exists(), "a live process may be renaming these now"
        assert not dead.exists(), "its writer is gone: a stray file"
    finally:
        child.kill()
        child.wait()


def test_bench_json_replaces_only_its_own_file(tmp_path, monkeypatch, capsys):
    from rnnlab import bench

    calls = []
    monkeypatch.setattr(bench, "bench", lambda *a, **k: calls.append(a) or [])
    f = tmp_path / "numbers.json"
    f.write_text('{"my": "data"}')
    argv = ["bench", "--quick", "--no-memory", "--repeats", "1", "--json", str(f)]
    with pytest.raises(SystemExit, match=r"was not written by rnnlab; pass --force"):
        main(argv)
    assert f.read_text() == '{"my": "data"}' and not calls, "refused before any timing"
    assert main([*argv, "--force"]) == 0
    doc = json.loads(f.read_text())
    assert doc["written_by"] == "rnnlab bench" and doc["records"] == []
    assert main(argv) == 0, "its own file is replaced without --force"


def test_analyze_out_is_a_new_folder_or_its_own(tmp_path, monkeypatch, capsys):
    from rnnlab import analyze as mod

    d = user_folder(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="rnnlab analyze did not make it"):
        mod._own_folder(d)
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="got the file or link"):
        mod._own_folder(f)
    assert snapshot(tmp_path) == {**before, "f.txt": "x"}
    new = tmp_path / "new" / "analysis"
    mod._own_folder(new)
    assert read_marker(new)["kind"] == "analysis"
    (new / "analysis.json").write_text("{}")
    mod._own_folder(new)  # its own: used again
    run = tmp_path / "run"
    Trainer(TINY, run).fit()
    mod._own_folder(run / "analysis")
    (run / MARKER).unlink()
    from rnnlab._files import check_replaceable

    assert check_replaceable(run, "run"), "an analysis/ inside an old run is rnnlab's layout"


def test_reliability_inventory_has_60_cases_and_every_test_it_names_exists():
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "reliability.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \|", text, flags=re.M)
    assert len(rows) >= 60 and rows == [str(i) for i in range(1, len(rows) + 1)]
    defined = set()
    for f in (root / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", f.read_text(encoding="utf-8"), re.M))
    named = set(re.findall(r"`(test_\w+)", text))
    assert len(named) > 40
    assert named <= defined, sorted(named - defined)
