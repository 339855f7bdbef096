"""The feedback mask inside the kernel's time loop (rnnlab.engine.feedback), against the
reference loop ``rnnlab.layers.unroll`` in float64: outputs, final state and every gradient
(parameters, input, initial state, reference), under every schedule, detach True and False;
gradcheck / gradgradcheck of the op on tiny sizes; spies that count the op calls."""

from __future__ import annotations

import pytest
import torch

from rnnlab import engine
from rnnlab.cells import ElmanCell, JordanCell
from rnnlab.engine import build
from rnnlab.engine import feedback as efb
from rnnlab.layers import Recurrent, dispatch, unroll
from rnnlab.layers.feedback import Alternating, FreeRunning, GivenMask, Mixed, TeacherForcing

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

B, T, I = 3, 6, 2
LENGTHS = torch.tensor([6, 4, 1])


def _schedules() -> dict[str, object]:
    g = torch.Generator().manual_seed(3)
    given = torch.rand(B, T, generator=g) < 0.5
    return {
        "teacher": TeacherForcing,
        "free": FreeRunning,
        "alternating": lambda detach: Alternating(2, 1, detach=detach),
        "mixed": lambda detach: Mixed(0.5, detach=detach),
        "mixed_seq": lambda detach: Mixed(0.5, per="sequence", detach=detach),
        "given": lambda detach: GivenMask(given, detach),
    }


SCHEDULES = _schedules()


def _cells() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "jordan": JordanCell(I, 5, 3, dtype=torch.float64),
        "jordan_tanh_out": JordanCell(
            I, 5, 3, output_activation="tanh", activation="sigmoid", dtype=torch.float64
        ),
        "elman": ElmanCell(I, 4, dtype=torch.float64),
    }


