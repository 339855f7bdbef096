"""Input feedback on the engine: a one-layer autoregressive model's whole chunk in one op call.

A model with ``feedback: "input"`` (:class:`rnnlab.training.SequenceModel`) feeds its readout
y(t-1) back as the next input wherever the feedback mask does not feed the reference x(t).
``rnnlab::fed_input`` runs that inside one C++ time loop (``csrc/fed_input.h``):

    s(t) = x(t) where mask[b, t] (and at t = 0 without a previous output), else feed(y(t-1))
    h'(t) = cell(s(t), h(t-1)),   y(t) = W_r h'(t) + b_r,   h(t) = h'(t) within the length;
    past it h(t) = h(t-1) and y(t) = b_r (the readout of the layer's zero output there)

with ``feed`` the identity for real values and, for tokens, the one-hot of
``argmax_k(y_k(t-1) + noise[b, t, k])``: noise zero for the argmax, or the Gumbel noise
(times the temperature) the caller drew up front for sampling (:func:`gumbel_noise`, the draw
the Python reference uses too; docs/design/0019). Ties go to the lowest index, a NaN counts as
the maximum (torch.argmax). Cells: :class:`~rnnlab.cells.ElmanCell` without an output layer and
:class:`~rnnlab.cells.GRUCell` (both reset forms) and the plain :class:`~rnnlab.cells.LSTMCell`
(variant NP: no peepholes, projection or gate recurrence), with activations the engine knows.

The backward is the hand-written BPTT ``rnnlab::fed_input_backward``: the gradient of s(t) goes
to x(t) where the reference was fed, and to y(t-1) elsewhere for real values unless
``detach``; token feedback carries none (the choice is piecewise constant). No second
derivative (a double backward raises). Shapes: B batch, T time, I = O the fed size, H hidden.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import build

_lib = torch.library.Library("rnnlab", "FRAGMENT")
_lib.define(
    "fed_input(Tensor xr, Tensor mask, Tensor? y0, Tensor? noise, Tensor w_ih, Tensor? bx, "
    "Tensor w_hh, Tensor? bh, Tensor h0, Tensor? c0, Tensor w_r, Tensor? b_r, Tensor? lengths, "
    "int cell, int act, int cact, int feed, bool detach) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_lib.define(
    "fed_input_backward(Tensor grad_ys, Tensor grad_hs, Tensor? grad_cs, Tensor cs, Tensor xs, "
    "Tensor hs, Tensor hn, Tensor gates, Tensor aux, Tensor mask, Tensor w_ih, Tensor w_hh, "
    "Tensor w_r, Tensor? lengths, bool has_y0, int cell, int act, int cact, int feed, "
    "bool detach) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
    "Tensor)"
)

#: cell codes of the C++ loop
ELMAN, GRU_AFTER, GRU_BEFORE, LSTM = 0, 1, 2, 3
_BLOCKS = {ELMAN: 1, GRU_AFTER: 3, GRU_BEFORE: 3, LSTM: 4}
_NO_LENGTHS = torch.empty(0, dtype=torch.int64)


def _e(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


@torch.library.register_fake("rnnlab::fed_input")
def _fwd_fake(*args: Any) -> Any:
    xr, h0, w_r, cell = args[0], args[8], args[10], args[13]
    S, B, I = xr.shape
    H, O = h0.shape[1], w_r.shape[0]
    n = xr.new_empty
    gated = 0 if cell == ELMAN else S
    cs = n(S + 1 if cell == LSTM else 0, B, H)
    GH = _BLOCKS[cell] * H
    return n(S, B, O), n(S + 1, B, H), n(S, B, I), n(gated, B, GH), n(gated, B, H), n(S, B, H), cs


@torch.library.register_fake("rnnlab::fed_input_backward")
def _bwd_fake(*args: Any) -> Any:
    xs, hs, w_ih, w_r, cell = args[4], args[5], args[10], args[12], args[15]
    S, B, I = xs.shape
    H, O = hs.shape[2], w_r.shape[0]
    GH = w_ih.shape[0]
    n = xs.new_empty
    dbh = n(GH if cell == GRU_AFTER else 0)
    dc0 = n(B if cell == LSTM else 0, H)
    return n(S, B, I), n(B, O), n(GH, I), n(GH), n(GH, H), dbh, n(B, H), dc0, n(O, H), n(O)


def _kernels() -> Any:
    kernels = build.ops()
    if kernels is None:
        raise RuntimeError(
            "torch.ops.rnnlab.fed_input: the compiled kernels are unavailable "
            f"({build.status()['error']}); the model runs its Python loop instead"
        )
    return kernels


@torch.library.impl("rnnlab::fed_input", "CPU", lib=_lib)
def _fwd_cpu(*args: Any) -> Any:
    xr, mask, y0, noise, w_ih, bx, w_hh, bh, h0, c0, w_r, b_r, lengths = args[:13]
    cell, act, cact, feed, _detach = args[13:]
    out = _kernels().fed_input_forward(
        xr, mask, _e(y0, xr), _e(noise, xr), w_ih, _e(bx, xr), w_hh, _e(bh, xr), h0, _e(c0, xr),
        w_r, _e(b_r, xr), _NO_LENGTHS if lengths is None else lengths, cell, act, cact, feed,
    )  # fmt: skip
    return tuple(out)


@torch.library.impl("rnnlab::fed_input_backward", "CPU", lib=_lib)
def _bwd_cpu(*args: Any) -> Any:
    grad_ys, grad_hs, grad_cs, cs, xs, hs, hn, gates, aux, mask, w_ih, w_hh, w_r = args[:13]
    lengths, has_y0, cell, act, cact, feed, detach = args[13:]
    out = _kernels().fed_input_backward(
        grad_ys, grad_hs, _e(grad_cs, xs), cs, xs, hs, hn, gates, aux, mask, w_ih, w_hh, w_r,
        _NO_LENGTHS if lengths is None else lengths, has_y0, cell, act, cact, feed, detach,
    )  # fmt: skip
    return tuple(out)


def _setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    xr, mask, y0, noise, w_ih, bx, w_hh, bh, h0, c0, w_r, b_r, lengths = inputs[:13]
    ctx.cfg = (y0 is not None, *inputs[13:])  # has_y0, cell, act, cact, feed, detach
    ctx.has = (bx is not None, bh is not None, b_r is not None)
    ctx.mark_non_differentiable(*output[2:6])
    ctx.save_for_backward(mask, w_ih, w_hh, w_r, lengths, *output[1:])


def _backward(ctx: Any, g_ys: Tensor | None, g_hs: Tensor | None, *g: Any) -> Any:
    mask, w_ih, w_hh, w_r, lengths, hs, xs, gates, aux, hn, cs = ctx.saved_tensors
    g_cs = g[-1]
    if g_ys is None:
        g_ys = hn.new_zeros(hn.shape[0], hn.shape[1], w_r.shape[0])
    g_hs = torch.zeros_like(hs) if g_hs is None else g_hs
    has_y0, cell, act, cact, feed, detach = ctx.cfg
    if cell == LSTM and g_cs is None:
        g_cs = torch.zeros_like(cs)
    dxr, dy0, dwih, dbx, dwhh, dbh, dh0, dc0, dwr, dbr = torch.ops.rnnlab.fed_input_backward(
        g_ys.contiguous(), g_hs.contiguous(), None if g_cs is None else g_cs.contiguous(), cs,
        xs, hs, hn, gates, aux, mask, w_ih, w_hh, w_r, lengths, has_y0, cell, act, cact, feed,
        detach,
    )  # fmt: skip
    has_bx, has_bh, has_br = ctx.has
    return (
        dxr,
        None,
        dy0 if has_y0 else None,
        None,
        dwih,
        dbx if has_bx else None,
        dwhh,
        dbh if has_bh else None,
        dh0,
        dc0 if cell == LSTM else None,
        dwr,
        dbr if has_br else None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


torch.library.register_autograd("rnnlab::fed_input", _backward, setup_context=_setup, lib=_lib)


def gumbel_noise(
    batch: int,
    steps: int,
    classes: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
) -> Tensor:
    """The sampling draw of token feedback, made once up front: temperature · g (B, T, C) with g
    standard Gumbel noise, -log(-log u), u uniform on the CPU generator. The token chosen at a
    step from logits y is ``argmax(y + noise[:, t])``, a sample of softmax(y / temperature)
    (the Gumbel-max trick); the engine's loop and the Python reference use the same noise."""
    u = torch.rand(batch, steps, classes, generator=generator, dtype=torch.float64)
    g = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))
    return (temperature * g).to(dtype=dtype, device=device)


