"""``rnnlab generate``: free-running generation from a run's checkpoint (text, series, state
feedback, sequence to sequence). Printed as before, and written as ``generated.csv`` (one row
per sequence and step), ``generated.json`` (the sequences and what produced them) and
``generated.png`` (with matplotlib) into the run directory or ``--out``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any


def _fail(cmd: str, err: BaseException) -> int:
    print(f"rnnlab {cmd}: error: {err}", file=sys.stderr)
    return 2


def _add_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory or a checkpoint file")
    p.add_argument(
        "--which",
        choices=("latest", "best"),
        default="best",
        help="which checkpoint of a run directory (best falls back to latest)",
    )
    p.add_argument("--steps", type=int, default=200, help="outputs to generate")
    p.add_argument(
        "--prime",
        default=None,
        help="text models: the text read first (default: a newline, or the first "
        "character of the vocabulary)",
    )
    p.add_argument(
        "--prime-steps",
        type=int,
        default=10,
        help="real-valued models: validation inputs read first",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="token models: sample from softmax(y / temperature); 0 = argmax",
    )
    p.add_argument("--num", type=int, default=1, help="sequences to generate")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for generated.csv, generated.json and generated.png (default: the run "
        "directory)",
    )


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from .training.config import ConfigError
    from .training.trainer import load_run, trainer_from_checkpoint

    if args.steps < 1 or args.num < 1 or args.prime_steps < 1:
        return _fail(
            "generate",
            ValueError(
                f"--steps, --num, --prime-steps: expected positive ints, got {args.steps}, "
                f"{args.num}, {args.prime_steps}"
            ),
        )
    if not args.temperature >= 0 or args.temperature == float("inf"):
        return _fail(
            "generate",
            ValueError(
                f"--temperature: expected a finite number >= 0 (0 = argmax), got {args.temperature}"
            ),
        )
    try:
        model, meta = load_run(args.run, which=args.which, device=args.device)
        g = torch.Generator().manual_seed(args.seed)
        sample = args.temperature > 0
        vocab = (meta.get("task") or {}).get("vocab")
        if meta.get("user_model"):
            raise ValueError(
                f"model: generation feeds outputs back, but the run's model "
                f"({meta['config']['model']['factory']}, a model of your own) declares no output "
                "feedback; use rnnlab eval"
            )
        if model.feedback == "none":
            raise ValueError(
                "model: generation feeds outputs back, but this model has no output feedback "
                "(model.feedback 'none'); use rnnlab eval"
            )
        if vocab is not None and model.feedback == "input":  # text: no data file needed
            prime = args.prime if args.prime is not None else ("\n" if "\n" in vocab else vocab[0])
            bad = sorted({ch for ch in prime if ch not in vocab})
            if bad:
                raise ValueError(f"--prime: expected characters of the vocabulary, got {bad!r}")
            ids = torch.tensor([[vocab.index(ch) for ch in prime]] * args.num)
            x = torch.nn.functional.one_hot(ids, len(vocab)).float().to(args.device)
            out = model.generate(
                args.steps, prime=x, sample=sample, temperature=args.temperature, generator=g
            )
            assert out.tokens is not None
            seqs = []
            for row in out.tokens.tolist():
                print(prime + "".join(vocab[i] for i in row))
                print("-" * 40)
                seqs.append({"prime": prime, "tokens": row, "text": "".join(vocab[i] for i in row)})
            return _written(args, "text", seqs)
        t = trainer_from_checkpoint(args.run, which=args.which, device=args.device)
        n = args.num
        if n > len(t.task.val):
            raise ValueError(
                f"--num: expected at most the {len(t.task.val)} validation sequences, got {n}"
            )
        p = t._prepare(t.task.batch("val", torch.arange(n)))
        available = p["x"].shape[1]
        primed = not (t.model.feedback == "state" or t.model.seq2seq)
        if primed and args.prime_steps > available:
            raise ValueError(
                f"--prime-steps: expected at most the {available} steps of a validation "
                f"sequence, got {args.prime_steps}"
            )
    except (ConfigError, ValueError, TypeError, FileNotFoundError, ImportError) as err:
        return _fail("generate", err)
    dev = t.device
    if t.model.feedback == "state":
        with torch.no_grad():
            x = p["x"].to(dev)
            fm = torch.zeros(x.shape[:2], dtype=torch.bool, device=dev)
            y = t.model(x, feed_mask=fm, reference=p["reference"].to(dev)).output
        print("# free-running outputs on validation inputs: t, output..., reference...")
        seqs = []
        for b in range(n):
            K = min(args.steps, y.shape[1])
            for k in range(K):
                vals = y[b, k].tolist() + p["target"][b, k].tolist()
                print(f"{k}," + ",".join(f"{v:.5g}" for v in vals))
            seqs.append({"values": y[b, :K].tolist(), "reference": p["target"][b, :K].tolist()})
        return _written(args, "free running (state feedback)", seqs)
    if t.model.seq2seq:
        out = t.model.generate(
            args.steps,
            source=p["source"].to(dev),
            sample=sample,
            temperature=args.temperature,
            generator=g,
        )
        seqs = []
        for b in range(n):
            src = p["source"][b].argmax(-1).tolist()
            L = int(p["lengths"][b]) if p["lengths"] is not None else len(src)
            print(f"source    {src[:L]}")
            print(f"target    {p['target'][b][:L].tolist()}")
            assert out.tokens is not None
            print(f"generated {out.tokens[b][: max(L, 1)].tolist()}")
            seqs.append(
                {
                    "source": src[:L],
                    "reference": p["target"][b][:L].tolist(),
                    "tokens": out.tokens[b][: max(L, 1)].tolist(),
                }
            )
        return _written(args, "sequence to sequence", seqs)
    x = p["x"][:, : args.prime_steps].to(dev)
    out = t.model.generate(
        args.steps, prime=x, sample=sample, temperature=args.temperature, generator=g
    )
    if out.tokens is not None:
        for row in out.tokens.tolist():
            print(" ".join(map(str, row)))
        return _written(args, "tokens", [{"tokens": row} for row in out.tokens.tolist()])
    print(
        f"# {args.prime_steps} validation inputs read, then {args.steps} free-running "
        "outputs: t, value..."
    )
    seqs = []
    for b in range(n):
        for k in range(args.steps):
            print(f"{k}," + ",".join(f"{v:.5g}" for v in out.values[b, k].tolist()))
        seqs.append({"prime": x[b].tolist(), "values": out.values[b].tolist()})
    return _written(args, "free running (input feedback)", seqs)


def _out_folder(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    p = Path(args.run)
    if p.is_dir():
        return p
    return p.parent.parent if p.parent.name == "checkpoints" else p.parent


def _written(args: argparse.Namespace, kind: str, seqs: list[dict[str, Any]]) -> int:
    """Write generated.csv, .json and .png; a failed write is an error (exit 1)."""
    folder = _out_folder(args)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths = write_generated(folder, kind, seqs, vars(args))
    except OSError as err:
        from ._files import describe_os_error

        print(f"rnnlab generate: error: could not write {describe_os_error(err)}", file=sys.stderr)
        return 1
    print(f"rnnlab generate: wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def _series(seq: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(part, per-step values) of a sequence: each step a list of numbers."""
    out: list[tuple[str, list[Any]]] = []
    for part in ("source", "prime", "reference", "values", "tokens"):
        if part in seq and not isinstance(seq[part], str):
            out.append((part, [v if isinstance(v, list) else [v] for v in seq[part]]))
    return out


