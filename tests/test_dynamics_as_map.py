"""as_map(m) is the dynamic system m: one map step and its Jacobian equal m's own step and
autograd's Jacobian of that step, in float64, for every drop-in option, the layers, every
built-in cell, torch.nn modules and user cells (issue 14).

The reference is always the module run by itself (``module(x[:, None], state)`` for layers and
drop-ins, ``cell(x, state)`` for cells), never the map: comparing the map with itself proves
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import rnnlab
from cell_zoo import ZOO
from rnnlab.cells import LSTM_VARIANTS, Cell, ElmanCell, GRUCell, LSTMCell, RCLCell
from rnnlab.cells.dropout import VariationalDropoutCell
from rnnlab.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnlab.cells.zoneout import ZoneoutCell
from rnnlab.dynamics import ClosedLoopMap, DropInMap, TorchRNNMap, as_map
from rnnlab.layers import Bidirectional, Recurrent, Stacked

D = torch.float64
I, H, B = 3, 4, 3
TOL = 1e-10

# --- the modules ----------------------------------------------------------------------------
DROPINS: dict[str, Callable[[], nn.Module]] = {
    "rnn_tanh": lambda: rnnlab.nn.RNN(I, H),
    "rnn_relu_2": lambda: rnnlab.nn.RNN(I, H, 2, nonlinearity="relu"),
    "rnn_sigmoid": lambda: rnnlab.nn.RNN(I, H, nonlinearity="sigmoid"),
    "rnn_nobias": lambda: rnnlab.nn.RNN(I, H, bias=False),
    "gru_after": lambda: rnnlab.nn.GRU(I, H),
    "gru_before": lambda: rnnlab.nn.GRU(I, H, reset="before"),
    "gru_before_2": lambda: rnnlab.nn.GRU(I, H, 2, reset="before"),
    "gru_relu": lambda: rnnlab.nn.GRU(I, H, activation="relu"),
    "gru_sigmoid_before": lambda: rnnlab.nn.GRU(I, H, reset="before", activation="sigmoid"),
    "lstm": lambda: rnnlab.nn.LSTM(I, H),
    "lstm_2": lambda: rnnlab.nn.LSTM(I, H, 2),
    "lstm_peephole": lambda: rnnlab.nn.LSTM(I, H, peephole=True),
    "lstm_proj": lambda: rnnlab.nn.LSTM(I, H, proj_size=2),
    "lstm_proj_peephole_2": lambda: rnnlab.nn.LSTM(I, H, 2, proj_size=2, peephole=True),
    "lstm_activations": lambda: rnnlab.nn.LSTM(
        I, H, activation="relu", cell_activation="sigmoid", forget_bias=1.0
    ),
    **{f"lstm_{v.lower()}": (lambda v=v: rnnlab.nn.LSTM(I, H, variant=v)) for v in LSTM_VARIANTS},
    "lstm_fgr_2": lambda: rnnlab.nn.LSTM(I, H, 2, variant="FGR"),
    "gru_layer_norm_2": lambda: rnnlab.nn.GRU(I, H, 2, layer_norm=True),
    "lstm_layer_norm_proj": lambda: rnnlab.nn.LSTM(I, H, proj_size=2, layer_norm=True),
    # recurrent dropout perturbs training only: the map is the module in eval mode
    "gru_recurrent_dropout": lambda: rnnlab.nn.GRU(I, H, recurrent_dropout=0.3).eval(),
}

TORCH: dict[str, Callable[[], nn.Module]] = {
    "rnn_tanh": lambda: nn.RNN(I, H),
    "rnn_relu_3": lambda: nn.RNN(I, H, 3, nonlinearity="relu"),
    "gru_2": lambda: nn.GRU(I, H, 2),
    "lstm_proj_2": lambda: nn.LSTM(I, H, 2, proj_size=2),
    "lstm_nobias": lambda: nn.LSTM(I, H, bias=False),
}


class Leaky(Cell):
    """A user cell with its own step: h' = (1 - a) h + a tanh(W x + U h)."""

    State = rnnlab.cells.ElmanState

    def __init__(self) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = I, H, H
        self.W = nn.Parameter(torch.randn(H, I))
        self.U = nn.Parameter(torch.randn(H, H) / 2)
        self.a = 0.3

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        h = (1 - self.a) * state.h + self.a * torch.tanh(x @ self.W.T + state.h @ self.U.T)
        return h, self.State(h)

    def state_sizes(self) -> dict[str, int]:
        return {"h": H}

    def config(self) -> dict[str, Any]:
        return {}


