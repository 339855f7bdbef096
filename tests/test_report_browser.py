"""The report in a real browser: headless Chromium (Debian's ``chromium``) opens report.html
written by ``rnnlab run``; every figure must load (naturalWidth > 0) and every claim row of
claims.json must be on the page. Skips when no Chromium is installed.

The report is opened unchanged, inside an iframe of a probe page (in another folder) whose
script reads the report's DOM after its load event (all images settled) and writes what it
found into its own DOM, which ``--dump-dom`` prints. ``--allow-file-access-from-files`` lets the
probe read a file:// page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rnnlab.cli import main
from test_report_run import PROBE, probes  # noqa: F401 - probes is a fixture

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

WIDTHS = (1200, 700)  # a desktop window and a narrow one (half a laptop screen)

PROBE_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>probe</title></head>
<body><iframe id="w1200" src="{url}" width="1200" height="900"></iframe>
<iframe id="w700" src="{url}" width="700" height="900"></iframe>
<script>
var results = {{}};
function read(frame) {{
  var out = {{ok: false}};
  try {{
    var d = frame.contentDocument;
    out.title = d.title;
    out.images = Array.prototype.map.call(d.querySelectorAll("img"), function (i) {{
      var a = i.closest("a");
      return {{src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth,
               height: i.naturalHeight, link: a ? a.getAttribute("href") : null,
               caption: i.closest("figure").querySelector("figcaption").textContent}};
    }});
    out.rows = Array.prototype.map.call(
      d.querySelectorAll("tr.pass, tr.fail, tr.info"), function (r) {{
        return {{status: r.className, claim: r.cells[0].textContent}};
      }});
    out.scrollWidth = d.documentElement.scrollWidth;
    out.clientWidth = d.documentElement.clientWidth;
    out.ok = true;
  }} catch (e) {{ out.error = String(e); }}
  return out;
}}
function done() {{
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(results);
  document.body.appendChild(pre);
}}
["w1200", "w700"].forEach(function (id) {{
  document.getElementById(id).addEventListener("load", function () {{
    results[id] = read(this);
    if (results.w1200 && results.w700) done();
  }});
}});
</script></body></html>
"""


def chromium() -> str | None:
    env = os.environ.get("RNNLAB_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def open_in_browser(report: Path, work: Path) -> dict:
    exe = chromium()
    if exe is None:
        pytest.skip(
            "headless Chromium not found (install Debian's package: apt-get install -y chromium; "
            "or set RNNLAB_CHROMIUM); the report's browser check did not run"
        )
    work.mkdir(parents=True, exist_ok=True)
    probe = work / "probe.html"
    probe.write_text(PROBE_PAGE.format(url=report.resolve().as_uri()), encoding="utf-8")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={work / 'profile'}",
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the probe page did not report (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
    text = m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    both = json.loads(text)
    for w in WIDTHS:
        r = both[f"w{w}"]
        assert r["ok"], f"could not read the report's DOM at {w} px: {r.get('error')}"
        # no horizontal overflow: wide tables scroll inside their box, the page does not
        assert r["scrollWidth"] <= r["clientWidth"], (
            f"the page overflows horizontally at {w} px: {r['scrollWidth']} > {r['clientWidth']}"
        )
    result: dict = both["w1200"]
    return result


def check_in_browser(out: Path, title: str, work: Path) -> int:
    """Check the report in Chromium; return the number of claim rows shown."""
    seen = open_in_browser(out / "report.html", work)
    assert seen["title"] == title, "the page did not load"
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert sorted(i["src"] for i in seen["images"]) == pngs
    broken = [i["src"] for i in seen["images"] if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"figures that did not load in the browser: {broken}"
    # a click opens the figure at full size; its caption is a sentence, not its file name
    assert all(i["link"] == i["src"] for i in seen["images"])
    assert all(Path(i["src"]).stem.replace("_", " ") != i["caption"] for i in seen["images"])
    rows = [(r["status"], r["claim"]) for r in json.loads((out / "claims.json").read_text())]
    shown = iter((r["status"], r["claim"]) for r in seen["rows"])
    missing = [r for r in rows if r not in shown]  # in order; committed full-run rows may follow
    assert not missing, f"claim rows missing from the page (or out of order): {missing}"
    return len(seen["rows"])


@pytest.mark.usefixtures("probes")
def test_report_loads_in_chromium(tmp_path: Path) -> None:
    if chromium() is None:  # skip before running anything
        open_in_browser(tmp_path / "none.html", tmp_path)
    assert main(["run", PROBE, "--out", str(tmp_path / "runs"), "--strict"]) == 1  # a failing claim
    shown = check_in_browser(tmp_path / "runs" / PROBE, f"rnnlab: {PROBE}", tmp_path / "browser1")
    assert shown == 3  # no committed full run for a throwaway experiment: nothing else


@pytest.mark.usefixtures("probes")
def test_tour_report_loads_in_chromium(tmp_path: Path) -> None:
    if chromium() is None:
        open_in_browser(tmp_path / "none.html", tmp_path)
    main(["run", "tour", "--out", str(tmp_path / "runs")])
    out = tmp_path / "runs" / "tour"
    assert check_in_browser(out, "rnnlab: the lecture tour", tmp_path / "browser2") == 6