def covered(cell: Any, readout: Any, x: Tensor) -> str | None:
    """None when ``fed_input`` runs this cell and readout on x, else the reason it does not."""
    from ..cells.gru import GRUCell
    from ..cells.lstm import LSTMCell
    from ..cells.simple import ElmanCell
    from .kernels import ACT_CODES, _available

    if type(cell) not in (GRUCell, ElmanCell, LSTMCell):
        return "cell"
    if ACT_CODES.get(cell.activation_name or "") is None:
        return "activation"
    if isinstance(cell, ElmanCell) and cell.weight_ho is not None:
        return "Elman output layer"
    if isinstance(cell, LSTMCell):
        plain = cell.variant == "NP" and not cell.peephole and cell.proj_size == 0
        if not plain or cell.weight_gg is not None or cell.blocks != ("i", "f", "g", "o"):
            return "LSTM variant"
        if ACT_CODES.get(cell.cell_activation_name or "") is None:
            return "activation"
    if not isinstance(readout, torch.nn.Linear):
        return "readout"
    dtypes = {x.dtype, cell.weight_ih.dtype, readout.weight.dtype}
    if len(dtypes) > 1 or x.dtype not in (torch.float32, torch.float64):
        return "dtype"
    if not _available(x):
        return "device"
    return None


