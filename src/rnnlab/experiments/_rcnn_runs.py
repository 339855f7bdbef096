"""The configurations, data and training loop of ``rnnlab run rcnn`` (split from
experiments/rcnn.py by job, issue 16): one model trained on one seed gives a :class:`RunResult`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.rcnn import build_model, count_parameters


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
