"""The drop-ins' torch.nn.RNNBase weight surface (issue 21): ``_flat_weights``, ``all_weights``,
``flatten_parameters``, ``_apply`` re-syncing, and weight_norm, spectral_norm, parametrisations
and pruning against torch.nn under the same weights (outputs, states, every gradient), with the
engine on and a spy that checks the engine's kernel got the re-parametrised weights."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.nn.utils import parametrizations, parametrize, prune

import rnnlab
from rnnlab import engine
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell

TORCH = {"RNN": torch.nn.RNN, "GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}
OURS = {"RNN": rnnlab.nn.RNN, "GRU": rnnlab.nn.GRU, "LSTM": rnnlab.nn.LSTM}
CELL = {"RNN": ElmanCell, "GRU": GRUCell, "LSTM": LSTMCell}
MODES = ["RNN", "GRU", "LSTM"]
I, H, T, B = 3, 4, 5, 2


# --- the surface -----------------------------------------------------------------------------

CONFIGS = [
    ("RNN", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"bias": False}),
    ("LSTM", {"num_layers": 2, "proj_size": 3, "bidirectional": True}),
    ("LSTM", {"bias": False, "proj_size": 2}),
]


@pytest.mark.parametrize("mode,kw", CONFIGS)
def test_flat_weights_and_all_weights_as_torch(mode, kw):
    t, r = TORCH[mode](I, H, **kw), OURS[mode](I, H, **kw)
    assert r._flat_weights_names == t._flat_weights_names
    assert [[w.shape for w in g] for g in r.all_weights] == [
        [w.shape for w in g] for g in t.all_weights
    ]
    params = dict(r.named_parameters())
    assert all(w is params[n] for w, n in zip(r._flat_weights, r._flat_weights_names))
    assert [
        [w is params[n] for w, n in zip(g, names)]
        for g, names in zip(r.all_weights, r._all_weights)
    ] == [[True] * len(names) for names in r._all_weights]
    assert repr(r) == repr(t)
    before = [w.clone() for w in r._flat_weights]
    assert r.flatten_parameters() is None  # a documented no-op
    assert all(torch.equal(a, b) for a, b in zip(before, r._flat_weights))


def _cells_read(m):
    return [
        cell._parameters[pname] is getattr(m, name)
        for cell, names in zip(m._cells, m._names)
        for pname, name in names
    ]


def test_apply_resyncs_the_cells_and_assign_is_seen_by_forward():
    m = rnnlab.nn.LSTM(I, H, 2)
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        m.double()  # new Parameter objects (by default .double() only swaps their .data)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
    assert m.weight_hh_l0.dtype == torch.float64
    assert all(_cells_read(m))
    t = torch.nn.LSTM(I, H, 2).double()
    m.load_state_dict(t.state_dict(), assign=True)  # new Parameter objects again
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], t(x)[0])
    assert all(_cells_read(m))


def test_functional_call_uses_the_given_weights():
    t, r = torch.nn.GRU(I, H, 2), rnnlab.nn.GRU(I, H, 2)
    r.load_state_dict(t.state_dict())
    new = {k: torch.randn_like(v) for k, v in t.named_parameters()}
    x = torch.randn(T, B, I)
    want = torch.func.functional_call(t, new, (x,))[0]
    torch.testing.assert_close(torch.func.functional_call(r, new, (x,))[0], want)
    torch.testing.assert_close(r(x)[0], t(x)[0])  # and its own weights again afterwards


# --- re-parametrisations against torch.nn --------------------------------------------------


class _Scale(torch.nn.Module):
    # a user's parametrisation: W = 0.5 * (A + A^T) would need a square A; scaling works on all
    def forward(self, w):
        return 0.7 * w + 0.1


def _weight_norm(m, name):
    torch.nn.utils.weight_norm(m, name)


def _spectral_norm(m, name):
    torch.manual_seed(7)  # the power iteration's random start, the same for both modules
    torch.nn.utils.spectral_norm(m, name)


def _p_weight_norm(m, name):
    parametrizations.weight_norm(m, name)


def _p_spectral_norm(m, name):
    torch.manual_seed(7)
    parametrizations.spectral_norm(m, name)
    # torch.nn evaluates a parametrisation twice per forward, the drop-ins once: in eval mode
    # the power iteration stands still and both use the same weight (docs/design/0012).
    m.eval()


def _p_custom(m, name):
    parametrize.register_parametrization(m, name, _Scale())


def _prune_l1(m, name):
    prune.l1_unstructured(m, name, amount=0.4)


def _prune_structured(m, name):
    prune.ln_structured(m, name, amount=1, n=2, dim=0)


METHODS = {
    "weight_norm": _weight_norm,
    "spectral_norm": _spectral_norm,
    "parametrizations.weight_norm": _p_weight_norm,
    "parametrizations.spectral_norm": _p_spectral_norm,
    "register_parametrization": _p_custom,
    "prune.l1_unstructured": _prune_l1,
    "prune.ln_structured": _prune_structured,
}
TARGETS = ["weight_hh_l0", "weight_ih_l1_reverse", "bias_ih_l0"]


def _pair(mode):
    torch.manual_seed(0)
    t = TORCH[mode](I, H, 2, bidirectional=True, dtype=torch.float64)
    r = OURS[mode](I, H, 2, bidirectional=True, dtype=torch.float64)
    r.load_state_dict(t.state_dict())
    return t, r


class _Spy:
    """Wraps the engine's kernel for a cell type; records the weight_hh of each run."""

    def __init__(self, cell_type):
        self.cell_type = cell_type
        self.seen = []

    def __enter__(self):
        self.kernel = engine.lookup(self.cell_type(1, 1))
        assert self.kernel is not None, "no engine kernel for the drop-in's cell"

        def spy(cell, *args):
            res = self.kernel(cell, *args)
            if res is not None:  # the kernel did not decline
                self.seen.append(cell.weight_hh)
            return res

        engine.register(self.cell_type, spy)
        return self

    def __exit__(self, *exc):
        engine.register(self.cell_type, self.kernel)


