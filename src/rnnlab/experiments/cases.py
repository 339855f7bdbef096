"""The lecture's four ways of unfolding an Elman network in time, each trained on a small task.

====== ================================== ====================== ==============================
case   input                              target                 task here
====== ================================== ====================== ==============================
1      x at the first step only           r(t) at every step     the orbit of 0.8 h + 1 from h(0)
2      one fixed x at every step          r at the last step     8x8 digits, the whole image
3      time-varying x(t)                  r at the last step     8x8 digits, one row per step
4      time-varying x(t)                  r(t) at every step     Elman's letters (next letter)
====== ================================== ====================== ==============================

Every model is the same kind: ``SequenceModel`` with one Elman layer and a linear readout; the
case only changes what :class:`rnnlab.training.Supervision` feeds in and where the loss sits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..training import SequenceModel, Supervision
from ._common import Timer, claim, figure, fit, save, threads
from .registry import Claim, RunContext, experiment

SOURCE = "lecture, 'Unfold the Elman network'"


def _elman(inputs: int, hidden: int, outputs: int) -> SequenceModel:
    return SequenceModel(
        {"cell": "ElmanCell", "input_size": inputs, "hidden_size": hidden, "output_size": outputs}
    )


def _train(
    model: SequenceModel,
    sup: Supervision,
    x: Tensor,
    y: Tensor,
    steps: int,
    batch: int,
    seed: int,
    lr: float = 1e-2,
) -> list[float]:
    """Adam on random minibatches; the case decides the unfolded input and the loss mask."""
    g = torch.Generator().manual_seed(seed)

    def batches(k: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        return x[idx], y[idx]

    def loss(m: Any, b: tuple[Tensor, ...]) -> Tensor:
        return sup(m(sup.inputs(b[0])).output, b[1])

    return fit(model, batches, loss, steps, lr=lr)


def _evaluate(model: SequenceModel, sup: Supervision, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(sup.inputs(x)).output  # type: ignore[no-any-return]


def _case1(ctx: RunContext, steps: int) -> tuple[list[float], list[Claim]]:
    """Only h(0) goes in; the network must unroll the map h(t+1) = 0.8 h(t) + 1 by itself."""
    from ..data import MapSequences

    T, scale = 20, 10.0  # states in [-10, 10] are scaled to [-1, 1] for the network
    train = MapSequences("stable_linear", 2000, T, seed=ctx.seed)
    test = MapSequences("stable_linear", 500, T, seed=ctx.seed + 1)
    sup = Supervision(case=1, loss="mse", steps=T)
    torch.manual_seed(ctx.seed)
    model = _elman(1, 16, 1)
    x0 = train.orbits[:, 0].float() / scale  # (N, 1): the static input of case 1
    losses = _train(model, sup, x0, train.y / scale, steps, 64, ctx.seed)
    pred = _evaluate(model, sup, test.orbits[:, 0].float() / scale) * scale  # (N, T, 1)
    mse = float(sup(pred, test.y))
    base = test.baseline_loss()
    end_err = float((pred[:, -1] - 5.0).abs().max())
    return losses, [
        claim(
            "cases",
            "case 1 (x only at t=0, target every step): test MSE of the orbit from h(0)",
            round(mse, 4),
            f"< 0.01 × persistence {base:.2f}",
            SOURCE,
            mse < 0.01 * base,
        ),
        claim(
            "cases",
            f"case 1: max |y(T={T}) - 5| over 500 starts in [-10, 10] (h* = 5)",
            round(end_err, 3),
            "< 0.5",
            "lecture, 'Examples about stability'",
            end_err < 0.5,
        ),
    ]


def _digits(ctx: RunContext, case: int, steps: int) -> tuple[list[float], list[Claim]]:
    """Cases 2 and 3 on the same images: all 64 pixels at each of q = 8 steps, or row by row."""
    from ..data import Digits

    view = "image" if case == 2 else "rows"
    train = Digits("train", view=view, seed=ctx.seed)
    test = Digits("test", view=view, seed=ctx.seed)
    (xtr, ytr), (xte, yte) = train.tensors(), test.tensors()
    if case == 2:
        xtr, xte = xtr.flatten(1), xte.flatten(1)  # (N, 64): one static input per image
    q = 8
    sup = Supervision(case=case, loss="cross_entropy", steps=q if case == 2 else None)
    torch.manual_seed(ctx.seed)
    model = _elman(int(xtr.shape[-1]), 32, 10)
    losses = _train(model, sup, xtr, ytr, steps, 64, ctx.seed)
    logits = _evaluate(model, sup, xte)[:, -1]  # (N, 10): the prediction at the last step
    acc = float((logits.argmax(-1) == yte).float().mean())
    what = (
        "case 2 (one fixed x at all q=8 steps, label at the last): digit test accuracy"
        if case == 2
        else "case 3 (one image row per step, label at the last): digit test accuracy"
    )
    return losses, [
        claim("cases", what, round(acc, 4), "≥ 0.85 (chance 0.10)", SOURCE, acc >= 0.85)
    ]


def _case4(ctx: RunContext, steps: int) -> tuple[list[float], list[Claim]]:
    """Elman's letters: the vowels after a consonant are predictable, the consonants are not."""
    from ..data import LETTER_FEATURES, ElmanLetters

    train = ElmanLetters(200, 50, seed=ctx.seed)
    test = ElmanLetters(100, 50, seed=ctx.seed + 1)
    sup = Supervision(case=4, loss="mse")
    torch.manual_seed(ctx.seed)
    model = _elman(6, 20, 6)
    losses = _train(model, sup, train.x, train.y, steps, 32, ctx.seed)
    pred = _evaluate(model, sup, test.x)
    mse = float(sup(pred, test.y))
    base = test.baseline_loss()
    err = (pred - test.y).pow(2).mean(-1)  # (N, T)
    consonant = test.y[..., 0] == LETTER_FEATURES["b"][0]  # the consonantal feature is 1
    e_cons, e_vow = float(err[consonant].mean()), float(err[~consonant].mean())
    return losses, [
        claim(
            "cases",
            "case 4 (x(t) and a target at every step): next-letter test MSE",
            round(mse, 4),
            f"< baseline {base:.4f}",
            "Elman 1990",
            mse < base,
        ),
        claim(
            "cases",
            "case 4: error where the next letter is a vowel (predictable) vs a consonant",
            round(e_vow, 4),
            f"< 0.2 × consonants' {e_cons:.4f}",
            "Elman 1990, Fig. 6",
            e_vow < 0.2 * e_cons,
        ),
    ]


