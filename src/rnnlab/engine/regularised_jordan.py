"""Engine operators for Jordan with recurrent dropout and zoneout (issue 18).

``torch.ops.rnnlab.jordan_reg_forward/_backward`` (C++: ``csrc/regularised_jordan.h``) run
the Jordan step with, inside the time loop,

- a per-sequence state mask m (B, O) on the fed-back y(t-1) in the product U y(t-1)
  (variational recurrent dropout on the state; the input mask multiplies x before the
  hoisted input GEMM, in :mod:`.kernels_extra`);
- zoneout keep weights d (T, B, O) on the state y: y(t) = d ⊙ y(t-1) + (1 - d) ⊙ ỹ(t),
  d ∈ {0, 1} drawn in Python in training (the reference loop's draws), d = p in eval.

Absent arguments are ``None``. Schemas, fakes, vmap and autocast follow :mod:`.regularised`;
the forward's backward is the hand-written BPTT op, whose own backward (second derivative) is
``torch.func.vjp`` of :func:`jordan_reg`. Masks and keep weights are constants.

Shapes: T time, B batch, H hidden, O output (the state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops
from .ops import op
from .reference import _keep, _masks, activation
from .regularised import _lean_grads, _save_forward, _second, _zone

SCHEMAS = {
    "jordan_reg_forward": "(Tensor gx, Tensor u, Tensor wy, Tensor? by, Tensor y0, "
    "Tensor? mask_y, Tensor? keep_y, Tensor? lengths, int act, int oact) "
    "-> (Tensor, Tensor, Tensor)",
    "jordan_reg_backward": "(Tensor grad_ys, Tensor ys, Tensor hs, Tensor yc, Tensor u, "
    "Tensor wy, Tensor? mask_y, Tensor? keep_y, Tensor? lengths, int act, int oact) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
}
_LENGTHS = {"jordan_reg_forward": 7, "jordan_reg_backward": 8}
_PRIMARY = {"jordan_reg_forward": 0, "jordan_reg_backward": 1}


def _fwd_fake(gx, u, wy, by, y0, mask_y, keep_y, lengths, act, oact):  # type: ignore[no-untyped-def]
    S, B, H = gx.shape
    O = u.shape[1]
    n = gx.new_empty
    return n(S + 1, B, O), n(S, B, H), n(S, B, O)


def _bwd_fake(g_ys, ys, hs, yc, u, wy, m, k, lengths, act, oact):  # type: ignore[no-untyped-def]
    S, B, H = hs.shape
    O = u.shape[1]
    n = hs.new_empty
    return n(S, B, H), n(H, O), n(O, H), n(O), n(B, O)


_FAKES: dict[str, Callable[..., Any]] = {
    "jordan_reg_forward": _fwd_fake,
    "jordan_reg_backward": _bwd_fake,
}


def _register() -> None:
    ops._LENGTHS.update(_LENGTHS)
    for name, schema in SCHEMAS.items():
        ops._lib.define(name + schema)
        qual = f"{ops.NAMESPACE}::{name}"
        torch.library.register_fake(qual, _FAKES[name], lib=ops._lib)
        ops._lib.impl(name, ops._cpu_impl(name, _PRIMARY[name]), "CPU")
        torch.library.register_vmap(qual, ops._vmap_loop(name), lib=ops._lib)
        torch.library.register_autocast(qual, "cpu", torch.float32, lib=ops._lib)


_register()


def jordan_reg(
    gx: Tensor,
    u: Tensor,
    wy: Tensor,
    by: Tensor | None,
    y0: Tensor,
    mask_y: Tensor | None,
    keep_y: Tensor | None,
    lengths: Tensor | None,
    act: int,
    oact: int,
) -> tuple[Tensor]:
    """ys (T+1, B, O) step by step as the kernel: h = act(gx(t) + U (m ⊙ y(t-1))),
    ỹ = oact(W_y h + b_y), then zoneout and the length freeze."""
    fa, fo = activation(act), activation(oact)
    y, ys = y0, [y0]
    for t, valid in enumerate(_masks(lengths, gx.shape[0], gx)):
        yin = y if mask_y is None else mask_y * y
        h = fa(gx[t] + F.linear(yin, u))
        y = _keep(valid, _zone(keep_y, t, y, fo(F.linear(h, wy, by))), y)
        ys.append(y)
    return (torch.stack(ys),)


class JordanRegBackward(torch.autograd.Function):
    """``rnnlab::jordan_reg_backward``; its backward is the reference's second derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g_ys, gx, u, wy, by, y0, mask_y, keep_y, lengths, act, oact, ys, hs, yc):  # type: ignore[no-untyped-def,override]
        dgx, du, dwy, dby, dy0 = op("jordan_reg_backward")(
            g_ys, ys, hs, yc, u, wy, mask_y, keep_y, lengths, act, oact
        )
        return dgx, du, dwy, dby, dy0

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        g_ys, gx, u, wy, by, y0, mask_y, keep_y, lengths, act, oact = inputs[:11]
        ctx.has_b = by is not None
        consts = {5: mask_y, 6: keep_y, 7: lengths, 8: act, 9: oact}
        if ctx.has_b:
            ctx.save_for_backward(g_ys, gx, u, wy, by, y0)
            ctx.diff_at = (0, 1, 2, 3, 4)
        else:
            ctx.save_for_backward(g_ys, gx, u, wy, y0)
            ctx.diff_at = (0, 1, 2, 4)
            consts[3] = None
        ctx.consts = consts

    @staticmethod
    def backward(ctx: Any, *cot: Tensor) -> Any:
        # cot: for dgx, du, dwy, dby, dy0; without b_y, dby has no formula input
        c = cot if ctx.has_b else (cot[0], cot[1], cot[2], cot[4])
        d_g, d_x = _second(jordan_reg, ctx.consts, 1, ctx, c)
        d_x = list(d_x)
        if not ctx.has_b:
            d_x.insert(3, None)
        return (*d_g, *d_x, *([None] * 8))


class JordanReg(torch.autograd.Function):
    """``rnnlab::jordan_reg_forward`` with its gradients (``JordanRegBackward``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gx, u, wy, by, y0, mask_y, keep_y, lengths, act, oact):  # type: ignore[no-untyped-def,override]
        return op("jordan_reg_forward")(gx, u, wy, by, y0, mask_y, keep_y, lengths, act, oact)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.cfg = _save_forward(ctx, inputs, output, 8, 1)

    @staticmethod
    def backward(ctx: Any, g_ys: Tensor | None, *_: Any) -> Any:
        gx, u, wy, by, y0, mask_y, keep_y, lengths, ys, hs, yc = ctx.saved_tensors
        (g_ys,) = _lean_grads(ctx, (g_ys,), (ys,))
        run: Any = JordanRegBackward.forward if ctx.direct else JordanRegBackward.apply
        dgx, du, dwy, dby, dy0 = run(
            g_ys, gx, u, wy, by, y0, mask_y, keep_y, lengths, *ctx.cfg, ys, hs, yc
        )
        db = dby if by is not None else None
        return dgx, du, dwy, db, dy0, None, None, None, None, None
