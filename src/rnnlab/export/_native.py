"""ONNX lowerings of the engine's forward ops onto ONNX's own RNN, GRU and LSTM operators.

- ``elman_forward`` -> ``RNN`` (input weights = identity: the projection x W_ihᵀ + b is already
  in the graph), ``gru_forward`` -> ``GRU`` (``linear_before_reset`` 1 for reset-after, 0 for
  reset-before), ``lstm_forward`` with all four gates, no projection and no full gate
  recurrence -> ``LSTM`` (peepholes included: ONNX's P has the same meaning);
- with ``lengths``, ONNX's ``sequence_lens``; states past a sequence's end are frozen with a
  ``Where`` as the kernels freeze them.

:func:`serves` says which calls these take (float32, ONNX activations); :mod:`._scan` takes
the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

# kernel activation codes (rnnlab.engine.kernels.ACT_CODES) -> ONNX RNN activation names
# (5, hardtanh, has none)
_ONNX_ACTS = {
    0: "Affine",
    1: "Tanh",
    2: "Sigmoid",
    3: "Relu",
    4: "Softsign",
    6: "Elu",
    7: "Softplus",
}


def serves(gx: Any, *acts: int) -> bool:
    """Whether ONNX's own operator can run this call: onnxruntime has float32 RNN/GRU/LSTM
    kernels only, and ONNX's activation list lacks hardtanh."""
    return gx.dtype == ir.DataType.FLOAT and all(int(a) in _ONNX_ACTS for a in acts)


def lstm_serves(gx: Any, w_hr: Any, w_gg: Any, blocks: Sequence[int], coupled: bool,
                act: int, cact: int) -> bool:  # fmt: skip
    """ONNX's LSTM: all four gates, no projection, no coupled gate, no full gate recurrence."""
    return (
        serves(gx, act, cact)
        and [int(b) for b in blocks] == [0, 1, 2, 3]
        and not coupled
        and w_hr is None
        and w_gg is None
    )


def _activation_attrs(codes: Sequence[int]) -> dict[str, Any]:
    names, alphas, betas = [], [], []
    for c in codes:
        n = _ONNX_ACTS[int(c)]
        names.append(n)
        if n == "Affine":
            alphas.append(1.0)
            betas.append(0.0)
        elif n == "Elu":
            alphas.append(1.0)
    attrs: dict[str, Any] = {"activations": names}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


def _rows(op: Any, w: Any, blocks: Sequence[int], H: int) -> Any:
    """Concatenate the H-row blocks of ``w`` in the order ``blocks``."""
    parts = [op.Slice(w, [b * H], [(b + 1) * H], [0]) for b in blocks]
    return op.Concat(*parts, axis=0)


def _freeze(op: Any, Y: Any, last: Any, lengths: Any) -> Any:
    """Y (T, B, n) with the steps past each length replaced by ``last`` (B, n)."""
    if lengths is None:
        return Y
    T = op.Shape(Y, start=0, end=1)
    t = op.Range(op.Constant(value_int=0), op.Squeeze(T), op.Constant(value_int=1))
    t = op.Cast(op.Unsqueeze(op.Unsqueeze(t, [1]), [2]), to=7)  # (T, 1, 1) int64
    L = op.Unsqueeze(op.Unsqueeze(op.Cast(lengths, to=7), [0]), [2])  # (1, B, 1)
    return op.Where(op.Less(t, L), Y, op.Unsqueeze(last, [0]))


def _seq_lens(op: Any, lengths: Any) -> Any:
    return None if lengths is None else op.Cast(lengths, to=6)  # int32


