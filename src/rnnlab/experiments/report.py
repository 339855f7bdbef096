"""Static HTML reports of experiments: claims tables and figures, readable offline.

``write_report(out_dir, title, sections)`` writes ``out_dir/report.html``; each section is one
experiment with its claims (rows of ``claims.json``), its figures (PNG paths relative to
``out_dir``) and, when a committed full run exists under ``results/NAME/claims.json``, those
rows beside the quick ones.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:70rem;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{margin-bottom:.2rem} .sub{color:#555;margin-top:0}
section{border-top:1px solid #ddd;margin-top:2rem;padding-top:.5rem}
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{font-variant-numeric:tabular-nums}
.pass{background:#e5f6e8} .fail{background:#fde4e4} .info{background:#eef2fb}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:.6rem;font-size:.8rem}
.figs{display:flex;flex-wrap:wrap;gap:1rem} .figs figure{margin:0;max-width:31rem}
.figs img{max-width:100%;border:1px solid #eee} figcaption{font-size:.85rem;color:#555}
nav a{margin-right:.8rem}
"""


@dataclass
class Section:
    name: str
    description: str
    claims: list[dict[str, Any]]
    figures: list[str] = field(default_factory=list)
    full_claims: list[dict[str, Any]] | None = None
    seconds: float = 0.0
    error: str | None = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(u) for u in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(u)}" for k, u in v.items())
    return str(v)


def _claims_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "<table><tr><th>claim</th><th>measured</th><th>expected</th><th>source</th>"
        "<th>status</th><th>s</th></tr>"
    ]
    for r in rows:
        st = html.escape(str(r.get("status", "info")))
        out.append(
            f'<tr class="{st}"><td>{html.escape(str(r.get("claim", "")))}</td>'
            f'<td class="num">{html.escape(_fmt(r.get("measured")))}</td>'
            f'<td class="num">{html.escape(_fmt(r.get("expected")))}</td>'
            f"<td>{html.escape(str(r.get('source', '')))}</td>"
            f'<td><span class="badge {st}">{st}</span></td>'
            f'<td class="num">{float(r.get("seconds", 0.0)):.1f}</td></tr>'
        )
    out.append("</table>")
    return "\n".join(out)


def write_report(out_dir: Path, title: str, sections: list[Section]) -> Path:
    """Write ``out_dir/report.html`` and return its path."""
    n = {
        s: sum(r.get("status") == s for sec in sections for r in sec.claims)
        for s in ("pass", "fail", "info")
    }
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='sub'>{len(sections)} experiments · {n['pass']} claims pass · "
        f"{n['fail']} fail · {n['info']} informational. Seeds and configurations are in each "
        "experiment's folder beside this page.</p>",
    ]
    if len(sections) > 1:
        parts.append(
            "<nav>"
            + "".join(
                f"<a href='#{html.escape(s.name)}'>{html.escape(s.name)}</a>" for s in sections
            )
            + "</nav>"
        )
    for sec in sections:
        parts.append(f"<section id='{html.escape(sec.name)}'><h2>{html.escape(sec.name)}</h2>")
        parts.append(f"<p>{html.escape(sec.description)} <small>({sec.seconds:.0f} s)</small></p>")
        if sec.error:
            parts.append(
                f"<p class='fail'>The experiment failed: <code>{html.escape(sec.error)}</code></p>"
            )
        parts.append("<h3>Quick run (this machine)</h3>" + _claims_table(sec.claims))
        if sec.full_claims:
            parts.append(
                "<h3>Full run (committed under results/)</h3>" + _claims_table(sec.full_claims)
            )
        if sec.figures:
            parts.append("<div class='figs'>")
            for f in sec.figures:
                cap = html.escape(Path(f).stem.replace("_", " "))
                parts.append(
                    f"<figure><img src='{html.escape(f)}' alt='{cap}'>"
                    f"<figcaption>{cap}</figcaption></figure>"
                )
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</body></html>")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def load_full_claims(name: str, results_root: Path | None = None) -> list[dict[str, Any]] | None:
    """Rows of a committed full run, ``results/NAME/claims.json``, if present."""
    root = results_root or Path(__file__).resolve().parents[3] / "results"
    p = root / name / "claims.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, list) else None
