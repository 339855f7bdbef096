"""Layer 2: each cell against the lecture's equations, written out here independently.

Weights are read from the cell by name and the equations are evaluated with plain matrix
products in float64 over several steps.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rnnlab.cells import ElmanCell, GeneralCell, GRUCell, JordanCell, LSTMCell

B, I, H, O, STEPS = 4, 3, 6, 2, 5
torch.manual_seed(0)


def sig(v: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-v))


def xs() -> Tensor:
    return torch.randn(STEPS, B, I, dtype=torch.float64)


def rand_params(cell: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)


def run_cell(cell, x, state):
    ys = []
    for t in range(x.shape[0]):
        y, state = cell(x[t], state)
        ys.append(y)
    return torch.stack(ys), state


@pytest.mark.parametrize(
    "act,fn",
    [
        ("tanh", torch.tanh),
        ("relu", lambda v: v.clamp(min=0)),
        ("sigmoid", sig),
        ("identity", lambda v: v),
    ],
)
def test_elman_equations(act, fn):
    cell = ElmanCell(I, H, O, activation=act, output_activation="tanh").double()
    rand_params(cell)
    x = xs()
    W, U, b = cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh
    Wy, by = cell.weight_ho, cell.bias_ho
    h = torch.randn(B, H, dtype=torch.float64)
    ys, state = run_cell(cell, x, (h,))
    for t in range(STEPS):
        h = fn(x[t] @ W.T + h @ U.T + b)  # h(t) = σ_h(W_h x(t) + U_h h(t-1) + b_h)
        y = torch.tanh(h @ Wy.T + by)  # y(t) = σ_y(W_y h(t) + b_y)
        torch.testing.assert_close(ys[t], y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.h, h, rtol=1e-12, atol=1e-12)


def test_elman_without_output_layer_outputs_h():
    cell = ElmanCell(I, H).double()
    y, s = cell(torch.randn(B, I, dtype=torch.float64))
    assert y is s.h or torch.equal(y, s.h)
    assert cell.weight_ho is None and cell.feedback_field == "h"


def test_jordan_equations():
    cell = JordanCell(I, H, O, activation="sigmoid", output_activation="tanh").double()
    rand_params(cell)
    x = xs()
    W, U, b = cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh
    Wy, by = cell.weight_ho, cell.bias_ho
    assert U.shape == (H, O)  # U_h maps y(t-1) to h
    y = torch.randn(B, O, dtype=torch.float64)
    ys, state = run_cell(cell, x, (y,))
    for t in range(STEPS):
        h = sig(x[t] @ W.T + y @ U.T + b)  # h(t) = σ_h(W_h x(t) + U_h y(t-1) + b_h)
        y = torch.tanh(h @ Wy.T + by)
        torch.testing.assert_close(ys[t], y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.y, y)


def lstm_reference(cell: LSTMCell, x: Tensor, y: Tensor, c: Tensor, gates_prev=None):
    """The lecture's LSTM written out, with Greff et al.'s variants as switches."""
    Hh = cell.hidden_size
    names = cell.blocks
    Wb = dict(zip(names, cell.weight_ih.split(Hh)))
    Ub = dict(zip(names, cell.weight_hh.split(Hh)))
    bb = dict(zip(names, (cell.bias_ih + cell.bias_hh).split(Hh)))
    act = {"tanh": torch.tanh, "identity": lambda v: v}
    sig_h, sig_y = act[cell.activation_name], act[cell.cell_activation_name]

    def pre(n):
        return x @ Wb[n].T + y @ Ub[n].T + bb[n]

    extra = {}
    if cell.weight_gg is not None:
        rec = gates_prev @ cell.weight_gg.T
        extra = dict(zip(cell.sigmoid_gates, rec.split(Hh, dim=1)))
    p = {"i": cell.weight_ci, "f": cell.weight_cf, "o": cell.weight_co}
    h_cand = sig_h(pre("g"))
    i = (
        sig(pre("i") + (p["i"] * c if p["i"] is not None else 0) + extra.get("i", 0))
        if "i" in names
        else 1.0
    )
    if "f" in names:
        f = sig(pre("f") + (p["f"] * c if p["f"] is not None else 0) + extra.get("f", 0))
    elif cell.coupled:
        f = 1.0 - i
    else:
        f = 1.0
    c_new = f * c + i * h_cand  # c(t) = f ⊙ c(t-1) + i ⊙ h̃(t)
    o = (
        sig(pre("o") + (p["o"] * c_new if p["o"] is not None else 0) + extra.get("o", 0))
        if "o" in names
        else 1.0
    )
    y_new = o * sig_y(c_new)  # y(t) = o ⊙ σ_y(c(t))
    if cell.weight_hr is not None:
        y_new = y_new @ cell.weight_hr.T
    g = None
    if cell.weight_gg is not None:
        g = torch.cat([{"i": i, "f": f, "o": o}[n] for n in cell.sigmoid_gates], 1)
    return y_new, c_new, g


@pytest.mark.parametrize("variant", ["NP", "V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "CIFG", "FGR"])
@pytest.mark.parametrize("proj", [0, 2])
def test_lstm_equations(variant, proj):
    cell = LSTMCell(I, H, proj_size=proj, variant=variant).double()
    rand_params(cell)
    x = xs()
    P = proj or H
    y = torch.randn(B, P, dtype=torch.float64)
    c = torch.randn(B, H, dtype=torch.float64)
    state = (y, c)
    g = None
    if variant == "FGR":
        g = torch.rand(B, 3 * H, dtype=torch.float64)
        state = (y, c, g)
    ys, final = run_cell(cell, x, state)
    for t in range(STEPS):
        y, c, g = lstm_reference(cell, x[t], y, c, g)
        torch.testing.assert_close(ys[t], y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final.c, c, rtol=1e-12, atol=1e-12)
    if variant == "FGR":
        torch.testing.assert_close(final.gates, g, rtol=1e-12, atol=1e-12)


def test_lstm_variant_structure():
    # Which gates and peepholes exist is the variant's definition (Greff et al. 2015, sec. 3).
    assert LSTMCell(I, H).blocks == ("i", "f", "g", "o") and LSTMCell(I, H).weight_ci is None
    assert LSTMCell(I, H, variant="V").weight_co is not None
    assert LSTMCell(I, H, variant="NIG").blocks == ("f", "g", "o")
    assert LSTMCell(I, H, variant="NFG").blocks == ("i", "g", "o")
    assert LSTMCell(I, H, variant="NOG").blocks == ("i", "f", "g")
    assert LSTMCell(I, H, variant="CIFG").blocks == ("i", "g", "o")
    assert LSTMCell(I, H, variant="FGR").weight_gg.shape == (3 * H, 3 * H)
    assert LSTMCell(I, H, variant="NIAF").activation_name == "identity"
    assert LSTMCell(I, H, variant="NOAF").cell_activation_name == "identity"


def test_lstm_forget_bias():
    cell = LSTMCell(I, H, forget_bias=1.0)
    torch.testing.assert_close(cell.bias_ih[H : 2 * H], torch.ones(H))
    torch.testing.assert_close(cell.bias_hh[H : 2 * H], torch.zeros(H))


@pytest.mark.parametrize("reset", ["before", "after"])
def test_gru_equations(reset):
    cell = GRUCell(I, H, reset=reset).double()
    rand_params(cell)
    x = xs()
    Wr, Wz, Wn = cell.weight_ih.split(H)
    Ur, Uz, Un = cell.weight_hh.split(H)
    bir, biz, bin_ = cell.bias_ih.split(H)
    bhr, bhz, bhn = cell.bias_hh.split(H)
    h = torch.randn(B, H, dtype=torch.float64)
    ys, state = run_cell(cell, x, (h,))
    for t in range(STEPS):
        z = sig(x[t] @ Wz.T + h @ Uz.T + biz + bhz)
        r = sig(x[t] @ Wr.T + h @ Ur.T + bir + bhr)
        if reset == "before":  # lecture: h̃ = σ_h(W_h x + U_h (r ⊙ h(t-1)) + b_h)
            n = torch.tanh(x[t] @ Wn.T + (r * h) @ Un.T + bin_ + bhn)
        else:  # cuDNN: tanh(W x + b_in + r ⊙ (U h + b_hn))
            n = torch.tanh(x[t] @ Wn.T + bin_ + r * (h @ Un.T + bhn))
        h = z * h + (1 - z) * n  # h(t) = z ⊙ h(t-1) + (1 - z) ⊙ h̃(t)
        torch.testing.assert_close(ys[t], h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.h, h)


def test_gru_forms_differ_on_same_weights():
    a = GRUCell(I, H, reset="after").double()
    b = GRUCell(I, H, reset="before").double()
    b.load_state_dict(a.state_dict())
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    assert (a(x, (h,))[0] - b(x, (h,))[0]).abs().max() > 1e-3


def test_cells_match_torch_nn_cells():
    torch.manual_seed(1)
    x = torch.randn(B, I, dtype=torch.float64)
    for ours, theirs, st in [
        (LSTMCell(I, H), torch.nn.LSTMCell(I, H), "lstm"),
        (GRUCell(I, H), torch.nn.GRUCell(I, H), "gru"),
        (ElmanCell(I, H), torch.nn.RNNCell(I, H), "rnn"),
    ]:
        ours, theirs = ours.double(), theirs.double()
        ours.load_state_dict(theirs.state_dict())
        h = torch.randn(B, H, dtype=torch.float64)
        if st == "lstm":
            c = torch.randn(B, H, dtype=torch.float64)
            h2, c2 = theirs(x, (h, c))
            y, s = ours(x, (h, c))
            torch.testing.assert_close(s.c, c2)
        else:
            h2 = theirs(x, h)
            y, s = ours(x, (h,))
        torch.testing.assert_close(y, h2)


def test_general_cell_is_elman():
    el = ElmanCell(I, H, O).double()
    gen = GeneralCell(
        lambda h, x: torch.tanh(x @ el.weight_ih.T + el.bias_ih + h @ el.weight_hh.T + el.bias_hh),
        lambda h, x: h @ el.weight_ho.T + el.bias_ho,
        input_size=I,
        state_size=H,
        output_size=O,
    )
    x = xs()
    h0 = torch.randn(B, H, dtype=torch.float64)
    a, sa = run_cell(el, x, (h0,))
    b, sb = run_cell(gen, x, (h0,))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(sa.h, sb.h)


def test_general_cell_lecture_map_fixed_point():
    # h(t+1) = 0.8 h(t) + 1 converges to h* = 5 (the lecture's stable example).
    cell = GeneralCell(lambda h, x: 0.8 * h + 1.0, input_size=1, state_size=1).double()
    s = (torch.tensor([[-30.0], [0.0], [100.0]], dtype=torch.float64),)
    for _ in range(200):
        _, s = cell(torch.zeros(3, 1, dtype=torch.float64), s)
    torch.testing.assert_close(s[0], torch.full((3, 1), 5.0, dtype=torch.float64))
