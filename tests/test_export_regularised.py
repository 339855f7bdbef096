"""The regularised operators of issue 18 under torch.compile, torch.export and ONNX.

One module holds a representative of every regularised op family (``lstm_reg``, ``gru_reg``,
``elman_reg``, ``jordan_reg``, ``ln_lstm``, ``ln_gru``: zoneout around variational dropout
around the cell), so that one compile and one export cover them all (each costs seconds).

- torch.compile(fullgraph=True) in *training* mode (masks and zoneout draws from torch's RNG,
  the same seed on both sides) against eager, outputs and gradients, float32 to 1e-5. The
  backend is ``aot_eager``: Dynamo, the fakes and AOT autograd over the Functions' backward, as
  in tests/test_compat_matrix.py; Inductor's code generation for the glue costs ~20-45 s per
  op family and proves nothing more about the ops.
- torch.export (dynamic B and T) in eval mode against the reference loop at other sizes.
- ONNX (Scan lowering) of the two families tests/test_onnx.py's bundle lacks (Elman's and
  Jordan's), in eval mode, in onnxruntime at another B and T.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compat_cases import Bundle, Model, inputs, reference
from engine_spy import spy_ops as _spy
from rnnlab.cells import (
    ElmanCell,
    GRUCell,
    JordanCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    VariationalDropoutCell,
    ZoneoutCell,
)
from rnnlab.engine import build
from rnnlab.layers import Recurrent

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")


def _both(cell, rates):
    return ZoneoutCell(VariationalDropoutCell(cell, dropout_input=0.2, dropout_state=0.3), rates)


FAMILIES = {
    "lstm_reg": lambda: _both(LSTMCell(3, 4), {"h": 0.1, "c": 0.5}),
    "gru_reg": lambda: _both(GRUCell(3, 4, reset="before"), 0.2),
    "elman_reg": lambda: _both(ElmanCell(3, 4), 0.2),
    "jordan_reg": lambda: _both(JordanCell(3, 4, 2, output_activation="tanh"), 0.2),
    "ln_lstm": lambda: _both(LayerNormLSTMCell(3, 4), {"h": 0.1, "c": 0.5}),
    "ln_gru": lambda: _both(LayerNormGRUCell(3, 4), 0.2),
}
FORWARD_OPS = {f"rnnlab.{n}_forward.default" for n in FAMILIES}


def _bundle(names=FAMILIES, dtype=torch.float32):
    torch.manual_seed(0)
    return Bundle([Model(Recurrent(FAMILIES[n]()), True) for n in names]).to(dtype)


def _step(model, x, lengths, seed=7):
    torch.manual_seed(seed)  # the masks and the zoneout draws: the same on both sides
    x = x.clone().requires_grad_()
    out = model(x, lengths)
    loss = sum(((o * (k + 1)).sin()).sum() for k, o in enumerate(out))
    return out, torch.autograd.grad(loss, [x, *model.parameters()])


def test_compile_fullgraph_training_step_equals_eager(monkeypatch):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    bundle = _bundle().train()
    x, lengths = inputs(2, 3)
    x = x.float()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(bundle, fullgraph=True, backend=counter)
    calls = _spy(monkeypatch)
    got, got_g = _step(compiled, x, lengths)
    ran = set(calls)
    want, want_g = _step(bundle, x, lengths)
    assert counter.frame_count == 1
    for n in FAMILIES:  # every family's forward and backward kernel ran in the compiled step
        assert {f"{n}_forward", f"{n}_backward"} <= ran, (n, sorted(ran))
    assert len(got) == len(want) and len(got_g) == len(want_g)
    for a, b in zip((*got, *got_g), (*want, *want_g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_export_dynamic_batch_and_time_equals_reference_in_eval():
    bundle = _bundle(dtype=torch.float64).eval()
    x, lengths = inputs(2, 3)
    B, T = torch.export.Dim("B", min=2), torch.export.Dim("T", min=2)
    ep = torch.export.export(bundle, (x, lengths), dynamic_shapes=({0: B, 1: T}, {0: B}))
    names = {str(n.target) for n in ep.graph.nodes}
    assert FORWARD_OPS <= names, sorted(n for n in names if "rnnlab" in n)
    x2, lengths2 = inputs(4, 6, seed=3)
    got = ep.module()(x2, lengths2)
    with reference():
        want = bundle(x2, lengths2)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_onnx_elman_and_jordan_regularised_run_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import rnnlab

    bundle = _bundle(["elman_reg", "jordan_reg"]).eval()  # zoneout's mixture; dropout off
    x, lengths = inputs(2, 4)
    program = rnnlab.export.to_onnx(bundle, (x.float(), lengths))
    assert "Scan" in {n.op_type for n in program.model_proto.graph.node}
    x2, lengths2 = inputs(3, 7, seed=5)
    sess = ort.InferenceSession(program.model_proto.SerializeToString())
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (x2.float(), lengths2))}
    got = sess.run(None, feeds)
    with torch.no_grad(), reference():
        want = bundle(x2.float(), lengths2)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-5)
