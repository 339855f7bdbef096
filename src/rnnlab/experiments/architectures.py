"""The lecture's claims about architectures, measured: bidirectional vs unidirectional, deep
variants, long-term memory (Elman, LSTM, GRU, Greff). Split from lecture.py by job (issue 16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells import DeepOutput, DeepTransition, ElmanCell, GRUCell, LSTMCell
from ..layers import Bidirectional, Recurrent, Stacked
from ._common import Timer, claim, count_params, figure, fit, save, threads
from .registry import Claim, RunContext, experiment


# ------------------------------------------------------------------------ bidirectional ----
class _Tagger(nn.Module):
    def __init__(self, rnn: nn.Module, width: int, classes: int) -> None:
        super().__init__()
        self.rnn, self.out = rnn, nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.rnn(x)[0])


@experiment(
    "bidirectional", "Bidirectional vs unidirectional RNN on a task that needs the future", order=60
)
def bidirectional(ctx: RunContext) -> list[Claim]:
    with threads(1):  # small models: one thread beats two on a shared 2-core machine
        return _bidirectional(ctx)


def _bidirectional(ctx: RunContext) -> list[Claim]:
    """The lecture's "bank" example: the sense of BANK is given by a later word. A forward RNN
    cannot beat the baseline (fraction of BANK steps · ln 2); a bidirectional one can reach 0."""
    from ..data import FutureContext

    tm = Timer()
    steps = 1500 if ctx.full else 300
    train = FutureContext(4000, 30, seed=ctx.seed)
    test = FutureContext(1000, 30, seed=ctx.seed + 1)
    A = train.x.shape[-1]
    base = test.baseline_loss()
    nets = {
        "unidirectional GRU": _Tagger(Recurrent(GRUCell(A, 32)), 32, 3),
        "bidirectional GRU": _Tagger(Bidirectional(Recurrent(GRUCell(A, 22))), 44, 3),
    }
    g = torch.Generator().manual_seed(ctx.seed)
    res = {}
    fig = figure(ctx.out_dir / "bidirectional_loss.png")
    ax = fig.add_subplot(1, 1, 1)
    for name, net in nets.items():
        torch.manual_seed(ctx.seed)

        def batch(k: int) -> tuple[Tensor, Tensor]:
            idx = torch.randint(0, train.x.shape[0], (64,), generator=g)
            return train.x[idx], train.y[idx]

        losses = fit(net, batch, lambda m, b: F.cross_entropy(m(b[0]).transpose(1, 2), b[1]), steps)
        with torch.no_grad():
            res[name] = float(F.cross_entropy(net(test.x).transpose(1, 2), test.y))
        ax.plot(losses, label=f"{name} ({count_params(net)} params)")
    ax.axhline(base, color="k", ls="--", label="best causal (baseline)")
    ax.set(xlabel="step", ylabel="cross-entropy", yscale="log")
    ax.legend()
    save(fig)
    bi, uni = res["bidirectional GRU"], res["unidirectional GRU"]
    src = "lecture, 'Bidirectional RNN'"
    return [
        claim(
            "bidirectional",
            "bidirectional GRU test cross-entropy",
            round(bi, 4),
            f"< 0.2 × baseline {base:.4f}",
            src,
            bi < 0.2 * base,
        ),
        claim(
            "bidirectional",
            "unidirectional GRU cannot beat the causal baseline",
            round(uni, 4),
            f"≥ 0.8 × baseline {base:.4f}",
            src,
            uni >= 0.8 * base,
            tm.lap(),
        ),
    ]


# ------------------------------------------------------------------------------- deep ----
class _Forecaster(nn.Module):
    def __init__(self, rnn: nn.Module, width: int) -> None:
        super().__init__()
        self.rnn, self.out = rnn, nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.rnn(x)[0])


@experiment(
    "deep",
    "Deep RNN variants (stacked, deep transition, deep output, skip) at equal parameters",
    order=70,
)
def deep(ctx: RunContext) -> list[Claim]:
    with threads(1):  # small models: one thread beats two on a shared 2-core machine
        return _deep(ctx)


def _deep(ctx: RunContext) -> list[Claim]:
    """One-step forecasting of the chaotic Mackey-Glass series with ~equal parameter counts."""
    from ..data import make_series

    tm = Timer()
    steps = 1500 if ctx.full else 250
    s = make_series("mackey_glass", 3000).values.float()  # type: ignore[attr-defined]
    s = (s - s.mean()) / s.std()
    T = 50
    windows = s[: (len(s) // (T + 1)) * (T + 1)].view(-1, T + 1)
    n_test = windows.shape[0] // 5
    tr, te = windows[n_test:], windows[:n_test]
    variants = {
        "shallow GRU (H=40)": _Forecaster(Recurrent(GRUCell(1, 40)), 40),
        "stacked 2 x GRU (H=26)": _Forecaster(
            Stacked([Recurrent(GRUCell(1, 26)), Recurrent(GRUCell(26, 26))]), 26
        ),
        "deep transition (H=32, MLP 32)": _Forecaster(
            Recurrent(DeepTransition(GRUCell(1, 32), [32])), 32
        ),
        "deep output (H=34, MLP 34)": _Forecaster(
            Recurrent(DeepOutput(GRUCell(1, 34), [34], output_size=34)), 34
        ),
        "stacked + skip (H=24)": _Forecaster(
            Stacked(
                [Recurrent(GRUCell(1, 24)), Recurrent(GRUCell(25, 24))],
                input_skip=True,
                output_skip=True,
            ),
            48,
        ),
    }
    persistence = float(F.mse_loss(te[:, :-1], te[:, 1:]))
    g = torch.Generator().manual_seed(ctx.seed)
    rows = []
    for name, net in variants.items():
        torch.manual_seed(ctx.seed)

        def batch(k: int) -> tuple[Tensor]:
            return (tr[torch.randint(0, tr.shape[0], (32,), generator=g)],)

        fit(net, batch, lambda m, b: F.mse_loss(m(b[0][:, :-1, None])[..., 0], b[0][:, 1:]), steps)
        with torch.no_grad():
            mse = float(F.mse_loss(net(te[:, :-1, None])[..., 0], te[:, 1:]))
        rows.append(
            claim(
                "deep",
                f"{name}, {count_params(net)} params: test MSE",
                round(mse, 5),
                f"< persistence {persistence:.4f}",
                "Pascanu et al. 2014",
                mse < persistence,
            )
        )
    rows[-1].seconds = round(tm.lap(), 2)
    return rows


# ----------------------------------------------------------------------- long memory ----
class _LastStep(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.rnn = Recurrent(cell)  # type: ignore[arg-type]
        self.out = nn.Linear(cell.output_size, 1)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.rnn(x)[0][:, -1])


@experiment(
    "memory",
    "Long-term memory: Elman, LSTM, GRU (both resets) on the adding problem; Greff's variants",
    order=80,
)
def memory(ctx: RunContext) -> list[Claim]:
    with threads(1):  # small models: one thread beats two on a shared 2-core machine
        return _memory(ctx)


def _memory(ctx: RunContext) -> list[Claim]:
    """Le et al.'s adding problem (predicting 1 always: MSE 1/6) at several lengths T."""
    from ..data import AddingProblem

    tm = Timer()
    lengths = [50, 100, 200, 400] if ctx.full else [10, 30, 60]
    steps = 3000 if ctx.full else 400
    H = 64 if ctx.full else 24
    models = {
        "Elman": lambda: ElmanCell(2, H),
        "LSTM": lambda: LSTMCell(2, H, forget_bias=1.0),
        "GRU (reset after)": lambda: GRUCell(2, H),
        "GRU (reset before)": lambda: GRUCell(2, H, reset="before"),
    }
    table: dict[str, list[float]] = {}
    g = torch.Generator().manual_seed(ctx.seed)
    for T in lengths:
        train = AddingProblem(6000, T, seed=ctx.seed)
        test = AddingProblem(1000, T, seed=ctx.seed + 1)
        for name, make in models.items():
            torch.manual_seed(ctx.seed)
            net = _LastStep(make())

            def batch(k: int, train: AddingProblem = train) -> tuple[Tensor, Tensor]:
                idx = torch.randint(0, 6000, (64,), generator=g)
                return train.x[idx], train.y[idx]

            fit(net, batch, lambda m, b: F.mse_loss(m(b[0]), b[1]), steps)
            with torch.no_grad():
                table.setdefault(name, []).append(float(F.mse_loss(net(test.x), test.y)))
        ctx.progress(f"T={T}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in table.items()))
    fig = figure(ctx.out_dir / "adding_problem.png")
    ax = fig.add_subplot(1, 1, 1)
    for name, v in table.items():
        ax.plot(lengths, v, "o-", label=name)
    ax.axhline(1 / 6, color="k", ls="--", label="baseline 1/6")
    ax.set(xlabel="T", ylabel="test MSE", yscale="log", title=f"adding problem, {steps} steps")
    ax.legend()
    save(fig)
    rows = [
        claim(
            "memory",
            f"{name}: test MSE at T = {lengths}",
            [round(v, 4) for v in vals],
            "baseline 1/6 = 0.1667",
            "Le et al. 2015",
            None,
        )
        for name, vals in table.items()
    ]
    best_gated = min(
        table["LSTM"][-1], table["GRU (reset after)"][-1], table["GRU (reset before)"][-1]
    )
    rows.append(
        claim(
            "memory",
            f"at T = {lengths[-1]} a gated cell beats the Elman network",
            round(best_gated, 4),
            f"< Elman {table['Elman'][-1]:.4f}",
            "lecture, 'Gated RNNs'",
            best_gated < table["Elman"][-1],
        )
    )
    rows.append(
        claim(
            "memory",
            f"at T = {lengths[0]} the gated cells beat the 1/6 baseline 10x",
            round(best_gated, 4),
            "< 0.0167",
            "Le et al. 2015",
            max(table["LSTM"][0], table["GRU (reset after)"][0]) < 1 / 60,
        )
    )
    # Greff et al.: which gates matter (one length, every variant)
    T = lengths[1]
    train = AddingProblem(6000, T, seed=ctx.seed)
    test = AddingProblem(1000, T, seed=ctx.seed + 1)
    greff = {}
    for variant in ["NP", "V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "CIFG", "FGR"]:
        torch.manual_seed(ctx.seed)
        net = _LastStep(LSTMCell(2, H, variant=variant))

        def batch2(k: int) -> tuple[Tensor, Tensor]:
            idx = torch.randint(0, 6000, (64,), generator=g)
            return train.x[idx], train.y[idx]

        fit(net, batch2, lambda m, b: F.mse_loss(m(b[0]), b[1]), steps)
        with torch.no_grad():
            greff[variant] = float(F.mse_loss(net(test.x), test.y))
    ranking = sorted(greff, key=greff.__getitem__)
    rows.append(
        claim(
            "memory",
            f"Greff et al.'s variants on the adding problem, T = {T} (test MSE)",
            {k: round(greff[k], 4) for k in ranking},
            "NFG and NOAF hurt most (Greff)",
            "Greff et al. 2015",
            None,
        )
    )
    rows[-1].seconds = round(tm.lap(), 2)
    return rows
