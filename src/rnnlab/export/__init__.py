"""ONNX export of rnnlab models: :func:`to_onnx`.

torch's dynamo exporter traces the model (the engine's kernels are single graph nodes,
``torch.ops.rnnlab.*``) and each kernel is lowered through ``custom_translation_table``:

- onto ONNX's own recurrent operators where they compute the cell (:mod:`._native`): Elman
  (also Jordan with a linear output, and the recurrent MLP) -> ``RNN``, GRU both resets ->
  ``GRU``, LSTM with all four gates, peepholes or not -> ``LSTM``, in float32 with ONNX's
  activations;
- else onto one ``Scan`` per layer call, the kernel's maths step for step (:mod:`._scan`):
  Jordan with a nonlinear output, LSTM with projection, absent gates (NIG/NFG/NOG), coupled
  gates (CIFG), full gate recurrence (FGR), hardtanh, the zoneout/variational-dropout and
  layer-norm kernels (eval mode), and every float64 model (onnxruntime has no float64
  RNN/GRU/LSTM kernels);
- ``lengths`` become ONNX's ``sequence_lens`` or the Scan's step mask; states past a
  sequence's end are frozen with a ``Where`` as the kernels freeze them.

Stacked and bidirectional layers and the drop-ins are several such nodes. Cells without an
engine kernel (DeepTransition, DeepOutput, a custom cell) run their Python reference loop,
which fixes T in the trace: with ``dynamic=True`` they are refused with an error naming them,
with ``dynamic=False`` they export at the example's length. An engine op without a lowering (the
feedback ops of a run with a feedback schedule) is refused with an error naming it.

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


def _translations() -> dict[Any, Any]:
    from onnxscript import opset18

    from . import _native, _scan

    # onnxscript's signatures want ONNX tensor types; the translation passes Python lists and
    # symbolic tensors that it converts when it traces these functions
    op: Any = opset18

    def elman(gx: Any, w_hh: Any, h0: Any, first: Any, lengths: Any, act: int) -> Any:
        lower = _native.elman if _native.serves(gx, act) else _scan.elman
        return lower(op, gx, w_hh, h0, first, lengths, act)

    def jordan(gx: Any, u: Any, wy: Any, by: Any, y0: Any, lengths: Any, act: int,
               oact: int) -> Any:  # fmt: skip
        return _scan.jordan(op, gx, u, wy, by, y0, lengths, act, oact)[:2]

    def gru(gx: Any, w_hh: Any, b_hh: Any, h0: Any, lengths: Any, before: bool, act: int,
            store: bool) -> Any:  # fmt: skip
        lower = _native.gru if _native.serves(gx, act) else _scan.gru
        hs = lower(op, gx, w_hh, b_hh, h0, lengths, before, act)
        # the gate buffers feed only the backward, which an ONNX model does not have
        return hs, op.Identity(hs), op.Identity(hs)

    def lstm(gx: Any, w_hh: Any, w_ci: Any, w_cf: Any, w_co: Any, w_hr: Any, w_gg: Any,
             h0: Any, c0: Any, g0: Any, lengths: Any, blocks: Sequence[int], coupled: bool,
             act: int, cact: int, store: bool) -> Any:  # fmt: skip
        gs = None
        if _native.lstm_serves(gx, w_hr, w_gg, blocks, coupled, act, cact):
            ys, cs = _native.lstm(op, gx, w_hh, w_ci, w_cf, w_co, h0, c0, lengths, act, cact)
        else:
            ys, cs, gs = _scan.lstm(op, gx, w_hh, w_ci, w_cf, w_co, w_hr, w_gg, h0, c0, g0,
                                    lengths, blocks, coupled, act, cact)  # fmt: skip
        # the gate buffers (acts, ms) feed only the backward
        return ys, cs, gs if gs is not None else op.Identity(ys), op.Identity(ys), op.Identity(ys)

    # the regularised cells (issue 18): zoneout and variational dropout masks inside the loop
    def gru_reg(gx: Any, w_hh: Any, b_hh: Any, h0: Any, mask_h: Any, keep_h: Any,
                lengths: Any, before: bool, act: int) -> Any:  # fmt: skip
        hs = _scan.gru(op, gx, w_hh, b_hh, h0, lengths, before, act, mask_h, keep_h)
        return hs, op.Identity(hs), op.Identity(hs)

    def lstm_reg(gx: Any, w_hh: Any, h0: Any, c0: Any, mask_h: Any, keep_h: Any, keep_c: Any,
                 lengths: Any, act: int, cact: int) -> Any:  # fmt: skip
        hs, cs = _scan.lstm_reg(op, gx, w_hh, h0, c0, mask_h, keep_h, keep_c, lengths, act, cact)
        return hs, cs, op.Identity(hs), op.Identity(hs)

    def elman_reg(gx: Any, w_hh: Any, h0: Any, mask_h: Any, keep_h: Any, lengths: Any,
                  act: int) -> Any:  # fmt: skip
        return _scan.elman_reg(op, gx, w_hh, h0, mask_h, keep_h, lengths, act)

    def jordan_reg(gx: Any, u: Any, wy: Any, by: Any, y0: Any, mask_y: Any, keep_y: Any,
                   lengths: Any, act: int, oact: int) -> Any:  # fmt: skip
        return _scan.jordan(op, gx, u, wy, by, y0, lengths, act, oact, mask_y, keep_y)

    def ln_lstm(gx: Any, w_hh: Any, g_hh: Any, b_hh: Any, g_c: Any, b_c: Any, h0: Any,
                c0: Any, mask_h: Any, keep_h: Any, keep_c: Any, lengths: Any,
                eps: float) -> Any:  # fmt: skip
        hs, cs = _scan.ln_lstm(op, gx, w_hh, g_hh, b_hh, g_c, b_c, h0, c0, mask_h, keep_h,
                               keep_c, lengths, eps)  # fmt: skip
        return (hs, cs, *[op.Identity(hs) for _ in range(6)])

    def ln_gru(gx: Any, w_hh: Any, g_hh: Any, b_hh: Any, h0: Any, mask_h: Any, keep_h: Any,
               lengths: Any, before: bool, eps: float, g_x: Any = None,
               b_x: Any = None) -> Any:  # fmt: skip
        hs = _scan.ln_gru(op, gx, w_hh, g_hh, b_hh, h0, mask_h, keep_h, lengths, before, eps,
                          g_x, b_x)  # fmt: skip
        return (hs, *[op.Identity(hs) for _ in range(6)])

    ops = torch.ops.rnnlab
    table = {
        ops.elman_forward.default: elman,
        ops.gru_forward.default: gru,
        ops.lstm_forward.default: lstm,
        ops.jordan_forward.default: jordan,
    }
    if hasattr(ops, "lstm_reg_forward"):
        table[ops.lstm_reg_forward.default] = lstm_reg
        table[ops.gru_reg_forward.default] = gru_reg
        table[ops.elman_reg_forward.default] = elman_reg
    if hasattr(ops, "jordan_reg_forward"):
        table[ops.jordan_reg_forward.default] = jordan_reg
    if hasattr(ops, "ln_lstm_forward"):
        table[ops.ln_lstm_forward.default] = ln_lstm
        table[ops.ln_gru_forward.default] = ln_gru
    return table


def _missing_lowering(exc: BaseException) -> str | None:
    """The engine op (``rnnlab.<name>``) the exporter found no ONNX function for, if any."""
    import re

    seen: BaseException | None = exc
    while seen is not None:
        m = re.search(r"No ONNX function found for \S*?rnnlab\.(\w+)", str(seen))
        if m:
            return m.group(1)
        seen = seen.__cause__ or seen.__context__
    return None


def _without_kernel(model: nn.Module) -> list[str]:
    """Names of the cell types in ``model`` that run the Python reference loop (no kernel)."""
    from .. import engine
    from ..cells.base import Cell

    names = {type(m).__name__ for m in model.modules()
             if isinstance(m, Cell) and engine.lookup(m) is None}  # fmt: skip
    return sorted(names)


def _check_dynamic_time(model: nn.Module, program: Any, time_dim: int) -> None:
    """Refuse an export whose time dimension came out static: a reference loop over T (a cell
    without a kernel) fixes T in the trace, and the model would fail at any other length."""
    if program is None:
        return
    dims = program.model_proto.graph.input[0].type.tensor_type.shape.dim
    if time_dim < len(dims) and dims[time_dim].HasField("dim_value"):
        from ..layers.dispatch import fast_paths_enabled

        if not fast_paths_enabled():
            why = "the engine is off (RNNLAB_ENGINE=0 or rnnlab.engine.disabled())"
        else:
            why = (", ".join(_without_kernel(model)) or "a layer") + " has no engine kernel"
        raise NotImplementedError(
            f"rnnlab.export.to_onnx: dynamic=True, but the time dimension of x came out "
            f"static ({dims[time_dim].dim_value}): {why}, and the Python loop over time fixes "
            "T in the trace; export with dynamic=False for this length"
        )


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
        NotImplementedError: ``dynamic=True`` with a cell that has no engine kernel (its
            Python loop fixes T; see the module notes), or an engine op without a lowering.

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
        # torch's exporter buries a missing lowering in pages of context: name it
        missing = _missing_lowering(exc)
        if missing is not None:
            raise NotImplementedError(
                f"rnnlab.export.to_onnx: the engine op torch.ops.rnnlab.{missing} has no ONNX "
                "lowering (rnnlab/export/); run the model with rnnlab.engine.disabled() and "
                "dynamic=False to export its reference loop at the example's length"
            ) from exc
        raise
    finally:
        model.train(was_training)
    if dynamic:
        _check_dynamic_time(model, program, time_dim)
    if path is not None and program is not None:
        program.save(path)
    return program
