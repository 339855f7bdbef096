"""ONNX export of rnnlab models: :func:`to_onnx`.

torch's dynamo exporter traces the model (the engine's kernels are single graph nodes,
``torch.ops.rnnlab.*``) and each kernel is lowered onto ONNX's own recurrent operators through
``custom_translation_table``:

- ``elman_forward`` -> ``RNN`` (input weights = identity: the projection x W_ihᵀ + b is already
  in the graph), ``gru_forward`` -> ``GRU`` (``linear_before_reset`` 1 for reset-after, 0 for
  reset-before), ``lstm_forward`` without projection, absent gates or full gate recurrence ->
  ``LSTM`` (peepholes included: ONNX's P has the same meaning);
- with ``lengths``, ONNX's ``sequence_lens``; states past a sequence's end are frozen with a
  ``Where`` as the kernels freeze them.

Jordan cells and the LSTM variants ONNX has no operator for (projection, NIG/NFG/NOG, CIFG,
FGR) are refused with a clear error (a Loop/Scan lowering is future work). Cells without a
kernel export their reference loop unrolled (static T).

Example:
    >>> import torch, rnnlab
    >>> m = rnnlab.nn.GRU(3, 4, batch_first=True)
    >>> onnx_program = rnnlab.export.to_onnx(m, torch.randn(2, 5, 3))  # doctest: +SKIP
    >>> onnx_program.save("gru.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["to_onnx"]

# kernel activation codes (rnnlab.engine.kernels.ACT_CODES) -> ONNX RNN activation names
_ONNX_ACTS = {
    0: "Affine",
    1: "Tanh",
    2: "Sigmoid",
    3: "Relu",
    4: "Softsign",
    6: "Elu",
    7: "Softplus",
}


def _act(code: int, what: str) -> tuple[str, dict[str, float]]:
    if code not in _ONNX_ACTS:
        raise NotImplementedError(
            f"rnnlab.export.to_onnx: {what}: activation code {code} (hardtanh) has no ONNX "
            "RNN activation; use another activation"
        )
    name = _ONNX_ACTS[code]
    if name == "Affine":
        return name, {"alpha": 1.0, "beta": 0.0}
    if name == "Elu":
        return name, {"alpha": 1.0}
    return name, {}


def _activation_attrs(codes: Sequence[int], what: str) -> dict[str, Any]:
    names, alphas, betas = [], [], []
    for c in codes:
        n, p = _act(c, what)
        names.append(n)
        if "alpha" in p:
            alphas.append(p["alpha"])
        if "beta" in p:
            betas.append(p["beta"])
    attrs: dict[str, Any] = {"activations": names}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


def _translations() -> dict[Any, Any]:
    from onnxscript import opset18

    # onnxscript's signatures want ONNX tensor types; the translation passes Python lists and
    # symbolic tensors that it converts when it traces these functions
    op: Any = opset18

    def rows(w: Any, blocks: Sequence[int], H: int) -> Any:
        """Concatenate the H-row blocks of ``w`` in the order ``blocks``."""
        parts = [op.Slice(w, [b * H], [(b + 1) * H], [0]) for b in blocks]
        return op.Concat(*parts, axis=0)

    def freeze(Y: Any, last: Any, lengths: Any) -> Any:
        """Y (T, B, n) with the steps past each length replaced by ``last`` (B, n)."""
        if lengths is None:
            return Y
        T = op.Shape(Y, start=0, end=1)
        t = op.Range(op.Constant(value_int=0), op.Squeeze(T), op.Constant(value_int=1))
        t = op.Cast(op.Unsqueeze(op.Unsqueeze(t, [1]), [2]), to=7)  # (T, 1, 1) int64
        L = op.Unsqueeze(op.Unsqueeze(op.Cast(lengths, to=7), [0]), [2])  # (1, B, 1)
        return op.Where(op.Less(t, L), Y, op.Unsqueeze(last, [0]))

    def seq_lens(lengths: Any) -> Any:
        return None if lengths is None else op.Cast(lengths, to=6)  # int32

    def elman(gx: Any, w_hh: Any, h0: Any, first: Any, lengths: Any, act: int) -> Any:
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
            seq_lens(lengths),
            op.Unsqueeze(h0, [0]),
            hidden_size=H,
            **_activation_attrs([act], "Elman"),
        )
        Y = freeze(op.Squeeze(Y, [1]), op.Squeeze(Yh, [0]), lengths)  # (T, B, H)
        return op.Concat(op.Unsqueeze(h0, [0]), Y, axis=0)

    def gru(gx: Any, w_hh: Any, b_hh: Any, h0: Any, lengths: Any, before: bool, act: int,
            store: bool) -> Any:  # fmt: skip
        H = w_hh.shape[1]
        order = [1, 0, 2]  # ONNX's z, r, h from rnnlab's r, z, n
        eye = op.EyeLike(op.MatMul(w_hh, op.Transpose(w_hh)))  # (3H, 3H) identity
        W = op.Unsqueeze(rows(eye, order, H), [0])
        R = op.Unsqueeze(rows(w_hh, order, H), [0])
        zeros = op.Mul(op.ReduceSum(eye, [1], keepdims=0), op.Constant(value_float=0.0))
        rb = zeros if b_hh is None else op.Concat(*[op.Slice(b_hh, [b * H], [(b + 1) * H], [0])
                                                    for b in order], axis=0)  # fmt: skip
        Bias = op.Unsqueeze(op.Concat(zeros, rb, axis=0), [0])
        Y, Yh = op.GRU(
            gx,
            W,
            R,
            Bias,
            seq_lens(lengths),
            op.Unsqueeze(h0, [0]),
            hidden_size=H,
            linear_before_reset=0 if before else 1,
            **_activation_attrs([2, act], "GRU"),
        )
        Y = freeze(op.Squeeze(Y, [1]), op.Squeeze(Yh, [0]), lengths)
        hs = op.Concat(op.Unsqueeze(h0, [0]), Y, axis=0)
        # the gate buffers feed only the backward, which an ONNX model does not have
        return hs, op.Identity(hs), op.Identity(hs)

    def lstm(gx: Any, w_hh: Any, w_ci: Any, w_cf: Any, w_co: Any, w_hr: Any, w_gg: Any,
             h0: Any, c0: Any, g0: Any, lengths: Any, blocks: Sequence[int], coupled: bool,
             act: int, cact: int, store: bool) -> Any:  # fmt: skip
        if list(blocks) != [0, 1, 2, 3] or coupled or w_hr is not None or w_gg is not None:
            raise NotImplementedError(
                "rnnlab.export.to_onnx: ONNX's LSTM has no projection, absent gates, coupled "
                "input-forget gate or full gate recurrence; this LSTM variant cannot be "
                "exported yet (a Loop lowering is future work)"
            )
        H = c0.shape[1]
        order = [0, 3, 1, 2]  # ONNX's i, o, f, c from rnnlab's i, f, g, o
        eye = op.EyeLike(op.MatMul(w_hh, op.Transpose(w_hh)))  # (4H, 4H) identity
        W = op.Unsqueeze(rows(eye, order, H), [0])
        R = op.Unsqueeze(rows(w_hh, order, H), [0])
        zero_h = op.Mul(op.ReduceSum(op.Slice(eye, [0], [H], [0]), [1], keepdims=0),
                        op.Constant(value_float=0.0))  # fmt: skip
        peeps = [w if w is not None else zero_h for w in (w_ci, w_co, w_cf)]
        P = op.Unsqueeze(op.Concat(*peeps, axis=0), [0])
        Y, Yh, Yc = op.LSTM(
            gx,
            W,
            R,
            None,
            seq_lens(lengths),
            op.Unsqueeze(h0, [0]),
            op.Unsqueeze(c0, [0]),
            P,
            hidden_size=H,
            **_activation_attrs([2, act, cact], "LSTM"),
        )
        Y = freeze(op.Squeeze(Y, [1]), op.Squeeze(Yh, [0]), lengths)
        ys = op.Concat(op.Unsqueeze(h0, [0]), Y, axis=0)
        # ONNX's LSTM returns only the final cell; the layers read cs at each sequence's
        # length, which is that final cell for every step >= 1 (frozen past the length)
        c_rest = op.Expand(Yc, op.Shape(Y))  # (T, B, H)
        cs = op.Concat(op.Unsqueeze(c0, [0]), c_rest, axis=0)
        return ys, cs, op.Identity(ys), op.Identity(ys), op.Identity(ys)

    def jordan(*args: Any) -> Any:
        raise NotImplementedError(
            "rnnlab.export.to_onnx: a Jordan cell with a nonlinear output layer has no ONNX "
            "operator; it cannot be exported yet (a Loop lowering is future work)"
        )

    ops = torch.ops.rnnlab
    return {
        ops.elman_forward.default: elman,
        ops.gru_forward.default: gru,
        ops.lstm_forward.default: lstm,
        ops.jordan_forward.default: jordan,
    }


def _our_refusal(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        for line in str(seen).splitlines():
            if "rnnlab.export.to_onnx:" in line:
                return line[line.index("rnnlab.export.to_onnx:") :]
        seen = seen.__cause__ or seen.__context__
    return None


def to_onnx(
    model: nn.Module,
    example: Tensor | tuple[Any, ...],
    *,
    dynamic: bool = True,
    batch_dim: int = 0,
    time_dim: int = 1,
    path: str | None = None,
) -> Any:
    """Export ``model`` to ONNX with the engine's kernels on ONNX's recurrent operators.

    Args:
        model: any rnnlab layer or a module built from them (a drop-in, Recurrent, Stacked,
            Bidirectional, a model with heads). Exported in inference mode (no gradients).
        example: an example input x, or a tuple of positional inputs whose first is x; a
            second tensor of shape (B,) is taken as ``lengths`` and shares the batch dimension.
        dynamic: batch and time are symbolic (the ONNX model runs at any B and T); else the
            example's sizes are fixed.
        batch_dim, time_dim: x's batch and time dimensions (0, 1 for batch-first; use 1, 0 for
            a time-first drop-in).
        path: where to save the .onnx file (optional).

    Returns:
        torch's ``ONNXProgram`` (``.save(path)``, ``.model_proto``).

    Raises:
        TypeError: ``model`` is not an nn.Module or ``example`` holds no tensor.
        NotImplementedError: a cell whose kernel has no ONNX lowering (see the module notes).

    Example:
        >>> program = to_onnx(rnnlab.nn.LSTM(3, 4), torch.randn(5, 2, 3), batch_dim=1,
        ...                   time_dim=0)  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    args = example if isinstance(example, tuple) else (example,)
    if not args or not isinstance(args[0], Tensor):
        raise TypeError(f"example: expected a tensor x or a tuple (x, ...), got {type(example)}")
    dims: Any = None
    if dynamic:
        B, T = torch.export.Dim("B", min=1), torch.export.Dim("T", min=2)
        spec: list[Any] = [{batch_dim: B, time_dim: T}]
        for a in args[1:]:
            spec.append({0: B} if isinstance(a, Tensor) and a.dim() == 1 else None)
        dims = tuple(spec)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                dynamic_shapes=dims,
                custom_translation_table=_translations(),
                verbose=False,
            )
    except Exception as exc:
        # torch's exporter wraps a lowering's refusal in pages of context: surface ours
        refusal = _our_refusal(exc)
        if refusal is not None:
            raise NotImplementedError(refusal) from exc
        raise
    finally:
        model.train(was_training)
    if path is not None and program is not None:
        program.save(path)
    return program
