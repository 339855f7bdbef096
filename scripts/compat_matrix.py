"""The README's compatibility matrix (issue 15): the issue's eight layers, rnnlab with the engine
on and with RNNLAB_ENGINE=0, and torch.nn's own four modules, under the ten transforms, each
cell checked against the same model's eager float64 answer (the reference loop for rnnlab):
float64 to 1e-10 (compile, export, vmap, jacrev, func.grad, double backward), ONNX in float32 to
1e-5 in onnxruntime at another B and T, bf16 to 5e-2 and fp16 to 2e-2 of float64.

    .venv/bin/python scripts/compat_matrix.py            # ~10 min (compile is the slow column)
    .venv/bin/python scripts/compat_matrix.py --transforms vmap bf16   # a subset

Prints the markdown table (and the failures' first error line) for README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

ROWS = {
    "rnnlab": [
        ("dropin", "nn.RNN1"), ("dropin", "nn.GRU1"), ("dropin", "nn.LSTM1"),
        ("dropin", "nn.GRU"), ("recurrent", "elman_relu_out"), ("recurrent", "jordan_sigmoid"),
        ("recurrent", "gru_before"), ("recurrent", "lstm_v"),
    ],
    "torch.nn": [
        ("torch", "torch.nn.RNN"), ("torch", "torch.nn.GRU"), ("torch", "torch.nn.LSTM"),
        ("torch", "torch.nn.GRU(2, bi)"),
    ],
}  # fmt: skip


def _one(kind: str, name: str, transform: str) -> str:
    """'ok' or the first line of the error, for one cell of the matrix."""
    import numpy as np
    import torch

    import compat_cases as cc
    import rnnlab

    cc.DROPINS.update(
        {
            "nn.RNN1": lambda: rnnlab.nn.RNN(cc.I, 5, batch_first=True),
            "nn.GRU1": lambda: rnnlab.nn.GRU(cc.I, 5, batch_first=True),
            "nn.LSTM1": lambda: rnnlab.nn.LSTM(cc.I, 5, batch_first=True),
        }
    )
    model = cc.make(kind, name)
    if transform not in ("compile", "export", "onnx"):
        return "ok" if cc.check(model, transform) else "wrong result"
    x, lengths = cc.inputs(2, 3)
    x2, lengths2 = cc.inputs(3, 5, seed=4)
    with torch.no_grad(), cc.reference():
        want = model(x2, lengths2)
    if transform == "compile":
        got = torch.compile(model, fullgraph=True, dynamic=True)(x2, lengths2)
        ok = all(torch.allclose(a, b, atol=1e-10) for a, b in zip(got, want))
    elif transform == "export":
        B, T = torch.export.Dim("B", min=2), torch.export.Dim("T", min=2)
        ep = torch.export.export(model, (x, lengths), dynamic_shapes=({0: B, 1: T}, {0: B}))
        got = ep.module()(x2, lengths2)
        ok = all(torch.allclose(a, b, atol=1e-10) for a, b in zip(got, want))
    else:
        import onnxruntime as ort

        m32 = model.float()
        if kind == "torch":
            B, T = torch.export.Dim("B", min=2), torch.export.Dim("T", min=2)
            prog = torch.onnx.export(
                m32, (x.float(), lengths), dynamo=True,
                dynamic_shapes=({0: B, 1: T}, {0: B}),
            )  # fmt: skip
        else:
            prog = rnnlab.export.to_onnx(m32, (x.float(), lengths))
        sess = ort.InferenceSession(prog.model_proto.SerializeToString())
        feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (x2.float(), lengths2))}
        got = sess.run(None, feeds)
        ok = len(got) == len(want) and all(
            np.abs(a - b.numpy()).max() <= 1e-5 for a, b in zip(got, want)
        )
    return "ok" if ok else "wrong result"


def main() -> None:
    from compat_cases import TRANSFORMS

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--transforms", nargs="+", default=list(TRANSFORMS), choices=TRANSFORMS)
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # kind name transform (a child)
    a = p.parse_args()
    if a.one:
        try:
            print(_one(*a.one))
        except Exception as e:  # noqa: BLE001 - any failure is a cell of the matrix
            print(f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}")
        return
    table = {}
    failures = []
    configs = [("rnnlab, engine on", "rnnlab", "1"), ("rnnlab, RNNLAB_ENGINE=0", "rnnlab", "0"),
               ("torch.nn's own modules", "torch.nn", "1")]  # fmt: skip
    for label, group, engine in configs:
        env = {**os.environ, "RNNLAB_ENGINE": engine, "PYTHONPATH": str(ROOT / "src")}
        for t in a.transforms:
            n_ok = 0
            for kind, name in ROWS[group]:
                # one process per cell: a crash or a poisoned cache stays in its cell
                out = subprocess.run(
                    [sys.executable, __file__, "--one", kind, name, t],
                    capture_output=True, text=True, env=env, cwd=ROOT,
                )  # fmt: skip
                res = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
                n_ok += res == "ok"
                if res != "ok":
                    failures.append(f"{label} / {name} / {t}: {res}")
            table[(label, t)] = f"{n_ok}/{len(ROWS[group])}"
            print(label, t, table[(label, t)], flush=True)
    head = "| | " + " | ".join(a.transforms) + " |"
    lines = [head, "|---" * (len(a.transforms) + 1) + "|"]
    for label, _, _ in configs:
        lines.append(f"| {label} | " + " | ".join(table[(label, t)] for t in a.transforms) + " |")
    print("\n".join(lines))
    print("\nfailures:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
