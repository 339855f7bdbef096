"""Input feedback past a sequence's length (feedback "input", lengths < T), float64.

The reference is the layer's reference loop (``unroll`` under ``engine.disabled()``:
``Recurrent(cell, input_feedback=fn)`` with the mask as a ``GivenMask``), the readout and the
token choice written out here. Its contract past a length (shared/DESIGN.md, layers/loop.py):
the state is held and the layer's output is zero, so the model's output there is the readout
of zero, b_r, whatever the schedule (also what the model gives without feedback). A sequence
of length 0 reads nothing: y = b_r at every step, the state passes through. Compared: the
outputs, the final state and every gradient (inputs, initial state, cell, readout), with a
loss that weights the padded steps too, for the engine's ``rnnlab::fed_input``, the model's
Python loop (engine off) and the all-reference shortcut (one plain run of the core), under
teacher forcing, free running and a mixture, for GRU (both resets), Elman and LSTM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rnnlab
from rnnlab.engine import build, fed_input
from rnnlab.layers import Recurrent, dispatch
from rnnlab.layers.feedback import GivenMask
from rnnlab.training import SequenceModel

C, H, B, T = 3, 4, 4, 6
LENGTHS = torch.tensor([T, 4, 1, 0])
CELLS = [
    ("GRUCell", {}),
    ("GRUCell", {"reset": "before"}),
    ("ElmanCell", {}),
    ("LSTMCell", {}),
]
KINDS = ["teacher", "nearly_teacher", "free", "mixed"]


def _model(cell: str, tokens: bool, **options) -> SequenceModel:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    spec = {"cell": cell, "cell_options": options, "input_size": C, "hidden_size": H,
            "output_size": C, "feedback": "input", "tokens": tokens}  # fmt: skip
    model = SequenceModel(spec).double()
    with torch.no_grad():  # a readout bias far from zero: y = b_r past a length is visible
        model.readout.bias.copy_(torch.tensor([0.9, -0.6, 0.3], dtype=torch.float64))
    return model


def _mask(kind: str) -> torch.Tensor:
    m = torch.ones(B, T, dtype=torch.bool)
    if kind == "nearly_teacher":
        m[2, 3] = False  # past row 2's length: the fed loop runs, with one fed step
        m[1, 2] = False
    elif kind == "free":
        m[:] = False
    elif kind == "mixed":
        m = torch.rand(B, T, generator=torch.Generator().manual_seed(3)) < 0.5
    return m


def _inputs(model: SequenceModel):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)  # noqa: E731
    x = r(B, T, C).requires_grad_()
    state = model.initial_state(B)._replace(h=r(B, H).requires_grad_())
    if hasattr(state, "c"):
        state = state._replace(c=r(B, H).requires_grad_())
    return x, state


def _loss(y: torch.Tensor, state) -> torch.Tensor:  # type: ignore[no-untyped-def]
    wy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    loss = (y * wy).sum()
    for k, s in enumerate(state):  # h (and the LSTM's c), weighted per unit
        loss = loss + (s * torch.arange(1, H + 1, dtype=y.dtype) * (0.5 + k)).sum()
    return loss


def _grads(model, x, state, y, final):  # type: ignore[no-untyped-def]
    leaves = [x, *state, *model.parameters()]
    return torch.autograd.grad(_loss(y, final), leaves, allow_unused=True)


def _reference(model, x, state, mask, detach, noise):  # type: ignore[no-untyped-def]
    """The layer's reference loop with the readout and the choice written out."""
    W, b = model.readout.weight, model.readout.bias
    if detach:  # the fed-back model output y(t-1) carries no gradient, readout included
        W, b = W.detach(), b.detach()
    step = [1]  # unroll feeds at steps 1..T-1, in order; the choice at step t uses noise[:, t]

    def fn(h: torch.Tensor) -> torch.Tensor:
        y = F.linear(h, W, b)
        t, step[0] = step[0], step[0] + 1
        if not model.tokens:
            return y
        z = y.detach() if noise is None else y.detach() + noise[:, t]
        return F.one_hot(z.argmax(-1), C).to(y.dtype)

    layer = Recurrent(model.core.cell, input_feedback=fn)
    with rnnlab.engine.disabled():
        h, final = layer(x, state, lengths=LENGTHS.clamp(min=1), feedback=GivenMask(mask, detach))
    y = model.readout(h)
    # length 0: nothing is read; the output is b_r throughout and the state passes through
    empty = LENGTHS == 0
    y = torch.where(empty[:, None, None], model.readout.bias.expand_as(y), y)
    final = type(final)(*(torch.where(empty[:, None], s0, s) for s, s0 in zip(final, state)))
    return y, final


def _check(got, want) -> None:  # type: ignore[no-untyped-def]
    (y, final, grads), (y_ref, final_ref, grads_ref) = got, want
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    for s, s_ref in zip(final, final_ref):
        torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-12)
    assert len(grads) == len(grads_ref)
    for a, b in zip(grads, grads_ref):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def _run(model, x, state, mask, detach, sample, engine_on, split=None):  # type: ignore[no-untyped-def]
    kw = dict(lengths=LENGTHS, feed_mask=mask, detach=detach, sample=sample, split=split)
    gen = torch.Generator().manual_seed(11)
    if engine_on:
        out = model(x, state, generator=gen, **kw)
    else:
        with rnnlab.engine.disabled():
            out = model(x, state, generator=gen, **kw)
    return out.output, out.state, _grads(model, x, state, out.output, out.state)