def _run(m, x, hx):
    xx = x.clone().requires_grad_()
    hh = tuple(h.clone().requires_grad_() for h in hx)
    y, h_n = m(xx, hh if len(hh) == 2 else hh[0])
    states = h_n if isinstance(h_n, tuple) else (h_n,)
    g = torch.Generator().manual_seed(3)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    loss = loss + sum((s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum() for s in states)
    loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    return [y, *states, xx.grad, *(h.grad for h in hh)], grads


@pytest.mark.filterwarnings("ignore:.*weight_norm. is deprecated")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_reparametrised_dropin_equals_torch_on_the_engine(mode, method):
    target = TARGETS[sorted(METHODS).index(method) % len(TARGETS)]
    if method.startswith("prune.ln") or "spectral" in method:
        target = target.replace("bias_ih_l0", "weight_hh_l0")  # needs a matrix
    t, r = _pair(mode)
    for m in (t, r):
        METHODS[method](m, target)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=g)
    hx = tuple(
        torch.randn(4, B, H, dtype=torch.float64, generator=g)
        for _ in range(2 if mode == "LSTM" else 1)
    )
    want, want_grads = _run(t, x, hx)
    with _Spy(CELL[mode]) as spy:
        got, got_grads = _run(r, x, hx)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert set(got_grads) == set(want_grads)  # weight_g/_v, _orig, parametrizations.* ...
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-10, atol=1e-10, msg=name)
    # the engine ran every layer and direction, and saw the re-parametrised weight_hh
    assert len(spy.seen) == 4
    if target.startswith("weight_hh"):
        k = 0 if target.endswith("l0") else 3
        torch.testing.assert_close(spy.seen[k], getattr(r, target), rtol=0, atol=0)
        assert not isinstance(spy.seen[k], torch.nn.Parameter)


@pytest.mark.filterwarnings("ignore:.*weight_norm. is deprecated")
@pytest.mark.parametrize("mode", MODES)
def test_pruning_and_weight_norm_leave_flat_weights_as_torch(mode):
    # torch's test_rnn_pruning / test_rnn_weight_norm look at _flat_weights and _parameters
    for apply, remove, extra in (
        (lambda m: prune.l1_unstructured(m, "weight_ih_l0", 0.5), prune.remove, "_orig"),
        (torch.nn.utils.weight_norm, torch.nn.utils.remove_weight_norm, "_g"),
    ):
        t, r = _pair(mode)
        for m in (t, r):
            apply(m) if extra == "_orig" else apply(m, "weight_ih_l0")
        count = [sum(isinstance(w, torch.nn.Parameter) for w in m._flat_weights) for m in (t, r)]
        assert count[1] == count[0] == len(r._flat_weights_names) - 1
        x = torch.randn(T, B, I, dtype=torch.float64)
        for m in (t, r):
            m(x)[0].sum().backward()  # the cells now hold the computed (non-leaf) weight
            remove(m, "weight_ih_l0")
        assert all(isinstance(w, torch.nn.Parameter) for w in r._flat_weights)
        assert "weight_ih_l0" in r._parameters and "weight_ih_l0" + extra not in r._parameters
        assert "weight_ih_l0" in dict(r.named_parameters())
        # nothing stale left in the cells (no forward since the removal): copy and pickle
        # work as on torch's module
        copies = [copy.deepcopy(r), pickle.loads(pickle.dumps(r))]
        for c in [r, *copies]:
            torch.testing.assert_close(c(x)[0], t(x)[0], rtol=1e-10, atol=1e-10)


def test_weights_of_removed_parametrisation_stay_trained():
    # register, train a step, remove: forward uses the folded weight, as torch's does
    t, r = _pair("GRU")
    for m in (t, r):
        parametrizations.weight_norm(m, "weight_hh_l1")
        x = torch.randn(T, B, I, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        m(x)[0].sum().backward()
        with torch.no_grad():
            for p in m.parameters():
                p -= 0.1 * p.grad
        parametrize.remove_parametrizations(m, "weight_hh_l1")
    assert isinstance(r.weight_hh_l1, torch.nn.Parameter)
    torch.testing.assert_close(r(x)[0], t(x)[0], rtol=1e-10, atol=1e-10)
