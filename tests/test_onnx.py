"""ONNX export (rnnlab.export.to_onnx): the engine's kernels lowered onto ONNX's RNN, GRU and
LSTM operators, run in onnxruntime at a batch and length other than the exported ones, against
the reference loop (float32, 1e-5); variants without an ONNX operator are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnnlab
from compat_cases import Bundle, inputs, make, reference

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# ONNX's own operators: Elman (any ONNX activation, with an output layer), GRU both resets,
# LSTM with and without peepholes, in every layer kind, and the drop-ins (time-first)
ROWS = [
    ("recurrent", "elman_tanh"),
    ("recurrent", "elman_relu_out"),
    ("recurrent", "elman_identity_nobias"),
    ("recurrent", "gru_after"),
    ("recurrent", "gru_before"),
    ("recurrent", "lstm_np"),
    ("recurrent", "lstm_v"),
    ("recurrent", "recurrent_mlp"),
    ("stacked", "gru_before"),
    ("bidirectional", "lstm_v"),
    ("dropin", "nn.RNN"),
    ("dropin", "nn.GRU"),
    ("dropin", "nn.LSTM"),
]


def _run(program, x, lengths):
    sess = ort.InferenceSession(program.model_proto.SerializeToString())
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (x, lengths))}
    return sess.run(None, feeds)


@pytest.mark.slow
def test_onnx_runs_in_onnxruntime_at_other_sizes():
    bundle = Bundle([make(k, n) for k, n in ROWS]).float()
    x, lengths = inputs(2, 4)
    program = rnnlab.export.to_onnx(bundle, (x.float(), lengths))
    ops = {n.op_type for n in program.model_proto.graph.node}
    for f in program.model_proto.functions:
        ops |= {n.op_type for n in f.node}
    assert {"RNN", "GRU", "LSTM"} <= ops  # the kernels became ONNX's own operators
    x2, lengths2 = inputs(3, 7, seed=5)
    got = _run(program, x2.float(), lengths2)
    with torch.no_grad(), reference():
        want = bundle(x2.float(), lengths2)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-5)


def test_onnx_refuses_variants_without_an_operator_clearly():
    m = make("recurrent", "lstm_proj").float()
    x, lengths = inputs(2, 4)
    with pytest.raises(
        NotImplementedError, match="^rnnlab.export.to_onnx: ONNX's LSTM has no proj"
    ):
        rnnlab.export.to_onnx(m, (x.float(), lengths))
    with pytest.raises(NotImplementedError, match="Jordan cell with a nonlinear output"):
        rnnlab.export.to_onnx(make("recurrent", "jordan_sigmoid").float(), (x.float(), lengths))


def test_to_onnx_checks_its_arguments():
    with pytest.raises(TypeError, match="model"):
        rnnlab.export.to_onnx("not a model", torch.randn(2, 3, 3))
    with pytest.raises(TypeError, match="example"):
        rnnlab.export.to_onnx(rnnlab.nn.GRU(3, 4), ("x",))
