"""Where the engine's time goes, for the targets of issue 7 that stay out of reach.

Two parts, both written to benchmarks/results/profile.{json,md}:

1. Teacher-forced Jordan (T=200, B=32, I=H=O=128, training). The lecture's parallel path does
   the same FLOPs as the sequential one, in three large GEMMs instead of 3·T small ones. On a
   CPU both are bound by matrix-product throughput, so the speed-up of the parallel path cannot
   exceed t_sequential / t_gemm, where t_gemm is the forward and backward of those three large
   GEMMs alone (no activation, no bookkeeping): the floor of any parallel implementation.
2. A sampling profile (Linux ``perf``, when installed) of a steady-state training or inference
   loop per case, attached after warm-up, with the samples grouped: matrix products (MKL kernels and
   their packing), OpenMP waiting (libgomp: threads spinning at barriers), rnnlab's compiled
   recurrences, other torch ops, Python, the OS kernel.

    .venv/bin/python benchmarks/profile_engine.py            # both parts, ~3 min
    .venv/bin/python benchmarks/profile_engine.py --no-perf  # part 1 only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from rnnlab import JordanCell, Recurrent, TeacherForcing
from rnnlab.bench import machine

HERE = Path(__file__).parent

# (name, cell constructor source, shape (T, B, I, H), mode) profiled with perf
S1, S2, S3 = (100, 32, 128, 256), (500, 8, 64, 128), (50, 128, 256, 512)
CASES = [
    ("lstm_cifg S2 train", "LSTMCell(I, H, variant='CIFG')", S2, "train"),
    ("lstm_peephole S2 train", "LSTMCell(I, H, peephole=True)", S2, "train"),
    ("torch.nn.LSTM S2 train", "torch.nn.LSTM(I, H, batch_first=True)", S2, "train"),
    ("lstm_cifg S1 forward", "LSTMCell(I, H, variant='CIFG')", S1, "forward"),
    ("torch.nn.LSTM S1 forward", "torch.nn.LSTM(I, H, batch_first=True)", S1, "forward"),
    ("lstm_cifg S3 train", "LSTMCell(I, H, variant='CIFG')", S3, "train"),
    ("torch.nn.LSTM S3 train", "torch.nn.LSTM(I, H, batch_first=True)", S3, "train"),
]

GROUPS = [  # (group, predicate on (dso, symbol)), first match wins
    ("matrix products (MKL)", lambda d, s: s.startswith("mkl_blas") or "gemm" in s.lower()),
    ("OpenMP waiting (libgomp)", lambda d, s: "libgomp" in d),
    ("rnnlab recurrences", lambda d, s: "rnnlab_engine" in d),
    ("oneDNN JIT code", lambda d, s: d in ("[unknown]", "") or d.startswith("[JIT]")),
    ("other torch ops", lambda d, s: "libtorch" in d or "libc10" in d),
    ("Python", lambda d, s: "python" in d.lower()),
    ("OS kernel", lambda d, s: "kernel" in d),
]


def _median_ms(f, repeats: int) -> float:
    for _ in range(2):
        f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def teacher_forced_bound(repeats: int) -> dict:
    T, B, n = 200, 32, 128
    torch.manual_seed(0)
    cell = JordanCell(n, n, n)
    layer = Recurrent(cell)
    x = torch.randn(B, T, n, requires_grad=True)
    r = torch.randn(B, T, n)
    w = torch.randn(B, T, n)
    a = torch.randn(B * T, n, requires_grad=True)
    wts = [torch.randn(n, n, requires_grad=True) for _ in range(3)]

    def sequential() -> None:
        (layer(x)[0] * w).sum().backward()

    def parallel() -> None:
        (layer(x, feedback=TeacherForcing(), reference=r)[0] * w).sum().backward()

    def gemms() -> None:  # x W_ihᵀ + r W_hhᵀ, then h W_hoᵀ: the parallel path's products alone
        h = torch.addmm(F.linear(a, wts[0]), a, wts[1].t())
        F.linear(h, wts[2]).sum().backward()

    fns = {"sequential": sequential, "parallel": parallel, "gemm_floor": gemms}
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeats):  # interleaved
        for k, f in fns.items():
            ts[k].append(_median_ms(f, 1))
    med = {k: statistics.median(v) for k, v in ts.items()}
    flop = 6.0 * T * B * 3 * n * n
    out = {
        "shape": "T200_B32_I128_H128_O128",
        "mode": "train",
        "flop": flop,
        **{f"{k}_ms": v for k, v in med.items()},
        **{f"{k}_gflops": flop / v / 1e6 for k, v in med.items()},
        "speedup_parallel": med["sequential"] / med["parallel"],
        "speedup_ceiling": med["sequential"] / med["gemm_floor"],
    }
    print(
        f"teacher-forced Jordan: sequential {med['sequential']:.1f} ms, parallel "
        f"{med['parallel']:.1f} ms ({out['speedup_parallel']:.2f}x), the same FLOPs as three "
        f"large GEMMs {med['gemm_floor']:.1f} ms: ceiling {out['speedup_ceiling']:.2f}x (target 5x)"
    )
    return out


_CHILD = """
import sys, time, torch
from rnnlab import LSTMCell, Recurrent
T, B, I, H = {shape}
m = {ctor}
layer = m if isinstance(m, torch.nn.Module) and not hasattr(m, 'state_sizes') else Recurrent(m)
x = torch.randn(B, T, I, requires_grad={train})
def go():
    if {train}:
        layer(x)[0].sum().backward()
    else:
        with torch.no_grad():
            layer(x)
