"""How the layer-norm LSTM combines with peepholes, proj_size and Greff et al.'s variants.

Issue 18: each combination either works and matches written-out equations (Ba et al. eqs.
20-22 with the peephole terms after the normalisation and the projection after the output
gate), outputs, final states and every gradient in float64, engine on and off, through the
cell and through the drop-in ``rnnlab.nn.LSTM(..., layer_norm=True)``; or it is refused at
construction with an error naming the argument, the expected and the received value.
"""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab import engine
from rnnlab.cells import LayerNormLSTMCell, layer_norm_lstm_cell
from rnnlab.layers import Recurrent

D = torch.float64
B, T, I, H = 2, 4, 3, 5
sig, tanh = torch.sigmoid, torch.tanh


def _ln(a, g, b, eps=1e-5):
    mu = a.mean(-1, keepdim=True)
    out = (a - mu) / torch.sqrt(((a - mu) ** 2).mean(-1, keepdim=True) + eps) * g
    return out if b is None else out + b


def _written_out(p, x, h, c):
    """a = LN(W x) + LN(U y(t-1)); peepholes p_i, p_f on c(t-1), p_o on c(t), after the LN;
    y = W_r (o ⊙ tanh(LN(c))). ``p`` the parameters by name (drop-in suffixes removed)."""
    ys = []
    for t in range(x.shape[1]):
        a = _ln(x[:, t] @ p["weight_ih"].T, p["gain_ih"], p.get("bias_ih"))
        a = a + _ln(h @ p["weight_hh"].T, p["gain_hh"], p.get("bias_hh"))
        ai, af, ag, ao = a.chunk(4, 1)
        if "weight_ci" in p:
            ai, af = ai + p["weight_ci"] * c, af + p["weight_cf"] * c
        c = sig(af) * c + sig(ai) * tanh(ag)
        if "weight_co" in p:
            ao = ao + p["weight_co"] * c
        h = sig(ao) * tanh(_ln(c, p["gain_c"], p.get("bias_c")))
        if "weight_hr" in p:
            h = h @ p["weight_hr"].T
        ys.append(h)
    return torch.stack(ys, 1), h, c


def _randomise(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for q in module.parameters():
            q.uniform_(-0.8, 0.8)  # gains 1 / biases 0 would hide where they enter
    return module


COMBOS = {
    "peephole": {"peephole": True},
    "variant-V": {"variant": "V"},
    "proj": {"proj_size": 2},
    "V-proj": {"variant": "V", "proj_size": 3},
    "V-proj-nobias": {"variant": "V", "proj_size": 2, "bias": False},
    "V-no-peephole": {"variant": "V", "peephole": False},  # the override wins, as in LSTMCell
}


@pytest.mark.parametrize("use_engine", [True, False], ids=["engine", "reference"])
@pytest.mark.parametrize("name", list(COMBOS))
def test_dropin_combination_matches_written_out_equations(name, use_engine):
    kw = dict(COMBOS[name])
    lstm = _randomise(rnnlab.nn.LSTM(I, H, batch_first=True, layer_norm=True, dtype=D, **kw))
    cell = lstm._cells[0]
    assert isinstance(cell, LayerNormLSTMCell)
    peep = kw.get("peephole", kw.get("variant") == "V")
    assert cell.peephole == peep and cell.proj_size == kw.get("proj_size", 0)
    names = dict(lstm.named_parameters())
    p = {n[: -len("_l0")]: v for n, v in names.items()}
    P = cell.output_size
    x = torch.randn(B, T, I, dtype=D, requires_grad=True)
    h0 = torch.randn(1, B, P, dtype=D, requires_grad=True)
    c0 = torch.randn(1, B, H, dtype=D, requires_grad=True)
    if use_engine:
        y, (h_n, c_n) = lstm(x, (h0, c0))
    else:
        with engine.disabled():
            y, (h_n, c_n) = lstm(x, (h0, c0))
    y_ref, h_ref, c_ref = _written_out(p, x, h0[0], c0[0])
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h_n[0], h_ref)
    torch.testing.assert_close(c_n[0], c_ref)
    w = torch.linspace(-1, 1, y.numel(), dtype=D).view_as(y)
    leaves = [x, h0, c0, *names.values()]
    g1 = torch.autograd.grad((y * w).sum() + (2 * c_n).sum(), leaves)
    g2 = torch.autograd.grad((y_ref * w).sum() + (2 * c_ref).sum(), leaves)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


REFUSED_VARIANTS = ["NIG", "NFG", "NOG", "NIAF", "NOAF", "CIFG", "FGR", "cifg"]


@pytest.mark.parametrize("variant", REFUSED_VARIANTS)
def test_other_variants_are_refused_naming_argument_expected_and_received(variant):
    expected = f"variant: layer_norm=True supports 'NP' and 'V' (peepholes), got '{variant}'"
    with pytest.raises(ValueError) as e1:
        rnnlab.nn.LSTM(I, H, layer_norm=True, variant=variant, proj_size=2)
    with pytest.raises(ValueError) as e2:
        layer_norm_lstm_cell(I, H, variant=variant)
    assert str(e1.value) == expected and str(e2.value) == expected


@pytest.mark.parametrize("argument", ["activation", "cell_activation"])
def test_other_activations_are_refused(argument):
    with pytest.raises(ValueError, match=f"^{argument}: layer_norm=True supports only 'tanh', "
                       "got 'relu'$"):  # fmt: skip
        rnnlab.nn.LSTM(I, H, layer_norm=True, **{argument: "relu"})
    # tanh, the only activation of the layer-norm cell, may be named explicitly
    rnnlab.nn.LSTM(I, H, layer_norm=True, **{argument: "tanh"})


def test_proj_size_is_checked_as_for_the_plain_lstm():
    with pytest.raises(ValueError, match="proj_size: expected < hidden_size=5, got 5"):
        rnnlab.nn.LSTM(I, H, layer_norm=True, proj_size=H)
    with pytest.raises(ValueError, match="proj_size: expected a non-negative int, got -1"):
        LayerNormLSTMCell(I, H, proj_size=-1)


def test_cell_peephole_proj_with_dropout_and_zoneout_runs_the_reference_loop():
    # engine on equals engine off (the loop) for the combinations the kernels do not cover
    torch.manual_seed(0)
    cell = _randomise(LayerNormLSTMCell(I, H, proj_size=2, peephole=True, dtype=D))
    layer = Recurrent(
        rnnlab.ZoneoutCell(rnnlab.VariationalDropoutCell(cell, 0.2, 0.3), {"h": 0.1, "c": 0.5})
    )
    x = torch.randn(B, T, I, dtype=D)
    outs = []
    for off in (False, True):
        torch.manual_seed(3)
        with engine.disabled() if off else torch.enable_grad():
            y, s = layer(x)
        outs.append((y, s.h, s.c))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
