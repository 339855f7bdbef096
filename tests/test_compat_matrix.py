"""Layer 3 under every transform: each built-in cell in each layer kind (Recurrent, Stacked,
Bidirectional) and the torch.nn drop-ins, with the engine on as a user gets it, under
torch.compile(fullgraph, dynamic), torch.export (dynamic B and T), bf16/fp16 weights, bf16
autocast, vmap, jacrev, func.grad and double backward, against the reference loop (float64 to
1e-10; half precision against float64 to 5e-2 / 2e-2). ONNX is in tests/test_onnx.py.

Compile builds one module holding every row (one compile, at two sizes: symbolic B and T);
export one holding a representative of every kernel path."""

from __future__ import annotations

import pytest
import torch

from compat_cases import Bundle, check, inputs, make, reference, rows
from rnnlab.engine import build

EAGER = ("bf16", "autocast", "fp16", "vmap", "jacrev", "func.grad", "double_backward")


@pytest.mark.parametrize("transform", EAGER)
@pytest.mark.parametrize(("kind", "name"), rows(), ids=[f"{k}-{n}" for k, n in rows()])
def test_eager_transform_equals_reference(kind, name, transform):
    assert check(make(kind, name), transform)


# Compile and export cost seconds per op in the graph; the suite traces one module holding a
# representative of every kernel path in every layer kind (scripts/compat_matrix.py runs all
# cells). Cells without a kernel run the reference loop, whose Python loop over T makes T static.
TRACED = [
    ("recurrent", "elman_relu_out"),
    ("recurrent", "jordan_sigmoid"),
    ("recurrent", "jordan"),
    ("recurrent", "gru_after"),
    ("recurrent", "gru_before"),
    ("recurrent", "lstm_peephole_proj"),
    ("recurrent", "lstm_fgr"),
    ("recurrent", "recurrent_mlp"),
    ("stacked", "lstm_cifg"),
    ("bidirectional", "gru_after"),
    ("dropin", "nn.LSTM"),
]


# Cells without a kernel run the reference loop, a Python loop over T: compiled at one length.
LOOPED = ("deep_transition", "deep_output")

# Rows whose Dynamo graph (outer graph, the autograd Function's forward and backward bodies, the
# engine op and which of its optional tensors are given) is the same as another row's in every
# layer kind, differing only in constant arguments (activation codes):
# traced once, through the row named here. Their numbers are checked per row by the eager
# transforms above and tests/test_engine_paths.py. (Measured with a recording backend, one row
# at a time, 2026-12-04. The absent-gate variants nig, nfg, nog, cifg each pass None in another
# of the op's peephole slots: distinct graphs, all kept.)
SAME_GRAPH = {
    "elman_identity_nobias": "recurrent_mlp",
    "gru_before_sigmoid": "gru_before",
    "lstm_niaf": "lstm_v",
    "lstm_noaf": "lstm_v",
}


def _bundle(rows=TRACED):
    return Bundle([make(k, n) for k, n in rows])


def _grads(bundle, x, lengths):
    x = x.clone().requires_grad_()
    out = bundle(x, lengths)
    loss = sum(((o * (k + 1)).sin()).sum() for k, o in enumerate(out))
    return out, torch.autograd.grad(loss, [x, *bundle.parameters()])


# AOT autograd (fakes, the Functions' backward traced) on a representative of every kernel in
# every layer kind; the drop-in is the 2-layer bidirectional LSTM, which torch's own RNN entry
# points cannot compile. Inductor's C++ code generation for the glue costs seconds per kernel
# call and proves nothing more about the kernels (scripts/compat_matrix.py uses it).
COMPILED = [
    ("recurrent", "jordan_sigmoid"),
    ("stacked", "gru_before"),
    ("bidirectional", "lstm_peephole_proj"),
    ("dropin", "nn.LSTM"),
]


def _compiled_equals_reference(which, sizes, backend):
    """One compile of a module holding every row in ``which``, run at each of ``sizes``
    (forward and gradients against the reference loop); returns how many graphs it made."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    bundle = _bundle(which)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(bundle, fullgraph=True, dynamic=True, backend=counter)
    for B, T in sizes:
        x, lengths = inputs(B, T)
        out, grads = _grads(compiled, x, lengths)
        with reference():
            want, want_grads = _grads(bundle, x, lengths)
        assert len(out) == len(want)
        for a, b in zip((*out, *grads), (*want, *want_grads)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    return counter.frame_count


@pytest.mark.slow
def test_compile_fullgraph_dynamic_equals_reference():
    # B and T avoid I = 3: Dynamo gives equal sizes one symbol, and the input-size check would
    # then fix T (a silent recompile). (The backend is also called for a second frame here,
    # not a recompile of the forward: TORCH_LOGS=recompiles is silent; the graph count is
    # asserted in the Dynamo-only test below.)
    _compiled_equals_reference(COMPILED, ((2, 4), (4, 6)), "aot_eager")


@pytest.mark.slow
def test_compile_fullgraph_dynamic_every_row_equals_reference():
    # every built-in cell with a kernel in Recurrent, Stacked and Bidirectional (one row per
    # distinct graph: SAME_GRAPH), and the drop-ins: Dynamo (fullgraph: no graph break; the
    # fakes on symbolic B and T), one graph for both sizes; the gradients run through the
    # compiled forward's autograd graph
    kernel_rows = [r for r in rows() if r[1] not in LOOPED and r[1] not in SAME_GRAPH]
    assert _compiled_equals_reference(kernel_rows, ((2, 4), (4, 6)), "eager") == 1


@pytest.mark.slow
def test_compile_fullgraph_cells_without_kernel_equal_reference():
    looped = [r for r in rows() if r[1] in LOOPED]
    assert _compiled_equals_reference(looped, ((2, 4),), "eager") == 1


@pytest.mark.slow
def test_export_dynamic_batch_and_time_equals_reference():
    bundle = _bundle()
    x, lengths = inputs(2, 3)
    B, T = torch.export.Dim("B", min=2), torch.export.Dim("T", min=2)
    ep = torch.export.export(bundle, (x, lengths), dynamic_shapes=({0: B, 1: T}, {0: B}))
    if build.available():  # the kernels are nodes of the graph
        names = {str(n.target) for n in ep.graph.nodes}
        assert {f"rnnlab.{c}_forward.default" for c in ("elman", "jordan", "gru", "lstm")} <= names
    x2, lengths2 = inputs(4, 6, seed=3)
    got = ep.module()(x2, lengths2)
    with reference():
        want = bundle(x2, lengths2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
