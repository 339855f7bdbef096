"""Every fused Triton op of the GPU engine, forward and backward, run on CPU tensors under
``TRITON_INTERPRET=1`` and compared with the reference loop (``unroll`` with the engine off):
outputs, final states and the gradients of the input, the initial state and every parameter.

The interpreter is switched on for this module only: the variable is set while the kernels are
decorated (import) and, through an autouse fixture, while they run; it is restored otherwise,
so no other test sees it. Sizes are tiny (the interpreter costs about 1 ms per program per op).
bf16 is checked as storage only (values loaded and upcast to float32), which the interpreter
does right; bf16 arithmetic inside it is not trustworthy (triton#11584), and there is none.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

import rnnlab
from rnnlab.cells import ElmanCell, GRUCell, JordanCell, LSTMCell
from rnnlab.cells.lstm import VARIANTS
from rnnlab.engine import registry
from rnnlab.layers.recurrent import unroll

pytest.importorskip("triton")


def _import_interpreted() -> tuple[Any, Any, Any]:
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        from rnnlab.engine.gpu import _triton_kernels, fused, ops
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old
    return _triton_kernels, fused, ops


K, fused, ops = _import_interpreted()
if type(K.act_fwd_kernel).__name__ != "InterpretedFunction":
    pytest.skip("the kernels were compiled for a device in this process", allow_module_level=True)


@pytest.fixture(autouse=True)
def _interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # triton also reads it while launching


F64 = torch.float64
CELLS: dict[str, Any] = {
    "elman-output": lambda: ElmanCell(4, 6, output_size=3),
    "elman-relu-sigmoid-output": lambda: ElmanCell(
        4, 6, output_size=2, activation="relu", output_activation="sigmoid"
    ),
    "elman-sigmoid-nobias": lambda: ElmanCell(4, 6, activation="sigmoid", bias=False),
    "jordan": lambda: JordanCell(4, 6, 3),
    "jordan-relu-tanh": lambda: JordanCell(4, 6, 3, activation="relu", output_activation="tanh"),
    "jordan-nobias-sigmoid": lambda: JordanCell(4, 5, 3, bias=False, output_activation="sigmoid"),
    "gru-before": lambda: GRUCell(4, 6, reset="before"),
    "gru-before-relu-nobias": lambda: GRUCell(4, 6, False, reset="before", activation="relu"),
    **{f"lstm-{v}": (lambda v=v: LSTMCell(4, 6, variant=v)) for v in VARIANTS},
    "lstm-peephole-sigmoid-nobias": lambda: LSTMCell(
        4, 6, False, peephole=True, activation="sigmoid", cell_activation="identity"
    ),
}


def _run_both(
    make: Any,
    dtype: torch.dtype,
    B: int = 3,
    T: int = 5,
    seed: int = 0,
    lengths: torch.Tensor | None = None,
) -> tuple[Any, Any, list[Any], list[Any]]:
    """(fused output/state, reference output/state in float64, inputs of each)."""
    torch.manual_seed(seed)
    ref_cell = make().double()
    cell = make().to(dtype)
    cell.load_state_dict(ref_cell.state_dict())
    x = torch.randn(B, T, ref_cell.input_size, dtype=F64)
    st = ref_cell.initial_state(B, dtype=F64)
    st = type(st)(*(torch.randn_like(s) * 0.5 for s in st))
    if getattr(ref_cell, "weight_gg", None) is not None:
        st = st._replace(gates=st.gates.abs().clamp(max=1.0))  # gate activations are in (0, 1)
    xs, sts = x.to(dtype).requires_grad_(), type(st)(*(s.to(dtype).requires_grad_() for s in st))
    x.requires_grad_()
    st = type(st)(*(s.requires_grad_() for s in st))
    y, final = fused.RUNNERS[type(cell)](cell, xs, sts, lengths)
    with rnnlab.engine.disabled():
        ref = unroll(ref_cell, x, st, lengths)
    return (
        (y, final),
        (ref.output, ref.state),
        [xs, *sts, *cell.parameters()],
        [x, *st, *ref_cell.parameters()],
    )


def _loss(y: Any, state: Any, seed: int = 1) -> Any:
    gen = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=gen, dtype=F64).to(y.dtype)).sum()
    for s in state:
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=F64).to(s.dtype)).sum()
    return loss


def _check(make: Any, dtype: torch.dtype, atol: float, lengths: Any = None) -> None:
    (y, final), (ry, rfinal), inputs, ref_inputs = _run_both(make, dtype, lengths=lengths)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), ry, rtol=0, atol=atol)
    for a, b in zip(final, rfinal):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=atol)
    grads = torch.autograd.grad(_loss(y, final), inputs)
    want = torch.autograd.grad(_loss(ry, rfinal), ref_inputs)
    for name, g, w in zip(range(len(want)), grads, want):
        scale = 1.0 + float(w.abs().max())
        torch.testing.assert_close(g.double(), w, rtol=0, atol=atol * 10 * scale, msg=str(name))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_fused_op_equals_reference_loop_float64(name: str) -> None:
    _check(CELLS[name], F64, 1e-12)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_fused_op_equals_reference_loop_float32(name: str) -> None:
    _check(CELLS[name], torch.float32, 2e-6)


ELMAN = ["elman-output", "elman-relu-sigmoid-output", "elman-sigmoid-nobias"]


@pytest.mark.parametrize("name", ELMAN)
@pytest.mark.parametrize("dtype, atol", [(F64, 1e-12), (torch.float32, 2e-6)])
def test_elman_per_step_path_equals_reference_loop(
    name: str, dtype: torch.dtype, atol: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small H takes the persistent kernel; this checks the per-step path (large H) too."""
    monkeypatch.setattr(ops, "PERSISTENT", [False])
    _check(CELLS[name], dtype, atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_persistent_elman_over_several_programs_and_padded_units(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B = 37 (three programs of 16 rows, dU summed by atomic adds) and H = 20 (padded to 32)."""
    make = lambda: ElmanCell(3, 20, output_size=2)  # noqa: E731
    calls = []
    real = ops.P.forward
    monkeypatch.setattr(ops.P, "forward", lambda *a: calls.append(1) or real(*a))
    (y, final), (ry, rfinal), inputs, ref_inputs = _run_both(make, dtype, B=37, T=4)
    assert calls == [1]  # the persistent kernel ran
    atol = 2e-6 if dtype == torch.float32 else 4e-3
    torch.testing.assert_close(y.double(), ry, rtol=0, atol=atol)
    grads = torch.autograd.grad(_loss(y, final), inputs)
    want = torch.autograd.grad(_loss(ry, rfinal), ref_inputs)
    for g, w in zip(grads, want):
        torch.testing.assert_close(
            g.double(), w, rtol=0, atol=atol * 10 * (1 + float(w.abs().max()))
        )


def test_persistent_kernels_exact_in_float64() -> None:
    """The persistent kernels themselves, called directly in float64 against the per-step op."""
    from rnnlab.engine.gpu import _triton_persistent as P

    torch.manual_seed(0)
    T, B, H = 4, 19, 20
    gx, w, h0 = (
        torch.randn(T, B, H, dtype=F64),
        torch.randn(H, H, dtype=F64) * 0.3,
        torch.randn(B, H, dtype=F64),
    )
    hs = P.forward(gx, w, h0, 1)
    g = torch.randn_like(hs)
    with torch.no_grad():
        want_hs = ops.elman_fwd(gx, w, h0, 1)  # float64: the per-step path
        want = ops.elman_bwd(g, want_hs, w, 1)
    torch.testing.assert_close(hs, want_hs, rtol=0, atol=1e-13)
    for a, b in zip(P.backward(g, hs, w, 1), want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_persistent_kernel_asserts_its_gpu_limits() -> None:
    from rnnlab.engine.gpu import _triton_persistent as P

    assert P.check_limits(3, 6, 4) == (16, 16)  # dot operands padded to 16
    with pytest.raises(AssertionError, match="too large"):
        P.check_limits(3, P.MAX_H + 1, 4)


@pytest.mark.parametrize(
    "name", ["elman-output", "jordan-relu-tanh", "gru-before", "lstm-V", "lstm-CIFG", "lstm-FGR"]
)
def test_fused_op_with_lengths_equals_masked_reference_loop(name: str) -> None:
    """Padded batches: outputs zero past each length, final states at each length, and every
    gradient, as the reference loop's masking gives them."""
    _check(CELLS[name], F64, 1e-12, lengths=torch.tensor([5, 2, 1]))


@pytest.mark.parametrize("name", ["elman-output", "jordan-relu-tanh", "gru-before", "lstm-FGR"])
@pytest.mark.parametrize("dtype, atol", [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_fused_op_low_precision_storage(name: str, dtype: torch.dtype, atol: float) -> None:
    """fp16/bf16 storage, float32 arithmetic inside the kernels, against a float64 loop."""
    _check(CELLS[name], dtype, atol)


def test_autocast_runs_the_recurrence_in_the_autocast_dtype() -> None:
    torch.manual_seed(0)
    cell = LSTMCell(4, 16, variant="V")
    x = torch.randn(3, 6, 4, requires_grad=True)
    st = cell.initial_state(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, final = fused.lstm(cell, x, st)
    assert y.dtype == final.c.dtype == torch.bfloat16
    with rnnlab.engine.disabled():
        ref = unroll(cell, x, st)
    torch.testing.assert_close(y.float(), ref.output, rtol=0, atol=3e-2)
    y.float().sum().backward()
    assert cell.weight_ci.grad is not None and cell.weight_ci.grad.dtype == torch.float32
    assert x.grad is not None and x.grad.isfinite().all()


@pytest.mark.parametrize("name", ["elman-output", "jordan", "gru-before", "lstm-V"])
def test_expanded_stride0_incoming_gradient(name: str) -> None:
    """``y.sum().backward()`` hands the op an expanded (stride-0) gradient: it must be made
    contiguous, not read as garbage."""
    (y, final), (ry, rfinal), inputs, ref_inputs = _run_both(CELLS[name], F64)
    ones = torch.ones((), dtype=F64).expand(y.shape)
    assert ones.stride() == (0, 0, 0)
    grads = torch.autograd.grad(y, inputs, grad_outputs=ones)
    want = torch.autograd.grad(ry, ref_inputs, grad_outputs=ones)
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-11)


def _op_cases() -> list[tuple[Any, tuple[Any, ...]]]:
    torch.manual_seed(0)
    T, B, H = 3, 2, 4

    def r(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, dtype=F64) * 0.5).requires_grad_()

    e = torch.empty(0, dtype=F64)
    cell = LSTMCell(3, H, variant="FGR")
    return [
        (ops.elman_fwd, (r(T, B, H), r(H, H), r(B, H), 1)),
        (ops.jordan_fwd, (r(T, B, H), r(H, 2), r(2, H), r(2), r(B, 2), 1, 0)),
        (ops.gru_fwd, (r(T, B, 3 * H), r(3 * H, H), r(B, H), 1)),
        (
            ops.lstm_fwd,
            (
                r(T, B, 4 * H),
                r(4 * H, H),
                r(H),
                r(H),
                r(H),
                e,
                r(B, H),
                r(B, H),
                e,
                [4, 0, 1, 2, 3, 0, -1, -1, -1, 0, 1, 1],
            ),
        ),  # fmt: skip
        (
            ops.lstm_fwd,
            (
                r(T, B, 4 * H),
                r(4 * H, H),
                r(H),
                r(H),
                r(H),
                r(3 * H, 3 * H),
                r(B, H),
                r(B, H),
                r(B, 3 * H).detach().abs().requires_grad_(),
                fused.lstm_config(cell),
            ),
        ),  # fmt: skip
    ]


@pytest.mark.parametrize("k", range(5))
def test_op_reads_an_expanded_gradient_like_a_dense_one(k: int) -> None:
    """Straight on the op's output (no slicing in between that would copy it)."""
    op, args = _op_cases()[k]
    out = op(*args)
    first = out[0] if isinstance(out, tuple) else out
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    ones = torch.ones((), dtype=F64).expand(first.shape)
    assert 0 in ones.stride()
    sparse = torch.autograd.grad(first, inputs, grad_outputs=ones, retain_graph=True)
    dense = torch.autograd.grad(first, inputs, grad_outputs=ones.contiguous())
    for a, b in zip(sparse, dense):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_through_the_registry_as_if_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole CUDA route on CPU tensors: a bidirectional peephole drop-in (full and packed)
    and a reversed, padded Jordan layer take the fused ops (counted) and equal the loop."""
    calls = []
    runners = dict(fused.RUNNERS)
    monkeypatch.setattr(registry, "_device_type", lambda x: "cuda")
    monkeypatch.setattr(
        fused,
        "RUNNERS",
        {t: (lambda *a, f=f: calls.append(1) or f(*a)) for t, f in runners.items()},
    )
    torch.manual_seed(0)
    lstm = rnnlab.nn.LSTM(3, 4, bidirectional=True, peephole=True).double()
    x = torch.randn(5, 2, 3, dtype=F64)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [5, 3])
    out, (h, c) = lstm(x)
    outp, (hp, cp) = lstm(packed)
    jordan = rnnlab.layers.Recurrent(JordanCell(3, 4, 2).double(), reverse=True)
    yj, _ = jordan(x.transpose(0, 1), lengths=torch.tensor([2, 5]))
    assert len(calls) == 5
    with rnnlab.engine.disabled():
        out_ref, (h_ref, c_ref) = lstm(x)
        outp_ref, (hp_ref, cp_ref) = lstm(packed)
        yj_ref, _ = jordan(x.transpose(0, 1), lengths=torch.tensor([2, 5]))
    pairs = [(out, out_ref), (h, h_ref), (c, c_ref), (yj, yj_ref), (outp.data, outp_ref.data)]
    for a, b in pairs + [(hp, hp_ref), (cp, cp_ref)]:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_launcher_asserts_what_the_interpreter_does_not_check() -> None:
    a = torch.randn(4, 6).t()  # not contiguous
    with pytest.raises(AssertionError, match="not contiguous"):
        K.launch(K.act_fwd_kernel, 24, a, a, 24, ACT=1)


def test_second_order_gradients_raise_a_clear_error() -> None:
    (y, final), _, inputs, _ = _run_both(CELLS["gru-before"], F64)
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(y.square().sum(), inputs[:1], create_graph=True)


def test_ops_pass_torch_library_opcheck() -> None:
    """Schema, fake (meta) implementation and autograd registration of each op."""
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    for op, args in _op_cases():
        torch.library.opcheck(op, args, test_utils=utils)
