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
nav a{margin-right:.8rem} .scroll{overflow-x:auto;max-width:100%}
td{overflow-wrap:anywhere} td:first-child{width:36%}
td.nw{white-space:nowrap;overflow-wrap:normal} .figs a{display:block}
.lecture{color:#555;font-size:.9rem}
"""

# Where each experiment comes from in the lecture (/work/shared/lecture: "section › slide").
LECTURE_SECTIONS: dict[str, str] = {
    "maps": "Dynamic systems › Examples about stability",
    "vanishing": "Simple RNNs › Challenges (vanishing and exploding gradients)",
    "xor": "Simple RNNs › Elman network",
    "cases": "Simple RNNs › Unfold the Elman network (the four cases)",
    "forcing": "Simple RNNs › Teacher forcing",
    "bidirectional": "Simple RNNs › Bidirectional RNN",
    "deep": "Simple RNNs › Deep RNNs",
    "memory": "Gated RNNs › LSTM and GRU (long-term dependencies)",
    "flipflop": "Dynamic systems › Properties of dynamic systems (fixed points, stability)",
    "henon": "Dynamic systems › Modeling dynamic systems with RNN",
    "rcnn": "Recurrent CNN",
    "speed": "not in the lecture: the engine that runs its systems",
}

# What each figure shows, by file name; a figure not listed here gets a caption naming its file.
FIGURE_CAPTIONS: dict[str, str] = {
    "map_orbits.png": "Orbits h(t) of h(t+1) = 0.8 h(t) + 1 from several starts (all reach "
    "h* = 5) and of 1.4 h(t) + 1 (they leave h* = -2.5).",
    "cobweb_stable.png": "Cobweb plot of h(t+1) = 0.8 h(t) + 1 from below: the steps close in on "
    "the fixed point h* = 5 where the map crosses the diagonal.",
    "cobweb_stable_from_above.png": "The same map from above h* = 5: it converges from both sides.",
    "cobweb_unstable.png": "Cobweb plot of h(t+1) = 1.4 h(t) + 1: the steps move away from "
    "h* = -2.5.",
    "vanishing_exploding.png": "‖h(t)‖ and ‖∂L/∂h(t)‖ against t (log scale) for spectral radii "
    "below and above 1, beside the ρ(U)^t lines they follow.",
    "xor_error_by_phase.png": "Test error of the next-bit prediction at each position of the "
    "triple: low only where the next bit is a XOR b (the predictable one).",
    "unfolding_cases_loss.png": "Training loss of the four unfolding cases of the lecture.",
    "forcing_training.png": "Training loss of each feedback schedule (teacher forcing, free "
    "running, alternating, mixed, scheduled sampling).",
    "forcing_free_running_error.png": "Free-running generation error against the forecast "
    "horizon for each schedule.",
    "bidirectional_loss.png": "Validation loss on the 'bank' task: bidirectional against causal "
    "models and the best causal baseline.",
    "adding_problem.png": "Adding problem: validation MSE of Elman, LSTM and GRU during training "
    "(1/6 is the MSE of always answering the mean).",
    "flipflop_loss.png": "3-bit flip-flop: training MSE of each network (log scale).",
    "flipflop_fixed_points_elman.png": "Elman flip-flop network: its states on test trials and "
    "the fixed points found from them, in the first two principal components, coloured by "
    "stability.",
    "flipflop_fixed_points_gru.png": "GRU flip-flop network: its states on test trials and the "
    "fixed points found from them (PCA), coloured by stability.",
    "flipflop_eigenvalues_elman.png": "Elman flip-flop network: Jacobian eigenvalues at the "
    "attractors and edge saddles against the unit circle.",
    "flipflop_eigenvalues_gru.png": "GRU flip-flop network: Jacobian eigenvalues at the "
    "attractors and edge saddles against the unit circle.",
    "henon_attractor.png": "The Hénon attractor (grey) and the trained GRU's closed loop "
    "(colour), with the true and the learned fixed points.",
    "henon_lyapunov.png": "Running estimate of the largest Lyapunov exponent of the learned "
    "closed loop and of the true Hénon map, against the accumulated steps.",
    "curves.png": "Training loss and test accuracy of RCNN, FF, WCNN and rCNN per epoch.",
    "speed_ratios.png": "Time per forward+backward relative to torch.nn (lower is faster), "
    "median and spread over the repeats.",
}


def _caption(path: str) -> str:
    name = Path(path).name
    return FIGURE_CAPTIONS.get(name, f"Figure {name} (no caption registered).")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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


def _claims_table(
    rows: list[dict[str, Any]], section: str = "", claims_href: str = "claims.json"
) -> str:
    out = [
        "<div class='scroll'><table><tr><th>claim</th><th>measured</th><th>expected</th>"
        "<th>source</th><th>status</th><th>s</th><th>#</th></tr>"
    ]
    for k, r in enumerate(rows):
        st = html.escape(str(r.get("status", "info")))
        rid = html.escape(f"{section}-{k}" if section else f"claim-{k}")
        link = (
            f"<a href='#{rid}' title='link to this claim'>{k}</a> "
            f"<a href='{html.escape(claims_href)}' title='row {k} of claims.json'>json</a>"
        )
        out.append(
            f'<tr class="{st}" id="{rid}"><td>{html.escape(str(r.get("claim", "")))}</td>'
            f'<td class="num">{html.escape(_fmt(r.get("measured")))}</td>'
            f'<td class="num">{html.escape(_fmt(r.get("expected")))}</td>'
            f"<td>{html.escape(str(r.get('source', '')))}</td>"
            f'<td><span class="badge {st}">{st}</span></td>'
            f'<td class="num nw">{float(r.get("seconds", 0.0)):.1f}</td>'
            f"<td class='num nw'>{link}</td></tr>"
        )
    out.append("</table></div>")
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
        f"<p class='sub'>{_plural(len(sections), 'experiment')} · "
        f"{_plural(n['pass'], 'claim')} pass · {n['fail']} fail · {n['info']} informational. "
        "Seeds and configurations are in each experiment's folder beside this page; each "
        "claim's # links to itself and to its row of claims.json.</p>",
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
        name = html.escape(sec.name)
        nested = (out_dir / sec.name / "claims.json").is_file()
        href = f"{sec.name}/claims.json" if nested else "claims.json"
        parts.append(f"<section id='{name}'><h2><a href='#{name}'>{name}</a></h2>")
        parts.append(f"<p>{html.escape(sec.description)} <small>({sec.seconds:.0f} s)</small></p>")
        lecture = LECTURE_SECTIONS.get(sec.name)
        if lecture:
            parts.append(f"<p class='lecture'>Lecture: {html.escape(lecture)}</p>")
        if sec.error:
            parts.append(
                f"<p class='fail'>The experiment failed: <code>{html.escape(sec.error)}</code></p>"
            )
        parts.append(
            "<h3>Quick run (this machine)</h3>" + _claims_table(sec.claims, sec.name, href)
        )
        if sec.full_claims:
            prov = full_run_provenance(sec.name, sec.full_claims)
            parts.append(
                f"<h3>Full run (committed under results/{name}/)</h3>"
                f"<p class='lecture'>{html.escape(prov['text'])}</p>"
                + _claims_table(sec.full_claims, f"{sec.name}-full", prov["href"])
            )
        if sec.figures:
            parts.append("<div class='figs'>")
            for f in sec.figures:
                src, cap = html.escape(f), html.escape(_caption(f))
                parts.append(
                    f"<figure><a href='{src}' target='_blank' title='open at full size'>"
                    f"<img src='{src}' alt='{cap}'></a>"
                    f"<figcaption>{cap}</figcaption></figure>"
                )
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</body></html>")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


_RESULTS = Path(__file__).resolve().parents[3] / "results"
# results/README.md: where and when the committed full runs were made (a results/NAME/config.json
# may say otherwise with "machine", "date" and "preset" keys).
DEFAULT_MACHINE = "AMD EPYC, 2 cores, torch 2.13.0 CPU"
DEFAULT_DATE = "2026-11-27"


def full_run_provenance(
    name: str, rows: list[dict[str, Any]], results_root: Path | None = None
) -> dict[str, str]:
    """Date, machine and cost of a committed full run, and a link to its claims.json."""
    root = results_root or _RESULTS
    cfg: dict[str, Any] = {}
    try:
        cfg = json.loads((root / name / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    secs = [float(r.get("seconds", 0.0) or 0.0) for r in rows]
    # the wall time when the run recorded it; else the rows' seconds (some experiments put the
    # whole run's time on every row: then it counts once)
    cost = float(
        cfg.get("wall_seconds") or (max(secs) if len(set(secs)) == 1 else sum(secs)) or 0.0
    )
    preset = cfg.get("preset") or ("--full" if cfg.get("full") else "the default preset")
    text = (
        f"`rnnlab run {name}` with {preset}, {cfg.get('date', DEFAULT_DATE)} on "
        f"{cfg.get('machine', DEFAULT_MACHINE)}; cost {cost / 60:.1f} min."
    )
    path = root / name / "claims.json"
    return {"text": text, "href": path.as_uri() if path.is_file() else "#"}


def load_full_claims(name: str, results_root: Path | None = None) -> list[dict[str, Any]] | None:
    """Rows of a committed full run, ``results/NAME/claims.json``, if present."""
    root = results_root or _RESULTS
    p = root / name / "claims.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, list) else None
