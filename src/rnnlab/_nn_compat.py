"""torch.nn's errors for the drop-ins of :mod:`rnnlab.nn`.

Each error the drop-ins raise for an input that torch.nn also refuses has torch.nn's exception
type and carries torch.nn's phrase after rnnlab's own message (argument, expected, received), so
that code and tests written for torch.nn (``except RuntimeError``, ``assertRaisesRegex``) keep
working. Where torch.nn's type differs from rnnlab's contract (ValueError for a bad value,
TypeError for a bad type), the error is an instance of both: e.g. a hidden state of the wrong
shape is a RuntimeError (torch.nn) and a ValueError (rnnlab). See
docs/design/0012-dropin-fidelity.md.

Constructor checks run in torch.nn's order, so the first error is the one torch.nn would raise;
rnnlab's stricter checks (``True`` is not a size, complex dtypes are refused) come after.
"""

from __future__ import annotations

import numbers
import operator
import warnings
from typing import Any, NoReturn

import torch
from torch import Tensor

from .cells.activations import ACTIVATIONS, resolve_activation


class RuntimeValueError(RuntimeError, ValueError):
    """torch.nn raises RuntimeError; rnnlab's contract says ValueError (a bad shape or device)."""


class ValueTypeError(ValueError, TypeError):
    """torch.nn raises ValueError; rnnlab's contract says TypeError (a bad dtype or kind)."""


class RuntimeTypeError(RuntimeError, TypeError):
    """torch.nn raises RuntimeError; rnnlab's contract says TypeError (a hidden state's dtype)."""


class AttributeTypeError(TypeError, AttributeError):
    """torch.nn fails with AttributeError on a non-tensor (``x.dim()``); rnnlab says TypeError."""


class IndexTypeError(TypeError, IndexError):
    """torch.nn fails with IndexError on an LSTM state that is not a pair; rnnlab: TypeError."""


def fail(kind: type[Exception], ours: str, torch_phrase: str) -> NoReturn:
    """Raise ``kind`` with rnnlab's message followed by torch.nn's phrase."""
    raise kind(f"{ours} (torch.nn: {torch_phrase})")


def _check_size(value: Any, argument: str) -> None:
    # torch.nn: isinstance(int) first (so True passes as 1), then "> 0".
    if not isinstance(value, int):
        name = type(value).__name__
        fail(
            TypeError,
            f"{argument}: expected a positive int, got {value!r}",
            f"{argument} should be of type int, got: {name}",
        )
    if value <= 0:
        fail(
            ValueError,
            f"{argument}: expected a positive int, got {value!r}",
            f"{argument} must be greater than zero",
        )


def check_config(
    input_size: Any,
    hidden_size: Any,
    num_layers: Any,
    bias: Any,
    batch_first: Any,
    dropout: Any,
    proj_size: Any,
) -> tuple[int, int]:
    """The constructor arguments common to RNN, GRU and LSTM, in torch.nn's order; returns
    num_layers and proj_size as Python ints."""
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Real)
        or not 0 <= float(dropout) <= 1
    ):
        fail(
            ValueError,
            f"dropout: expected a number in [0, 1], got {dropout!r}",
            "dropout should be a number in range [0, 1] representing the probability of an "
            "element being zeroed",
        )
    if float(dropout) > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            f"expects num_layers greater than 1, but got dropout={dropout} and "
            f"num_layers={num_layers}",
            stacklevel=4,
        )
    for value, argument in ((bias, "bias"), (batch_first, "batch_first")):
        if not isinstance(value, bool):
            name = type(value).__name__
            fail(
                TypeError,
                f"{argument}: expected a bool, got {value!r}",
                f"{argument} should be of type bool, got: {name}",
            )
    _check_size(input_size, "input_size")
    _check_size(hidden_size, "hidden_size")
    # torch.nn compares num_layers and proj_size with 0, then uses them as ints (range(),
    # torch.empty), so anything with __index__ works: numpy ints, 0-d integer tensors.
    layers, proj = _index(num_layers), _index(proj_size)
    if layers is not None and layers <= 0 or isinstance(num_layers, float) and num_layers <= 0:
        fail(
            ValueError,
            f"num_layers: expected a positive int, got {num_layers!r}",
            "num_layers must be greater than zero",
        )
    if proj is not None and proj < 0 or isinstance(proj_size, float) and proj_size < 0:
        fail(
            ValueError,
            f"proj_size: expected 0 (no projection) or a positive int, got {proj_size!r}",
            "proj_size should be a positive integer or zero to disable projections",
        )
    p = proj if proj is not None else proj_size if isinstance(proj_size, float) else None
    if p is not None and p >= hidden_size:
        fail(
            ValueError,
            f"proj_size: expected < hidden_size={hidden_size}, got {proj_size!r}",
            "proj_size has to be smaller than hidden_size",
        )
    # rnnlab's stricter checks: torch.nn fails later on these (range(), torch.empty) or, for
    # a bool, silently takes it as 0/1.
    for value, argument, least in (
        (input_size, "input_size", 1),
        (hidden_size, "hidden_size", 1),
        (num_layers, "num_layers", 1),
        (proj_size, "proj_size", 0),
    ):
        if isinstance(value, bool) or _index(value) is None:
            kind = "a positive int" if least else "a non-negative int"
            raise TypeError(f"{argument}: expected {kind}, got {value!r}")
    assert layers is not None and proj is not None
    return layers, proj


