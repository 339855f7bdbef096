"""The tutorial and how-to pages keep their promises, checked without building the site.

Every code block on them must run during ``make docs``: so a page may hold ``rnnlab-run``
blocks (executed by docs/_ext/rnnlab_run.py) but no plain code fences, which would be shown
without being run. Each tutorial has equations and a figure. The site checker
(docs/_ext/check_site.py, run by ``make docs``) is tested on small hand-made sites: it must
report a broken link, a missing anchor and reST left as text, and pass a clean site.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import check_site  # noqa: E402 - docs/_ext is not a package

PAGES = sorted((DOCS / "tutorials").glob("[0-9]*.md")) + sorted(
    p for p in (DOCS / "howto").glob("*.md") if p.name != "index.md"
)
FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\{[^}]*\}|[\w+-]*)", re.M)


def test_one_tutorial_per_lecture_system() -> None:
    titles = [p.read_text(encoding="utf-8").splitlines()[0] for p in PAGES if "tutorials" in str(p)]
    wanted = ["fixed points", "Jordan", "unfolding", "Teacher forcing", "Bidirectional",
              "Vanishing", "recurrent CNN", "LSTM", "GRU"]  # fmt: skip
    for word in wanted:
        assert any(word.lower() in t.lower() for t in titles), f"no tutorial about {word!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_block_runs(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    kinds = [m.group(2) for m in FENCE.finditer(text)]
    opening = kinds[::2]  # fences open and close in pairs; closing fences carry no kind
    allowed = {"{rnnlab-run}", "{toctree}", "{figure}", "{math}"}
    shown_only = [k for k in opening if k not in allowed]
    assert not shown_only, f"{page.name}: code fences that would not run: {shown_only}"
    assert "{rnnlab-run}" in opening, f"{page.name}: no code that runs"


@pytest.mark.parametrize("page", [p for p in PAGES if "tutorials" in str(p)], ids=lambda p: p.name)
def test_tutorial_has_equations_and_a_figure(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "$$" in text, f"{page.name}: no displayed equation"
    assert ":caption:" in text, f"{page.name}: no figure drawn by its code"
    quoted = "results/" in text
    if quoted:  # committed results are labelled as such
        assert "committed" in text.lower(), f"{page.name}: quotes results/ without saying so"


def _site(tmp_path: Path, body: str) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "other.html").write_text('<html><body><h1 id="there">x</h1></body></html>')
    (site / "index.html").write_text(f"<html><body>{body}</body></html>")
    return site


def test_checker_passes_a_clean_site(tmp_path: Path) -> None:
    body = '<a href="other.html#there">ok</a> <a href="https://example.org">ext</a>'
    body += " <code>:class:`x`</code>"  # a role shown as code on purpose is fine
    assert check_site.check(_site(tmp_path, body)) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<a href="missing.html">x</a>', "broken link 'missing.html'"),
        ('<a href="other.html#nowhere">x</a>', "no anchor"),
        ('<img src="_images/none.png">', "broken link '_images/none.png'"),
        ("<p>see :class:`Foo` here</p>", "reST markup left as text"),
        ("<p>.. math::\n   x</p>", "reST markup left as text"),
    ],
)
def test_checker_reports(tmp_path: Path, body: str, message: str) -> None:
    problems = check_site.check(_site(tmp_path, body))
    assert any(message in p for p in problems), problems
    assert check_site.main(["check_site", str(tmp_path / "site")]) == 1
