"""Tests written to catch deliberate bugs that no test caught before (issue 13): the learning
rate against the schedule's closed form, truncated BPTT with k2 > k1 while the parameters
change between windows, a Lyapunov estimate that cannot converge, and the seq2seq decoder's
shifted input. Each compares with an independent reference written out here."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from rnnlab.dynamics import Map, lyapunov_spectrum
from rnnlab.training import SequenceModel, Supervision, Trainer, TruncatedBPTT
from rnnlab.training.supervision import IGNORE_INDEX


def _train_cfg(scheduler, **optim):
    return {
        "task": {"name": "adding", "length": 6, "n_train": 16, "n_val": 4},
        "model": {"cell": "GRUCell", "hidden_size": 4},
        "optim": {"name": "sgd", "lr": 0.1, "scheduler": scheduler, **optim},
        "bptt": {"k1": 3},  # two updates per batch: the schedule counts updates, not batches
        "train": {
            "steps": 14,
            "batch_size": 4,
            "log_every": 1,
            "eval_every": 100,
            "progress": False,
            "plots": False,
            "grad_monitor_every": 0,
        },
    }


@pytest.mark.parametrize(
    "scheduler, optim, closed_form",
    [
        ("step", {"step_size": 4, "gamma": 0.5}, lambda k: 0.1 * 0.5 ** (k // 4)),
        ("exponential", {"gamma": 0.9}, lambda k: 0.1 * 0.9**k),
        ("cosine", {"t_max": 10}, lambda k: 0.05 * (1 + math.cos(math.pi * k / 10))),
    ],
)
def test_learning_rate_follows_the_schedule_closed_form(tmp_path, scheduler, optim, closed_form):
    t = Trainer(_train_cfg(scheduler, **optim), tmp_path / "run")
    t.fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(2, 15, 2))
    for r in train:  # the lr in force for the next update, after r["step"] updates
        assert r["lr"] == pytest.approx(closed_form(r["step"]), rel=1e-12, abs=1e-15), r["step"]
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(closed_form(14), abs=1e-15)


SPEC = {"cell": "GRUCell", "input_size": 2, "hidden_size": 5, "output_size": 1}


def test_k2_greater_than_k1_with_updates_between_windows():
    """Window n starts from the state its predecessor reached at step `start` (computed with
    the predecessor's parameters, detached), re-runs [start, e) with the current parameters,
    backpropagates the loss of [loss_start, e), then SGD updates. Written out by hand with
    lr = 0.5 so that every window sees different parameters."""
    torch.manual_seed(3)
    model = SequenceModel(SPEC)
    ref = copy.deepcopy(model)
    x, y = torch.randn(2, 11, 2), torch.randn(2, 11, 1)
    sup = Supervision(4, "mse")
    k1, k2, lr = 3, 5, 0.5
    target, mask = sup.targets(y, 11, None)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    grads = []

    def after(n, loss):
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
        opt.zero_grad()

    TruncatedBPTT(k1, k2).run(model, x, target, mask, loss="mse", after_backward=after)

    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr)
    cell, params = ref.core.cell, list(ref.parameters())
    ends = [3, 6, 9, 11]
    starts = [max(0, e - k2) for e in ends]
    h_start = cell.initial_state(2)  # the state at starts[0] = 0
    for n, e in enumerate(ends):
        start, loss_start = starts[n], (ends[n - 1] if n else 0)
        nxt = starts[n + 1] if n + 1 < len(ends) else None
        h = type(h_start)(*(t.detach() for t in h_start))
        carried = h if nxt == start else None
        outs = []
        for t in range(start, e):
            o, h = cell(x[:, t], h)
            outs.append(ref.readout(o))
            if nxt is not None and t + 1 == nxt:
                carried = h  # the next window's start, with this window's parameters
        out = torch.stack(outs, 1)[:, loss_start - start :]
        loss = ((out - y[:, loss_start:e]) ** 2).sum() / y.numel()
        ref_opt.zero_grad()
        loss.backward()
        for a, p in zip(grads[n], params):
            assert torch.allclose(a, p.grad, atol=1e-6), f"window {n}"
        ref_opt.step()
        h_start = carried
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert not torch.allclose(grads[1][0], grads[2][0]), "the parameters did change"


def test_lyapunov_estimate_that_cannot_converge_says_so():
    """h -> A h with A = [[a, 0], [1, a]]: A^n e1 = a^n (1, n/a), so the estimate after n
    steps is ln a + ln(1 + n^2/a^2) / (2n), a drift of O(ln n / n). In 20 steps the drift
    between step 10 and 20 is 0.115 > tol: not converged; in 4000 steps it is 1.9e-3."""
    a = 0.5
    A = torch.tensor([[a, 0.0], [1.0, a]], dtype=torch.float64)

    def est(n):
        return math.log(a) + math.log(1 + n**2 / a**2) / (2 * n)

    h0 = torch.ones(1, 2, dtype=torch.float64)
    short = lyapunov_spectrum(Map.linear(A), h0, 20, k=1, warmup=0)
    assert float(short.exponents[0]) == pytest.approx(est(20), abs=1e-12)
    assert float(short.drift[0]) == pytest.approx(est(10) - est(20), abs=1e-12)
    assert not short.converged and "NOT converged" in short.report()
    long = lyapunov_spectrum(Map.linear(A), h0, 4000, k=1, warmup=0)
    assert float(long.drift[0]) == pytest.approx(est(2000) - est(4000), abs=1e-9)
    assert long.converged


def test_seq2seq_decoder_input_is_the_target_shifted_by_one():
    """Decoder input at step t: the one-hot target t-1 (padding: zeros); at t = 0 the start
    input (zeros)."""
    t = Trainer(
        {
            "task": {
                "name": "reverse",
                "length": 5,
                "n_train": 8,
                "n_val": 4,
                "options": {"min_length": 2},
            },
            "model": {"hidden_size": 4},
            "train": {"batch_size": 4, "progress": False},
        },
        None,
    )
    assert t.supervision.case == "seq2seq"
    batch = t.task.batch("train", torch.arange(4))
    p = t._prepare(batch)
    y = batch["y"]  # (B, T) token ids, IGNORE_INDEX past each length
    O = t.model.output_size
    B, T = y.shape
    assert p["x"].shape == (B, T, O)
    assert torch.equal(p["x"][:, 0], torch.zeros(B, O)), "the start input"
    for s in range(1, T):
        prev = y[:, s - 1]
        want = F.one_hot(prev.clamp(min=0), O).float() * (prev != IGNORE_INDEX).unsqueeze(-1)
        assert torch.equal(p["x"][:, s], want), f"step {s}"
    assert (y == IGNORE_INDEX).any(), "padding is covered"
    assert torch.equal(p["source"], batch["x"]), "the encoder reads the source"


def test_rcnn_claim_status_from_hand_made_accuracies():
    """The statuses written out, not recomputed by the rule under test: RCNN 0.80 beats FF
    (0.70), loses to WCNN (0.90), and a tie with rCNN (0.80) is not 'higher'."""
    from rnnlab.experiments.rcnn import _claims

    def row(mean):
        return {"mean": mean, "std": 0.01, "parameters": 1000, "channels": 4}

    summary = {"RCNN": row(0.80), "WCNN": row(0.90), "FF": row(0.70), "rCNN": row(0.80)}
    claims = _claims(summary, 1.0)
    assert [c.status for c in claims[:3]] == ["fail", "pass", "fail"]
    assert ["WCNN" in c.claim for c in claims[:3]] == [True, False, False]
    assert claims[1].measured["difference"] == pytest.approx(0.10)
    assert claims[1].measured["larger_than_both_stds"] is True
