"""Layer-normalised LSTM/GRU, variational recurrent dropout and zoneout against written-out
equations (Ba et al. 2016; Gal & Ghahramani 2016; Krueger et al. 2016), float64, outputs and
every gradient, engine on and off; dropout masks' statistics; zoneout's eval mixture."""

from __future__ import annotations

import math

import pytest
import torch

import rnnlab
from rnnlab import engine
from rnnlab.cells import (
    ElmanCell,
    GRUCell,
    JordanCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    VariationalDropoutCell,
    ZoneoutCell,
    _philox,
    cell_from_config,
    cell_to_config,
)
from rnnlab.layers import Recurrent

D = torch.float64
B, T, I, H = 3, 5, 4, 6
sig, tanh = torch.sigmoid, torch.tanh


def ln(a, g, b, eps=1e-5):
    mu = a.mean(-1, keepdim=True)
    var = ((a - mu) ** 2).mean(-1, keepdim=True)
    out = (a - mu) / torch.sqrt(var + eps) * g
    return out if b is None else out + b


def ref_ln_lstm(p, x, h, c):
    """Ba et al. eqs. 20-22, written out; p the cell's parameters by name."""
    ys = []
    for t in range(x.shape[1]):
        a = ln(x[:, t] @ p["weight_ih"].T, p["gain_ih"], p.get("bias_ih")) + ln(
            h @ p["weight_hh"].T, p["gain_hh"], p.get("bias_hh")
        )
        ai, af, ag, ao = a.chunk(4, 1)
        if "weight_ci" in p:
            ai, af = ai + p["weight_ci"] * c, af + p["weight_cf"] * c
        c = sig(af) * c + sig(ai) * tanh(ag)
        if "weight_co" in p:
            ao = ao + p["weight_co"] * c
        h = sig(ao) * tanh(ln(c, p["gain_c"], p.get("bias_c")))
        if "weight_hr" in p:
            h = h @ p["weight_hr"].T
        ys.append(h)
    return torch.stack(ys, 1), (h, c)


def ref_ln_gru(p, x, h, reset):
    ys = []
    for t in range(x.shape[1]):
        gx = ln(x[:, t] @ p["weight_ih"].T, p["gain_ih"], p.get("bias_ih"))
        xr, xz, xn = gx.chunk(3, 1)
        bh = p.get("bias_hh")
        U, g = p["weight_hh"], p["gain_hh"]
        if reset == "after":
            hr, hz, hn = ln(h @ U.T, g, bh).chunk(3, 1)
            r, z = sig(xr + hr), sig(xz + hz)
            n = tanh(xn + r * hn)
        else:
            rz = ln(h @ U[: 2 * H].T, g[: 2 * H], None if bh is None else bh[: 2 * H])
            r, z = sig(xr + rz[:, :H]), sig(xz + rz[:, H:])
            n = tanh(
                xn + ln((r * h) @ U[2 * H :].T, g[2 * H :], None if bh is None else bh[2 * H :])
            )
        h = z * h + (1 - z) * n
        ys.append(h)
    return torch.stack(ys, 1), (h,)


def _randomise(cell):
    # Gains 1 and biases 0 at init would hide mistakes in where they enter.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    return cell


def _compare(layer, ref, state0, x, names=None):
    """Outputs, final state and grads of params, x and the initial state: layer vs ref."""
    names = dict(layer.cell.named_parameters()) if names is None else names
    leaves = [x, *state0, *names.values()]
    for use_engine in (True, False):
        out = {}
        for which in ("layer", "ref"):
            if which == "layer":
                if use_engine:
                    y, s = layer(x, tuple(state0))
                else:
                    with engine.disabled():
                        y, s = layer(x, tuple(state0))
                s = tuple(s)[: len(state0)]
            else:
                y, s = ref(names, x, *state0)
            w = torch.linspace(-1, 1, y.numel(), dtype=D).view_as(y)
            loss = (y * w).sum() + sum((si * (k + 1)).sum() for k, si in enumerate(s))
            out[which] = (y, s, torch.autograd.grad(loss, leaves, allow_unused=True))
        (y1, s1, g1), (y2, s2, g2) = out["layer"], out["ref"]
        torch.testing.assert_close(y1, y2)
        for a, b in zip(s1, s2):
            torch.testing.assert_close(a, b)
        for a, b in zip(g1, g2):
            assert a is not None and b is not None
            torch.testing.assert_close(a, b)