def run(
    cell: Any,
    readout: torch.nn.Linear,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    mask: Tensor,
    detach: bool,
    prev_output: Tensor | None,
    tokens: bool,
    noise: Tensor | None,
) -> tuple[Tensor, Any]:
    """y (B, T, O) and the final state (the cell's state type) of the fed loop over x (B, T, I)
    under mask (B, T) bool (True: feed x(t)), from ``state``; ``prev_output`` y(-1) (B, O) or
    None (step 0 then reads x(0)); ``noise`` (B, T, O) the token choice's noise or None
    (argmax)."""
    from ..cells.lstm import LSTMCell
    from ..cells.simple import ElmanCell
    from .kernels import ACT_CODES

    act = ACT_CODES[cell.activation_name]
    cact, c0 = 0, None
    b_ih, b_hh = cell.bias_ih, cell.bias_hh
    summed = None if b_ih is None else b_ih + b_hh
    if isinstance(cell, ElmanCell):
        code, bx, bh = ELMAN, summed, None
    elif isinstance(cell, LSTMCell):
        code, bx, bh = LSTM, summed, None
        cact, c0 = ACT_CODES[cell.cell_activation_name or ""], state.c
    elif cell.reset == "after":
        code, bx, bh = GRU_AFTER, b_ih, b_hh
    else:
        code, bx, bh = GRU_BEFORE, summed, None
    dt = cell.weight_ih.dtype  # a carried state or output may come in another (autocast's)
    cast = lambda t: None if t is None else t.to(dt)  # noqa: E731
    tm = lambda t: None if t is None else t.transpose(0, 1).to(dt).contiguous()  # noqa: E731
    ys, hs, _, _, _, _, cs = torch.ops.rnnlab.fed_input(
        tm(x), mask.t().contiguous(), cast(prev_output), tm(noise), cell.weight_ih, bx,
        cell.weight_hh, bh, cast(state.h), cast(c0), readout.weight, readout.bias,
        None if lengths is None else lengths.to(torch.int64), code, act, cact, int(tokens),
        bool(detach),
    )  # fmt: skip
    new = state._replace(h=hs[-1], c=cs[-1]) if c0 is not None else state._replace(h=hs[-1])
    return ys.transpose(0, 1), new
