"""Teacher forcing, free running, the lecture's two mixtures, and scheduled sampling over
training time (rnnlab.training.forcing and the models' output feedback)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rnnlab.cells import DeepOutput
from rnnlab.layers import Alternating, FreeRunning, Mixed, Recurrent, TeacherForcing
from rnnlab.training import (
    Exponential,
    InverseSigmoid,
    Linear,
    ScheduledSampling,
    SequenceModel,
    Trainer,
    feed_mask,
    schedule_at,
)


def probe_jordan() -> SequenceModel:
    """A Jordan net with y(t) = (what was fed at step t): the reference r(t-1) or y(t-1)."""
    m = SequenceModel(
        {
            "cell": "JordanCell",
            "cell_options": {"activation": "identity"},
            "input_size": 1,
            "hidden_size": 1,
            "output_size": 1,
            "readout": "none",
            "feedback": "state",
        }
    )
    cell = m.core.cell
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
        cell.weight_hh.fill_(1.0)
        cell.weight_ho.fill_(1.0)
    return m


def fed_reference(schedule, B=4, T=12, seed=0) -> torch.Tensor:
    """(B, T-1) bool: where the probe was fed the reference, read off its outputs."""
    m = probe_jordan()
    r = (100.0 + torch.arange(T, dtype=torch.float32)).expand(B, T).unsqueeze(-1)
    fm = feed_mask(schedule, B, T, generator=torch.Generator().manual_seed(seed))
    y = m(torch.zeros(B, T, 1), feed_mask=fm, reference=r.contiguous()).output[..., 0]
    t = torch.arange(1, T, dtype=torch.float32)
    return y[:, 1:] == 99.0 + t  # y(t) = r(t-1) = 99 + t exactly when the reference was fed


def test_teacher_forcing_feeds_the_reference_at_every_step():
    assert bool(fed_reference(TeacherForcing()).all())


def test_free_running_feeds_own_outputs():
    assert not bool(fed_reference(FreeRunning()).any())


def test_alternating_blocks_of_k_teacher_and_m_free_steps():
    got = fed_reference(Alternating(teacher=2, free=3), T=16)
    t = torch.arange(1, 16)
    assert torch.equal(got, ((t % 5) < 2).expand(4, 15))


def test_mixed_per_step_and_per_sequence():
    # tolerances: 4 binomial standard deviations sqrt(p (1 - p) / n) of the sample
    per_step = fed_reference(Mixed(0.3), B=200, T=51)
    n = per_step.numel()  # 10000 coins
    assert abs(float(per_step.float().mean()) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)  # 0.018
    per_seq = fed_reference(Mixed(0.5, per="sequence"), B=400, T=10)
    rows = per_seq.float().mean(1)
    assert bool(((rows == 0) | (rows == 1)).all())  # one coin per sequence
    assert abs(float(rows.mean()) - 0.5) < 4 * math.sqrt(0.25 / 400)  # 0.1


# --- schedules over training time ----------------------------------------------------------------
def test_decay_formulas():
    lin = Linear(k=1.0, c=0.01, eps_min=0.1)
    assert [lin(i) for i in (0, 50, 200)] == pytest.approx([1.0, 0.5, 0.1])
    assert Exponential(0.99)(100) == pytest.approx(0.99**100)
    inv = InverseSigmoid(10.0)
    assert inv(0) == pytest.approx(10 / 11)
    assert inv(20) == pytest.approx(10 / (10 + math.exp(2.0)))
    assert inv(10**6) == 0.0


def test_scheduled_sampling_counts_steps_or_epochs():
    ss = ScheduledSampling(Linear(1.0, 0.1), per="sequence", detach=False)
    m = ss.at(step=3, epoch=7)
    assert isinstance(m, Mixed) and m.p == pytest.approx(0.7)
    assert m.per == "sequence" and m.detach is False
    by_epoch = ScheduledSampling(Linear(1.0, 0.1), unit="epoch")
    assert by_epoch.at(step=500, epoch=2).p == pytest.approx(0.8)
    assert schedule_at(TeacherForcing(), 99) == TeacherForcing()


def test_realised_share_of_teacher_steps_follows_epsilon():
    ss = ScheduledSampling(InverseSigmoid(20.0))
    for i in (0, 60, 120):
        fm = feed_mask(ss.at(i), 400, 50, generator=torch.Generator().manual_seed(i))
        eps = ss.epsilon(i)
        assert abs(float(fm.float().mean()) - eps) < 4 * math.sqrt(eps * (1 - eps) / fm.numel())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Exponential(1.0), "k: expected 0 < k < 1"),
        (lambda: InverseSigmoid(0.5), "k: expected k >= 1"),
        (lambda: Linear(eps_min=2.0), "eps_min: expected a probability"),
        (
            lambda: ScheduledSampling(per="token"),
            "per: expected one of 'step', 'sequence', got 'token'",
        ),
        (
            lambda: ScheduledSampling(unit="batch"),
            "unit: expected one of 'step', 'epoch', got 'batch'",
        ),
        (lambda: ScheduledSampling(decay=0.5), "decay: expected a Decay"),
    ],
)
def test_schedule_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_trainer_logs_epsilon_of_each_step(tmp_path):
    cfg = {
        "task": {"name": "temporal_xor", "length": 6, "n_train": 32, "n_val": 8},
        "model": {"cell": "ElmanCell", "hidden_size": 4},
        "forcing": {"mode": "scheduled", "decay": "linear", "k": 1.0, "c": 0.1},
        "train": {
            "steps": 6,
            "batch_size": 8,
            "log_every": 1,
            "eval_every": 100,
            "progress": False,
            "grad_monitor_every": 0,
            "plots": False,
        },
    }
    Trainer(cfg, tmp_path / "run").fit()
    import json

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    eps = [r["epsilon"] for r in rows if r["split"] == "train"]
    assert eps == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])  # eps at steps 0..5


# --- autoregressive feedback -------------------------------------------------------------------
@pytest.mark.parametrize("detach", [True, False])
def test_input_feedback_equals_recurrent_input_feedback(detach):
    """The model's loop equals the foundation's Recurrent(cell, input_feedback=...) on the
    same coins, outputs and gradients."""
    torch.manual_seed(1)
    m = SequenceModel(
        {
            "cell": "GRUCell",
            "input_size": 2,
            "hidden_size": 6,
            "output_size": 2,
            "feedback": "input",
        }
    )
    cell = DeepOutput(copy.deepcopy(m.core.cell), [], output_size=2)
    cell.readout[0].load_state_dict(m.readout.state_dict())
    layer = Recurrent(cell, input_feedback=lambda y: y)
    x = torch.randn(3, 9, 2)
    sched = Mixed(0.5, detach=detach)
    y_ref, _ = layer(x, feedback=sched, generator=torch.Generator().manual_seed(5))
    fm = feed_mask(sched, 3, 9, generator=torch.Generator().manual_seed(5))
    assert 0 < int(fm[:, 1:].sum()) < 24
    y = m(x, feed_mask=fm, detach=detach).output
    assert torch.allclose(y, y_ref, atol=1e-6)
    g_ref = torch.autograd.grad(y_ref.pow(2).sum(), list(layer.parameters()))
    g = torch.autograd.grad(
        y.pow(2).sum(),
        [
            m.core.cell.weight_ih,
            m.core.cell.weight_hh,
            m.core.cell.bias_ih,
            m.core.cell.bias_hh,
            m.readout.weight,
            m.readout.bias,
        ],
    )
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-5)


def test_detach_cuts_the_gradient_through_fed_back_outputs():
    """Free running with detach: y(2) depends on x(0) only through the state, so zeroing the
    state path (U_h = 0) leaves no gradient to x(0); without detach the fed output carries it."""
    m = SequenceModel(
        {
            "cell": "ElmanCell",
            "input_size": 1,
            "hidden_size": 3,
            "output_size": 1,
            "feedback": "input",
        }
    )
    with torch.no_grad():
        m.core.cell.weight_hh.zero_()
    x = torch.randn(1, 3, 1, requires_grad=True)
    fm = torch.zeros(1, 3, dtype=torch.bool)
    for detach, nonzero in ((True, False), (False, True)):
        (g,) = torch.autograd.grad(m(x, feed_mask=fm, detach=detach).output[0, 2, 0], x)
        assert (float(g[0, 0].abs()) > 0) is nonzero


def test_token_feedback_sampling():
    m = SequenceModel(
        {
            "cell": "GRUCell",
            "input_size": 3,
            "hidden_size": 4,
            "output_size": 3,
            "feedback": "input",
            "tokens": True,
        }
    )
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(4000, 3)
    tok = m.choose(logits, sample=True, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=3).float() / 4000
    assert torch.allclose(freq, torch.softmax(logits[0], 0), atol=0.03)
    assert torch.equal(m.choose(logits[:2]), torch.tensor([2, 2]))
    prime = torch.eye(3)[[0, 1]].unsqueeze(0)  # (1, 2, 3)
    a = m.generate(10, prime=prime, sample=True, generator=torch.Generator().manual_seed(3))
    b = m.generate(10, prime=prime, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(m.generate(5, prime=prime).tokens, m.generate(5, prime=prime).tokens)


def test_generation_is_free_running():
    """generate() after a prime equals the model run free from the prime's end."""
    m = SequenceModel(
        {
            "cell": "LSTMCell",
            "input_size": 2,
            "hidden_size": 5,
            "output_size": 2,
            "feedback": "input",
            "num_layers": 2,
        }
    )
    x = torch.randn(2, 8, 2)
    fm = torch.zeros(2, 8, dtype=torch.bool)
    fm[:, :4] = True  # read 4 true inputs, then feed own outputs
    with torch.no_grad():
        y = m(x, feed_mask=fm).output
    gen = m.generate(5, prime=x[:, :4])
    assert torch.allclose(gen.values, y[:, 3:], atol=1e-6)
