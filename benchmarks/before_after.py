"""Tabulate `rnnlab bench` runs of two source trees, taken alternately (before, after, before,
after): each cell's time as a ratio to the yardstick timed in the same rounds of the same run
(torch.nn where it has the cell, torch.nn.LSTM of the same shape otherwise), so that the two
trees are compared through a reference that drifts with the machine.

    python benchmarks/before_after.py BEFORE.json [BEFORE2.json ...] -- AFTER.json [AFTER2.json ...]

prints a Markdown table: the median ratio over the runs of each tree, and after / before.
"""

from __future__ import annotations

import json
import statistics
import sys


def ratios(path: str) -> dict[tuple[str, str, str], float]:
    records = json.load(open(path))["records"]
    by: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in records:
        by.setdefault((r["cell"], r["shape"], r["mode"]), {})[r["impl"]] = r["median_ms"]
    out = {}
    for key, impls in by.items():
        yard = impls.get("torch") or impls.get("torch_lstm")
        if yard and "rnnlab" in impls:
            out[key] = impls["rnnlab"] / yard
    return out


def main(argv: list[str]) -> None:
    split = argv.index("--")
    before = [ratios(p) for p in argv[:split]]
    after = [ratios(p) for p in argv[split + 1 :]]
    keys = [k for k in before[0] if all(k in r for r in before + after)]
    print("| cell | shape | mode | yardstick | before | after | after / before |")
    print("|---|---|---|---|---|---|---|")
    changes = []
    for key in keys:
        b = statistics.median(r[key] for r in before)
        a = statistics.median(r[key] for r in after)
        yard = "torch.nn" if key[0] in ("lstm", "gru", "rnn_tanh", "rnn_relu") else "torch.nn.LSTM"
        changes.append(a / b)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {yard} | {b:.2f} | {a:.2f} | {a / b:.2f} |")
    print(
        f"\nmedian after / before over {len(keys)} rows: {statistics.median(changes):.2f} "
        f"(range {min(changes):.2f}-{max(changes):.2f})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