LN_LSTMS = {
    "plain": {},
    "peephole": {"peephole": True},
    "proj": {"proj_size": 3},
    "peephole_proj_nobias": {"peephole": True, "proj_size": 2, "bias": False},
}


@pytest.mark.parametrize("name", list(LN_LSTMS))
def test_layernorm_lstm_matches_equations(name):
    cell = _randomise(LayerNormLSTMCell(I, H, dtype=D, **LN_LSTMS[name]))
    x = torch.randn(B, T, I, dtype=D, requires_grad=True)
    h0 = torch.randn(B, cell.output_size, dtype=D, requires_grad=True)
    c0 = torch.randn(B, H, dtype=D, requires_grad=True)
    _compare(Recurrent(cell), ref_ln_lstm, [h0, c0], x)


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_gru_matches_equations(reset, bias):
    cell = _randomise(LayerNormGRUCell(I, H, bias, reset=reset, dtype=D))
    x = torch.randn(B, T, I, dtype=D, requires_grad=True)
    h0 = torch.randn(B, H, dtype=D, requires_grad=True)
    _compare(Recurrent(cell), lambda p, x, h: ref_ln_gru(p, x, h, reset), [h0], x)


def test_layernorm_gradcheck():
    cell = _randomise(LayerNormLSTMCell(2, 3, peephole=True, dtype=D))
    x = torch.randn(2, 3, 2, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: Recurrent(cell)(x)[0], (x,))


def test_dropin_layer_norm_names_and_equations():
    lstm = rnnlab.nn.LSTM(I, H, batch_first=True, layer_norm=True, dtype=D)
    names = [n for n, _ in lstm.named_parameters()]
    assert names == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "gain_ih_l0", "gain_hh_l0", "gain_c_l0", "bias_c_l0",
    ]  # fmt: skip
    _randomise(lstm)
    x = torch.randn(B, T, I, dtype=D)
    y, (h_n, c_n) = lstm(x)
    p = {n[:-3]: v for n, v in lstm.named_parameters()}
    zeros = torch.zeros(B, H, dtype=D)
    y_ref, (h, c) = ref_ln_lstm(p, x, zeros, zeros)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(c_n[0], c)
    gru = _randomise(
        rnnlab.nn.GRU(I, H, batch_first=True, layer_norm=True, reset="before", dtype=D)
    )
    p = {n[:-3]: v for n, v in gru.named_parameters()}
    torch.testing.assert_close(gru(x)[0], ref_ln_gru(p, x, zeros, "before")[0])


def test_layer_norm_refuses_other_variants():
    with pytest.raises(ValueError, match="variant: layer_norm=True supports"):
        rnnlab.nn.LSTM(I, H, layer_norm=True, variant="CIFG")
    with pytest.raises(ValueError, match="cell_activation"):
        rnnlab.nn.LSTM(I, H, layer_norm=True, cell_activation="identity")
    with pytest.raises(ValueError, match="activation"):
        rnnlab.nn.GRU(I, H, layer_norm=True, activation="relu")
    with pytest.raises(ValueError, match="eps"):
        LayerNormLSTMCell(I, H, eps=0)
    peep = rnnlab.nn.LSTM(I, H, layer_norm=True, variant="V")
    assert peep._cells[0].peephole


# --- variational dropout -------------------------------------------------------------------