def write_generated(
    folder: Path, kind: str, seqs: list[dict[str, Any]], args: dict[str, Any]
) -> list[Path]:
    """generated.csv (sequence, part, t, value_0...), generated.json and generated.png."""
    from ._files import atomic_write_text

    rows = []
    width = 1
    for i, seq in enumerate(seqs):
        for part, steps in _series(seq):
            for t, vals in enumerate(steps):
                width = max(width, len(vals))
                rows.append([i, part, t, *vals])
    header = ["sequence", "part", "t", *(f"value_{k}" for k in range(width))]
    csv_path = folder / "generated.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items() if k != "func"}
    meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))}
    json_path = folder / "generated.json"
    atomic_write_text(
        json_path, json.dumps({"kind": kind, "args": meta, "sequences": seqs}, indent=1) + "\n"
    )
    paths = [csv_path, json_path]
    png = _plot(folder / "generated.png", kind, seqs)
    if png is not None:
        paths.append(png)
    return paths


def _plot(path: Path, kind: str, seqs: list[dict[str, Any]]) -> Path | None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("rnnlab generate: no plot (matplotlib is not installed)", file=sys.stderr)
        return None
    fig = Figure(figsize=(7.0, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, seq in enumerate(seqs[:4]):
        parts = dict(_series(seq))
        start = len(parts.get("prime", []))
        if "prime" in parts:
            ax.plot(range(start), [v[0] for v in parts["prime"]], color="0.6", lw=1)
        for name in ("values", "tokens", "reference"):
            if name in parts:
                ys = [v[0] for v in parts[name]]
                style = "--" if name == "reference" else "-"
                ax.plot(range(start, start + len(ys)), ys, style, lw=1, label=f"{i}: {name}")
    ax.set_xlabel("t")
    ax.set_ylabel("token id" if any("tokens" in q for q in seqs) else "output (first unit)")
    ax.set_title(f"rnnlab generate: {kind}")
    ax.legend(fontsize="small")
    fig.savefig(str(path), dpi=100)
    return path
