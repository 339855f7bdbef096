"""ConvLSTM (Shi et al. 2015) against its written-out equations, Recurrent on (B, T, C, H, W),
the flat-state adaptor for the dynamics maps, and the moving-shapes task."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlab import engine
from rnnlab.cells import ConvLSTMCell, LSTMCell, ZoneoutCell
from rnnlab.data import MovingShapes, shape_sprite
from rnnlab.layers import Recurrent

D = torch.float64
B, T, C, FH, S = 2, 4, 2, 3, 5


def ref_convlstm(p, x, h, c, k=3, lengths=None):
    """Shi et al. eq. 3 written out: separate convolutions per gate, Hadamard peepholes."""
    W, U, b = p["weight_ih"], p["weight_hh"], p.get("bias_ih")
    Wi, Wf, Wc, Wo = W.chunk(4, 0)
    Ui, Uf, Uc, Uo = U.chunk(4, 0)
    bi, bf, bc, bo = b.chunk(4, 0) if b is not None else (None,) * 4

    def conv(v, w, bb=None):
        return F.conv2d(v, w, bb, padding=w.shape[-1] // 2)

    ys = []
    for t in range(x.shape[1]):
        X = x[:, t]
        pi = p["weight_ci"] * c if "weight_ci" in p else 0
        pf = p["weight_cf"] * c if "weight_cf" in p else 0
        i = torch.sigmoid(conv(X, Wi, bi) + conv(h, Ui) + pi)
        f = torch.sigmoid(conv(X, Wf, bf) + conv(h, Uf) + pf)
        c_new = f * c + i * torch.tanh(conv(X, Wc, bc) + conv(h, Uc))
        po = p["weight_co"] * c_new if "weight_co" in p else 0
        o = torch.sigmoid(conv(X, Wo, bo) + conv(h, Uo) + po)
        h_new = o * torch.tanh(c_new)
        if lengths is not None:
            m = (t < lengths).view(-1, 1, 1, 1)
            h_new, c_new = torch.where(m, h_new, h), torch.where(m, c_new, c)
            ys.append(torch.where(m, h_new, torch.zeros(())))
        else:
            ys.append(h_new)
        h, c = h_new, c_new
    return torch.stack(ys, 1), (h, c)


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_convlstm_matches_equations(peephole, with_lengths):
    torch.manual_seed(0)
    cell = ConvLSTMCell(C, FH, 3, peephole=peephole, spatial_size=(S, S + 1), dtype=D)
    with torch.no_grad():
        for q in cell.parameters():
            q.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, C, S, S + 1, dtype=D, requires_grad=True)
    h0 = torch.randn(B, FH, S, S + 1, dtype=D, requires_grad=True)
    c0 = torch.randn(B, FH, S, S + 1, dtype=D, requires_grad=True)
    lengths = torch.tensor([T, 2]) if with_lengths else None
    params = dict(cell.named_parameters())
    leaves = [x, h0, c0, *params.values()]
    y_r, (h_r, c_r) = ref_convlstm(params, x, h0, c0, lengths=lengths)
    w = torch.randn(y_r.shape, dtype=D)
    g_r = torch.autograd.grad((y_r * w).sum() + h_r.sum() + 2 * c_r.sum(), leaves)
    for use_engine in (True, False):
        ctx = engine.disabled() if not use_engine else torch.enable_grad()
        with ctx:
            y, s = Recurrent(cell)(x, (h0, c0), lengths=lengths)
        torch.testing.assert_close(y, y_r)
        torch.testing.assert_close(s.h, h_r)
        torch.testing.assert_close(s.c, c_r)
        g = torch.autograd.grad((y * w).sum() + s.h.sum() + 2 * s.c.sum(), leaves)
        for a, b in zip(g, g_r):
            torch.testing.assert_close(a, b)


def test_recurrent_takes_frames_of_any_size_and_checks_them():
    cell = ConvLSTMCell(1, 2, (3, 5))
    layer = Recurrent(cell, batch_first=False)
    y, s = layer(torch.randn(3, 2, 1, 7, 9))  # (T, B, C, H, W)
    assert y.shape == (3, 2, 2, 7, 9) and s.h.shape == (2, 2, 7, 9)
    y2, _ = Recurrent(cell)(torch.randn(2, 3, 1, 4, 4), reverse=True)
    assert y2.shape == (2, 3, 2, 4, 4)
    with pytest.raises(ValueError, match=r"x: expected \(B, T, 1, \*, \*\), got \(2, 3, 2, 4, 4\)"):
        Recurrent(cell)(torch.randn(2, 3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"state.h: expected shape \(2, 2, 4, 4\)"):
        Recurrent(cell)(torch.randn(2, 3, 1, 4, 4), (torch.zeros(2, 2, 5, 4),) * 2)
    with pytest.raises(ValueError, match="spatial_size: peephole=True needs"):
        ConvLSTMCell(1, 2, peephole=True)
    peep = ConvLSTMCell(1, 2, peephole=True, spatial_size=(4, 4))
    with pytest.raises(ValueError, match="expected frames of"):
        peep(torch.randn(2, 1, 5, 5))
    with pytest.raises(ValueError, match="kernel_size"):
        ConvLSTMCell(1, 2, 4)
    with pytest.raises(ValueError, match="learn_initial_state"):
        Recurrent(cell, learn_initial_state=True)


def test_flat_adaptor_is_the_same_map_and_analysable():
    from rnnlab.dynamics import Map

    torch.manual_seed(1)
    conv = ConvLSTMCell(1, 2, 3, peephole=True, spatial_size=(3, 4), dtype=D)
    flat = conv.flat()
    x = torch.randn(2, 1, 3, 4, dtype=D)
    s0 = (torch.randn(2, 2, 3, 4, dtype=D), torch.randn(2, 2, 3, 4, dtype=D))
    y, s = conv(x, s0)
    yf, sf = flat(x.reshape(2, -1), tuple(t.reshape(2, -1) for t in s0))
    torch.testing.assert_close(yf, y.reshape(2, -1))
    torch.testing.assert_close(sf.c, s.c.reshape(2, -1))
    m = Map.from_cell(flat)
    assert m.state_size == 2 * 2 * 12 and m.input_size == 12
    h = torch.cat([t.reshape(2, -1) for t in s0], 1)  # (B, N): h then c, flattened
    torch.testing.assert_close(m.step(h, x.reshape(2, -1)), torch.cat([sf.h, sf.c], 1))
    # The Jacobian dh(t+1)/dh(t) of the map is the conv cell's, by finite differences.
    J = m.jacobian(h[:1], x[:1].reshape(1, -1))[0]  # (N, N)
    e = torch.zeros_like(h[:1])
    e[0, 5] = 1e-6
    fd = (m.step(h[:1] + e, x[:1].reshape(1, -1)) - m.step(h[:1] - e, x[:1].reshape(1, -1))) / 2e-6
    torch.testing.assert_close(J[:, 5], fd[0], atol=1e-7, rtol=1e-6)


def test_zoneout_wraps_convlstm():
    cell = ZoneoutCell(ConvLSTMCell(1, 2), {"h": 0.2, "c": 0.5}).eval()
    y, s = Recurrent(cell)(torch.randn(2, 3, 1, 4, 4))
    assert y.shape == (2, 3, 2, 4, 4)


def test_moving_shapes_frames_bounce_and_shift():
    task = MovingShapes(5, 12, size=16, objects=1, sprite_size=4, speed=(2.0, 3.0), seed=3)
    assert task.x.shape == (5, 12, 1, 16, 16) and task.y.shape == task.x.shape
    assert torch.equal(task.x[:, 1:], task.y[:, :-1])  # y is x one frame on
    # One object always inside the frame: every frame holds the whole sprite.
    mass = float(shape_sprite("square", 4).sum())
    sums = torch.cat([task.x, task.y[:, -1:]], 1).sum((2, 3, 4))  # (N, T+1)
    shapes = task.params["shapes"]
    assert all(float(shape_sprite(s, 4).sum()) <= mass for s in shapes)
    assert bool((sums > 0).all())
    # The square's mass is exact: it is never clipped by an edge.
    sq = MovingShapes(3, 20, size=12, objects=1, sprite_size=4, shapes=("square",), seed=1)
    full = torch.cat([sq.x, sq.y[:, -1:]], 1).sum((2, 3, 4))
    assert torch.allclose(full, torch.full_like(full, mass))
    # Bouncing, not sticking: a sprite at >= 2 px/step keeps crossing the frame (room 8 px).
    run = MovingShapes(6, 40, size=12, objects=1, sprite_size=4, speed=(2.0, 2.5), seed=2)
    frames = torch.cat([run.x, run.y[:, -1:]], 1)[:, :, 0]  # (N, T+1, S, S)
    grid = torch.arange(12.0)
    cy = (frames.sum(3) * grid).sum(2) / frames.sum((2, 3))  # (N, T+1) centroid rows
    cx = (frames.sum(2) * grid).sum(2) / frames.sum((2, 3))
    late = slice(20, None)  # long after the first wall: still crossing the whole frame
    spread = torch.maximum(
        cy[:, late].amax(1) - cy[:, late].amin(1), cx[:, late].amax(1) - cx[:, late].amin(1)
    )
    assert bool((spread >= 6).all()), spread
    again = MovingShapes(5, 12, size=16, objects=1, sprite_size=4, speed=(2.0, 3.0), seed=3)
    assert torch.equal(again.x, task.x)
    assert task.baseline_loss() > 0
    with pytest.raises(ValueError, match="sprite_size"):
        MovingShapes(2, 3, size=8, sprite_size=8)
    with pytest.raises(ValueError, match="shapes"):
        MovingShapes(2, 3, shapes=("star",))


def test_moving_shapes_fashion_sprites():
    from rnnlab.data import find_fashion_mnist

    root = "/work/shared/data/fashion-mnist"
    try:
        find_fashion_mnist(root)
    except FileNotFoundError:
        pytest.skip("no Fashion-MNIST here")
    task = MovingShapes(2, 3, size=20, sprite_size=10, data_root=root, seed=0)
    values = np.unique(task.x.numpy())
    assert task.params["sprites"] == "fashion-mnist" and len(values) > 10  # grey levels


@pytest.mark.parametrize(
    "name",
    ["cells.layernorm", "cells.dropout", "cells.zoneout", "cells.convlstm", "data.moving_shapes"],
)
def test_docstring_examples(name):
    module = importlib.import_module(f"rnnlab.{name}")
    extra = {"torch": torch, "LSTMCell": LSTMCell}
    result = doctest.testmod(module, extraglobs=extra, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