@experiment(
    "cases", "The four unfolding cases of BPTT, each on a small task with its loss curve", order=40
)
def cases(ctx: RunContext) -> list[Claim]:
    with threads(1):  # small models: one thread is faster (see _common.threads)
        return _cases(ctx)


def _cases(ctx: RunContext) -> list[Claim]:
    tm = Timer()
    steps = 2000 if ctx.full else 300
    runs: dict[str, Callable[[], tuple[list[float], list[Claim]]]] = {
        "case 1: x(0) only, r(t) at every step": lambda: _case1(ctx, steps),
        "case 2: fixed x, r at the last step": lambda: _digits(ctx, 2, steps),
        "case 3: x(t), r at the last step": lambda: _digits(ctx, 3, steps),
        "case 4: x(t), r(t) at every step": lambda: _case4(ctx, steps),
    }
    fig = figure(ctx.out_dir / "unfolding_cases_loss.png")
    fig.set_size_inches(9.0, 5.6)
    rows: list[Claim] = []
    for k, (name, run) in enumerate(runs.items(), 1):
        losses, got = run()
        got[-1].seconds = round(tm.lap(), 2)
        rows += got
        ctx.progress(f"{name}: final training loss {losses[-1]:.4f}")
        ax = fig.add_subplot(2, 2, k)
        ax.plot(losses, lw=0.8)
        ax.set(title=name, xlabel="step", ylabel="training loss", yscale="log")
        ax.title.set_fontsize(9)
    save(fig)
    return rows
