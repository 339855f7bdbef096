"""rnnlab::fed_input: input feedback through the linear readout inside one C++ time loop,
checked against the model's Python loop on the reference cells (engine off), float64: outputs,
final state and every gradient (inputs, cell parameters, readout, initial state, previous
output), under teacher forcing, free running and a mixture, real values and tokens (argmax and
the Gumbel-max sample), with lengths; a spy counting engine calls in a Trainer run; opcheck."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.engine import build, fed_input
from rnnlab.layers import dispatch
from rnnlab.training import SequenceModel, Trainer, autoregressive

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

C, H, B, T = 4, 5, 3, 7


def _model(cell: str, tokens: bool, **options) -> SequenceModel:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    spec = {
        "cell": cell,
        "cell_options": options,
        "input_size": C,
        "hidden_size": H,
        "output_size": C,
        "feedback": "input",
        "tokens": tokens,
    }
    return SequenceModel(spec).double()


def _mask(kind: str) -> torch.Tensor:
    if kind == "teacher":
        m = torch.ones(B, T, dtype=torch.bool)
        m[0, 3] = False  # not all True, else the model takes its one plain run
        return m
    if kind == "free":
        return torch.zeros(B, T, dtype=torch.bool)
    return torch.rand(B, T, generator=torch.Generator().manual_seed(3)) < 0.5


def _run(model, x, mask, *, lengths, detach, prev, state, sample, engine_on):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(11)
    args = dict(feed_mask=mask, detach=detach, lengths=lengths, prev_output=prev)
    if engine_on:
        out = model(x, state, sample=sample, generator=gen, **args)
    else:
        with rnnlab.engine.disabled():
            out = model(x, state, sample=sample, generator=gen, **args)
    wy = torch.linspace(-1, 1, out.output.numel(), dtype=x.dtype).reshape(out.output.shape)
    loss = (out.output * wy).sum() + (out.state.h * 0.7).sum()
    leaves = [x, state.h, prev, *model.parameters()]
    if hasattr(out.state, "c"):  # the LSTM's cell state
        loss = loss + (out.state.c * torch.arange(H, dtype=x.dtype)).sum()
        leaves.append(state.c)
    grads = torch.autograd.grad(loss, [t for t in leaves if t.requires_grad], allow_unused=True)
    return out.output.detach(), torch.cat(list(out.state), -1).detach(), grads


CASES = [
    ("GRUCell", {}, False),
    ("GRUCell", {"reset": "before"}, False),
    ("ElmanCell", {}, False),
    ("GRUCell", {}, True),
    ("ElmanCell", {"activation": "relu"}, True),
    ("LSTMCell", {}, False),
    ("LSTMCell", {}, True),
]


@pytest.mark.parametrize("cell,options,tokens", CASES)
@pytest.mark.parametrize("kind", ["teacher", "free", "mixed"])
@pytest.mark.parametrize("detach", [False, True])
def test_against_the_python_loop(cell, options, tokens, kind, detach) -> None:  # type: ignore[no-untyped-def]
    model = _model(cell, tokens, **options)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, C, dtype=torch.float64, generator=g).requires_grad_()
    prev = torch.randn(B, C, dtype=torch.float64, generator=g).requires_grad_()
    h0 = torch.randn(B, H, dtype=torch.float64, generator=g).requires_grad_()
    state = model.initial_state(B)._replace(h=h0)
    if cell == "LSTMCell":
        state = state._replace(
            c=torch.randn(B, H, dtype=torch.float64, generator=g).requires_grad_()
        )
    lengths = torch.tensor([T, 4, 0])
    for sample in (False, True) if tokens else (False,):
        kw = dict(lengths=lengths, detach=detach, prev=prev, state=state, sample=sample)
        dispatch.FALLBACKS.clear()
        y, h, gr = _run(model, x, _mask(kind), engine_on=True, **kw)
        assert not dispatch.FALLBACKS  # the engine ran it
        y_ref, h_ref, gr_ref = _run(model, x, _mask(kind), engine_on=False, **kw)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)
        assert len(gr) == len(gr_ref)
        for a, b in zip(gr, gr_ref):
            if b is None:
                assert a is None or not a.any()
            else:
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_detach_and_tokens_stop_the_gradient_of_the_fed_output() -> None:
    """Free running with detach: the inputs past step 0 get no gradient, y(-1) none at all."""
    model = _model("GRUCell", False)
    x = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    prev = torch.randn(B, C, dtype=torch.float64, requires_grad=True)
    for detach in (True, False):
        y = model(x, feed_mask=_mask("free"), detach=detach, prev_output=prev).output
        gx, gp = torch.autograd.grad(y.sum(), [x, prev], allow_unused=True)
        assert gx is None or not gx.any()
        assert (gp is None or not gp.any()) == detach


def test_generate_on_the_engine_matches_the_python_loop() -> None:
    for tokens, sample in ((False, False), (True, False), (True, True)):
        model = _model("GRUCell", tokens)
        prime = torch.randn(2, 3, C, dtype=torch.float64)
        kw = dict(prime=prime, sample=sample, temperature=0.8)
        dispatch.FALLBACKS.clear()
        a = model.generate(6, generator=torch.Generator().manual_seed(5), **kw)
        assert not dispatch.FALLBACKS
        with rnnlab.engine.disabled():
            b = model.generate(6, generator=torch.Generator().manual_seed(5), **kw)
        torch.testing.assert_close(a.values, b.values, rtol=1e-10, atol=1e-10)
        if tokens:
            assert torch.equal(a.tokens, b.tokens)
            # the fed token is the one reported: values[k+1] follows one_hot(tokens[k])
            assert a.tokens.shape == (2, 6)


def test_the_gumbel_max_draw_samples_the_softmax() -> None:
    """argmax(y + τ g) is a sample of softmax(y / τ): frequencies over many draws."""
    y = torch.tensor([[1.0, 0.0, -1.0, 0.5]], dtype=torch.float64).expand(20000, 4)
    noise = fed_input.gumbel_noise(
        20000, 1, 4, temperature=0.7, generator=torch.Generator().manual_seed(0)
    )
    tok = autoregressive.choose(y, noise[:, 0].double())
    freq = torch.bincount(tok, minlength=4).double() / 20000
    torch.testing.assert_close(freq, torch.softmax(y[0] / 0.7, -1), atol=0.015, rtol=0)


def test_argmax_ties_go_to_the_lowest_index() -> None:
    """y = b_r = (0, 2, 2, 1) at every step: both loops feed token 1, never 2."""
    model = _model("GRUCell", True)
    assert model.choose(torch.tensor([[0.0, 2.0, 2.0, 1.0]])).item() == 1
    xs = torch.ops.rnnlab.fed_input(*_op_args(ties=True))[2]  # the inputs the loop read
    assert torch.equal(xs[1:, :, 1], torch.ones(2, 1, dtype=torch.float64))
    assert xs[1:].sum().item() == 2


def _op_args(ties: bool = False, cell: int = fed_input.GRU_AFTER):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(2)
    G = fed_input._BLOCKS[cell]
    S, b = (3, 1) if ties else (4, 2)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)  # noqa: E731
    w_r = torch.zeros(C, H, dtype=torch.float64) if ties else r(C, H)
    b_r = torch.tensor([0.0, 2.0, 2.0, 1.0], dtype=torch.float64) if ties else r(C)
    mask = torch.zeros(S, b, dtype=torch.bool)
    c0 = r(b, H) if cell == fed_input.LSTM else None
    return (r(S, b, C), mask, r(b, C), None, r(G * H, C), r(G * H), r(G * H, H),
            r(G * H) if cell == fed_input.GRU_AFTER else None, r(b, H), c0, w_r, b_r, None,
            cell, 1, 1, int(ties), False)  # fmt: skip


@pytest.mark.parametrize(
    "cell", [fed_input.ELMAN, fed_input.GRU_AFTER, fed_input.GRU_BEFORE, fed_input.LSTM]
)
def test_opcheck(cell: int) -> None:
    args = list(_op_args(cell=cell))
    for i in (0, 2, 4, 5, 6, 8, 9, 10, 11):
        if args[i] is not None:
            args[i] = args[i].requires_grad_()
    torch.library.opcheck(torch.ops.rnnlab.fed_input.default, tuple(args))


def test_a_trainer_run_calls_the_engine_once_per_chunk(monkeypatch) -> None:
    calls = []
    real = fed_input.run
    monkeypatch.setattr(fed_input, "run", lambda *a: calls.append(1) or real(*a))
    dispatch.FALLBACKS.clear()
    steps = 3
    cfg = {
        "task": {"name": "series", "length": 12, "n_train": 16, "n_val": 8},
        "model": {"cell": "GRUCell", "hidden_size": 6},
        "forcing": {"mode": "mixed"},
        "train": {"steps": steps, "batch_size": 8, "progress": False, "eval_every": 1000,
                  "plots": False, "grad_monitor_every": 0},
    }  # fmt: skip
    t = Trainer(cfg, None)
    t.fit()
    assert t.model.feedback == "input"
    # one call per training step (a chunk of 12 steps), and one for the final evaluation's
    # free-running pass
    assert len(calls) == steps + 1
    assert not dispatch.FALLBACKS
