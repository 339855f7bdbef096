"""Layer 1: the cell contract, over every built-in cell configuration (tests/cell_zoo.py)."""

from __future__ import annotations

import pytest
import torch

from cell_zoo import ZOO
from rnnlab import Bidirectional, Recurrent, Stacked
from rnnlab.cells import cell_from_config, cell_to_config

NAMES = sorted(ZOO)


def _state_like(cell, B, dtype=torch.float64):
    return cell.State(*(torch.randn(B, n, dtype=dtype) * 0.5 for n in cell.state_sizes().values()))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 3])
def test_shapes_and_dtypes(name, dtype, B):
    cell = ZOO[name]().to(dtype)
    x = torch.randn(B, cell.input_size, dtype=dtype)
    s0 = cell.initial_state(B)
    assert isinstance(s0, cell.State) and all(t.dtype == dtype for t in s0)
    assert [t.shape[1] for t in s0] == list(cell.state_sizes().values())
    y, s = cell(x, s0)
    assert y.shape == (B, cell.output_size) and y.dtype == dtype
    assert isinstance(s, cell.State)
    assert [tuple(t.shape) for t in s] == [tuple(t.shape) for t in s0]


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_receives_a_gradient(name):
    torch.manual_seed(0)
    layer = Recurrent(ZOO[name]().double())
    x = torch.randn(2, 4, layer.input_size, dtype=torch.float64)
    y, s = layer(x, _state_like(layer.cell, 2))
    (y.sum() + sum(t.sum() for t in s)).backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_cell_and_layer(name):
    torch.manual_seed(0)
    cell = ZOO[name]().double()
    x = torch.randn(2, 3, cell.input_size, dtype=torch.float64, requires_grad=True)
    s0 = tuple(t.requires_grad_() for t in _state_like(cell, 2))

    def f(x, *rest):
        state = cell.State(*rest[: len(s0)])
        y, s = Recurrent(cell)(x, state)
        return (y, *s)

    assert torch.autograd.gradcheck(f, (x, *s0), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    cell = ZOO[name]()
    rebuilt = cell_from_config(cell_to_config(cell))
    assert type(rebuilt) is type(cell)
    rebuilt.load_state_dict(cell.state_dict())
    x = torch.randn(2, cell.input_size)
    torch.testing.assert_close(rebuilt(x)[0], cell(x)[0])


def test_gradcheck_bidirectional_stacked_with_lengths():
    torch.manual_seed(0)
    from rnnlab import GRUCell, LSTMCell

    net = Stacked(
        [Bidirectional(Recurrent(LSTMCell(2, 3))), Recurrent(GRUCell(6, 3))], residual=False
    ).double()
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 1])
    assert torch.autograd.gradcheck(lambda x: net(x, lengths=lengths)[0], (x,), eps=1e-6, atol=1e-5)


def test_user_cell_without_config_has_a_repr():
    """A user's cell need not define config(); printing it (and what prints it) must work."""
    from rnnlab.cells.base import Cell

    class Decay(Cell):
        def __init__(self) -> None:
            super().__init__()
            self.hidden_size = 3
            self.w = torch.nn.Parameter(torch.full((3,), 0.5))

        def state_sizes(self):
            return {"h": 3}

        def step(self, x, state):
            (h,) = state
            h = self.w * h + x
            return h, type(state)(h)

    text = repr(Decay())
    assert text.startswith("Decay(") and "w" not in text.split("(", 1)[1].split(")")[0]
