"""The engine's native bf16 path (csrc/half.h, engine/half.py): bf16 weights run the float32
kernels with their matrix products in bf16, forward and backward. Checked against float64 (the
reference loop): outputs, final states and the gradients of every input and parameter within
5e-2 (gradients relative to their largest value); fp16 (cast at the op boundary) within 2e-2.
RNNLAB_ENGINE_BF16GEMM=1 forces the bf16 products at these tiny sizes, and the products counter
proves they ran."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import rnnlab
from compat_cases import Model, _loss, inputs, make, reference
from rnnlab import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, Recurrent, ZoneoutCell
from rnnlab.engine import build, half
from rnnlab.engine.ops import op

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

# every kernel path: Elman (with output, identity), Jordan, GRU after/before, LSTM variants,
# projection with peepholes, full gate recurrence; and the drop-ins (2 layers, bidirectional)
ROWS = [
    ("recurrent", "elman_tanh"),
    ("recurrent", "elman_relu_out"),
    ("recurrent", "elman_identity_nobias"),
    ("recurrent", "jordan"),
    ("recurrent", "jordan_sigmoid"),
    ("recurrent", "gru_after"),
    ("recurrent", "gru_before"),
    ("recurrent", "lstm_peephole_proj"),
    ("recurrent", "lstm_fgr"),
    ("recurrent", "lstm_cifg"),
    ("recurrent", "lstm_nfg"),
    ("stacked", "gru_before_sigmoid"),
    ("bidirectional", "lstm_proj"),
    ("dropin", "nn.RNN"),
    ("dropin", "nn.GRU"),
    ("dropin", "nn.LSTM"),
]
TOL = {torch.bfloat16: 5e-2, torch.float16: 2e-2}


def _run(model, x, lengths):
    x = x.clone().requires_grad_()
    out = model(x, lengths)
    grads = torch.autograd.grad(_loss(out), [x, *model.parameters()])
    return out, grads


def _assert_near(got, want, tol, what):
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, (what, k)
        err = (g.double() - w).abs().max().item()
        scale = max(1.0, w.abs().max().item())
        assert err <= tol * scale, f"{what} {k}: error {err:.3g} > {tol} x {scale:.3g}"


@pytest.mark.parametrize(("kind", "name"), ROWS, ids=[f"{k}-{n}" for k, n in ROWS])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_weights_forward_and_backward_match_float64(kind, name, dtype, monkeypatch):
    monkeypatch.setenv("RNNLAB_ENGINE_BF16GEMM", "1")
    model = make(kind, name)
    x, lengths = inputs(3, 5)
    with reference():
        want, want_grads = _run(model, x, lengths)
    low = copy.deepcopy(model).to(dtype)
    n = half.gemms()
    got, grads = _run(low, x.to(dtype), lengths)
    ran = half.gemms() - n
    assert all(o.dtype == dtype for o in got)
    assert all(g.dtype == dtype for g in grads)
    _assert_near(got, want, TOL[dtype], "output")
    _assert_near(grads, want_grads, TOL[dtype], "gradient")
    if dtype == torch.float16 or name == "nn.LSTM":
        # float16: float32 inside, cast at the boundary; the plain drop-in LSTM in bf16 runs
        # torch's fused (oneDNN) bf16 LSTM, as it runs torch's fused float32 one
        assert ran == 0
    else:
        # the bf16 products ran, forward and backward, where this CPU has them (an AVX2-only
        # CPU computes them in float32, and the numbers above still hold)
        assert (ran > 0) == half.native()


@pytest.mark.parametrize("name", ["elman_tanh", "gru_before", "lstm_peephole_proj"])
def test_bf16_autocast_runs_the_bf16_path_and_matches_float64(name, monkeypatch):
    monkeypatch.setenv("RNNLAB_ENGINE_BF16GEMM", "1")
    model = make("recurrent", name)
    x, lengths = inputs(3, 5)
    with reference():
        want, want_grads = _run(model, x, lengths)
    m32 = copy.deepcopy(model).float()
    n = half.gemms()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, grads = _run(m32, x.float(), lengths)
    assert (half.gemms() > n) == half.native()
    assert got[0].dtype == torch.bfloat16  # as torch.nn's RNNs under bf16 autocast
    _assert_near(got, want, TOL[torch.bfloat16], "output")
    _assert_near(grads, want_grads, TOL[torch.bfloat16], "gradient")


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads /proc/cpuinfo (Linux)")
def test_bf16_products_are_native_exactly_where_the_cpu_has_bf16_support():
    # oneDNN's bf16 matmul runs on AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; elsewhere (AVX2 only)
    # the engine must see that and compute a bf16 call's products in float32, not raise
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    expected = {"avx512bw", "avx512vl", "avx512dq"} <= flags or "avx_ne_convert" in flags
    assert half.native() == expected, (sorted(f for f in flags if f.startswith("avx")), expected)


def test_float16_autocast_computes_in_float32(monkeypatch):
    monkeypatch.setenv("RNNLAB_ENGINE_BF16GEMM", "1")
    m = rnnlab.nn.GRU(4, 6)
    x = torch.randn(5, 2, 4)
    n = half.gemms()
    with torch.autocast("cpu", dtype=torch.float16):
        y, _ = m(x)
    assert half.gemms() == n and y.dtype == torch.float32


def test_bf16_products_are_switchable_and_never_leak_into_float32(monkeypatch):
    x = torch.randn(6, 3, 8)
    m32 = rnnlab.nn.GRU(8, 16)
    want, _ = m32(x)
    mb = copy.deepcopy(m32).bfloat16()
    monkeypatch.setenv("RNNLAB_ENGINE_BF16GEMM", "1")
    n = half.gemms()
    mb(x.bfloat16())
    assert (half.gemms() > n) == half.native()
    n = half.gemms()
    got, _ = m32(x)  # a float32 call after a bf16 one: float32 products, the same answer
    assert half.gemms() == n
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    monkeypatch.setenv("RNNLAB_ENGINE_BF16GEMM", "0")
    mb(x.bfloat16())
    assert half.gemms() == n
    monkeypatch.setenv("RNNLAB_ENGINE_BF16GEMM", "1")
    monkeypatch.setattr(half, "NATIVE_BF16", False)  # cast at the boundary: float32 inside
    mb(x.bfloat16())
    assert half.gemms() == n


def test_bf16_forward_keeps_its_buffers_in_float32_and_the_fake_agrees():
    T, B, H = 4, 2, 6
    g = torch.Generator().manual_seed(0)
    args = (
        torch.randn(T, B, 3 * H, generator=g).bfloat16(),
        torch.randn(3 * H, H, generator=g).bfloat16(),
        torch.randn(3 * H, generator=g).bfloat16(),
        torch.zeros(B, H).bfloat16(),
        None,
        False,
        1,
        True,
    )
    hs, gates, aux = op("gru_forward")(*args)
    assert hs.dtype == torch.bfloat16 and gates.dtype == aux.dtype == torch.float32
    torch.library.opcheck(op("gru_forward"), args, test_utils=("test_schema", "test_faketensor"))


def test_a_failing_kernel_call_clears_the_bf16_scope(monkeypatch):
    monkeypatch.setenv("RNNLAB_ENGINE_BF16GEMM", "1")
    w = torch.randn(4, 4).bfloat16()
    with pytest.raises(RuntimeError):  # h0 of the wrong width: the kernel's copy fails
        op("elman_forward")(torch.randn(3, 2, 4).bfloat16(), w, torch.zeros(2, 5), None, None, 1)
    n = half.gemms()
    m = rnnlab.nn.RNN(4, 4)
    m(torch.randn(3, 2, 4))
    assert half.gemms() == n


REGULARISED = {
    "zoneout-lstm": lambda: ZoneoutCell(LSTMCell(3, 5), 0.3),
    "zoneout-gru-before": lambda: ZoneoutCell(GRUCell(3, 5, reset="before"), 0.3),
    "layernorm-lstm": lambda: LayerNormLSTMCell(3, 5),
    "layernorm-gru": lambda: LayerNormGRUCell(3, 5),
}


@pytest.mark.parametrize("name", list(REGULARISED))
def test_bf16_regularised_kernels_match_float64(name, monkeypatch):
    """The zoneout/dropout and layer-norm kernels (engine/regularised*.py) take the same bf16
    path."""
    monkeypatch.setenv("RNNLAB_ENGINE_BF16GEMM", "1")
    torch.manual_seed(0)
    model = Model(Recurrent(REGULARISED[name]()), True).double().eval()  # eval: zoneout d = p
    x, lengths = inputs(3, 5)
    with reference():
        want, want_grads = _run(model, x, lengths)
    low = copy.deepcopy(model).bfloat16()
    n = half.gemms()
    got, grads = _run(low, x.bfloat16(), lengths)
    assert (half.gemms() > n) == half.native()
    # Layer norm over 4H = 20 values amplifies bf16's rounding: the reference loop itself, run in
    # bf16 on the same weights, lands up to ~7% from float64 (LN-LSTM's input gradient). The bound
    # is 5% of scale or 1.25x that bf16 reference's own error, whichever is larger.
    with reference():  # the reference loop, in bf16
        ref_out, ref_grads = _run(low, x.bfloat16(), lengths)
    for what, g_, w_, r_ in (
        ("output", got, want, ref_out),
        ("gradient", grads, want_grads, ref_grads),
    ):
        for k, (g, w, r) in enumerate(zip(g_, w_, r_)):
            err = (g.double() - w).abs().max().item()
            bound = max(TOL[torch.bfloat16] * max(1.0, w.abs().max().item()),
                        1.25 * (r.double() - w).abs().max().item())  # fmt: skip
            assert err <= bound, f"{name} {what} {k}: error {err:.3g} > {bound:.3g}"