class LeakyOwnForward(Leaky):
    """A user cell that overrides forward: layers call forward, so the map must too."""

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        y, new = self.step(x, state)
        return y, self.State(new.h * 0.5 + 0.1)  # differs from step on purpose


CELLS: dict[str, Callable[[], Cell]] = {
    **{k: v for k, v in ZOO.items()},
    "layer_norm_gru": lambda: LayerNormGRUCell(I, H, reset="before"),
    "layer_norm_lstm": lambda: LayerNormLSTMCell(I, H, peephole=True),
    "variational_dropout": lambda: VariationalDropoutCell(GRUCell(I, H), 0.2, 0.3).eval(),
    "zoneout": lambda: ZoneoutCell(LSTMCell(I, H), 0.2).eval(),
    "user_step": Leaky,
    "user_forward": LeakyOwnForward,
}


LAYERS: dict[str, Callable[[], nn.Module]] = {
    "recurrent_lstm_peephole": lambda: Recurrent(LSTMCell(I, H, peephole=True)),
    "recurrent_gru_before": lambda: Recurrent(GRUCell(I, H, reset="before")),
    "recurrent_user_forward": lambda: Recurrent(LeakyOwnForward()),
    "stacked": lambda: Stacked([Recurrent(GRUCell(I, H)), Recurrent(LSTMCell(H, 2))]),
    "stacked_input_skip": lambda: Stacked(
        [Recurrent(ElmanCell(I, H)), Recurrent(GRUCell(H + I, H, reset="before"))],
        input_skip=True,
    ),
    "stacked_residual": lambda: Stacked(
        [
            Recurrent(GRUCell(I, H)),
            Recurrent(LSTMCell(H, H, variant="FGR")),
            Recurrent(GRUCell(H, H)),  # reads layer 1's output + its input: residual matters
        ],
        residual=True,
    ),
}


# --- the module's own step, as the reference ------------------------------------------------
def _dropin_step(mod: nn.Module, f: Any, h: Tensor, x: Tensor) -> Tensor:
    """The module's forward over one step from flat h; returns its (h_n[, c_n]) flattened."""
    state = f.unflatten(h)  # per-layer cell states (the map's own layout)
    hs = torch.stack([s.h for s in state])  # (L, B, P)
    hx: Any = (hs, torch.stack([s.c for s in state])) if hasattr(state[0], "c") else hs
    _, out = mod(x[None], hx)  # (T=1, B, I)
    parts = out if isinstance(out, tuple) else (out,)
    return torch.cat([p[k] for k in range(parts[0].shape[0]) for p in parts], dim=-1)


def _hc_columns(f: Any) -> list[int]:
    """Flat indices of the fields torch's h_n/c_n carry (all but FGR's previous gates)."""
    idx, pos = [], 0
    for name, n in f.fields.items():
        if not name.endswith("gates"):
            idx.extend(range(pos, pos + n))
        pos += n
    return idx


def _jac_rows(fn: Callable[[Tensor], Tensor], h: Tensor) -> Tensor:
    """autograd's Jacobian of fn, row by row: (B, N_out, N_in)."""
    return torch.stack(
        [torch.autograd.functional.jacobian(lambda r: fn(r[None])[0], h[b]) for b in range(len(h))]
    )


def _random_state(f: Any, gates_zero: bool = False) -> Tensor:
    h = torch.randn(B, f.state_size, dtype=D)
    if gates_zero:
        pos = 0
        for name, n in f.fields.items():
            if name.endswith("gates"):
                h[:, pos : pos + n] = 0
            pos += n
    return h


@pytest.mark.parametrize("name", list(DROPINS))
def test_dropin_map_is_the_module(name: str) -> None:
    torch.manual_seed(0)
    mod = DROPINS[name]().double()
    f = as_map(mod)
    assert isinstance(f, DropInMap)
    fgr = any(k.endswith("gates") for k in f.fields)
    h = _random_state(f, gates_zero=fgr)  # the module starts FGR's gate state at zero
    x = torch.randn(B, I, dtype=D)
    cols = _hc_columns(f)
    got = f(h, x)
    ref = _dropin_step(mod, f, h, x)
    assert (got[:, cols] - ref).abs().max() < TOL
    J = f.jacobian(h, x)[:, cols][:, :, cols]
    Jref = _jac_rows(lambda r: _dropin_step(mod, f, r, x[:1].expand(len(r), I)), h[:1])
    Jref = Jref[:, :, cols]  # torch's h_n, c_n do not carry FGR's gates
    assert (J[:1] - Jref).abs().max() < TOL
    if fgr:
        # FGR's gate state is kept: two map steps equal the module over two steps
        x2 = torch.randn(B, I, dtype=D)
        two = f(f(h, x), x2)
        state = f.unflatten(h)
        hx = (torch.stack([s.h for s in state]), torch.stack([s.c for s in state]))
        _, (hn, cn) = mod(torch.stack([x, x2]), hx)
        ref2 = torch.cat([p[k] for k in range(hn.shape[0]) for p in (hn, cn)], dim=-1)
        assert (two[:, cols] - ref2).abs().max() < TOL
        assert two[:, [i for i in range(f.state_size) if i not in cols]].abs().max() > 0