def _index(value: Any) -> int | None:
    """``value`` as a Python int if it is one (``__index__``: numpy ints, 0-d integer tensors)
    and not a bool; else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def factory_kwargs(device: Any, dtype: Any) -> dict[str, Any]:
    """``device`` and ``dtype`` as torch factories take them; names are accepted for both
    (``"cuda:0"``, ``"float64"`` or ``"torch.float64"``)."""
    if isinstance(dtype, str):
        found = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(found, torch.dtype):
            fail(
                TypeError,
                f"dtype: expected a torch.dtype or its name, got {dtype!r}",
                "argument 'dtype' must be torch.dtype",
            )
        dtype = found
    if dtype is not None:
        if not isinstance(dtype, torch.dtype):
            fail(
                TypeError,
                f"dtype: expected a torch.dtype or its name, got {type(dtype).__name__}",
                f"argument 'dtype' must be torch.dtype, not {type(dtype).__name__}",
            )
        if not (dtype.is_floating_point or dtype.is_complex):
            fail(
                RuntimeTypeError,
                f"dtype: expected a floating-point dtype, got {dtype}",
                "Only Tensors of floating point and complex dtype can require gradients",
            )
        if dtype.is_complex:
            # torch.nn would build a complex RNN; rnnlab's cells and engine are real-valued.
            raise TypeError(f"dtype: expected a real floating-point dtype, got {dtype}")
    if device is not None and not isinstance(device, torch.device):
        device = torch.device(device)
    return {"device": device, "dtype": dtype}


# --- the drop-ins' forward arguments and RNN/GRU constructor extras ---------------------------


ABSENT: Any = object()


def refuse_proj_size(proj_size: Any) -> None:
    # torch.nn.RNN/GRU refuse the keyword with ValueError (not Python's TypeError), whatever
    # its value; so do the drop-ins.
    if proj_size is not ABSENT:
        fail(
            ValueError,
            f"proj_size: expected no projection (only LSTM has one), got {proj_size!r}",
            "proj_size argument is only supported for LSTM, not RNN or GRU",
        )


def check_nonlinearity(nonlinearity: Any) -> None:
    phrase = f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
    if not isinstance(nonlinearity, str):
        fail(
            ValueTypeError,
            f"nonlinearity: expected an activation name, got {type(nonlinearity).__name__}",
            phrase,
        )
    try:
        resolve_activation(nonlinearity, argument="nonlinearity")
    except ValueError:
        fail(
            ValueError,
            f"nonlinearity: expected 'tanh', 'relu' or another rnnlab activation "
            f"({', '.join(sorted(ACTIVATIONS))}), got {nonlinearity!r}",
            phrase,
        )


def describe(obj: Any) -> str:
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def check_hx(m: Any, hx: Tensor, B: int, size: int, x: Tensor, name: str, which: str) -> None:
    """One state tensor (L*D, B, size) against x: shape, dtype, device."""
    want = (m.num_layers * m._num_dir, B, size)
    if tuple(hx.shape) != want:
        fail(
            RuntimeValueError,
            f"{name}: expected shape {want}, got {tuple(hx.shape)}",
            f"Expected {which} size {want}, got {list(hx.shape)}",
        )
    if hx.dtype != x.dtype:
        fail(
            RuntimeTypeError,
            f"{name}: expected dtype {x.dtype} (as input), got {hx.dtype}",
            "input and hidden state must have the same dtype",
        )
    if hx.device != x.device:
        fail(
            RuntimeValueError,
            f"{name}: expected device {x.device} (as input), got {hx.device}",
            "Input and hidden tensors are not at the same device, found input tensor at "
            f"{x.device} and hidden tensor at {hx.device}",
        )


def check_hx_kind(m: Any, hx: Any, batched: bool) -> None:
    """hx's structure and rank, before the shapes (torch.nn's order)."""
    if hx is None:
        return
    rank = 3 if batched else 2
    kind = "batched 3-D" if batched else "unbatched 2-D"
    if m.mode != "LSTM":
        if not isinstance(hx, Tensor):
            fail(
                AttributeTypeError,
                f"hx: expected a tensor, got {type(hx).__name__}",
                f"'{type(hx).__name__}' object has no attribute 'dim'",
            )
        if hx.dim() != rank:
            fail(
                RuntimeValueError,
                f"hx: expected a {rank}-D tensor, got {hx.dim()}-D",
                f"For {kind} input, hx should also be {rank}-D but got {hx.dim()}-D tensor",
            )
        return
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        fail(
            IndexTypeError,
            f"hx: expected a tuple (h_0, c_0), got {describe(hx)}",
            "tuple index out of range",
        )
    for k, v in enumerate(hx):
        if not isinstance(v, Tensor):
            fail(
                AttributeTypeError,
                f"hx[{k}]: expected a tensor, got {type(v).__name__}",
                f"'{type(v).__name__}' object has no attribute 'dim'",
            )
    if hx[0].dim() != rank or hx[1].dim() != rank:
        dims = f"({hx[0].dim()}-D, {hx[1].dim()}-D)"
        fail(
            RuntimeValueError,
            f"hx: expected two {rank}-D tensors, got {dims}",
            f"For {kind} input, hx and cx should also be {rank}-D but got {dims} tensors",
        )


def check_input(m: Any, x: Tensor) -> None:
    """x (B, T, I) against the weights, in torch.nn's order."""
    cell, pname, _ = m._slots[0]
    w = cell._parameters[pname]  # after the forward's weight sync: the current weight
    assert w is not None
    if x.dtype != w.dtype:
        fail(
            ValueTypeError,
            f"input: expected dtype {w.dtype} (the weights'), got {x.dtype}",
            f"RNN input dtype ({x.dtype}) does not match weight dtype ({w.dtype}). "
            f"Convert input: input.to({w.dtype}), or convert model: model.to({x.dtype})",
        )
    if x.shape[-1] != m.input_size:
        fail(
            RuntimeValueError,
            f"input: expected {m.input_size} features, got {x.shape[-1]}",
            "input.size(-1) must be equal to input_size. "
            f"Expected {m.input_size}, got {x.shape[-1]}",
        )
    if x.device != w.device:
        fail(
            RuntimeValueError,
            f"input: expected device {w.device} (the weights'), got {x.device}",
            "Input and parameter tensors are not at the same device, found input tensor "
            f"at {x.device} and parameter tensor at {w.device}",
        )


def empty_batch(m: Any, x: Tensor, hx: Any) -> tuple[Tensor, Any]:
    """Batch size 0, as torch.nn: empty outputs and states, still in the autograd graph
    (every weight gets a zero gradient)."""
    anchor = x.reshape(-1)[:0].sum()
    for w in m._flat_weights:
        if w is not None:
            anchor = anchor + w.reshape(-1)[:0].sum()
    for h in (hx if isinstance(hx, (tuple, list)) else (hx,)) if hx is not None else ():
        anchor = anchor + h.reshape(-1)[:0].sum()
    T = x.shape[1]
    n = m.num_layers * m._num_dir
    out = x.new_zeros(0, T, m._num_dir * m._out) + anchor  # (0, T, D*out)
    h_n = x.new_zeros(n, 0, m._out) + anchor  # (L*D, 0, out)
    if m.mode == "LSTM":
        return out, (h_n, x.new_zeros(n, 0, m.hidden_size) + anchor)
    return out, h_n
