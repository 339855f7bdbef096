"""``rnnlab run`` end to end on throwaway experiments (no browser; see test_report_browser.py):
claims.json rows carry the required keys, report.html references every PNG written and nothing
else, the tour combines its experiments, and a crash or a failing claim is shown, not hidden."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rnnlab._files import make_folder
from rnnlab.cli import main
from rnnlab.experiments import registry
from rnnlab.experiments._common import claim, figure, save
from rnnlab.experiments.registry import Claim, Experiment, RunContext

KEYS = {"experiment", "claim", "measured", "expected", "source", "status", "seconds"}
PROBE = "_probe"


def probe_experiment(ctx: RunContext) -> list[Claim]:
    """Two figures (one in a subfolder) and one claim of each status, with HTML to escape."""
    fig = figure(ctx.out_dir / "probe_line.png")
    fig.add_subplot(1, 1, 1).plot([0, 1, 2], [2, 0, 1])
    save(fig)
    (ctx.out_dir / "more").mkdir()
    fig = figure(ctx.out_dir / "more" / "probe_bars.png")
    fig.add_subplot(1, 1, 1).bar(["a", "b"], [1, 2])
    save(fig)
    name = ctx.name
    return [
        claim(name, "a claim that holds", 1.0, "< 2", "test", True, 0.1),
        claim(name, "a claim that fails <b>& stays</b>", [0.5, 2], {"a": 1}, "test", False),
        # a long unbroken value, as real claims have (dicts of accuracies): the page must not
        # overflow a narrow window because of it
        claim(name, "an informational row ≈ 0.42", "h*=5;" * 40, "-", "test", None),
    ]


def crash_experiment(ctx: RunContext) -> list[Claim]:
    raise RuntimeError("boom")


class _Page(HTMLParser):
    """Image sources and claim rows (class, first cell's text) of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows: list[tuple[str, str]] = []
        self._row: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "tr" and a.get("class") in ("pass", "fail", "info"):
            self._row = a["class"]
        elif tag == "td" and self._row is not None and self._cell is None:
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self.rows.append((self._row, "".join(self._cell)))
            self._row, self._cell = None, None


def parse_report(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Experiment]:
    """Only throwaway experiments are registered while the test runs."""
    registry.load_all()  # import the real modules first, so they register into the real dict
    exps = {
        PROBE: Experiment(PROBE, "a throwaway experiment", probe_experiment, order=1),
        "_probe2": Experiment("_probe2", "a second one", probe_experiment, order=2),
        "_crash": Experiment("_crash", "raises", crash_experiment, order=3, tour=False),
    }
    monkeypatch.setattr(registry, "EXPERIMENTS", exps)
    return exps


def check_claims(rows: list[dict], names: set[str]) -> None:
    assert rows, "no claims written"
    for r in rows:
        assert set(r) == KEYS, f"claims.json row keys {sorted(r)}"
        assert r["status"] in ("pass", "fail", "info")
        assert r["experiment"] in names
        assert isinstance(r["seconds"], (int, float))


def check_figures(out: Path, page: _Page) -> None:
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs, "the run wrote no figure"
    assert sorted(page.images) == pngs, "report.html must show every PNG written, and only those"
    for src in page.images:
        assert (out / src).stat().st_size > 0


def test_run_one_writes_claims_config_and_report(probes: dict, tmp_path: Path) -> None:
    stale = tmp_path / PROBE / "stale.txt"
    make_folder(stale.parent, "experiment")  # an earlier run's folder carries the marker
    stale.write_text("from an earlier run")
    rc = main(["run", PROBE, "--out", str(tmp_path), "--seed", "3", "--strict"])
    out = tmp_path / PROBE
    assert rc == 1, "with --strict a failing claim makes the run fail"
    assert not stale.exists(), "rnnlab run replaces its own folder"
    rows = json.loads((out / "claims.json").read_text())
    check_claims(rows, {PROBE})
    assert [r["status"] for r in rows] == ["pass", "fail", "info"]
    config = json.loads((out / "config.json").read_text())
    assert {k: config.get(k) for k in ("experiment", "full", "seed")} == {
        "experiment": PROBE,
        "full": False,
        "seed": 3,
    }
    page = parse_report(out / "report.html")
    check_figures(out, page)
    assert page.rows == [(r["status"], r["claim"]) for r in rows]
    assert "<b>&" not in (out / "report.html").read_text(), "claim text must be escaped"


def test_tour_combines_experiments(probes: dict, tmp_path: Path) -> None:
    rc = main(["run", "tour", "--out", str(tmp_path)])
    out = tmp_path / "tour"
    assert rc == 0, "a failing claim is a result: the tour (make demo) still succeeds"
    rows = json.loads((out / "claims.json").read_text())
    check_claims(rows, {PROBE, "_probe2"})
    assert [r["experiment"] for r in rows] == [PROBE] * 3 + ["_probe2"] * 3  # by order
    assert not (out / "_crash").exists(), "tour=False experiments stay out of the tour"
    page = parse_report(out / "report.html")
    check_figures(out, page)
    assert page.rows == [(r["status"], r["claim"]) for r in rows]
    for name in (PROBE, "_probe2"):  # each also has its own claims.json and config.json
        check_claims(json.loads((out / name / "claims.json").read_text()), {name})
        assert (out / name / "config.json").is_file()


def test_a_crash_is_reported_as_a_failing_row(probes: dict, tmp_path: Path) -> None:
    assert main(["run", "_crash", "--out", str(tmp_path)]) == 1
    out = tmp_path / "_crash"
    rows = json.loads((out / "claims.json").read_text())
    check_claims(rows, {"_crash"})
    assert rows[0]["status"] == "fail" and "RuntimeError: boom" in rows[0]["measured"]
    assert "RuntimeError" in (out / "error.txt").read_text()
    assert re.search(r"failed: <code>RuntimeError: boom", (out / "report.html").read_text())


def test_list_names_every_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert set(registry.load_all()) | {"tour"} <= listed


def test_tour_experiments_are_registered() -> None:
    exps = registry.load_all()
    want = {"maps", "vanishing", "xor", "cases", "forcing", "bidirectional", "deep", "memory"}
    want |= {"flipflop", "henon", "speed"}
    assert want <= set(exps), f"missing: {sorted(want - set(exps))}"