@pytest.mark.parametrize("name", list(TORCH))
def test_torch_module_map_is_the_module(name: str) -> None:
    torch.manual_seed(1)
    mod = TORCH[name]().double()
    f = as_map(mod)
    assert isinstance(f, TorchRNNMap)
    h, x = _random_state(f), torch.randn(B, I, dtype=D)

    def step(r: Tensor, x: Tensor = x) -> Tensor:
        _, out = mod(x[: len(r)][None], f.unflatten(r))
        return f.flatten(out)

    assert (f(h, x) - step(h)).abs().max() < TOL
    assert (f.jacobian(h, x)[:1] - _jac_rows(step, h[:1])).abs().max() < TOL


@pytest.mark.parametrize("cls", [nn.RNNCell, nn.GRUCell, nn.LSTMCell])
def test_torch_cell_map_is_the_cell(cls: type) -> None:
    torch.manual_seed(2)
    mod = cls(I, H).double()
    f = as_map(mod)
    h, x = _random_state(f), torch.randn(B, I, dtype=D)

    def step(r: Tensor) -> Tensor:
        st = f.unflatten(r)
        out = mod(x[: len(r)], (st[0][0], st[1][0]) if cls is nn.LSTMCell else st[0])
        return torch.cat(out, dim=-1) if isinstance(out, tuple) else out

    assert (f(h, x) - step(h)).abs().max() < TOL
    assert (f.jacobian(h, x)[:1] - _jac_rows(step, h[:1])).abs().max() < TOL


def _layer_step(mod: nn.Module, f: Any, r: Tensor, x: Tensor) -> Tensor:
    _, new = mod(x[: len(r), None], f.unflatten(r))  # batch-first (B, T=1, I)
    return f.flatten(new)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_map_is_the_layer(name: str) -> None:
    torch.manual_seed(3)
    mod = LAYERS[name]().double()
    f = as_map(mod)
    h, x = _random_state(f), torch.randn(B, I, dtype=D)
    assert (f(h, x) - _layer_step(mod, f, h, x)).abs().max() < TOL
    J = f.jacobian(h, x)
    assert (J[:1] - _jac_rows(lambda r: _layer_step(mod, f, r, x), h[:1])).abs().max() < TOL


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_map_is_the_cell(name: str) -> None:
    torch.manual_seed(4)
    cell = CELLS[name]().double()
    f = as_map(cell)

    def step(r: Tensor) -> Tensor:
        _, new = cell(x[: len(r)], f.unflatten(r))  # forward: the checked, public step
        return f.flatten(new)

    h = _random_state(f)
    x = torch.randn(B, cell.input_size, dtype=D)
    assert (f(h, x) - step(h)).abs().max() < TOL
    assert (f.jacobian(h, x)[:1] - _jac_rows(step, h[:1])).abs().max() < TOL


def test_map_follows_the_module_after_to_double() -> None:
    mod = rnnlab.nn.GRU(I, H, reset="before")
    f = as_map(mod)
    mod.double()
    h, x = _random_state(f), torch.randn(B, I, dtype=D)
    assert f.dtype == D
    assert (f(h, x) - _dropin_step(mod, f, h, x)).abs().max() < TOL


# --- what cannot be analysed says so --------------------------------------------------------
@pytest.mark.parametrize(
    "mod",
    [
        lambda: rnnlab.nn.GRU(I, H, bidirectional=True),
        lambda: nn.LSTM(I, H, bidirectional=True),
        lambda: Bidirectional(Recurrent(GRUCell(I, H))),
        lambda: Stacked([Bidirectional(Recurrent(GRUCell(I, H)))]),
    ],
)
def test_bidirectional_is_an_error_offering_the_forward_direction(mod: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match="forward in time.*forward"):
        as_map(mod())