for _ in range(5):
    go()
print('ready', flush=True)
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < {seconds}:
    go()
    n += 1
print('ms', 1e3 * (time.perf_counter() - t0) / n, flush=True)
"""


def perf_profile(name: str, ctor: str, shape: tuple, mode: str, seconds: float) -> dict | None:
    if shutil.which("perf") is None:
        print(f"{name}: perf not installed, skipped")
        return None
    code = _CHILD.format(shape=shape, ctor=ctor, seconds=seconds + 2, train=mode == "train")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp
        )
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            child.kill()
            raise RuntimeError(f"{name}: the profiled process did not start")
        rec = subprocess.run(
            [
                "perf",
                "record",
                "-F",
                "999",
                "-o",
                data,
                "-p",
                str(child.pid),
                "--",
                "sleep",
                str(seconds),
            ],
            capture_output=True,
            text=True,
        )
        ms = float(child.stdout.readline().split()[1])
        child.wait()
        if rec.returncode != 0:
            print(f"{name}: perf record failed: {rec.stderr.strip()[-200:]}")
            return None
        rep = subprocess.run(
            [
                "perf",
                "report",
                "-i",
                data,
                "--stdio",
                "--sort",
                "dso,sym",
                "--no-children",
                "-q",
                "--percent-limit",
                "0",
            ],
            capture_output=True,
            text=True,
        )
    groups: dict[str, float] = defaultdict(float)
    top = []
    for line in rep.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or not parts[0].endswith("%"):
            continue
        pct, dso, sym = float(parts[0][:-1]), parts[1], parts[3].strip()
        group = next((g for g, f in GROUPS if f(dso, sym)), "other")
        groups[group] += pct
        if len(top) < 8:
            top.append({"percent": pct, "dso": dso, "symbol": sym[:90]})
    print(
        f"{name}: {ms:.1f} ms/iteration; "
        + ", ".join(f"{g} {p:.0f}%" for g, p in sorted(groups.items(), key=lambda kv: -kv[1]))
    )
    return {
        "case": name,
        "cell": ctor,
        "shape": list(shape),
        "ms_per_iteration": ms,
        "groups": dict(groups),
        "top": top,
    }


def write_markdown(path: Path, info: dict, bound: dict, profiles: list[dict]) -> None:
    lines = [
        f"# Engine profile ({info.get('date', '')})",
        "",
        f"{info.get('cpu', '')}, {info.get('cores', '')} threads, torch {info.get('torch', '')}.",
        "Written by benchmarks/profile_engine.py.",
        "",
        "## Teacher-forced Jordan, T=200, B=32, I=H=O=128, training",
        "",
        "| path | ms | GFLOP/s |",
        "|---|---|---|",
    ]
    for k, label in [
        ("sequential", "compiled sequential (free running)"),
        ("parallel", "teacher-forced parallel"),
        ("gemm_floor", "its three large GEMMs alone (floor)"),
    ]:
        lines.append(f"| {label} | {bound[k + '_ms']:.1f} | {bound[k + '_gflops']:.0f} |")
    lines += [
        "",
        f"Speed-up of the parallel path {bound['speedup_parallel']:.2f}x; the ceiling of any "
        f"parallel path on this CPU (sequential / GEMM floor) {bound['speedup_ceiling']:.2f}x; "
        "the issue's target 5x.",
        "",
    ]
    if profiles:
        names = [g for g, _ in GROUPS] + ["other"]
        lines += [
            "## Where training time goes (perf samples, % of the process)",
            "",
            "| case | ms/iter | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for p in profiles:
            lines.append(
                f"| {p['case']} | {p['ms_per_iteration']:.1f} | "
                + " | ".join(f"{p['groups'].get(g, 0.0):.0f}" for g in names)
                + " |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--seconds", type=float, default=12.0, help="perf sampling time per case")
    p.add_argument("--no-perf", action="store_true")
    args = p.parse_args()
    info = machine()
    bound = teacher_forced_bound(args.repeats)
    profiles = []
    if not args.no_perf:
        for name, ctor, shape, mode in CASES:
            r = perf_profile(name, ctor, shape, mode, args.seconds)
            if r is not None:
                profiles.append(r)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    record = {"machine": info, "teacher_forced": bound, "profiles": profiles}
    (out / "profile.json").write_text(json.dumps(record, indent=1))
    write_markdown(out / "profile.md", info, bound, profiles)


if __name__ == "__main__":
    main()
