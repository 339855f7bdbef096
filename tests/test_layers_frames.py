"""Bidirectional and Stacked over per-step frames (ConvLSTM's (B, T, C, H, W)), against the
same pieces composed by hand (issue 18)."""

from __future__ import annotations

import pytest
import torch

from rnnlab.cells import ConvLSTMCell, LSTMCell
from rnnlab.layers import Bidirectional, BidirectionalOutput, Recurrent, Stacked

L = torch.tensor([4, 2, 3])


def _x():
    torch.manual_seed(0)
    return torch.randn(3, 4, 2, 5, 6, dtype=torch.float64, requires_grad=True)


def _grads(out, params, x):
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return torch.autograd.grad((out * w).sum(), [x, *params])


def test_bidirectional_frames_equals_two_directions_by_hand():
    torch.manual_seed(1)
    fwd = Recurrent(ConvLSTMCell(2, 3, 3)).double()
    bwd = Recurrent(ConvLSTMCell(2, 2, 3)).double()
    bi = Bidirectional(fwd, bwd)
    x = _x()
    y, state = bi(x, lengths=L)
    assert y.shape == (3, 4, 5, 5, 6) and bi.input_shape == (2, None, None)
    # by hand: the forward layer as is; the backward layer on each sequence reversed within
    # its length, its outputs reversed back, zeros past the length
    h, s_f = fwd(x, lengths=L)
    g = torch.zeros(3, 4, 2, 5, 6, dtype=torch.float64)
    finals = []
    for b in range(3):
        n = int(L[b])
        gb, sb = bwd(x[b : b + 1, :n].flip(1))
        g = g.index_put((torch.tensor([b]),), torch.cat([gb.flip(1), g[b : b + 1, n:]], 1))
        finals.append(sb)
    want = torch.cat([h, g], dim=2)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(state.backward.h, torch.cat([s.h for s in finals]))
    torch.testing.assert_close(state.forward.c, s_f.c)
    params = list(bi.parameters())
    for a, b_ in zip(_grads(y, params, x), _grads(want, params, x)):
        torch.testing.assert_close(a, b_)


def test_stacked_frames_with_skips_equals_layers_by_hand():
    torch.manual_seed(2)
    l1 = Recurrent(ConvLSTMCell(2, 3, 3)).double()
    l2 = Recurrent(ConvLSTMCell(3 + 2, 3, 3)).double()
    net = Stacked([l1, l2], input_skip=True, output_skip=True)
    x = _x()
    y, states = net(x, lengths=L)
    y1, s1 = l1(x, lengths=L)
    y2, s2 = l2(torch.cat([y1, x], 2), lengths=L)
    want = torch.cat([y1, y2], 2)
    valid = (torch.arange(4) < L.unsqueeze(1)).view(3, 4, 1, 1, 1)
    want = torch.where(valid, want, torch.zeros(()))
    assert y.shape == (3, 4, 6, 5, 6)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(states[1].c, s2.c)
    params = list(net.parameters())
    for a, b in zip(_grads(y, params, x), _grads(want, params, x)):
        torch.testing.assert_close(a, b)


def test_stacked_residual_and_bidirectional_frames_compose():
    torch.manual_seed(3)
    bi = Bidirectional(Recurrent(ConvLSTMCell(2, 2, 3)), merge="sum")
    top = Recurrent(ConvLSTMCell(2, 2, 3))
    net = Stacked([bi, top], residual=True).double()
    x = _x()
    y, _ = net(x)
    h, _ = net.layers[0](x)
    torch.testing.assert_close(y, net.layers[1](h)[0] + h)


def test_frames_errors_are_clear():
    conv = Recurrent(ConvLSTMCell(2, 3, 3))
    with pytest.raises(ValueError, match=r"layers\[1\]: expected a layer on per-step frames"):
        Stacked([conv, Recurrent(LSTMCell(3, 4))])
    with pytest.raises(TypeError, match="merge: BidirectionalOutput maps feature vectors"):
        Bidirectional(conv, merge=BidirectionalOutput(3, 3, 2))
    with pytest.raises(ValueError, match="backward_layer: expected the per-step input shape"):
        Bidirectional(Recurrent(LSTMCell(2, 3)), conv)
    with pytest.raises(ValueError, match=r"x: expected \(B, T, 2, \*, \*\)"):
        Bidirectional(conv)(torch.randn(2, 3, 2))
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(2, 3, 2), [3, 2], True)
    with pytest.raises(TypeError, match="not packed"):
        Stacked([conv])(packed)