def test_forward_direction_of_a_bidirectional_module() -> None:
    torch.manual_seed(5)
    mod = rnnlab.nn.GRU(I, H, bidirectional=True, reset="before").double()
    f = as_map(mod, direction="forward")
    fwd = rnnlab.nn.GRU(I, H, reset="before").double()
    fwd.load_state_dict({k: v for k, v in mod.state_dict().items() if "reverse" not in k})
    h, x = _random_state(f), torch.randn(B, I, dtype=D)
    assert (f(h, x) - _dropin_step(fwd, as_map(fwd), h, x)).abs().max() < TOL
    tmod = nn.GRU(I, H, bidirectional=True).double()
    tf = as_map(tmod, direction="forward")
    _, ref = tmod(torch.cat([x[None], torch.zeros_like(x)[None]]), torch.stack([h, h]))
    del ref  # the backward half of a two-step run depends on the future, so check one step:
    one = nn.GRU(I, H).double()
    one.load_state_dict({k: v for k, v in tmod.state_dict().items() if "reverse" not in k})
    assert (tf(h, x) - one(x[None], h[None])[1][0]).abs().max() < TOL
    with pytest.raises(ValueError, match="num_layers=1"):
        as_map(rnnlab.nn.GRU(I, H, 2, bidirectional=True), direction="forward")


def test_unanalysable_modules_say_why() -> None:
    with pytest.raises(TypeError, match="RCLCell.*flat state vectors"):
        as_map(RCLCell(2, 3))  # a convolutional state is not a vector
    with pytest.raises(TypeError, match="rnnlab layer or drop-in.*got Linear"):
        as_map(nn.Linear(2, 2))


def test_closed_loop_map_feeds_the_readout_back() -> None:
    torch.manual_seed(6)
    core = Stacked([Recurrent(GRUCell(1, H)), Recurrent(LSTMCell(H, H))]).double()
    readout = nn.Linear(H, 1).double()
    f = ClosedLoopMap(as_map(core), readout)  # type: ignore[arg-type]
    h = _random_state(f)
    # the loop written out: y = the top layer's output field, x = readout(y)
    state = as_map(core).unflatten(h)
    x = readout(state[1].h)
    _, new = core(x[:, None], state)
    assert (f(h) - as_map(core).flatten(new)).abs().max() < TOL
    with pytest.raises(ValueError, match="not one of its state fields"):
        ClosedLoopMap(as_map(ElmanCell(1, H, 2)), nn.Linear(2, 1))  # type: ignore[arg-type]


def test_model_that_feeds_its_output_back_is_analysed_closed_loop() -> None:
    from rnnlab.training import SequenceModel

    torch.manual_seed(7)
    spec = {"cell": "GRUCell", "input_size": 2, "hidden_size": H, "output_size": 2}
    model = SequenceModel({**spec, "feedback": "input"}).double()
    f = as_map(model)
    assert isinstance(f, ClosedLoopMap) and f.input_size == 0
    h = _random_state(f)
    x = model.readout(h)  # written out: the output of state h is the next input
    _, new = model.core.cell(x, model.core.cell.State(h))
    assert (f(h) - new.h).abs().max() < TOL
    assert not isinstance(as_map(model, loop="open"), ClosedLoopMap)
    plain = SequenceModel(spec)
    assert not isinstance(as_map(plain), ClosedLoopMap)
    with pytest.raises(ValueError, match="loop: 'closed' needs.*feedback 'none'"):
        as_map(plain, loop="closed")


def test_recurrent_with_input_feedback_must_choose_its_loop() -> None:
    torch.manual_seed(8)
    layer = Recurrent(GRUCell(H, H), input_feedback=torch.tanh).double()
    with pytest.raises(ValueError, match="loop: this layer feeds its output back"):
        as_map(layer)
    f = as_map(layer, loop="closed")
    h = _random_state(f)
    # generate from state h: its first input is the fed-back output of h, tanh(y(h)) = tanh(h)
    _, state = layer.generate(1, torch.tanh(h), layer.cell.State(h))
    assert (f(h) - state.h).abs().max() < TOL
    assert as_map(layer, loop="open").input_size == H


def test_recurrent_weight_of_a_one_layer_dropin() -> None:
    from rnnlab.dynamics import recurrent_weight

    m = rnnlab.nn.RNN(I, H)
    assert torch.equal(recurrent_weight(as_map(m)), m.weight_hh_l0.detach())
