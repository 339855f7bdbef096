"""rnnlab.dynamics.maps: one Map for functions, linear systems, cells, stacks and torch.nn RNNs."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from torch import nn

from rnnlab.cells import ElmanCell, GRUCell, JordanCell, LSTMCell, LSTMState
from rnnlab.dynamics import (
    CellMap,
    Map,
    StackedCellsMap,
    TorchRNNMap,
    as_map,
    input_jacobian,
    jacobian,
    simulate,
)

D = torch.float64


def test_lecture_linear_system_converges_to_five_and_the_other_explodes() -> None:
    f = Map.from_function(lambda h: 0.8 * h + 1, 1)
    traj = simulate(f, torch.zeros(1, 1, dtype=D), 100)
    # closed form h(t) = 5 - 5·0.8^t from h(0) = 0
    t = torch.arange(101, dtype=D)
    assert torch.allclose(traj[0, :, 0], 5 - 5 * 0.8**t, atol=1e-12)
    g = Map.from_function(lambda h: 1.4 * h + 1, 1)
    traj = simulate(g, torch.zeros(1, 1, dtype=D), 30)
    assert torch.allclose(traj[0, :, 0], -2.5 + 2.5 * 1.4 ** t[:31], rtol=1e-12)


def test_cell_map_flattens_lstm_state_and_steps_like_the_cell() -> None:
    torch.manual_seed(0)
    cell = LSTMCell(3, 4, proj_size=2)
    f = Map.from_cell(cell)
    assert f.fields == {"h": 2, "c": 4} and f.state_size == 6 and f.input_size == 3
    state = LSTMState(torch.randn(5, 2), torch.randn(5, 4))
    flat = f.flatten(state)
    assert torch.equal(flat, torch.cat([state.h, state.c], dim=1))
    back = f.unflatten(flat)
    assert isinstance(back, LSTMState) and torch.equal(back.c, state.c)
    x = torch.randn(5, 3)
    _, ref = cell(x, state)
    assert torch.equal(f(flat, x), torch.cat([ref.h, ref.c], dim=1))


def test_fgr_state_and_jordan_state_are_flattened() -> None:
    f = Map.from_cell(LSTMCell(2, 3, variant="FGR"))
    assert f.fields == {"h": 3, "c": 3, "gates": 9}
    j = Map.from_cell(JordanCell(2, 5, 3))
    assert j.fields == {"y": 3}


def test_stacked_cells_feed_each_other() -> None:
    torch.manual_seed(1)
    cells = [ElmanCell(2, 3), LSTMCell(3, 4), GRUCell(4, 2)]
    f = Map.from_cells(cells)
    assert isinstance(f, StackedCellsMap)
    assert f.fields == {"0.h": 3, "1.h": 4, "1.c": 4, "2.h": 2}
    h = torch.randn(6, f.state_size)
    x = torch.randn(6, 2)
    s0, s1, s2 = f.unflatten(h)
    y0, n0 = cells[0](x, s0)
    y1, n1 = cells[1](y0, s1)
    _, n2 = cells[2](y1, s2)
    expect = torch.cat([n0.h, n1.h, n1.c, n2.h], dim=1)
    assert torch.allclose(f(h, x), expect)


def test_stacked_cells_check_sizes() -> None:
    with pytest.raises(ValueError, match=r"cells\[1\]: expected input_size 3"):
        Map.from_cells([ElmanCell(2, 3), ElmanCell(4, 2)])


@pytest.mark.parametrize(
    "module",
    [
        lambda: nn.RNN(3, 5, num_layers=3, nonlinearity="relu"),
        lambda: nn.RNN(3, 5, bias=False),
        lambda: nn.GRU(3, 5, num_layers=2),
        lambda: nn.LSTM(3, 5, num_layers=2, proj_size=2),
        lambda: nn.LSTM(3, 4),
    ],
    ids=["rnn-relu-3", "rnn-nobias", "gru-2", "lstm-proj-2", "lstm"],
)
def test_torch_modules_step_like_torch(module) -> None:
    torch.manual_seed(2)
    mod = module().double()
    f = Map.from_torch(mod)
    L, B = mod.num_layers, 4
    H = mod.hidden_size
    if isinstance(mod, nn.LSTM):
        P = mod.proj_size or H
        state = (torch.randn(L, B, P, dtype=D), torch.randn(L, B, H, dtype=D))
    else:
        state = torch.randn(L, B, H, dtype=D)
    x = torch.randn(B, 3, dtype=D)
    _, ref = mod(x[None], state)
    got = f(f.flatten(state), x)
    assert torch.allclose(got, f.flatten(ref), atol=1e-12)
    back = f.unflatten(got)
    if isinstance(mod, nn.LSTM):
        assert torch.allclose(back[1], ref[1], atol=1e-12)


@pytest.mark.parametrize("cls", [nn.RNNCell, nn.GRUCell, nn.LSTMCell])
def test_torch_cells_step_like_torch(cls) -> None:
    torch.manual_seed(3)
    mod = cls(3, 4).double()
    f = as_map(mod)
    assert isinstance(f, TorchRNNMap)
    x = torch.randn(2, 3, dtype=D)
    if cls is nn.LSTMCell:
        st = (torch.randn(2, 4, dtype=D), torch.randn(2, 4, dtype=D))
        ref = torch.cat(mod(x, st), dim=1)
    else:
        st = torch.randn(2, 4, dtype=D)
        ref = mod(x, st)
    assert torch.allclose(f(f.flatten(st), x), ref, atol=1e-12)


def test_bidirectional_modules_are_rejected() -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        Map.from_torch(nn.GRU(2, 3, bidirectional=True))


def test_jacobians_equal_the_elman_closed_form() -> None:
    torch.manual_seed(4)
    cell = ElmanCell(2, 5).double()
    h = torch.randn(3, 5, dtype=D)
    x = torch.randn(3, 2, dtype=D)
    J = jacobian(cell, h, x)
    Jx = input_jacobian(cell, h, x)
    with torch.no_grad():
        hn = torch.tanh(x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
    d = (1 - hn**2)[:, :, None]
    assert torch.allclose(J, d * cell.weight_hh, atol=1e-13)
    assert torch.allclose(Jx, d * cell.weight_ih, atol=1e-13)


def test_jacobian_of_lstm_matches_autograd_functional() -> None:
    torch.manual_seed(5)
    cell = LSTMCell(2, 3).double()
    f = CellMap(cell)
    h = torch.randn(2, 6, dtype=D)
    x = torch.randn(2, 2, dtype=D)
    J = f.jacobian(h, x)
    for b in range(2):
        ref = torch.autograd.functional.jacobian(
            lambda v, b=b: f.step(v[None], x[b : b + 1])[0], h[b]
        )
        assert torch.allclose(J[b], ref, atol=1e-13)


def test_simulate_input_driven_equals_a_manual_loop() -> None:
    torch.manual_seed(6)
    cell = GRUCell(2, 3).double()
    f = Map.from_cell(cell)
    x = torch.randn(4, 7, 2, dtype=D)
    traj = simulate(f, torch.zeros(4, 3, dtype=D), inputs=x)
    assert traj.shape == (4, 8, 3)
    state = cell.initial_state(4)
    for t in range(7):
        _, state = cell(x[:, t], state)
        assert torch.allclose(traj[:, t + 1], state.h)
    shared = simulate(f, torch.zeros(4, 3, dtype=D), inputs=x[0])
    assert torch.allclose(shared[0], traj[0])


def test_absent_input_is_zero_and_with_input_fixes_it() -> None:
    torch.manual_seed(7)
    cell = ElmanCell(2, 3).double()
    f = Map.from_cell(cell)
    assert not f.autonomous
    h = torch.randn(1, 3, dtype=D)
    assert torch.allclose(f(h), f(h, torch.zeros(1, 2, dtype=D)))
    g = f.with_input(torch.tensor([1.0, -1.0]))
    assert g.autonomous and not f.autonomous
    assert torch.allclose(g(h), f(h, torch.tensor([[1.0, -1.0]], dtype=D)))


def test_iterate_composes() -> None:
    f = Map.from_function(lambda h: 3.2 * h * (1 - h), 1)
    h = torch.tensor([[0.3]], dtype=D)
    assert torch.allclose(f.iterate(3)(h), f(f(f(h))))


def test_bad_inputs_name_the_argument() -> None:
    wrong = Map.from_function(lambda h: h[:, :1], 2)
    with pytest.raises(
        ValueError, match=r"expected output of the state's shape \(1, 2\), got \(1, 1\)"
    ):
        wrong(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"f \(function\): expected output"):
        simulate(wrong, torch.zeros(1, 2), 3)
    f = Map.from_function(lambda h: h, 2)
    with pytest.raises(ValueError, match=r"h: expected finite values, got 1 non-finite entry"):
        f(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"h: expected shape \(\.\.\., 2\), got \(1, 3\)"):
        f(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"h0: expected finite values"):
        simulate(f, torch.tensor([[float("inf"), 0.0]]), 2)
    with pytest.raises(ValueError, match="steps: expected an int"):
        simulate(f, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"x: expected shape \(2,\), got \(3,\)"):
        Map.from_cell(ElmanCell(2, 3)).with_input(torch.zeros(3))
    with pytest.raises(TypeError, match="f: expected a Map"):
        as_map(42)
    with pytest.raises(ValueError, match="state_size: required"):
        as_map(lambda h: h)


def test_diverging_trajectory_is_returned_not_raised() -> None:
    f = Map.from_function(lambda h: 10 * h, 1)
    traj = simulate(f, torch.ones(1, 1), 400)
    assert torch.isinf(traj[0, -1, 0])


@pytest.mark.parametrize(
    "name",
    ["maps", "stability", "fixedpoints", "periodic", "lyapunov", "gradients", "continuation"],
)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"rnnlab.dynamics.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