class Spy:
    """Counts the masked kernels' op calls (wraps ``FedForward.apply``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = efb.FedForward.apply

        def counted(*a):  # type: ignore[no-untyped-def]
            self.calls += 1
            return real(*a)

        monkeypatch.setattr(efb.FedForward, "apply", counted)


def _run(layer, x, s0, r, schedule, lengths, fast: bool):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(11)
    if fast:
        res = layer.run(x, s0, lengths=lengths, feedback=schedule, reference=r, generator=gen)
    else:
        res = unroll(
            layer.cell, x, s0, lengths, reverse=layer.reverse, feedback=schedule, reference=r,
            generator=gen,
        )  # fmt: skip
    return res.output, res.state


@pytest.mark.parametrize("cell_name", ["jordan", "jordan_tanh_out", "elman"])
@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_masked_kernel_equals_unroll(monkeypatch, cell_name, sched, detach, lengths) -> None:
    cell = _cells()[cell_name]
    reverse = sched == "alternating" and lengths is not None  # one reversed case
    layer = Recurrent(cell, reverse=reverse)
    n = cell.state_sizes()[cell.feedback_field]
    schedule = SCHEDULES[sched](detach=detach)  # type: ignore[operator]
    torch.manual_seed(1)
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    r = torch.randn(B, T, n, dtype=torch.float64, requires_grad=True)
    s0 = cell.State(torch.randn(B, n, dtype=torch.float64, requires_grad=True))
    params = [p for p in cell.parameters()]
    leaves = [x, r, s0[0], *params]
    w = torch.randn(B, T, n, dtype=torch.float64)
    results = []
    for fast in (True, False):
        spy = Spy(monkeypatch) if fast else None
        y, fin = _run(layer, x, s0, r, schedule, lengths, fast)
        if spy is not None:
            # teacher forcing of a Jordan cell takes the parallel path; everything else the op
            tf = sched == "teacher" or (sched == "given" and bool(schedule.given[:, 1:].all()))
            assert spy.calls == (0 if tf and cell_name.startswith("jordan") else 1)
        loss = (y * w).sum() + (fin[0] ** 2).sum()
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        results.append((y, fin[0], grads))
        monkeypatch.undo()
    (yf, ff, gf), (yr, fr, gr) = results
    torch.testing.assert_close(yf, yr, rtol=0, atol=1e-10)
    torch.testing.assert_close(ff, fr, rtol=0, atol=1e-10)
    for a, b in zip(gf, gr):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            assert a is not None
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_detach_changes_the_gradient() -> None:
    """Honest check that detach is honoured, not ignored: free running with and without it
    gives different gradients of the initial state (and without it equals the plain run)."""
    cell = _cells()["jordan"]
    layer = Recurrent(cell)
    torch.manual_seed(2)
    x = torch.randn(B, T, I, dtype=torch.float64)
    r = torch.zeros(B, T, 3, dtype=torch.float64)
    out = {}
    for d in (True, False):
        y0 = torch.randn(B, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        y0.requires_grad_(True)
        y, _ = layer(x, cell.State(y0), feedback=FreeRunning(detach=d), reference=r)
        (g,) = torch.autograd.grad(y.sum(), [y0])
        out[d] = g
    y0 = torch.randn(B, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y0.requires_grad_(True)
    y, _ = layer(x, cell.State(y0))
    (g_plain,) = torch.autograd.grad(y.sum(), [y0])
    assert float((out[True] - out[False]).abs().max()) > 1e-3
    torch.testing.assert_close(out[False], g_plain, rtol=0, atol=1e-12)


@pytest.mark.parametrize("with_wy", [True, False])
@pytest.mark.parametrize("detach", [True, False])
def test_op_gradcheck(with_wy, detach) -> None:
    g = torch.Generator().manual_seed(5)
    S, b, H = 4, 2, 3
    O = 2 if with_wy else H

    def r(*shape):  # type: ignore[no-untyped-def]
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).requires_grad_()

    mask = torch.tensor([[True, True], [False, True], [True, False], [False, False]])
    lengths = torch.tensor([4, 3])
    args = [r(S, b, H), r(H, O), r(O, H) if with_wy else None, r(O) if with_wy else None,
            r(b, O), r(S, b, O)]  # fmt: skip
    cfg = (mask, lengths, 1, 1 if with_wy else 0, detach)

    def f(*a):  # type: ignore[no-untyped-def]
        return efb.run(*a, *cfg)

    def ref(*a):  # type: ignore[no-untyped-def]
        return efb.reference(*a, *cfg)[0]

    present = [a for a in args if a is not None]

    def pack(fn):  # type: ignore[no-untyped-def]
        def inner(*xs):  # type: ignore[no-untyped-def]
            it = iter(xs)
            return fn(*[next(it) if a is not None else None for a in args])

        return inner

    torch.testing.assert_close(pack(f)(*present), pack(ref)(*present), rtol=0, atol=1e-12)
    w = torch.randn(S + 1, b, O, generator=g, dtype=torch.float64)
    v = [torch.randn(a.shape, generator=g, dtype=torch.float64) for a in present]
    seconds = []
    for fn in (f, ref):
        grads = torch.autograd.grad((pack(fn)(*present) * w).sum(), present, create_graph=True)
        second = torch.autograd.grad(sum((a * c).sum() for a, c in zip(grads, v)), present)
        seconds.append((grads, second))
    for one, two in zip(*seconds):
        for a, c in zip(one, two):
            torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
    if not detach:
        # with detach the gradients are on purpose not the derivatives of the forward's values
        # (as in the reference loop); then the comparison above is the check
        assert torch.autograd.gradcheck(pack(f), present)
        assert torch.autograd.gradgradcheck(pack(f), present)


def test_fallbacks_are_counted() -> None:
    """Input feedback through a user function has no kernel: the reference loop, counted."""
    dispatch.FALLBACKS.clear()
    torch.manual_seed(0)
    cell = ElmanCell(2, 2, dtype=torch.float64)
    layer = Recurrent(cell, input_feedback=lambda y: y * 2)
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    layer(x, feedback=Mixed(0.5))
    assert dispatch.FALLBACKS["input_feedback"] == 1
    from rnnlab.cells import LSTMCell

    # an LSTM's state has two fields, its trajectory is not its output: the loop, counted
    Recurrent(LSTMCell(2, 2, dtype=torch.float64)).run(x, return_states=True)
    assert dispatch.FALLBACKS["return_states"] == 1


def test_engine_off_gives_no_op_call(monkeypatch) -> None:
    spy = Spy(monkeypatch)
    cell = _cells()["jordan"]
    x = torch.randn(B, T, I, dtype=torch.float64)
    r = torch.randn(B, T, 3, dtype=torch.float64)
    with engine.disabled():
        Recurrent(cell)(x, feedback=Mixed(0.5), reference=r)
    assert spy.calls == 0
    Recurrent(cell)(x, feedback=Mixed(0.5), reference=r)
    assert spy.calls == 1


def test_given_mask_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="mask: expected a bool tensor"):
        GivenMask(torch.ones(2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="detach: expected True or False"):
        GivenMask(torch.ones(2, 3, dtype=torch.bool), detach=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mask: expected \(2, 4\)"):
        GivenMask(torch.ones(2, 3, dtype=torch.bool)).mask(2, 4)


@pytest.mark.parametrize("cell_name", ["jordan", "elman", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("sched", [None, "mixed"])
def test_return_states_on_the_engine(monkeypatch, cell_name, reverse, sched) -> None:
    """The trajectory of a cell whose state is its output is read off the fast path (no
    fallback counted), equal to the reference loop's."""
    from rnnlab.cells import GRUCell

    torch.manual_seed(0)
    cell = GRUCell(I, 4, dtype=torch.float64) if cell_name == "gru" else _cells()[cell_name]
    n = cell.state_sizes()[cell.feedback_field]
    layer = Recurrent(cell, reverse=reverse)
    x = torch.randn(B, T, I, dtype=torch.float64)
    r = torch.randn(B, T, n, dtype=torch.float64)
    kw = {} if sched is None else {"feedback": Mixed(0.5), "reference": r}
    dispatch.FALLBACKS.clear()
    fast = layer.run(x, lengths=LENGTHS, return_states=True, generator=torch.Generator(), **kw)
    assert not dispatch.FALLBACKS
    with engine.disabled():
        ref = layer.run(x, lengths=LENGTHS, return_states=True, generator=torch.Generator(), **kw)
    torch.testing.assert_close(fast.states[0], ref.states[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(fast.output, ref.output, rtol=0, atol=1e-10)


@pytest.mark.parametrize("detach", [True, False])
def test_masked_kernel_under_torch_func(monkeypatch, detach) -> None:
    """vmap of the forward and per-sample gradients (vmap of grad) equal the reference loop's."""
    cell = _cells()["jordan"]
    layer = Recurrent(cell)
    torch.manual_seed(4)
    X = torch.randn(4, B, T, I, dtype=torch.float64)
    r = torch.randn(B, T, 3, dtype=torch.float64)
    sched = SCHEDULES["given"](detach=detach)  # type: ignore[operator]
    params = dict(cell.named_parameters())

    def loss(p, xi):  # type: ignore[no-untyped-def]
        y, _ = torch.func.functional_call(
            layer, {f"cell.{k}": v for k, v in p.items()}, (xi,),
            {"feedback": sched, "reference": r},
        )  # fmt: skip
        return (y**2).sum()

    def both():  # type: ignore[no-untyped-def]
        fwd = torch.func.vmap(lambda xi: layer(xi, feedback=sched, reference=r)[0])(X)
        grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, X)
        return fwd, grads

    spy = Spy(monkeypatch)
    fast = both()
    assert spy.calls == 2  # one op call per vmapped run: the kernel, not the loop
    with engine.disabled():
        ref = both()
    torch.testing.assert_close(fast[0], ref[0], rtol=0, atol=1e-10)
    for k in params:
        torch.testing.assert_close(fast[1][k], ref[1][k], rtol=0, atol=1e-10)
