"""Tour claims say what was measured (issue 14): flip-flop memory accuracy, speed readings on
a loaded machine, the report's lecture sections, captions and grammar."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from rnnlab.experiments import registry, report, speed
from rnnlab.experiments.flipflop import memory_accuracy
from rnnlab.experiments.registry import RunContext


class _Echo:
    """A stand-in model whose output is given: y itself, with chosen patterns flipped."""

    def __init__(self, flip: tuple[float, float, float] | None = None) -> None:
        self.flip = flip

    def __call__(self, x: torch.Tensor) -> Any:
        y = self.y.clone()
        if self.flip is not None:
            mine = (y.sign() == torch.tensor(self.flip)).all(-1)
            y[mine] = -y[mine]
        return SimpleNamespace(output=y)


def test_memory_accuracy_counts_each_memory_state() -> None:
    from rnnlab.data import FlipFlop

    data = FlipFlop(64, 64, pulse_prob=0.1, seed=0)
    model = _Echo()
    model.y = data.y
    acc = memory_accuracy(model, data.x, data.y)  # type: ignore[arg-type]
    assert sorted(acc) == sorted(a + b + c for a in "+-" for b in "+-" for c in "+-") and set(
        acc.values()
    ) == {1.0}
    wrong = _Echo(flip=(1.0, -1.0, 1.0))
    wrong.y = data.y
    acc = memory_accuracy(wrong, data.x, data.y)  # type: ignore[arg-type]
    assert acc["+-+"] == 0.0 and acc["---"] == 1.0


def _fake_records(ratio: float) -> list[dict[str, Any]]:
    rows = []
    for cell in ("lstm", "gru"):
        for mode in ("forward", "train"):
            for impl, ms in (("rnnlab", ratio), ("torch", 1.0), ("reference", 5.0)):
                rows.append(
                    {
                        "cell": cell,
                        "shape": "S1",
                        "mode": mode,
                        "impl": impl,
                        "median_ms": ms,
                        "flop": 1e9,
                    }
                )
    return rows


def _run_speed(monkeypatch: Any, tmp_path: Path, load: float, ratio: float) -> list[Any]:
    monkeypatch.setattr(speed.B, "bench", lambda *a, **k: _fake_records(ratio))
    monkeypatch.setattr(speed.B, "table", lambda records: "table")
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(speed.os, "cpu_count", lambda: 2)
    ctx = RunContext("speed", tmp_path, progress=lambda m: None)
    return [r for r in speed.speed(ctx) if "rnnlab / torch.nn" in r.claim]


def test_speed_marks_a_loaded_machine_instead_of_failing(monkeypatch: Any, tmp_path: Path) -> None:
    quiet = _run_speed(monkeypatch, tmp_path, load=0.8, ratio=1.2)
    assert quiet and all(r.status == "fail" for r in quiet)  # slow on a quiet machine: a fail
    assert all("1.200 [1.200, 1.200]" == r.measured for r in quiet)  # median [min, max]
    loaded = _run_speed(monkeypatch, tmp_path, load=3.5, ratio=1.2)
    assert all(r.status == "info" and "MACHINE LOADED" in r.claim for r in loaded)
    fast = _run_speed(monkeypatch, tmp_path, load=0.5, ratio=1.0)
    assert all(r.status == "pass" for r in fast)


def test_every_experiment_names_its_lecture_section_and_figures_have_captions() -> None:
    exps = registry.load_all()
    assert set(exps) - {"_probe", "_crash"} <= set(report.LECTURE_SECTIONS)
    src = Path(report.__file__).parent
    written = set()
    import re

    for f in src.glob("*.py"):
        written |= set(re.findall(r'out_dir / "([a-z_]+\.png)"', f.read_text()))
    written |= {
        f"flipflop_{k}_{c}.png" for k in ("eigenvalues", "fixed_points") for c in ("elman", "gru")
    }
    assert written and written <= set(report.FIGURE_CAPTIONS), written - set(report.FIGURE_CAPTIONS)


def test_report_grammar_and_links(tmp_path: Path) -> None:
    rows = [{"claim": "c", "measured": 1, "expected": 1, "source": "s", "status": "pass"}]
    sec = report.Section("maps", "d", rows, [])
    page = report.write_report(tmp_path, "t", [sec]).read_text()
    assert "1 experiment ·" in page and "1 claim pass" in page
    assert "Lecture: Dynamic systems" in page
    assert 'id="maps-0"' in page and "href='claims.json'" in page
