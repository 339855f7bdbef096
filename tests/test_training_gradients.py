"""Gradient tools: ‖∂L/∂h(t)‖ per time step against autograd and closed forms, per-step
clipping (Graves 2013) against an independent formulation, global clipping."""

from __future__ import annotations

import pytest
import torch

from rnnlab.training import SequenceModel, StateGradientTap, clip_gradients


def manual_states(model, x):
    """Step the model's single cell by hand; keep every h(t) as a graph node."""
    cell = model.core.cell
    h, hs, ys = cell.initial_state(x.shape[0]), [], []
    for t in range(x.shape[1]):
        y, h = cell(x[:, t], h)
        hs.append(h.h)
        ys.append(model.readout(y))
    return torch.stack(ys, 1), hs


def test_recorded_norms_equal_autograd():
    torch.manual_seed(0)
    model = SequenceModel({"cell": "GRUCell", "input_size": 2, "hidden_size": 4, "output_size": 1})
    x, r = torch.randn(3, 7, 2), torch.randn(3, 7, 1)
    tap = StateGradientTap(model)
    with tap:
        ((model(x).output - r) ** 2).mean().backward()
    got = tap.norms()["core.h"]
    y, hs = manual_states(model, x)
    want = torch.stack([g.norm() for g in torch.autograd.grad(((y - r) ** 2).mean(), hs)])
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-9)
    assert type(model.core.cell).__name__ == "GRUCell"  # the tap put the cell back


@pytest.mark.parametrize("a", [0.5, 1.5])
def test_linear_recurrence_norms_are_a_power(a):
    """h(t) = a h(t-1) + W x(t), loss at the last step: ‖∂L/∂h(t)‖ = a^(T-1-t) ‖∂L/∂h(T-1)‖,
    the lecture's vanishing (|a| < 1) and exploding (|a| > 1) gradients."""
    model = SequenceModel(
        {
            "cell": "ElmanCell",
            "cell_options": {"activation": "identity"},
            "input_size": 1,
            "hidden_size": 3,
            "output_size": 1,
        }
    )
    with torch.no_grad():
        model.core.cell.weight_hh.copy_(a * torch.eye(3))
    x = torch.randn(2, 10, 1)
    tap = StateGradientTap(model)
    with tap:
        model(x).output[:, -1].sum().backward()
    n = tap.norms()["core.h"]
    ratios = n[:-1] / n[1:]
    assert torch.allclose(ratios, torch.full((9,), a), rtol=1e-4)


class _ClipGrad(torch.autograd.Function):
    """Identity forward; the backward clamps (value) or rescales rows (norm)."""

    @staticmethod
    def forward(ctx, h, value, norm):
        ctx.value, ctx.norm = value, norm
        return h.view_as(h)

    @staticmethod
    def backward(ctx, g):
        if ctx.value is not None:
            g = g.clamp(-ctx.value, ctx.value)
        if ctx.norm is not None:
            n = g.norm(dim=-1, keepdim=True)
            g = g * torch.clamp(ctx.norm / (n + 1e-12), max=1.0)
        return g, None, None


@pytest.mark.parametrize("value, norm", [(1e-3, None), (None, 2e-3)])
def test_per_step_clipping_equals_independent_formulation(value, norm):
    torch.manual_seed(1)
    model = SequenceModel(
        {"cell": "ElmanCell", "input_size": 2, "hidden_size": 5, "output_size": 1}
    )
    x, r = torch.randn(4, 8, 2), torch.randn(4, 8, 1)
    params = list(model.parameters())
    with StateGradientTap(model, record=False, clip_value=value, clip_norm=norm):
        got = torch.autograd.grad(((model(x).output - r) ** 2).mean(), params)
    cell = model.core.cell
    h, ys = cell.initial_state(4), []
    for t in range(8):
        _, h = cell(x[:, t], h)
        h = type(h)(_ClipGrad.apply(h.h, value, norm))
        ys.append(model.readout(h.h))
    want = torch.autograd.grad(((torch.stack(ys, 1) - r) ** 2).mean(), params)
    plain = torch.autograd.grad(((model(x).output - r) ** 2).mean(), params)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-7)
    assert any(not torch.allclose(g, p) for g, p in zip(got, plain))  # clipping did act


def test_scale_undoes_a_scaled_loss():
    """DDP scales each process's loss; ``scale`` records and clips the unscaled gradient."""
    torch.manual_seed(2)
    model = SequenceModel({"cell": "LSTMCell", "input_size": 2, "hidden_size": 3, "output_size": 1})
    x = torch.randn(2, 5, 2)
    a, b = (
        StateGradientTap(model, clip_value=0.01),
        StateGradientTap(model, clip_value=0.01, scale=0.25),
    )
    with a:
        ga = torch.autograd.grad(model(x).output.sum(), list(model.parameters()))
    with b:
        gb = torch.autograd.grad(4 * model(x).output.sum(), list(model.parameters()))
    for k in ("core.h", "core.c"):
        assert torch.allclose(a.norms()[k], b.norms()[k], rtol=1e-5)
    for g1, g2 in zip(ga, gb):
        assert torch.allclose(4 * g1, g2, atol=1e-6)


def test_bidirectional_backward_half_in_time_order():
    model = SequenceModel(
        {
            "cell": "GRUCell",
            "input_size": 2,
            "hidden_size": 3,
            "output_size": 1,
            "bidirectional": True,
        }
    )
    tap = StateGradientTap(model)
    with tap:
        model(torch.randn(2, 6, 2)).output[:, -1].sum().backward()
    n = tap.norms()
    fwd, bwd = n["core.forward_layer.h"], n["core.backward_layer.h"]
    assert bool((fwd > 0).all())  # the last output depends on every forward state
    # ... but only on the backward direction's state at the last time step (its first)
    assert float(bwd[-1]) > 0 and bool((bwd[:-1] == 0).all())


def test_clip_gradients():
    w = torch.nn.Parameter(torch.zeros(4))
    w.grad = torch.tensor([3.0, -4.0, 0.0, 0.0])
    assert clip_gradients([w], max_norm=1.0) == pytest.approx(5.0)
    assert torch.allclose(w.grad, torch.tensor([0.6, -0.8, 0.0, 0.0]))
    w.grad = torch.tensor([3.0, -4.0, 0.5, 0.0])
    clip_gradients([w], max_value=1.0)
    assert torch.equal(w.grad, torch.tensor([1.0, -1.0, 0.5, 0.0]))
    w.grad = torch.tensor([float("nan"), 1.0, 0.0, 0.0])
    assert clip_gradients([w]) != clip_gradients([w])  # nan reported, for the trainer to stop


def test_tap_errors():
    with pytest.raises(ValueError, match="model: expected recurrent layers"):
        StateGradientTap(torch.nn.Linear(2, 2))
    m = SequenceModel({"cell": "GRUCell", "input_size": 1, "hidden_size": 2, "output_size": 1})
    with pytest.raises(ValueError, match="clip_value: expected a positive number"):
        StateGradientTap(m, clip_value=-1.0)
