"""Layers 3 and 5: Recurrent equals stepping the cell by hand; lengths, reverse, packing,
trajectories, learned initial states, output feedback, bidirectional and deep compositions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cell_zoo import ZOO
from rnnlab import (
    Alternating,
    Bidirectional,
    BidirectionalOutput,
    DeepOutput,
    DeepTransition,
    ElmanCell,
    FreeRunning,
    GRUCell,
    JordanCell,
    LSTMCell,
    Mixed,
    Recurrent,
    Stacked,
    TeacherForcing,
)
from rnnlab.layers._utils import reverse_padded

D = torch.float64


def by_hand(cell, x, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = cell(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("name", sorted(ZOO))
def test_recurrent_equals_stepping_by_hand(name):
    torch.manual_seed(0)
    cell = ZOO[name]().double()
    x = torch.randn(3, 6, cell.input_size, dtype=D)
    s0 = cell.State(*(torch.randn(3, n, dtype=D) for n in cell.state_sizes().values()))
    y, s = Recurrent(cell)(x, s0)
    y2, s2 = by_hand(cell, x, s0)
    torch.testing.assert_close(y, y2)
    for a, b in zip(s, s2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["lstm_v", "gru_before", "jordan", "elman_relu_out", "lstm_fgr"])
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_equal_truncation(name, reverse):
    torch.manual_seed(1)
    cell = ZOO[name]().double()
    layer = Recurrent(cell, reverse=reverse)
    x = torch.randn(4, 7, cell.input_size, dtype=D)
    lengths = torch.tensor([7, 3, 1, 5])
    y, s = layer(x, lengths=lengths)
    for b, L in enumerate(lengths.tolist()):
        yb, sb = layer(x[b : b + 1, :L])
        torch.testing.assert_close(y[b, :L], yb[0])
        assert torch.all(y[b, L:] == 0)
        for f, fb in zip(s, sb):
            torch.testing.assert_close(f[b], fb[0])


def test_reverse_is_the_forward_run_of_the_reversed_sequence():
    cell = LSTMCell(2, 4).double()
    x = torch.randn(2, 5, 2, dtype=D)
    y, s = Recurrent(cell, reverse=True)(x)
    y2, s2 = Recurrent(cell)(x.flip(1))
    torch.testing.assert_close(y, y2.flip(1))
    torch.testing.assert_close(s.c, s2.c)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_property_reverse_reverse_is_identity(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    x = torch.randn(len(lengths), T, 2, generator=g)
    L = torch.tensor(lengths)
    torch.testing.assert_close(reverse_padded(reverse_padded(x, L), L), x)
    # reversal stays within each sequence: the first valid element goes to position L-1
    r = reverse_padded(x, L)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(r[b, n - 1], x[b, 0])


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(0, 5), st.integers(0, 10**6)
)
def test_property_padding_with_lengths_equals_truncation(lengths, extra, seed):
    torch.manual_seed(seed)
    cell = GRUCell(2, 3).double()
    layer = Recurrent(cell)
    T = max(lengths) + extra
    x = torch.randn(len(lengths), T, 2, dtype=D)
    y, s = layer(x, lengths=torch.tensor(lengths))
    for b, L in enumerate(lengths):
        yb, sb = layer(x[b : b + 1, :L])
        torch.testing.assert_close(y[b, :L], yb[0])
        torch.testing.assert_close(s.h[b], sb.h[0])


def test_time_first_and_lengths_on_other_device_type():
    cell = ElmanCell(2, 3).double()
    x = torch.randn(4, 6, 2, dtype=D)
    lengths = [6, 2, 3, 1]  # a plain list is accepted too
    y1, s1 = Recurrent(cell)(x, lengths=torch.tensor(lengths))
    y2, s2 = Recurrent(cell, batch_first=False)(x.transpose(0, 1), lengths=lengths)
    torch.testing.assert_close(y1, y2.transpose(0, 1))
    torch.testing.assert_close(s1.h, s2.h)


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_in_packed_out(enforce_sorted):
    cell = LSTMCell(3, 4).double()
    layer = Recurrent(cell)
    x = torch.randn(4, 6, 3, dtype=D)
    lengths = torch.tensor([6, 4, 4, 2]) if enforce_sorted else torch.tensor([2, 6, 4, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    out, s = layer(packed)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    torch.testing.assert_close(out.batch_sizes, packed.batch_sizes)
    padded, out_len = pad_packed_sequence(out, batch_first=True)
    y, s2 = layer(x, lengths=lengths)
    torch.testing.assert_close(padded, y[:, : padded.shape[1]])
    torch.testing.assert_close(s.h, s2.h)
    torch.testing.assert_close(out_len, lengths)


def test_trajectory_holds_every_state():
    cell = LSTMCell(2, 3).double()
    x = torch.randn(2, 5, 2, dtype=D)
    res = Recurrent(cell).run(x, lengths=torch.tensor([5, 3]), return_states=True)
    s = cell.initial_state(2, dtype=D)
    for t in range(5):
        _, s = cell(x[:, t], s)
        torch.testing.assert_close(res.states.h[0, t], s.h[0])
        torch.testing.assert_close(res.states.c[0, t], s.c[0])
    # past its end, sequence 1's state stays at its final value
    torch.testing.assert_close(res.states.c[1, 4], res.states.c[1, 2])
    torch.testing.assert_close(res.state.c[1], res.states.c[1, 2])


def test_learned_initial_state_is_trained():
    layer = Recurrent(GRUCell(2, 3), learn_initial_state=True)
    x = torch.randn(4, 5, 2)
    y, _ = layer(x)
    y.sum().backward()
    assert layer.initial["h"].grad is not None and layer.initial["h"].grad.abs().sum() > 0
    with torch.no_grad():
        layer.initial["h"].fill_(0.3)
    y2, _ = layer(x)
    y3, _ = Recurrent(layer.cell)(x, (torch.full((4, 3), 0.3),))
    torch.testing.assert_close(y2, y3)


# ---- output feedback ------------------------------------------------------------------------


def jordan_by_hand(cell, x, r, use_ref, y0):
    """Jordan with the reference r(t-1) fed back where use_ref[b, t] (t >= 1)."""
    y_prev, ys = y0, []
    for t in range(x.shape[1]):
        if t > 0:
            y_prev = torch.where(use_ref[:, t : t + 1], r[:, t - 1], y_prev)
        h = torch.tanh(
            x[:, t] @ cell.weight_ih.T + cell.bias_ih + y_prev @ cell.weight_hh.T + cell.bias_hh
        )
        y_prev = h @ cell.weight_ho.T + cell.bias_ho
        ys.append(y_prev)
    return torch.stack(ys, 1)


@pytest.mark.parametrize(
    "schedule",
    [TeacherForcing(), FreeRunning(), Alternating(2, 3), Mixed(0.5), Mixed(0.5, per="sequence")],
)
def test_jordan_feedback_schedules_equal_hand_substitution(schedule):
    torch.manual_seed(0)
    cell = JordanCell(2, 5, 3).double()
    x = torch.randn(4, 9, 2, dtype=D)
    r = torch.randn(4, 9, 3, dtype=D)
    g = torch.Generator().manual_seed(7)
    y, _ = Recurrent(cell)(x, feedback=schedule, reference=r, generator=g)
    mask = schedule.mask(4, 9, generator=torch.Generator().manual_seed(7))
    y_ref = jordan_by_hand(cell, x, r, mask, torch.zeros(4, 3, dtype=D))
    torch.testing.assert_close(y, y_ref)


def test_alternating_and_mixed_masks():
    m = Alternating(2, 3).mask(1, 10)[0].tolist()
    assert m == [True, True, False, False, False, True, True, False, False, False]
    g = torch.Generator().manual_seed(0)
    frac = Mixed(0.25).mask(200, 200, generator=g).float().mean().item()
    assert abs(frac - 0.25) < 0.01
    seq = Mixed(0.5, per="sequence").mask(50, 7, generator=g)
    assert torch.all(seq == seq[:, :1])


def test_teacher_forced_jordan_steps_are_decoupled():
    # Under teacher forcing y(t) depends on x(t) and r(t-1) only (the lecture's remark).
    cell = JordanCell(2, 4, 2).double()
    x = torch.randn(1, 6, 2, dtype=D, requires_grad=True)
    r = torch.randn(1, 6, 2, dtype=D)
    y, _ = Recurrent(cell)(x, feedback=TeacherForcing(), reference=r)
    y[0, 4].sum().backward()
    nz = (x.grad[0].abs().sum(1) > 0).tolist()
    assert nz == [False, False, False, False, True, False]


def test_free_running_detach_option():
    cell = JordanCell(2, 4, 2).double()
    x = torch.randn(1, 5, 2, dtype=D, requires_grad=True)
    r = torch.zeros(1, 5, 2, dtype=D)
    y, _ = Recurrent(cell)(x, feedback=FreeRunning(detach=False), reference=r)
    y_plain, _ = Recurrent(cell)(x)
    torch.testing.assert_close(y, y_plain)  # free running = the plain Jordan recursion
    y[0, 4].sum().backward()
    assert x.grad[0, 0].abs().sum() > 0  # gradient flows through fed-back outputs
    x.grad = None
    y, _ = Recurrent(cell)(x, feedback=FreeRunning(), reference=r)
    y[0, 4].sum().backward()
    assert x.grad[0, :4].abs().sum() == 0  # detached by default (Bengio et al. 2015)


def test_autoregressive_input_feedback_and_generate():
    torch.manual_seed(0)
    cell = ElmanCell(2, 6, 2).double()
    layer = Recurrent(cell, input_feedback=lambda y: y)
    x = torch.randn(3, 5, 2, dtype=D)
    y_tf, _ = layer(x, feedback=TeacherForcing())
    y_plain, _ = Recurrent(cell)(x)
    torch.testing.assert_close(y_tf, y_plain)  # teacher forcing = the given inputs
    y_fr, _ = layer(x, feedback=FreeRunning())
    gen, _ = layer.generate(5, x[:, 0])
    torch.testing.assert_close(y_fr, gen)  # free running = generation from x(0)
    # generation by hand: x(t) = y(t-1)
    s, xt = cell.initial_state(3, dtype=D), x[:, 0]
    for t in range(5):
        yt, s = cell(xt, s)
        torch.testing.assert_close(gen[:, t], yt)
        xt = yt


# ---- bidirectional and deep ------------------------------------------------------------------


def test_bidirectional_equals_manual_composition():
    torch.manual_seed(0)
    fwd, bwd = Recurrent(GRUCell(3, 4)).double(), Recurrent(GRUCell(3, 5)).double()
    bi = Bidirectional(fwd, bwd)
    x = torch.randn(3, 6, 3, dtype=D)
    lengths = torch.tensor([6, 2, 4])
    y, s = bi(x, lengths=lengths)
    assert y.shape == (3, 6, 9) and bi.output_size == 9
    for b, L in enumerate(lengths.tolist()):
        xb = x[b : b + 1, :L]
        h, sh = by_hand(fwd.cell, xb, fwd.cell.initial_state(1, dtype=D))
        g, sg = by_hand(bwd.cell, xb.flip(1), bwd.cell.initial_state(1, dtype=D))
        torch.testing.assert_close(y[b, :L], torch.cat([h[0], g[0].flip(0)], -1))
        torch.testing.assert_close(s.forward.h[b], sh.h[0])
        torch.testing.assert_close(s.backward.h[b], sg.h[0])


def test_bidirectional_lecture_output_and_merges():
    torch.manual_seed(0)
    fwd, bwd = Recurrent(ElmanCell(2, 3)).double(), Recurrent(ElmanCell(2, 4)).double()
    out = BidirectionalOutput(3, 4, 2, activation="tanh").double()
    bi = Bidirectional(fwd, bwd, merge=out)
    x = torch.randn(2, 5, 2, dtype=D)
    y, _ = bi(x)
    h, _ = fwd(x)
    g, _ = bwd(x, reverse=True)
    expect = torch.tanh(h @ out.weight_yh.T + g @ out.weight_yg.T + out.bias)
    torch.testing.assert_close(y, expect)
    same = Bidirectional(Recurrent(ElmanCell(2, 3)).double(), merge="sum")
    assert same(x)[0].shape == (2, 5, 3)
    # the default backward layer is a copy with its own parameters
    assert same.backward_layer.cell.weight_ih is not same.forward_layer.cell.weight_ih
    assert not torch.equal(same.backward_layer.cell.weight_ih, same.forward_layer.cell.weight_ih)


def test_stacked_equals_manual_and_skip_residual():
    torch.manual_seed(0)
    l1, l2 = Recurrent(LSTMCell(3, 4)).double(), Recurrent(GRUCell(4 + 3, 4)).double()
    net = Stacked([l1, l2], input_skip=True, output_skip=True, residual=True)
    x = torch.randn(2, 5, 3, dtype=D)
    y, (s1, s2) = net(x)
    h1, t1 = l1(x)
    h2, t2 = l2(torch.cat([h1, x], -1))
    torch.testing.assert_close(y, torch.cat([h1, h2 + h1], -1))
    torch.testing.assert_close(s2.h, t2.h)
    assert net.output_size == 8


def test_deep_bidirectional_lstm_with_skip_is_one_expression_and_packed():
    torch.manual_seed(0)
    net = Stacked(
        [
            Bidirectional(Recurrent(LSTMCell(3, 4))),
            Bidirectional(Recurrent(DeepTransition(GRUCell(8 + 3, 4), [5]))),
            Recurrent(DeepOutput(LSTMCell(8 + 3, 4), [6], output_size=2)),
        ],
        input_skip=True,
    ).double()
    x = torch.randn(3, 5, 3, dtype=D)
    lengths = torch.tensor([5, 3, 2])
    y, states = net(x, lengths=lengths)
    assert y.shape == (3, 5, 2) and len(states) == 3
    packed = pack_padded_sequence(x, lengths, batch_first=True)
    yp, _ = net(packed)
    torch.testing.assert_close(pad_packed_sequence(yp, batch_first=True)[0], y)
    # each sequence alone gives the same result
    y0, _ = net(x[2:3, :2])
    torch.testing.assert_close(y[2, :2], y0[0])


def test_stacked_dropout_only_in_training():
    net = Stacked([Recurrent(ElmanCell(2, 8)), Recurrent(ElmanCell(8, 8))], dropout=0.5)
    x = torch.randn(2, 4, 2)
    net.eval()
    torch.testing.assert_close(net(x)[0], net(x)[0])
    net.train()
    torch.manual_seed(0)
    a = net(x)[0]
    torch.manual_seed(1)
    b = net(x)[0]
    assert not torch.allclose(a, b)
