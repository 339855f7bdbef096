"""Truncated BPTT: the windows, equality with full BPTT for k1 = k2 >= T, equality with
hand-written truncation for k1 = k2 < T and for k2 > k1, and memory bounded by k2."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.training import SequenceModel, Supervision, TruncatedBPTT

SPEC = {"cell": "GRUCell", "input_size": 2, "hidden_size": 5, "output_size": 1}


def windows_by_definition(k1, k2, T):
    """Every k1 steps (and at T) an update at e; it backpropagates over [max(0, e - k2), e)
    and its loss covers the steps since the previous update."""
    ends = [e for e in range(k1, T + 1, k1)]
    if not ends or ends[-1] != T:
        ends.append(T)
    return [(max(0, e - k2), (ends[i - 1] if i else 0), e) for i, e in enumerate(ends)]


@given(st.integers(1, 6), st.integers(0, 6), st.integers(1, 20))
@settings(max_examples=60, deadline=None)
def test_windows_follow_the_definition(k1, extra, T):
    ws = TruncatedBPTT(k1, k1 + extra).windows(T)
    assert [(w.start, w.loss_start, w.end) for w in ws] == windows_by_definition(k1, k1 + extra, T)
    for a, b in zip(ws, ws[1:]):
        assert a.carry == b.start and a.start <= a.carry <= a.end  # the next start comes from a
    assert ws[-1].carry == T


def grads_full(model, x, y, sup, lengths=None):
    out = model(x, lengths=lengths).output
    loss = sup(out, y, lengths)
    return loss, torch.autograd.grad(loss, list(model.parameters()))


def run_tbptt(model, x, y, sup, tb, lengths=None, lr=0.0):
    target, mask = sup.targets(y, x.shape[1], lengths)
    grads = []
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def after(n, loss):
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
        opt.zero_grad()

    res = tb.run(model, x, target, mask, loss=sup.loss, lengths=lengths, after_backward=after)
    return res, grads


@pytest.mark.parametrize("case", [3, 4])
def test_k_at_least_T_equals_full_bptt(case):
    torch.manual_seed(0)
    model = SequenceModel(SPEC)
    x = torch.randn(4, 9, 2)
    y = torch.randn(4, 9, 1) if case == 4 else torch.randn(4, 1)
    lengths = torch.tensor([9, 7, 4, 1])
    sup = Supervision(case, "mse")
    loss, g_full = grads_full(model, x, y, sup, lengths)
    for k in (9, 12):
        res, grads = run_tbptt(model, x, y, sup, TruncatedBPTT(k, k), lengths)
        assert len(grads) == 1
        assert res.loss == pytest.approx(float(loss.detach()), rel=1e-6)
        for a, b in zip(grads[0], g_full):
            assert torch.allclose(a, b, atol=1e-7)


@given(st.integers(1, 12), st.integers(0, 4), st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_property_tbptt_with_k_ge_T_is_full_bptt(T, extra, seed):
    torch.manual_seed(seed)
    model = SequenceModel(SPEC)
    x, y = torch.randn(2, T, 2), torch.randn(2, T, 1)
    sup = Supervision(4, "mse")
    _, g_full = grads_full(model, x, y, sup)
    _, grads = run_tbptt(model, x, y, sup, TruncatedBPTT(T + extra))
    for a, b in zip(grads[0], g_full):
        assert torch.allclose(a, b, atol=1e-6)


def test_k1_equals_k2_is_chunking_with_detached_state():
    """Updates every k steps through k steps = run chunks, detach the state between them,
    update after each chunk: written out by hand with the cell. (With T not a multiple of k the
    last update still reaches k steps back, into the previous chunk; see the k2 > k1 test.)"""
    torch.manual_seed(1)
    model = SequenceModel(SPEC)
    ref = copy.deepcopy(model)
    x, y = torch.randn(3, 12, 2), torch.randn(3, 12, 1)
    sup = Supervision(4, "mse")
    run_tbptt(model, x, y, sup, TruncatedBPTT(4), lr=0.1)

    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    cell, h = ref.core.cell, None
    h = cell.initial_state(3)
    for a, b in ((0, 4), (4, 8), (8, 12)):
        h = type(h)(*(t.detach() for t in h))
        outs = []
        for t in range(a, b):
            o, h = cell(x[:, t], h)
            outs.append(ref.readout(o))
        loss = ((torch.stack(outs, 1) - y[:, a:b]) ** 2).sum() / y.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_k2_greater_than_k1_backpropagates_k2_steps():
    """With frozen parameters, window n's gradient is that of its k1 new losses through the
    last k2 steps only: the state k2 steps back is a constant (computed by hand here)."""
    torch.manual_seed(2)
    model = SequenceModel(SPEC)
    x, y = torch.randn(2, 11, 2), torch.randn(2, 11, 1)
    sup = Supervision(4, "mse")
    k1, k2 = 3, 5
    _, grads = run_tbptt(model, x, y, sup, TruncatedBPTT(k1, k2))
    cell, params = model.core.cell, list(model.parameters())
    ends = [3, 6, 9, 11]
    assert len(grads) == len(ends)
    for n, e in enumerate(ends):
        start, loss_start = max(0, e - k2), (ends[n - 1] if n else 0)
        with torch.no_grad():
            h = cell.initial_state(2)
            for t in range(start):
                _, h = cell(x[:, t], h)
        outs = []
        for t in range(start, e):
            o, h = cell(x[:, t], h)
            outs.append(model.readout(o))
        out = torch.stack(outs, 1)[:, loss_start - start :]
        loss = ((out - y[:, loss_start:e]) ** 2).sum() / y.numel()
        want = torch.autograd.grad(loss, params)
        for a, b in zip(grads[n], want):
            assert torch.allclose(a, b, atol=1e-6), n


def test_memory_does_not_grow_with_sequence_length():
    """The bytes autograd keeps for a backward depend on k2, not on T."""
    model = SequenceModel(SPEC)
    sup = Supervision(4, "mse")

    def saved_per_window(T, tb=None):
        counts, live = [], [0]

        def pack(t):
            live[0] += t.numel() * t.element_size()
            return t

        def after(n, loss):
            counts.append(live[0])
            live[0] = 0

        x, y = torch.randn(2, T, 2), torch.randn(2, T, 1)
        target, mask = sup.targets(y, T)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            (tb or TruncatedBPTT(4, 6)).run(
                model, x, target, mask, loss="mse", after_backward=after
            )
        return counts

    short, long = saved_per_window(24), saved_per_window(96)
    assert len(long) == 4 * len(short)
    assert max(long) == max(short)
    # the same count for full BPTT grows with T (so the count above measures something)
    assert saved_per_window(96, TruncatedBPTT.full(96))[0] > 3 * max(long)


def test_stream_carry_equals_one_long_run():
    """Streaming a sequence in two chunks with the carried state gives the outputs of one run."""
    torch.manual_seed(3)
    model = SequenceModel({**SPEC, "input_size": 1, "output_size": 1, "feedback": "input"})
    x = torch.randn(2, 12, 1)
    y = torch.randn(2, 12, 1)
    sup = Supervision(4, "mse")
    fm = torch.rand(2, 12) < 0.5
    tb = TruncatedBPTT(6)
    t1, m1 = sup.targets(y[:, :6], 6)
    t2, m2 = sup.targets(y[:, 6:], 6)
    r1 = tb.run(model, x[:, :6], t1, m1, loss="mse", feed_mask=fm[:, :6])
    r2 = tb.run(
        model,
        x[:, 6:],
        t2,
        m2,
        loss="mse",
        feed_mask=fm[:, 6:],
        state=r1.state,
        prev_output=r1.last_output,
    )
    with torch.no_grad():
        whole = model(x, feed_mask=fm).output
    assert torch.allclose(torch.cat([r1.output, r2.output], 1), whole, atol=1e-6)


def test_tbptt_errors():
    with pytest.raises(ValueError, match="k1: expected a positive int"):
        TruncatedBPTT(0)
    with pytest.raises(ValueError, match="k2: expected an int >= k1=4"):
        TruncatedBPTT(4, 2)
    with pytest.raises(ValueError, match="steps: expected a positive int"):
        TruncatedBPTT(4).windows(0)


def test_nan_loss_stops_before_the_backward():
    model = SequenceModel(SPEC)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(2, 6, 2), torch.randn(2, 6, 1)
    y[0, 4] = float("nan")
    target, mask = Supervision(4).targets(y, 6)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)

    def after(n, loss):
        opt.step()
        opt.zero_grad()

    with pytest.raises(FloatingPointError, match=r"loss is nan in truncated-BPTT window 1"):
        TruncatedBPTT(3).run(model, x, target, mask, loss="mse", after_backward=after)
    # window 0 was fine and updated the parameters; window 1 did not touch them again
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_teacher_forcing_reaches_across_window_boundaries():
    """A window that continues a sequence substitutes at its first step too: under teacher
    forcing every y(t) = r(t-1) (probe Jordan net), also at t = k1, 2 k1, ..."""
    from test_training_forcing import probe_jordan

    model = probe_jordan()
    T = 10
    r = (100.0 + torch.arange(T, dtype=torch.float32)).expand(2, T).unsqueeze(-1).contiguous()
    target, mask = Supervision(4).targets(r, T)
    for tb in (TruncatedBPTT(3), TruncatedBPTT(3, 5)):
        res = tb.run(
            model,
            torch.zeros(2, T, 1),
            target,
            mask,
            loss="mse",
            feed_mask=torch.ones(2, T, dtype=torch.bool),
            reference=r,
        )
        assert torch.equal(res.output[:, 1:, 0], r[:, :-1, 0])
