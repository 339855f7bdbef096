"""ONNX export (rnnlab.export.to_onnx): the engine's kernels lowered onto ONNX's RNN, GRU and
LSTM operators, or onto one Scan per layer call where ONNX has no operator (Jordan, LSTM with
projection, the variants, full gate recurrence, hardtanh, float64), run in onnxruntime at a
batch and length other than the exported ones, against the reference loop (float32, 1e-5;
float64 1e-10). Cells without a kernel have no dynamic-T export and are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnnlab
from compat_cases import Bundle, Model, inputs, make, reference
from rnnlab import ElmanCell, GRUCell, LSTMCell, Recurrent
from rnnlab.cells import LayerNormGRUCell, LayerNormLSTMCell, VariationalDropoutCell, ZoneoutCell

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
    ("recurrent", "lstm_niaf"),
    ("recurrent", "lstm_noaf"),
    ("recurrent", "recurrent_mlp"),
    ("stacked", "gru_before"),
    ("bidirectional", "lstm_v"),
    ("dropin", "nn.RNN"),
    ("dropin", "nn.GRU"),
    ("dropin", "nn.LSTM"),
]


# no ONNX operator: one Scan per layer call (LSTM with projection, absent gates, coupled gates,
# full gate recurrence; Jordan with a nonlinear output; hardtanh; zoneout; layer norm), in every
# layer kind
SCAN_ROWS = [
    ("recurrent", "jordan"),
    ("recurrent", "jordan_nobias"),
    ("recurrent", "jordan_sigmoid"),
    ("recurrent", "lstm_proj"),
    ("recurrent", "lstm_peephole_proj"),
    *[("recurrent", f"lstm_{v}") for v in ("nig", "nfg", "nog", "cifg", "fgr")],
    ("stacked", "lstm_proj"),
    ("stacked", "jordan_sigmoid"),
    ("bidirectional", "jordan_sigmoid"),
    ("bidirectional", "lstm_fgr"),
]


def _hardtanh_and_regularised():
    """hardtanh (not among ONNX's activations) and the regularised cells in eval mode:
    zoneout (keep weights = the rates) with and without variational dropout (its state mask
    is off in eval), layer norm (both GRU resets), on the regularised kernels' ops."""
    torch.manual_seed(0)
    cells = [
        ElmanCell(3, 5, 2, activation="hardtanh"),
        GRUCell(3, 5, activation="hardtanh"),
        ZoneoutCell(LSTMCell(3, 5), 0.3),
        ZoneoutCell(GRUCell(3, 5, reset="before"), 0.2),
        ZoneoutCell(VariationalDropoutCell(LSTMCell(3, 5), dropout_state=0.3), 0.25),
        VariationalDropoutCell(GRUCell(3, 5), dropout_input=0.2, dropout_state=0.3),
        LayerNormLSTMCell(3, 5),
        LayerNormGRUCell(3, 5),
        ZoneoutCell(LayerNormGRUCell(3, 5, reset="before"), 0.2),
    ]
    return [Model(Recurrent(c), True).double() for c in cells]


def _run(program, x, lengths):
    sess = ort.InferenceSession(program.model_proto.SerializeToString())
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (x, lengths))}
    return sess.run(None, feeds)


def _ops(program):
    ops = {n.op_type for n in program.model_proto.graph.node}
    for f in program.model_proto.functions:
        ops |= {n.op_type for n in f.node}
    return ops


def _check(bundle, dtype, tol):
    bundle = bundle.to(dtype).eval()  # dropout and zoneout cells: deterministic
    x, lengths = inputs(2, 4)
    program = rnnlab.export.to_onnx(bundle, (x.to(dtype), lengths))
    x2, lengths2 = inputs(3, 7, seed=5)
    got = _run(program, x2.to(dtype), lengths2)
    with torch.no_grad(), reference():
        want = bundle(x2.to(dtype), lengths2)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), rtol=tol, atol=tol)
    return program


@pytest.mark.slow
def test_onnx_runs_in_onnxruntime_at_other_sizes():
    program = _check(Bundle([make(k, n) for k, n in ROWS]), torch.float32, 1e-5)
    assert {"RNN", "GRU", "LSTM"} <= _ops(program)  # the kernels became ONNX's own operators
    assert "Scan" not in _ops(program)


@pytest.mark.slow
def test_onnx_scan_lowering_runs_in_onnxruntime_at_other_sizes():
    bundle = Bundle([make(k, n) for k, n in SCAN_ROWS] + _hardtanh_and_regularised())
    program = _check(bundle, torch.float32, 1e-5)
    ops = _ops(program)
    # (Jordan with a linear output is Elman's recurrence: ONNX's RNN; dropout in eval is the
    # plain GRU: ONNX's GRU)
    assert {"Scan", "RNN", "GRU"} <= ops and not {"LSTM", "Loop"} & ops


def test_onnx_float64_runs_on_scan():
    # onnxruntime has no float64 RNN, GRU or LSTM kernels: float64 models lower onto Scan
    bundle = Bundle([make("recurrent", n) for n in ("elman_relu_out", "gru_before", "lstm_v")])
    program = _check(bundle, torch.float64, 1e-10)
    assert "Scan" in _ops(program) and not {"RNN", "GRU", "LSTM"} & _ops(program)


def test_onnx_refuses_a_cell_without_kernel_at_dynamic_length():
    # its Python reference loop fixes T in the trace: refused, naming the cell
    x, lengths = inputs(2, 4)
    m = make("recurrent", "deep_transition").float()
    with pytest.raises(NotImplementedError, match="DeepTransition"):
        rnnlab.export.to_onnx(m, (x.float(), lengths))
    program = rnnlab.export.to_onnx(m, (x.float(), lengths), dynamic=False)  # static T: fine
    got = _run(program, x.float(), lengths)
    with torch.no_grad(), reference():
        want = m(x.float(), lengths)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-5)


def test_to_onnx_checks_its_arguments():
    with pytest.raises(TypeError, match="model"):
        rnnlab.export.to_onnx("not a model", torch.randn(2, 3, 3))
    with pytest.raises(TypeError, match="example"):
        rnnlab.export.to_onnx(rnnlab.nn.GRU(3, 4), ("x",))


def test_onnx_names_an_engine_op_without_lowering(monkeypatch):
    import rnnlab.export as ex

    full = ex._translations
    jordan = torch.ops.rnnlab.jordan_forward.default
    monkeypatch.setattr(
        ex, "_translations", lambda: {k: v for k, v in full().items() if k != jordan}
    )
    x, lengths = inputs(2, 4)
    with pytest.raises(NotImplementedError, match=r"torch.ops.rnnlab.jordan_forward has no ONNX"):
        ex.to_onnx(make("recurrent", "jordan_sigmoid").float(), (x.float(), lengths))


def test_onnx_with_the_engine_off_is_refused_at_dynamic_length():
    x, lengths = inputs(2, 4)
    with rnnlab.engine.disabled(), pytest.raises(NotImplementedError, match="the engine is off"):
        rnnlab.export.to_onnx(make("recurrent", "gru_after").float(), (x.float(), lengths))
