"""The drop-ins where torch.nn's own tests look (issue 21): torch.nn's exception types and
phrases, batch size 0, dtype/device arguments, the RNNBase weight surface, and weight_norm,
spectral_norm, parametrisations and pruning are in test_nn_reparam.py."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import rnnlab

TORCH = {"RNN": torch.nn.RNN, "GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}
OURS = {"RNN": rnnlab.nn.RNN, "GRU": rnnlab.nn.GRU, "LSTM": rnnlab.nn.LSTM}
MODES = ["RNN", "GRU", "LSTM"]


# --- errors: every error input of torch's module_db --------------------------------------------


@pytest.fixture(scope="module")
def module_db_errors():
    # torch's own list (torch.testing._internal needs the dev extra's expecttest).
    from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

    out = []
    for info in module_db:
        name = info.module_cls.__name__
        if info.module_cls is not TORCH.get(name):
            continue
        for dtype in (torch.float32, torch.float64):
            for e in info.module_error_inputs_func(
                info, device="cpu", dtype=dtype, requires_grad=False, training=True
            ):
                forward = e.error_on == ModuleErrorEnum.FORWARD_ERROR
                out.append((name, e.module_error_input, forward, e.error_type, e.error_regex))
    return out


def _raise(cls, module_input, forward):
    c, f = module_input.constructor_input, module_input.forward_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cls(*c.args, **c.kwargs)
        if forward:
            m(*f.args, **f.kwargs)


def test_every_module_db_error_input_gives_torchs_type_and_phrase(module_db_errors):
    names = {name for name, *_ in module_db_errors}
    assert names == set(MODES)
    assert len(module_db_errors) >= 2 * 42  # 14 per module today, in float32 and float64
    for name, module_input, forward, etype, regex in module_db_errors:
        # the installed torch itself agrees with its list
        with pytest.raises(etype, match=regex):
            _raise(TORCH[name], module_input, forward)
        with pytest.raises(etype, match=regex) as got:
            _raise(OURS[name], module_input, forward)
        # ... and rnnlab's own message (argument: expected ..., got ...) is still there
        assert re.match(r"[\w\[\]() ]+: expected .+, got ", str(got.value)), str(got.value)


# --- errors that torch's own RNN tests check beyond module_db ----------------------------------

L, B, T, I, H = 2, 4, 6, 3, 5


def _x(shape=(T, B, I), dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


def _h(mode, h=(L, B, H), c=None):
    if mode == "LSTM":
        return (torch.randn(*h), torch.randn(*(c or h)))
    return torch.randn(*h)


FORWARD_CASES = {
    # test_rnn_args_check: wrong batch in input or state, wrong sizes, wrong layer count
    "input batch": lambda m: (_x((T, 7, I)), _h(m)),
    "hidden batch": lambda m: (_x(), _h(m, (L, 7, H))),
    "input size": lambda m: (_x((T, B, 7)), _h(m)),
    "hidden size": lambda m: (_x(), _h(m, (L, B, 7))),
    "hidden layers": lambda m: (_x(), _h(m, (7, B, H))),
    "cell size": lambda m: (_x(), _h(m, (L, B, H), (L, B, 7))),
    "sequence length 0": lambda m: (_x((0, B, I)), None),
    "4-D input": lambda m: (_x((T, B, I, 1)), None),
    "batched input, 2-D hx": lambda m: (_x(), _h(m, (B, H))),
    "unbatched input, 3-D hx": lambda m: (_x((T, I)), _h(m, (L, 1, H))),
    "int64 input": lambda m: (_x().long(), None),
    "float64 input": lambda m: (_x(dtype=torch.float64), None),
    "not a tensor": lambda m: ("abc", None),
}
# where torch.nn's message comes from its C++ kernels, the type must match but not the words
NO_PHRASE: set[str] = set()


@pytest.mark.parametrize(
    "mode,case",
    [(m, c) for c in sorted(FORWARD_CASES) for m in MODES if c != "cell size" or m == "LSTM"],
)
def test_forward_errors_match_torch(mode, case):
    torch.manual_seed(0)
    t = TORCH[mode](I, H, L)
    r = OURS[mode](I, H, L)
    x, hx = FORWARD_CASES[case](mode)
    with pytest.raises(Exception) as want:
        t(x, hx)
    with pytest.raises(type(want.value)) as got:
        r(x, hx)
    assert isinstance(got.value, (ValueError, TypeError)), "rnnlab's contract type is kept"
    if case not in NO_PHRASE:
        assert str(want.value) in str(got.value)


def test_hidden_state_dtype_mismatch_is_torchs_runtime_error():
    for mode in MODES:
        t, r = TORCH[mode](I, H), OURS[mode](I, H)
        h = torch.randn(1, B, H, dtype=torch.float64)
        hx = (h, h) if mode == "LSTM" else h
        with pytest.raises(RuntimeError):
            t(_x(), hx)
        with pytest.raises(RuntimeError, match=r"hx.*expected dtype torch.float32") as got:
            r(_x(), hx)
        assert isinstance(got.value, TypeError)


CONSTRUCTOR_CASES = {
    "unknown nonlinearity": ("RNN", (I, H), {"nonlinearity": "garbage"}),
    "nonlinearity as positional": ("RNN", (I, H, 1, "garbage"), {}),
    "proj_size on RNN": ("RNN", (I, H), {"proj_size": 2}),
    "proj_size on GRU": ("GRU", (I, H), {"proj_size": 2}),
    "proj_size = 0 on GRU": ("GRU", (I, H), {"proj_size": 0}),
    "proj_size >= hidden": ("LSTM", (I, H), {"proj_size": H}),
    "negative proj_size": ("LSTM", (I, H), {"proj_size": -1}),
    "dropout > 1": ("GRU", (I, H), {"dropout": 1.5}),
    "dropout bool": ("GRU", (I, H), {"dropout": True}),
    "num_layers 0": ("LSTM", (I, H, 0), {}),
    "num_layers float": ("LSTM", (I, H, 1.5), {}),
    "int64 dtype": ("LSTM", (I, H), {"dtype": torch.int64}),
}


@pytest.mark.parametrize("case", sorted(CONSTRUCTOR_CASES))
def test_constructor_errors_match_torch(case):
    mode, args, kwargs = CONSTRUCTOR_CASES[case]
    with pytest.raises(Exception) as want:
        TORCH[mode](*args, **kwargs)
    with pytest.raises(type(want.value)) as got:
        OURS[mode](*args, **kwargs)
    assert isinstance(got.value, (ValueError, TypeError))
    if case not in ("num_layers float", "int64 dtype"):  # words from range() / the factory
        assert str(want.value) in str(got.value)


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        rnnlab.nn.GRU(I, H, dropout=0.5)


def test_rnnlab_activations_still_accepted_as_nonlinearity():
    rnn = rnnlab.nn.RNN(I, H, 1, "sigmoid")
    assert rnn.nonlinearity == "sigmoid" and rnn.mode == "RNN_SIGMOID"
    assert rnnlab.nn.RNN(I, H, 1, "relu").mode == "RNN_RELU"


# --- what torch.nn accepts ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("given", [False, True])
def test_batch_size_zero(mode, batch_first, given):
    kw = {"bidirectional": True, "batch_first": batch_first}
    if mode == "LSTM":
        kw["proj_size"] = 2
    t, r = TORCH[mode](I, H, L, **kw), OURS[mode](I, H, L, **kw)
    r.load_state_dict(t.state_dict())
    x = torch.randn(0, T, I) if batch_first else torch.randn(T, 0, I)
    hx = None
    if given:
        out = 2 if mode == "LSTM" else H
        h = torch.randn(2 * L, 0, out, requires_grad=True)
        hx = (h, torch.randn(2 * L, 0, H, requires_grad=True)) if mode == "LSTM" else h
    results = []
    for m in (t, r):
        xx = x.clone().requires_grad_()
        y, h_n = m(xx, hx)
        states = h_n if isinstance(h_n, tuple) else (h_n,)
        (y.sum() + sum(s.sum() for s in states)).backward()
        results.append((y, states, xx.grad, [p.grad for p in m.parameters()]))
    (y_t, s_t, gx_t, gp_t), (y_r, s_r, gx_r, gp_r) = results
    assert y_r.shape == y_t.shape
    assert [s.shape for s in s_r] == [s.shape for s in s_t]
    assert gx_r.shape == gx_t.shape
    for a, b in zip(gp_r, gp_t):  # torch gives every weight a zero gradient
        assert a is not None and a.shape == b.shape and not a.any()


@pytest.mark.parametrize("dtype", ["float64", "torch.float64", torch.float64])
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), None])
def test_dtype_and_device_arguments(dtype, device):
    m = rnnlab.nn.LSTM(I, H, dtype=dtype, device=device)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in m.parameters())
    y, _ = m(torch.randn(T, B, I, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_index_like_sizes_as_torch():
    # torch.nn takes anything with __index__ for num_layers and proj_size (range(), empty())
    np = pytest.importorskip("numpy")
    for layers, proj in ((np.int64(2), np.int64(2)), (torch.tensor(2), 0)):
        t = torch.nn.LSTM(I, H, layers, proj_size=proj)
        r = rnnlab.nn.LSTM(I, H, layers, proj_size=proj)
        r.load_state_dict(t.state_dict())
        assert r.num_layers == 2 and type(r.num_layers) is int and repr(r) == repr(t)
        x = torch.randn(T, B, I)
        torch.testing.assert_close(r(x)[0], t(x)[0])


def test_bad_dtype_names():
    with pytest.raises(TypeError, match="dtype: expected a torch.dtype or its name, got 'f64'"):
        rnnlab.nn.GRU(I, H, dtype="f64")
    with pytest.raises(TypeError, match="dtype: expected a real floating-point dtype"):
        rnnlab.nn.GRU(I, H, dtype=torch.complex64)
