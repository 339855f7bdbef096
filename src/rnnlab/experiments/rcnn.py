"""``rnnlab run rcnn``: RCNN-K against its feed-forward baselines at equal parameter counts.

Liang & Hu (CVPR 2015) compare RCNN-K with the same network without recurrence (FF), a wider
feed-forward CNN with about the same number of parameters (WCNN) and rCNN (input only at
t = 0), and find RCNN best. This experiment trains the four on Fashion-MNIST (28 x 28, one
channel) over several seeds and reports test accuracy mean ± std with learning curves.

Shapes: B batch, C channels, H x W image size, L classes.

Configurations (exactly what runs; the CPU one fits a shared 2-core machine):

* CPU (default): K = 32, T = 3, the paper's LRN variant, a class-balanced 7,500-image training
  subset, 2 epochs, batch 64, Adam with a one-cycle schedule (max lr 2e-3), dropout 0.2,
  3 seeds, the full 10,000-image test set (curves on its first 1,000 images); the committed
  ``results/rcnn/`` ran it with one CPU thread (``OMP_NUM_THREADS=1``) on a shared machine;
* ``--full`` (a GPU): K = 96, all 60,000 training images, 30 epochs, batch 128, max lr 1e-3,
  dropout 0.5, 5 seeds.

Outputs in ``ctx.out_dir``: ``results.md`` (the table), ``results.json`` (every number),
``curves.png`` (training loss and test accuracy against epochs, mean ± std over seeds).

Also here: :func:`load_cifar10`, a reader for CIFAR-10's python-pickle batches (no torchvision).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.rcnn import build_model, count_parameters, wcnn_channels
from .registry import Claim, RunContext, experiment

SOURCE = (
    "M. Liang and X. Hu, Recurrent convolutional neural network for object recognition, CVPR 2015"
)
ANCHORS = {
    "GRU+SVM": 0.897,
    "2-layer CNN": 0.92,
    "ResNet-18": 0.949,
    "WRN-28-10": 0.959,
}


# --- CIFAR-10 ---------------------------------------------------------------------------------
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)
# The globals a CIFAR-10 batch pickle needs (numpy arrays); anything else is refused, since
# unpickling can run arbitrary code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"CIFAR-10 batch: refusing to load global {module}.{name} (not a numpy array)"
            )
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _CifarUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: expected keys b'data' and b'labels', got {sorted(batch)}")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected uint8 data (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: expected {data.shape[0]} labels (as data), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: expected labels in 0..9, got {labels.min()}..{labels.max()}")
    return data, labels


def load_cifar10(root: str | os.PathLike[str], train: bool = True) -> tuple[Tensor, Tensor]:
    """Load one split of CIFAR-10 from its python-pickle batches.

    ``root`` is the folder ``cifar-10-batches-py`` (or its parent) with ``data_batch_1`` ...
    ``data_batch_5`` and ``test_batch``. Only numpy arrays are unpickled; any other global is
    refused.

    Returns:
        images (N, 3, 32, 32) uint8 (RGB planes, as stored) and labels (N,) int64 in 0..9;
        N = 50000 (train) or 10000 (test).

    Raises:
        FileNotFoundError: a batch file is missing (the message names it).
        ValueError: a batch is not CIFAR-10's layout.
    """
    if not isinstance(train, bool):
        raise TypeError(f"train: expected a bool, got {type(train).__name__}")
    folder = Path(root)
    if not (folder / _CIFAR_TEST[0]).is_file() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    datas, labels = [], []
    for name in _CIFAR_TRAIN if train else _CIFAR_TEST:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"root: expected CIFAR-10's python batches in {folder}, missing {path}"
            )
        d, lab = _read_cifar_batch(path)
        datas.append(d)
        labels.append(lab)
    data = np.concatenate(datas).reshape(-1, 3, 32, 32)  # (N, 3, 32, 32): R, G, B planes
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(np.concatenate(labels))


# --- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RCNNExperimentConfig:
    """What one run of the comparison trains (see the module docstring for the two presets)."""

    channels: int = 32
    steps: int = 3
    norm: str = "lrn"
    models: tuple[str, ...] = ("RCNN", "FF", "WCNN", "rCNN")
    train_size: int | None = 7500
    test_size: int | None = None
    epochs: int = 2
    batch_size: int = 64
    lr: float = 2e-3
    dropout: float = 0.2
    seeds: tuple[int, ...] = (0, 1, 2)
    evals_per_epoch: int = 2
    curve_test_size: int = 1000
    loss_every: int = 25
    # rCNN (input only at t = 0) does not train under the default initialisation with LRN: its
    # signal fades through twelve recurrent convolutions (results/rcnn/README.md). Liang & Hu
    # report that rCNN trains (its training error falls with more iterations while its test
    # error rises), so it runs in the setting where it does: He initialisation of its
    # convolutions and BatchNorm per iteration.
    rcnn_first_norm: str = "batch"
    rcnn_first_init: str = "he"


CPU_CONFIG = RCNNExperimentConfig()
FULL_CONFIG = RCNNExperimentConfig(
    channels=96,
    train_size=None,
    epochs=30,
    batch_size=128,
    lr=1e-3,
    dropout=0.5,
    seeds=(0, 1, 2, 3, 4),
    evals_per_epoch=1,
    curve_test_size=10000,
)

# The quick version inside `rnnlab run tour` (about a minute on 2 cores): one seed, a small
# subset; the committed CPU run (results/rcnn/) is shown beside it in the report.
TOUR_CONFIG = RCNNExperimentConfig(
    models=("RCNN", "FF", "WCNN", "rCNN"),
    train_size=2000,
    test_size=2000,
    epochs=1,
    seeds=(0,),
    evals_per_epoch=1,
    curve_test_size=500,
)


# --- data -------------------------------------------------------------------------------------
def _fashion_mnist() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from ..data.images import load_fashion_mnist

    roots: list[Path | None] = [None]
    # The project's layout keeps shared data beside the repository (tests/conftest.py).
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        roots.append(base.parent / "shared" / "data" / "fashion-mnist")
    last: Exception | None = None
    for root in roots:
        try:
            xtr, ytr = load_fashion_mnist(root, train=True)
            xte, yte = load_fashion_mnist(root, train=False)
            return xtr, ytr, xte, yte
        except FileNotFoundError as e:
            last = e
    assert last is not None
    raise last


def balanced_subset(labels: Tensor, size: int | None, seed: int = 0) -> Tensor:
    """Indices of a class-balanced random subset of ``size`` (all indices when None)."""
    n = labels.shape[0]
    if size is None or size >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)
    per = size // len(classes)
    idx = []
    for c in classes:
        where = torch.nonzero(labels == c).flatten()
        idx.append(where[torch.randperm(len(where), generator=g)[:per]])
    out = torch.cat(idx)
    return out[torch.randperm(len(out), generator=g)]


def _standardize(images: Tensor, mean: float, std: float) -> Tensor:
    x = images.float().div_(255.0)
    return x.sub_(mean).div_(std).unsqueeze(1)  # (N, 1, H, W)


# --- training ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Accuracy of ``model`` on (x, y), in eval mode."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was)
    return correct / max(1, x.shape[0])


@dataclass
class RunResult:
    """One model trained with one seed."""

    model: str
    seed: int
    channels: int
    parameters: int
    test_accuracy: float
    train_seconds: float
    loss_curve: list[tuple[float, float]]  # (epoch, mean training loss over the window)
    test_curve: list[tuple[float, float]]  # (epoch, accuracy on the curve's test subset)


def train_one(
    kind: str,
    cfg: RCNNExperimentConfig,
    seed: int,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    progress: Callable[[str], None] = print,
) -> RunResult:
    """Train one model of the comparison and evaluate it on the whole test set."""
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    first = kind == "rCNN"
    model = build_model(
        kind,
        cfg.channels,
        in_channels=in_channels,
        num_classes=num_classes,
        steps=cfg.steps,
        norm=cfg.rcnn_first_norm if first else cfg.norm,
        dropout=cfg.dropout,
        image_size=(xtr.shape[2], xtr.shape[3]),
        device=xtr.device,
    )
    if first and cfg.rcnn_first_init == "he":
        for p in model.parameters():
            if p.dim() == 4:  # convolution kernels (K, C, k, k): He et al. 2015, fan-in, ReLU
                nn.init.kaiming_normal_(p, nonlinearity="relu")
    width = int(getattr(model, "channels", cfg.channels))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = xtr.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    eval_at = {
        round(steps_per_epoch * (e + (j + 1) / cfg.evals_per_epoch))
        for e in range(cfg.epochs)
        for j in range(cfg.evals_per_epoch)
    }
    xcurve, ycurve = xte[: cfg.curve_test_size], yte[: cfg.curve_test_size]
    g = torch.Generator().manual_seed(seed)
    loss_curve: list[tuple[float, float]] = []
    test_curve: list[tuple[float, float]] = []
    window: list[float] = []
    step = 0
    train_s = 0.0
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            t0 = time.perf_counter()
            idx = order[i : i + cfg.batch_size].to(xtr.device)
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            train_s += time.perf_counter() - t0
            step += 1
            window.append(loss.item())
            if len(window) == cfg.loss_every or step == total:
                loss_curve.append((step / steps_per_epoch, statistics.fmean(window)))
                window = []
            if step in eval_at:
                test_curve.append((step / steps_per_epoch, evaluate(model, xcurve, ycurve)))
    acc = evaluate(model, xte, yte)
    progress(
        f"rcnn: {kind}-{width} seed {seed}: test accuracy {acc:.4f} "
        f"({count_parameters(model)} parameters, {train_s:.0f} s training)"
    )
    return RunResult(
        kind, seed, width, count_parameters(model), acc, train_s, loss_curve, test_curve
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: Sequence[RunResult], cfg: RCNNExperimentConfig) -> dict[str, Any]:
    """Per model: parameters, width, accuracies over seeds, mean and std, training time."""
    out: dict[str, Any] = {}
    for kind in cfg.models:
        rs = [r for r in results if r.model == kind]
        if not rs:
            continue
        mean, std = _mean_std([r.test_accuracy for r in rs])
        out[kind] = {
            "channels": rs[0].channels,
            "parameters": rs[0].parameters,
            "accuracies": [r.test_accuracy for r in rs],
            "mean": mean,
            "std": std,
            "train_seconds_mean": statistics.fmean(r.train_seconds for r in rs),
        }
    return out


_DESCRIPTIONS = {
    "RCNN": "RCNN-K (the paper's model)",
    "FF": "same network without recurrence",
    "WCNN": "wider feed-forward CNN, about RCNN-K's parameters",
    "rCNN": "RCNN-K with the input only at t = 0 (He init, BatchNorm per iteration)",
}


def results_table(summary: dict[str, Any], cfg: RCNNExperimentConfig, n_train: int) -> str:
    """The markdown table of ``results.md``."""
    lines = [
        "| model | what | K | parameters | test accuracy (mean ± std) | per seed | train s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, s in summary.items():
        seeds = ", ".join(f"{a:.4f}" for a in s["accuracies"])
        lines.append(
            f"| {kind} | {_DESCRIPTIONS[kind]} | {s['channels']} | {s['parameters']:,} | "
            f"{s['mean']:.4f} ± {s['std']:.4f} | {seeds} | {s['train_seconds_mean']:.0f} |"
        )
    setup = (
        f"Fashion-MNIST, {n_train:,} training images (class-balanced subset), full 10,000-image "
        f"test set; K = {cfg.channels}, T = {cfg.steps}, norm = {cfg.norm}, {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, Adam with a one-cycle schedule (max lr {cfg.lr}), dropout "
        f"{cfg.dropout}, no augmentation; seeds {list(cfg.seeds)}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU thread(s)."
    )
    anchors = ", ".join(f"{k} {v}" for k, v in ANCHORS.items())
    return (
        "# RCNN-K vs feed-forward baselines (Liang & Hu 2015) on Fashion-MNIST\n\n"
        + setup
        + "\n\n"
        + "\n".join(lines)
        + f"\n\nPublished Fashion-MNIST test accuracies for scale (full data, long training): "
        f"{anchors}.\n"
    )


def plot_curves(results: Sequence[RunResult], cfg: RCNNExperimentConfig, path: Path) -> None:
    """Training loss and test accuracy against epochs, mean ± std over seeds, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind in cfg.models:
        rs = [r for r in results if r.model == kind]
        if not rs:
            continue
        label = f"{kind}-{rs[0].channels} ({rs[0].parameters:,} params)"
        for ax, key in zip(axes, ("loss_curve", "test_curve")):
            curves = [getattr(r, key) for r in rs]
            length = min(len(c) for c in curves)
            if length == 0:
                continue
            xs = np.array([p[0] for p in curves[0][:length]])
            ys = np.array([[p[1] for p in c[:length]] for c in curves])
            m, s = ys.mean(0), ys.std(0)
            ax.plot(xs, m, label=label, marker="o" if key == "test_curve" else None, ms=3)
            ax.fill_between(xs, m - s, m + s, alpha=0.2)
    axes[0].set(xlabel="epoch", ylabel="training cross-entropy", title="training loss")
    axes[1].set(
        xlabel="epoch",
        ylabel="accuracy",
        title=f"test accuracy (first {cfg.curve_test_size} test images)",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(
        f"Fashion-MNIST, K={cfg.channels}, T={cfg.steps}, mean ± std over {len(cfg.seeds)} seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_comparison(
    cfg: RCNNExperimentConfig,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    out_dir: Path,
    *,
    progress: Callable[[str], None] = print,
) -> tuple[dict[str, Any], list[RunResult]]:
    """Train every model with every seed on standardised ``data``; write the three outputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    for seed in cfg.seeds:  # seeds outermost: a cut-short run still compares every model
        for kind in cfg.models:
            results.append(train_one(kind, cfg, seed, data, progress=progress))
    summary = summarize(results, cfg)
    n_train = data[0].shape[0]
    (out_dir / "results.md").write_text(results_table(summary, cfg, n_train))
    record = {
        "config": asdict(cfg),
        "train_images": n_train,
        "test_images": data[2].shape[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "summary": summary,
        "runs": [asdict(r) for r in results],
    }
    (out_dir / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    plot_curves(results, cfg, out_dir / "curves.png")
    return summary, results


def _claims(
    summary: dict[str, Any],
    seconds: float,
    smoke: str | None = None,
    results: Sequence[RunResult] = (),
) -> list[Claim]:
    """The paper's claims; with ``smoke`` (a description of the toy budget) every row is
    informational: a smoke run shows that the pipeline runs, not what the paper claims."""
    claims: list[Claim] = []
    if "RCNN" not in summary:
        return claims
    prefix = (
        f"SMOKE RUN ({smoke}; it checks that the comparison runs, it is not a result: the "
        "result is the committed run below): "
        if smoke
        else ""
    )
    r = summary["RCNN"]
    for base, what in (
        ("WCNN", "a wider feed-forward CNN with about the same number of parameters (WCNN)"),
        ("FF", "the same network without recurrence (FF)"),
        ("rCNN", "rCNN, whose input enters only at t = 0"),
    ):
        if base not in summary:
            continue
        b = summary[base]
        diff = r["mean"] - b["mean"]
        claims.append(
            Claim(
                experiment="rcnn",
                claim=f"{prefix}RCNN-{r['channels']} has a higher mean test accuracy than {what}",
                measured={
                    "RCNN": f"{r['mean']:.4f} ± {r['std']:.4f} ({r['parameters']} params)",
                    base: f"{b['mean']:.4f} ± {b['std']:.4f} ({b['parameters']} params)",
                    "difference": round(diff, 4),
                    "larger_than_both_stds": bool(diff > max(r["std"], b["std"])),
                },
                expected="RCNN > " + base,
                source=SOURCE + ", Sec. 4.2",
                status="info" if smoke else ("pass" if diff > 0 else "fail"),
            )
        )
    if "rCNN" in summary:
        rc = summary["rCNN"]
        last = {
            k: statistics.fmean(x.loss_curve[-1][1] for x in results if x.model == k)
            for k in ("RCNN", "rCNN")
            if any(x.model == k and x.loss_curve for x in results)
        }
        claims.append(
            Claim(
                experiment="rcnn",
                claim=f"{prefix}rCNN trains in the paper's working setting (He init, BatchNorm per "
                "iteration): test accuracy well above chance (0.1); final training loss "
                + ", ".join(f"{k} {v:.3f}" for k, v in last.items()),
                measured=f"{rc['mean']:.4f} ± {rc['std']:.4f}",
                expected="> 0.2 (Liang & Hu: rCNN trains; more iterations lower its training "
                "error and raise its test error)",
                source=SOURCE + ", Sec. 4.2",
                status="info" if smoke else ("pass" if rc["mean"] > 0.2 else "fail"),
            )
        )
    claims.append(
        Claim(
            experiment="rcnn",
            claim="Where the measured accuracies sit among published Fashion-MNIST results",
            measured={k: round(v["mean"], 4) for k, v in summary.items()},
            expected=ANCHORS,
            source="Fashion-MNIST benchmark (Xiao et al. 2017 and its leaderboard)",
            status="info",
            seconds=seconds,  # the run's cost, once (not on every row)
        )
    )
    return claims


@experiment("rcnn", "RCNN-K vs FF, WCNN and rCNN at equal parameters on Fashion-MNIST", order=110)
def run(ctx: RunContext) -> list[Claim]:
    """Train the paper's comparison (CPU preset, or ``ctx.full`` for a GPU) and check the claim."""
    cfg = FULL_CONFIG if ctx.full else (TOUR_CONFIG if ctx.tour else CPU_CONFIG)
    if ctx.seed:
        cfg = replace(cfg, seeds=tuple(ctx.seed + s for s in cfg.seeds))
    xtr, ytr, xte, yte = _fashion_mnist()
    idx = balanced_subset(ytr, cfg.train_size, seed=0)
    xtr, ytr = xtr[idx], ytr[idx]
    if cfg.test_size is not None:
        xte, yte = xte[: cfg.test_size], yte[: cfg.test_size]
    mean = float(xtr.float().mean() / 255.0)
    std = float(xtr.float().std() / 255.0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = (
        _standardize(xtr, mean, std).to(device),
        ytr.to(device),
        _standardize(xte, mean, std).to(device),
        yte.to(device),
    )
    ctx.progress(f"rcnn: {len(ytr)} training images, {len(yte)} test images, on {device}")
    if "WCNN" in cfg.models:
        w = wcnn_channels(cfg.channels, in_channels=1, num_classes=10, steps=cfg.steps)
        ctx.progress(f"rcnn: WCNN width for RCNN-{cfg.channels}: {w}")
    t0 = time.perf_counter()
    summary, results = run_comparison(cfg, data, ctx.out_dir, progress=ctx.progress)
    smoke = None
    if cfg is TOUR_CONFIG or (ctx.tour and not ctx.full):
        smoke = (
            f"toy budget: {len(ytr):,} training images, {cfg.epochs} epoch, {len(cfg.seeds)} seed"
        )
    return _claims(summary, time.perf_counter() - t0, smoke, results)