@pytest.mark.parametrize("cell,options", CELLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("tokens", [False, True])
def test_past_the_length_engine_and_loop_equal_the_reference(  # type: ignore[no-untyped-def]
    cell, options, kind, detach, tokens
) -> None:
    model = _model(cell, tokens, **options)
    x, state = _inputs(model)
    mask = _mask(kind)
    for sample in (False, True) if tokens else (False,):
        noise = None
        if sample:
            gen = torch.Generator().manual_seed(11)  # the draw the model makes for the chunk
            noise = fed_input.gumbel_noise(B, T, C, generator=gen, dtype=torch.float64)
        y_ref, final_ref = _reference(model, x, state, mask, detach, noise)
        want = (y_ref, final_ref, _grads(model, x, state, y_ref, final_ref))
        # the padded steps are b_r: the comparison below sees them
        torch.testing.assert_close(y_ref[3], model.readout.bias.expand(T, C))
        for engine_on in (True, False):
            dispatch.FALLBACKS.clear()
            _check(_run(model, x, state, mask, detach, sample, engine_on), want)
            if build.available():  # the op (engine on) or the loop (off), neither counted
                assert not dispatch.FALLBACKS
        if kind == "free" and not sample:  # a split (truncated BPTT): part 2 feeds y(2) on
            # (a sampled split draws each part's noise anew, so it is another draw)
            _check(_run(model, x, state, mask, detach, sample, True, split=3), want)


@pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")
def test_the_op_outputs_the_readout_bias_past_the_length() -> None:
    """rnnlab::fed_input itself: past a row's length y(t) = b_r and the state is held, and the
    gradient of y there reaches b_r only."""
    g = torch.Generator().manual_seed(4)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)  # noqa: E731
    S, b = 5, 3
    lengths = torch.tensor([5, 2, 0])
    w_r, b_r = r(C, H).requires_grad_(), r(C).requires_grad_()
    w_ih, w_hh = r(3 * H, C).requires_grad_(), r(3 * H, H).requires_grad_()
    h0 = r(b, H)
    free = torch.zeros(S, b, dtype=torch.bool)
    args = (r(S, b, C), free, r(b, C), None, w_ih, r(3 * H), w_hh, r(3 * H), h0, None, w_r, b_r,
            lengths, fed_input.GRU_AFTER, 1, 1, 0, False)  # fmt: skip
    ys, hs = torch.ops.rnnlab.fed_input(*args)[:2]
    for row, L in enumerate(lengths.tolist()):
        torch.testing.assert_close(ys[L:, row], b_r.detach().expand(S - L, C))
        torch.testing.assert_close(hs[L + 1 :, row], hs[L, row].expand(S - L, H))
    grad = torch.zeros_like(ys)
    grad[2:, 1] = 1.0  # only row 1's padded steps
    dw_r, db_r, dw_ih, dw_hh = torch.autograd.grad(ys, [w_r, b_r, w_ih, w_hh], grad)
    assert not dw_r.any() and not dw_ih.any() and not dw_hh.any()
    torch.testing.assert_close(db_r, torch.full((C,), 3.0, dtype=torch.float64))


def test_a_stacked_model_with_lengths_is_its_run_on_the_truncated_sequences() -> None:
    """Two layers (the counted Python loop): padding + lengths == truncation (shared/DESIGN.md)
    within each length, y = b_r past it, the final state that of the truncated run; the
    gradients of the valid steps' loss equal the truncated runs' summed."""
    torch.manual_seed(0)
    spec = {"cell": "GRUCell", "input_size": C, "hidden_size": H, "output_size": C,
            "num_layers": 2, "feedback": "input"}  # fmt: skip
    model = SequenceModel(spec).double()
    x = torch.randn(B, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x.requires_grad_()
    mask = _mask("mixed")
    dispatch.FALLBACKS.clear()
    out = model(x, lengths=LENGTHS, feed_mask=mask, detach=False)
    assert dispatch.FALLBACKS["model input feedback (layers)"] == 1
    valid = torch.arange(T)[None, :] < LENGTHS[:, None]  # (B, T)
    wy = torch.linspace(-1, 1, B * T * C, dtype=x.dtype).reshape(B, T, C)
    leaves = [x, *model.parameters()]

    def loss_of(y, states, rows):  # type: ignore[no-untyped-def]
        w = wy[rows, : y.shape[1]] * valid[rows, : y.shape[1], None]
        return (y * w).sum() + sum((s.h * 0.3).sum() for s in states)

    got = torch.autograd.grad(loss_of(out.output, out.state, slice(None)), leaves)
    want_loss = torch.zeros((), dtype=x.dtype)
    for b, L in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(out.output[b, L:], model.readout.bias.expand(T - L, C))
        if L == 0:
            for s in out.state:
                assert not s.h[b].any()  # the zero initial state passed through
            continue
        ref = model(x[b : b + 1, :L], feed_mask=mask[b : b + 1, :L], detach=False)
        torch.testing.assert_close(out.output[b, :L], ref.output[0], rtol=1e-10, atol=1e-12)
        for s, s_ref in zip(out.state, ref.state):
            torch.testing.assert_close(s.h[b], s_ref.h[0], rtol=1e-10, atol=1e-12)
        want_loss = want_loss + loss_of(ref.output, ref.state, slice(b, b + 1))
    want = torch.autograd.grad(want_loss, leaves)
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, rtol=1e-9, atol=1e-11)
