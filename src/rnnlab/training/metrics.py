"""Metrics and logging: ``metrics.jsonl`` + ``metrics.csv`` (+ TensorBoard), ``grad_norms.jsonl``
and the plots drawn when a run ends. Every line is strict JSON (NaN and infinities as null)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer

CSV_COLUMNS = (
    "step",
    "epoch",
    "split",
    "loss",
    "forced_loss",
    "lr",
    "grad_norm",
    "epsilon",
    "elapsed_s",
)


class _Writer:
    """metrics.jsonl + metrics.csv (+ TensorBoard), rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.tb: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: the files are enough
                self.tb = None

    def truncate(self, step: int) -> None:
        """Drop rows past ``step`` (written after the checkpoint a resume starts from) and
        lines cut by a kill; metrics.csv is rebuilt from metrics.jsonl."""
        if not self.enabled:
            return
        kept: dict[str, list[dict[str, Any]]] = {}
        # metrics rows carry the step after their update (kept up to the checkpoint's step);
        # grad_norms rows the step before it: the row labelled `step` belongs to the update
        # after the checkpoint and is written again by the resumed run
        for name, keep in (
            ("metrics.jsonl", lambda k: k <= step),
            ("grad_norms.jsonl", lambda k: k < step),
        ):
            p = self.run_dir / name
            rows = []
            if p.is_file():
                for line in p.read_text(encoding="utf-8").splitlines():
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(r, dict) and keep(r.get("step", 0)):
                        rows.append(r)
                from .._files import atomic_write_text

                atomic_write_text(p, "".join(_json_line(r) for r in rows))
            kept[name] = rows
        with (self.run_dir / "metrics.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in kept["metrics.jsonl"]:
                w.writerow({k: _csv_value(r.get(k)) for k in CSV_COLUMNS})

    def row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(_json_line(row))
        p = self.run_dir / "metrics.csv"
        new = not p.is_file()
        with p.open("a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "split") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def grad_norms(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        with (self.run_dir / "grad_norms.jsonl").open("a", encoding="utf-8") as f:
            for r in rows:
                f.write(_json_line(r))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _finite_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with NaN and infinities replaced by null and their keys listed in ``nonfinite``
    (JSON has no NaN token; a bare ``NaN`` makes the file unreadable for strict parsers)."""
    out: dict[str, Any] = {}
    bad: list[str] = []
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
            bad.append(f"{k}={v}")
        elif isinstance(v, list) and any(isinstance(e, float) and not math.isfinite(e) for e in v):
            out[k] = [e if not isinstance(e, float) or math.isfinite(e) else None for e in v]
            bad.append(f"{k}[]")
        else:
            out[k] = v
    if bad:
        out["nonfinite"] = bad
    return out


def _json_line(row: Mapping[str, Any]) -> str:
    """One JSONL line, strictly valid JSON."""
    return json.dumps(_finite_row(row), allow_nan=False) + "\n"


def _csv_value(v: Any) -> Any:
    return "" if v is None else v


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    return str(obj)


def _plots(self: Trainer) -> None:
    if self.run_dir is None or not self.is_main or not self.config["train"]["plots"]:
        return
    try:
        from ..plots.training import plot_grad_norms, plot_loss  # needs matplotlib

        plot_loss(self.run_dir)
        plot_grad_norms(self.run_dir)
    except Exception as err:  # a figure must never lose a run
        print(f"rnnlab: could not draw the plots: {err}")
