"""The drop-ins' own cost (issue 21): rnnlab.nn.LSTM/GRU/RNN against the layer they wrap,
Recurrent(cell) on the very same cell (so the same weights and the same engine kernel), and
against torch.nn, in one process, interleaved (rnnlab.bench's rotation), medians.

drop-in / layer is the price of torch's boundary (argument checks, the weight sync, layout);
it should stay at ~1.00. Run it on the commit before a change and after, on a quiet machine:

    .venv/bin/python benchmarks/bench_dropins.py                    # S1 S2, ~2 min
    .venv/bin/python benchmarks/bench_dropins.py --shapes S1 S2 S3 --repeats 21
    .venv/bin/python benchmarks/bench_dropins.py --tiny             # smoke run, seconds

Writes benchmarks/results/dropins.{json,md} (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import rnnlab
from rnnlab.timing import SHAPES, _interleaved, _Ours, _runs, _Torch, machine

HERE = Path(__file__).parent
CELLS = {
    "lstm": (torch.nn.LSTM, rnnlab.nn.LSTM, {}),
    "gru": (torch.nn.GRU, rnnlab.nn.GRU, {}),
    "rnn_tanh": (torch.nn.RNN, rnnlab.nn.RNN, {"nonlinearity": "tanh"}),
}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shapes", nargs="+", default=["S1", "S2"], choices=sorted(SHAPES))
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--tiny", action="store_true", help="T=5, B=2, I=3, H=4, 2 repeats")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    info = machine()
    records = []
    shapes = {"tiny": (5, 2, 3, 4)} if args.tiny else {s: SHAPES[s] for s in args.shapes}
    repeats = 2 if args.tiny else args.repeats
    for shape, (T, B, I, H) in shapes.items():
        for name in args.cells:
            t_cls, r_cls, kw = CELLS[name]
            torch.manual_seed(0)
            ref = t_cls(I, H, batch_first=True, **kw)
            dropin = r_cls(I, H, batch_first=True, **kw)
            dropin.load_state_dict(ref.state_dict())
            models = {
                "torch.nn": _Torch(ref),
                "drop-in": _Torch(dropin),
                "layer": _Ours(dropin._cells[0], reference=False),  # the same cell
            }
            x = torch.randn(B, T, I, requires_grad=True)
            w = torch.randn(B, T, H)
            for mode in ("forward", "train"):
                runs = _runs(models, x, w, mode)
                for f in runs.values():  # warm-up (kernel build/load, allocator)
                    f()
                ms = _interleaved(runs, repeats)
                rec = {
                    "shape": shape,
                    "cell": name,
                    "mode": mode,
                    **{f"{k}_ms": v for k, v in ms.items()},
                    "dropin_over_layer": ms["drop-in"] / ms["layer"],
                    "dropin_over_torch": ms["drop-in"] / ms["torch.nn"],
                    "repeats": repeats,
                }
                records.append(rec)
                print(
                    f"{shape} {name:8s} {mode:7s} drop-in {ms['drop-in']:8.2f} ms, layer "
                    f"{ms['layer']:8.2f} ({rec['dropin_over_layer']:.3f}x), torch.nn "
                    f"{ms['torch.nn']:8.2f} ({rec['dropin_over_torch']:.2f}x)",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "dropins-tiny" if args.tiny else "dropins"
    (args.out / f"{stem}.json").write_text(
        json.dumps({"machine": info, "records": records}, indent=1)
    )
    md = [
        f"# Drop-ins against their layer and torch.nn ({info['date']})",
        "",
        f"{info['cpu']}, {info['cores']} threads, torch {info['torch']}; medians of "
        f"{repeats} interleaved runs, batch-first, one layer.",
        "",
        "| shape | cell | mode | drop-in ms | layer ms | torch.nn ms | drop-in/layer | "
        "drop-in/torch.nn |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        md.append(
            f"| {r['shape']} | {r['cell']} | {r['mode']} | {r['drop-in_ms']:.2f} | "
            f"{r['layer_ms']:.2f} | {r['torch.nn_ms']:.2f} | {r['dropin_over_layer']:.3f} | "
            f"{r['dropin_over_torch']:.2f} |"
        )
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
