"""The built documentation site in a real browser: headless Chromium (Debian's ``chromium``)
opens the home page and one tutorial from site/ (built by ``make docs``), takes a screenshot of
each and reads the DOM after scripts ran.

Checks: the page title, the theme's stylesheet applied (furo's sidebar is laid out), the maths
typeset by the bundled MathJax (no network), every image loaded, and a screenshot that is not
blank. Skips when Chromium is missing (as tests/test_report_browser.py does) or when site/ has
not been built; .ci/run runs it after ``make docs`` with RNNLAB_DOCS_SITE_REQUIRED=1, so there a
missing site fails. Screenshots are kept in docs/_build/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from test_report_browser import chromium

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "site"
SHOTS = REPO / "docs" / "_build" / "screenshots"
TUTORIAL = "tutorials/01-dynamic-systems.html"

PROBE = """<!doctype html><html><head><meta charset="utf-8"><title>probe</title></head>
<body><iframe id="page" src="{url}" width="1280" height="900"></iframe>
<script>
var frame = document.getElementById("page");
frame.addEventListener("load", function () {{
  setTimeout(function () {{
    var out = {{ok: false}};
    try {{
      var d = frame.contentDocument;
      out.title = d.title;
      out.images = Array.prototype.map.call(d.querySelectorAll("article img"), function (i) {{
        return {{src: i.getAttribute("src"), width: i.naturalWidth}};
      }});
      out.math = d.querySelectorAll("mjx-container").length;
      out.rawmath = d.querySelectorAll("div.math, span.math").length;
      var side = d.querySelector(".sidebar-drawer");
      out.sidebar = side ? side.getBoundingClientRect().width : -1;
      out.ok = true;
    }} catch (e) {{ out.error = String(e); }}
    var pre = document.createElement("pre");
    pre.id = "probe-result";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }}, 3000);
}});
</script></body></html>
"""


def _site() -> Path:
    if not (SITE / "index.html").exists():
        if os.environ.get("RNNLAB_DOCS_SITE_REQUIRED"):
            pytest.fail("site/index.html is missing: `make docs` did not build the site")
        pytest.skip("the site is not built (run `make docs`); the docs' browser check did not run")
    return SITE


def _chromium() -> str:
    exe = chromium()
    if exe is None:
        pytest.skip(
            "headless Chromium not found (apt-get install -y chromium, or set RNNLAB_CHROMIUM); "
            "the docs' browser check did not run"
        )
    return exe


def _run(exe: str, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={work / 'profile'}",
        "--allow-file-access-from-files",
        "--virtual-time-budget=15000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _inspect(exe: str, page: Path, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    probe = work / "probe.html"
    probe.write_text(PROBE.format(url=page.resolve().as_uri()), encoding="utf-8")
    proc = _run(exe, work, "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the probe page did not report (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
    text = m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    seen = json.loads(text)
    assert seen["ok"], f"could not read the page's DOM: {seen.get('error')}"
    return seen


def _screenshot(exe: str, page: Path, work: Path, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / name
    shot.unlink(missing_ok=True)
    proc = _run(exe, work, "--window-size=1280,900", f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), f"no screenshot (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
    return shot


def _not_blank(shot: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[0] >= 800 and pixels.shape[1] >= 1200, pixels.shape
    dark = (pixels.mean(axis=-1) < 0.5).mean()  # text, code, headings
    colours = len(np.unique((pixels * 15).round().reshape(-1, 3), axis=0))
    assert 0.005 < dark < 0.6, f"{shot.name}: {dark:.3f} of the pixels dark: blank or broken?"
    assert colours > 20, f"{shot.name}: {colours} colours: unstyled or blank"


@pytest.mark.parametrize(
    ("page", "title"),
    [("index.html", "rnnlab"), (TUTORIAL, "Dynamic systems and fixed points")],
)
def test_page_in_chromium(page: str, title: str, tmp_path: Path) -> None:
    site = _site()
    exe = _chromium()
    path = site / page
    assert path.exists(), f"{page} is not in the built site"
    seen = _inspect(exe, path, tmp_path / "dom")
    assert seen["title"].startswith(title), seen["title"]
    assert seen["sidebar"] > 100, "the theme's layout did not apply (no sidebar)"
    broken = [i["src"] for i in seen["images"] if not i["width"]]
    assert not broken, f"images that did not load: {broken}"
    if page == TUTORIAL:
        assert seen["images"], "the tutorial shows no figure"
        # MathJax typeset every formula: one container per formula, none left as TeX.
        assert seen["math"] >= seen["rawmath"] > 0, seen
    shot = _screenshot(exe, path, tmp_path / "shot", page.replace("/", "-") + ".png")
    _not_blank(shot)