def ref_dropout(kind, p, x, state, mx, mh):
    """Gal & Ghahramani: m_x on x and m_h on h(t-1) in every product, the same at every step."""
    ys = []
    h = state[0]
    c = state[1] if len(state) > 1 else None
    for t in range(x.shape[1]):
        xt, hm = x[:, t] * mx, h * mh
        if kind in ("elman", "jordan"):
            a = tanh(xt @ p["weight_ih"].T + p["bias_ih"] + hm @ p["weight_hh"].T + p["bias_hh"])
            h = a @ p["weight_ho"].T + p["bias_ho"] if kind == "jordan" else a
        elif kind == "lstm":
            a = xt @ p["weight_ih"].T + p["bias_ih"] + hm @ p["weight_hh"].T + p["bias_hh"]
            i, f, g, o = a.chunk(4, 1)
            c = sig(f) * c + sig(i) * tanh(g)
            h = sig(o) * tanh(c)
        else:  # GRU, both resets: the interpolation uses the *unmasked* h(t-1)
            gx = xt @ p["weight_ih"].T + p["bias_ih"]
            U, b = p["weight_hh"], p["bias_hh"]
            if kind == "gru_after":
                gh = hm @ U.T + b
                r, z = sig(gx[:, :H] + gh[:, :H]), sig(gx[:, H : 2 * H] + gh[:, H : 2 * H])
                n = tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
            else:
                gh = hm @ U[: 2 * H].T + b[: 2 * H]
                r, z = sig(gx[:, :H] + gh[:, :H]), sig(gx[:, H : 2 * H] + gh[:, H:])
                n = tanh(gx[:, 2 * H :] + (r * hm) @ U[2 * H :].T + b[2 * H :])
            h = z * h + (1 - z) * n
        ys.append(h)
    return torch.stack(ys, 1), (h,) if c is None else (h, c)


DROPOUT_CELLS = {
    "elman": lambda: ElmanCell(I, H, dtype=D),
    "jordan": lambda: JordanCell(I, H, 2, dtype=D),
    "lstm": lambda: LSTMCell(I, H, dtype=D),
    "gru_after": lambda: GRUCell(I, H, dtype=D),
    "gru_before": lambda: GRUCell(I, H, reset="before", dtype=D),
}


@pytest.mark.parametrize("kind", list(DROPOUT_CELLS))
def test_variational_dropout_matches_equations(kind):
    inner = DROPOUT_CELLS[kind]()
    layer = Recurrent(inner, dropout_input=0.3, dropout_state=0.4)
    gen = torch.Generator().manual_seed(5)
    s0 = layer.initial_state(B, dtype=D, generator=gen)
    mx, mh = s0.mask_x, s0.mask_h
    assert set(mx.unique().tolist()) <= {0.0, 1 / 0.7} and set(mh.unique().tolist()) <= {0, 1 / 0.6}
    x = torch.randn(B, T, I, dtype=D, requires_grad=True)
    k = len(inner.state_sizes())
    state0 = [torch.randn_like(s).requires_grad_() for s in tuple(s0)[:k]]

    def run(x, st):
        return layer(x, (*st, mx, mh))

    names = dict(inner.named_parameters())
    _compare(run, lambda p, x, *s: ref_dropout(kind, p, x, s, mx, mh), state0, x, names)


def test_layernorm_gru_dropout_uses_unmasked_carry():
    cell = _randomise(LayerNormGRUCell(I, H, dtype=D))
    vd = VariationalDropoutCell(cell, 0.0, 0.5)
    s0 = vd.initial_state(B, dtype=D, generator=torch.Generator().manual_seed(0))
    h0 = torch.randn(B, H, dtype=D)
    x = torch.randn(B, I, dtype=D)
    y, _ = vd(x, (h0, s0.mask_x, s0.mask_h))
    want, _ = cell.step_with_recurrent_input(x, h0, h0 * s0.mask_h)
    torch.testing.assert_close(y, want)
    p = dict(cell.named_parameters())
    gx = ln(x @ p["weight_ih"].T, p["gain_ih"], p["bias_ih"])
    gh = ln((h0 * s0.mask_h) @ p["weight_hh"].T, p["gain_hh"], p["bias_hh"])
    r, z = sig(gx[:, :H] + gh[:, :H]), sig(gx[:, H : 2 * H] + gh[:, H : 2 * H])
    n = tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
    torch.testing.assert_close(y, z * h0 + (1 - z) * n)