def elman(op: Any, gx: Any, w_hh: Any, h0: Any, first: Any, lengths: Any, act: int) -> Any:
    H = w_hh.shape[0]
    if first is not None:  # added to step 0's pre-activation
        head = op.Add(op.Slice(gx, [0], [1], [0]), op.Unsqueeze(first, [0]))
        gx = op.Concat(head, op.Slice(gx, [1], [2**62], [0]), axis=0)
    W = op.Unsqueeze(op.EyeLike(w_hh), [0])
    Y, Yh = op.RNN(
        gx,
        W,
        op.Unsqueeze(w_hh, [0]),
        None,
        _seq_lens(op, lengths),
        op.Unsqueeze(h0, [0]),
        hidden_size=H,
        **_activation_attrs([act]),
    )
    Y = _freeze(op, op.Squeeze(Y, [1]), op.Squeeze(Yh, [0]), lengths)  # (T, B, H)
    return op.Concat(op.Unsqueeze(h0, [0]), Y, axis=0)


def gru(op: Any, gx: Any, w_hh: Any, b_hh: Any, h0: Any, lengths: Any, before: bool,
        act: int) -> Any:  # fmt: skip
    H = w_hh.shape[1]
    order = [1, 0, 2]  # ONNX's z, r, h from rnnlab's r, z, n
    eye = op.EyeLike(op.MatMul(w_hh, op.Transpose(w_hh)))  # (3H, 3H) identity
    W = op.Unsqueeze(_rows(op, eye, order, H), [0])
    R = op.Unsqueeze(_rows(op, w_hh, order, H), [0])
    zeros = op.Mul(op.ReduceSum(eye, [1], keepdims=0), op.Constant(value_float=0.0))
    rb = zeros if b_hh is None else _rows(op, b_hh, order, H)
    Bias = op.Unsqueeze(op.Concat(zeros, rb, axis=0), [0])
    Y, Yh = op.GRU(
        gx,
        W,
        R,
        Bias,
        _seq_lens(op, lengths),
        op.Unsqueeze(h0, [0]),
        hidden_size=H,
        linear_before_reset=0 if before else 1,
        **_activation_attrs([2, act]),
    )
    Y = _freeze(op, op.Squeeze(Y, [1]), op.Squeeze(Yh, [0]), lengths)
    return op.Concat(op.Unsqueeze(h0, [0]), Y, axis=0)


def lstm(op: Any, gx: Any, w_hh: Any, w_ci: Any, w_cf: Any, w_co: Any, h0: Any, c0: Any,
         lengths: Any, act: int, cact: int) -> Any:  # fmt: skip
    """(ys, cs) of an LSTM that :func:`lstm_serves`."""
    H = c0.shape[1]
    order = [0, 3, 1, 2]  # ONNX's i, o, f, c from rnnlab's i, f, g, o
    eye = op.EyeLike(op.MatMul(w_hh, op.Transpose(w_hh)))  # (4H, 4H) identity
    W = op.Unsqueeze(_rows(op, eye, order, H), [0])
    R = op.Unsqueeze(_rows(op, w_hh, order, H), [0])
    zero_h = op.Mul(op.ReduceSum(op.Slice(eye, [0], [H], [0]), [1], keepdims=0),
                    op.Constant(value_float=0.0))  # fmt: skip
    peeps = [w if w is not None else zero_h for w in (w_ci, w_co, w_cf)]
    P = op.Unsqueeze(op.Concat(*peeps, axis=0), [0])
    Y, Yh, Yc = op.LSTM(
        gx,
        W,
        R,
        None,
        _seq_lens(op, lengths),
        op.Unsqueeze(h0, [0]),
        op.Unsqueeze(c0, [0]),
        P,
        hidden_size=H,
        **_activation_attrs([2, act, cact]),
    )
    Y = _freeze(op, op.Squeeze(Y, [1]), op.Squeeze(Yh, [0]), lengths)
    ys = op.Concat(op.Unsqueeze(h0, [0]), Y, axis=0)
    # ONNX's LSTM returns only the final cell; the layers read cs at each sequence's length,
    # which is that final cell for every step >= 1 (frozen past the length)
    c_rest = op.Expand(Yc, op.Shape(Y))  # (T, B, H)
    cs = op.Concat(op.Unsqueeze(c0, [0]), c_rest, axis=0)
    return ys, cs