def test_dropout_mask_constant_in_time_differs_between_sequences_and_resumes():
    layer = Recurrent(LSTMCell(I, H), dropout_input=0.5, dropout_state=0.5)
    x = torch.randn(64, 8, I)
    y, s = layer(x, generator=torch.Generator().manual_seed(3))
    y2, s2 = layer(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(y, y2)  # the same seed: the same masks (resume)
    assert torch.equal(s.mask_h, s2.mask_h)
    assert len({tuple(r.tolist()) for r in s.mask_h}) > 32  # rows (sequences) differ
    # Two windows carrying the state (truncated BPTT / stream chunks) == one run: the mask is
    # the same at every step, including across the cut.
    ya, sa = layer(x[:, :3], generator=torch.Generator().manual_seed(3))
    yb, sb = layer(x[:, 3:], sa)
    torch.testing.assert_close(torch.cat([ya, yb], 1), y)
    assert torch.equal(sb.mask_x, s.mask_x)
    # The mask really is in use, and off in eval().
    plain = Recurrent(layer.cell.cell)
    assert not torch.allclose(y, plain(x)[0])
    layer.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keep_rate_within_three_sigma(p):
    cell = VariationalDropoutCell(GRUCell(50, 40), p, p)
    mx, mh = cell.masks(400, generator=torch.Generator().manual_seed(11))
    for m in (mx, mh):
        n = m.numel()
        kept = int((m != 0).sum())
        assert abs(kept - n * (1 - p)) < 3 * math.sqrt(n * p * (1 - p))
        torch.testing.assert_close(m[m != 0], torch.full_like(m[m != 0], 1 / (1 - p)))


def test_dropout_errors_and_config():
    with pytest.raises(TypeError, match="cell: expected one of"):
        VariationalDropoutCell(ZoneoutCell(GRUCell(2, 3), 0.1), 0.1, 0.1)
    with pytest.raises(ValueError, match="dropout_state: expected a probability"):
        Recurrent(GRUCell(2, 3), dropout_state=1.0)
    with pytest.raises(ValueError, match="learn_initial_state"):
        Recurrent(GRUCell(2, 3), dropout_state=0.2, learn_initial_state=True)
    with pytest.raises(ValueError, match="recurrent_dropout"):
        rnnlab.nn.GRU(2, 3, recurrent_dropout=-0.1)
    cell = VariationalDropoutCell(LayerNormLSTMCell(2, 3, peephole=True), 0.1, 0.2)
    again = cell_from_config(cell_to_config(cell))
    assert again.config() == cell.config()


def test_dropin_recurrent_dropout():
    torch.manual_seed(0)
    lstm = rnnlab.nn.LSTM(I, H, 2, batch_first=True, recurrent_dropout=0.5)
    ref = torch.nn.LSTM(I, H, 2, batch_first=True)
    ref.load_state_dict(lstm.state_dict())
    x = torch.randn(B, T, I)
    assert not torch.allclose(lstm(x)[0], ref(x)[0])
    lstm.eval()
    torch.testing.assert_close(lstm(x)[0], ref(x)[0])


# --- zoneout -------------------------------------------------------------------------------


def test_zoneout_eval_is_the_mixture():
    inner = _randomise(LSTMCell(I, H, dtype=D))
    cell = ZoneoutCell(inner, {"h": 0.3, "c": 0.6}).eval()
    x = torch.randn(B, T, I, dtype=D, requires_grad=True)
    h0 = torch.randn(B, H, dtype=D, requires_grad=True)
    c0 = torch.randn(B, H, dtype=D, requires_grad=True)

    def ref(p, x, h, c):
        ys = []
        for t in range(x.shape[1]):
            a = x[:, t] @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
            i, f, g, o = a.chunk(4, 1)
            c_new = sig(f) * c + sig(i) * tanh(g)
            h_new = sig(o) * tanh(c_new)
            h, c = 0.3 * h + 0.7 * h_new, 0.6 * c + 0.4 * c_new
            ys.append(h)
        return torch.stack(ys, 1), (h, c)

    _compare(Recurrent(cell), ref, [h0, c0], x, dict(inner.named_parameters()))


def test_zoneout_training_keeps_units_with_probability_p():
    torch.manual_seed(0)
    inner = GRUCell(I, 200)
    gen = torch.Generator().manual_seed(4)
    cell = ZoneoutCell(inner, 0.25, generator=gen)
    h0 = torch.randn(100, 200)
    x = torch.randn(100, I)
    y, s = cell(x, (h0,))
    cand, _ = inner(x, (h0,))
    kept = s.h == h0
    assert torch.equal(y, s.h)
    assert torch.equal(s.h[~kept], cand[~kept])  # the rest took the new value
    n, p = kept.numel(), 0.25
    assert abs(int(kept.sum()) - n * p) < 3 * math.sqrt(n * p * (1 - p))
    # Written out with the same draws: one key from the generator, then the pure-torch
    # Philox decisions (docs/design/0020-zoneout-draws.md); d keeps h(t-1).
    key = _philox.step_keys(1, torch.Generator().manual_seed(4))
    d = _philox.keep_reference(key, [100 * 200], _philox.thresholds([p]), torch.bool)
    d = d.view(100, 200)
    torch.testing.assert_close(s.h, torch.where(d, h0, cand))
    # Gradients reach h(t-1) through the kept units unchanged (identity).
    h0.requires_grad_(True)
    g = torch.autograd.grad(cell(x, (h0,))[0].sum(), h0)[0]
    assert g.shape == h0.shape


def test_zoneout_errors():
    with pytest.raises(ValueError, match="rates: expected state fields"):
        ZoneoutCell(LSTMCell(2, 3), {"q": 0.1})
    with pytest.raises(ValueError, match=r"rates\['c'\]"):
        ZoneoutCell(LSTMCell(2, 3), {"c": 1.5})
    z = ZoneoutCell(VariationalDropoutCell(LSTMCell(2, 3), 0.1, 0.1), 0.2)
    assert z.rates["mask_h"] == 0.0 and z.rates["c"] == 0.2


@pytest.mark.parametrize("training", [True, False])
def test_dropout_engine_path_equals_reference_loop(training):
    # Input-only dropout (and any dropout in eval) runs the inner cell's kernel on m_x * x.
    torch.manual_seed(2)
    layer = Recurrent(
        LSTMCell(I, H, dtype=D), dropout_input=0.4, dropout_state=0.0 if training else 0.3
    )
    layer.train(training)
    assert engine.lookup(layer.cell) is not None
    x = torch.randn(B, T, I, dtype=D, requires_grad=True)
    s0 = layer.initial_state(B, dtype=D, generator=torch.Generator().manual_seed(1))
    h0 = torch.randn(B, H, dtype=D, requires_grad=True)
    state = (h0, s0.c, s0.mask_x, s0.mask_h)
    lengths = torch.tensor([T, 3, 1])
    outs = []
    for fast in (True, False):
        if fast:
            y, s = layer(x, state, lengths=lengths)
        else:
            with engine.disabled():
                y, s = layer(x, state, lengths=lengths)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=D).view_as(y)).sum() + s.c.sum()
        outs.append((y, s, torch.autograd.grad(loss, [x, h0, *layer.parameters()])))
    (y1, s1, g1), (y2, s2, g2) = outs
    torch.testing.assert_close(y1, y2)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    if training:  # the mask is really applied on this path
        plain = Recurrent(layer.cell.cell)
        assert not torch.allclose(y1, plain(x, (h0, s0.c), lengths=lengths)[0])


def test_dropout_masks_survive_a_checkpoint_of_the_carried_state(tmp_path):
    # What a trainer does at resume: save the carried state's leaves, rebuild the structure
    # from a template, continue. The continuation equals the uninterrupted run.
    from safetensors.torch import load_file, save_file

    from rnnlab._sequences import state_from_leaves, state_leaves

    torch.manual_seed(0)
    layer = Recurrent(GRUCell(I, H), dropout_input=0.3, dropout_state=0.3)
    x = torch.randn(4, 10, I)
    y_full, _ = layer(x, generator=torch.Generator().manual_seed(9))
    _, carried = layer(x[:, :6], generator=torch.Generator().manual_seed(9))
    save_file({str(k): t for k, t in enumerate(state_leaves(carried))}, tmp_path / "carry.st")
    loaded = load_file(tmp_path / "carry.st")
    template = layer.initial_state(4)  # fresh masks: replaced by the saved ones
    restored = state_from_leaves(template, [loaded[str(k)] for k in range(len(loaded))])
    assert type(restored) is type(carried)
    y_rest, _ = layer(x[:, 6:], restored)
    torch.testing.assert_close(y_rest, y_full[:, 6:])
