"""Input feedback of :class:`~rnnlab.training.SequenceModel` (``feedback: "input"``): the
engine's one call per chunk, or the Python loop that is its reference.

Under a mixed or free-running mask the readout y(t-1) is fed back as the next input where the
mask does not feed the reference x(t): real values as they are, tokens as the one-hot of a
choice from the logits. A one-layer model with a linear readout and a cell the engine covers
(:func:`rnnlab.engine.fed_input.covered`: Elman without output layer, GRU, plain LSTM;
float32/float64 on the CPU) runs the whole chunk in one ``rnnlab::fed_input`` call. Every
other model steps in Python, one time step at a time on the reference loop (:func:`steps`),
and each such run is counted in :data:`rnnlab.layers.dispatch.FALLBACKS` under
``"model input feedback (<reason>)"``.

The token choice (docs/design/0019-input-feedback-engine.md): the argmax of the logits (the
lowest index wins a tie), or, when sampling, the Gumbel-max draw ``argmax(y + τ g)`` with g
standard Gumbel noise drawn for the whole chunk up front (:func:`choice_noise`, (B, T, C), one
row per step whatever the mask) so that the C++ loop and the Python loop make the same choice.
``argmax(y + τ g)`` is a sample of softmax(y / τ).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import engine
from .._sequences import where_state
from ..engine import fed_input
from ..layers import Recurrent
from ..layers.dispatch import FALLBACKS
from .supervision import valid_steps


def choice_noise(
    model: Any,
    B: int,
    T: int,
    sample: bool,
    temperature: float,
    generator: torch.Generator | None,
    like: Tensor,
) -> Tensor | None:
    """The noise of the token choices of T steps (B, T, C): None for the argmax (real values,
    no sampling, or temperature <= 0), else τ g with g Gumbel(0, 1) from ``generator``."""
    if not model.tokens or not sample or temperature <= 0:
        return None
    return fed_input.gumbel_noise(
        B,
        T,
        model.output_size,
        temperature=temperature,
        generator=generator,
        dtype=like.dtype,
        device=like.device,
    )


def choose(y: Tensor, noise: Tensor | None) -> Tensor:
    """The token chosen from logits y (B, C): argmax(y + noise) (noise None: argmax(y))."""
    return (y if noise is None else y.detach() + noise.to(y.dtype)).argmax(-1)


def engine_reason(model: Any, x: Tensor) -> str | None:
    """None when the engine runs this model's input feedback, else why not."""
    core = model.core
    if type(core) is not Recurrent:
        return "layers"
    if core.reverse or not core.batch_first or core.input_feedback is not None:
        return "layer options"
    if engine.lookup(core.cell) is None:
        return "engine off"
    return fed_input.covered(core.cell, model.readout, x)


def run(
    model: Any,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    mask: Tensor,
    detach: bool,
    prev_output: Tensor | None,
    noise: Tensor | None,
) -> tuple[Tensor, Any]:
    """y (B, T, O) and the final state of the fed loop: one engine call where covered, else the
    counted Python loop (:func:`steps` on the reference loop)."""
    reason = engine_reason(model, x)
    if state is None:
        state = model.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
    if reason is None:
        return fed_input.run(  # type: ignore[no-any-return]
            model.core.cell,
            model.readout,
            x,
            state,
            lengths,
            mask,
            detach,
            prev_output,
            model.tokens,
            noise,
        )
    if reason != "engine off":
        FALLBACKS[f"model input feedback ({reason})"] += 1
    with engine.disabled():
        return steps(model, x, state, lengths, mask, detach, prev_output, noise)


def steps(
    model: Any,
    x: Tensor,
    state: Any,
    lengths: Tensor | None,
    mask: Tensor,
    detach: bool,
    prev_output: Tensor | None,
    noise: Tensor | None,
) -> tuple[Tensor, Any]:
    """The reference: the whole model one time step at a time, y(t-1) fed where mask is False
    (step 0 reads x(0) without ``prev_output``). Past a sequence's length its state is held and
    the core's output is zero (the layer contract, ``unroll``), so y(t) = readout(0) = b_r, as
    the model gives without feedback or under all-reference forcing; what is fed back there
    reaches nothing (the state is held and the output does not read it)."""
    B, T = x.shape[0], x.shape[1]
    valid = None if lengths is None else valid_steps(lengths, B, T, x.device)
    ys: list[Tensor] = []
    y_prev = prev_output
    for t in range(T):
        x_t = x[:, t]  # (B, I)
        if y_prev is not None:
            nz = None if noise is None else noise[:, t]
            own = feed(model, y_prev.detach() if detach else y_prev, nz)
            x_t = torch.where(mask[:, t : t + 1], x_t, own.to(x_t.dtype))
        h, new = model.core(x_t.unsqueeze(1), state)  # (B, 1, H)
        if valid is not None:
            h = torch.where(valid[:, t, None, None], h, h.new_zeros(()))
            new = where_state(valid[:, t], new, state)
        y_t = model._read(h)[:, 0]  # (B, O)
        state, y_prev = new, y_t
        ys.append(y_t)
    return torch.stack(ys, 1), state  # (B, T, O)


def feed(model: Any, y: Tensor, noise: Tensor | None) -> Tensor:
    """What y(t-1) (B, O) becomes as the next input: itself, or the chosen token's one-hot."""
    if not model.tokens:
        return y
    return F.one_hot(choose(y, noise), model.output_size).to(y.dtype)


def generate(
    model: Any,
    n_steps: int,
    state: Any,
    x0: Tensor | None,
    y_last: Tensor | None,
    noise: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Free running for ``n_steps`` outputs, values (B, n_steps, O) and the tokens chosen from
    them (token models; ``tokens[:, k] = argmax(values[:, k] + noise[:, k])``, the choice fed
    after values[k]). Starts from ``y_last`` (the prediction after the prime: values[0]) or
    from the input x0 (B, 1, I) (the decoder's start, read before any choice). One engine call
    where covered."""
    ref = x0 if x0 is not None else y_last.new_zeros(y_last.shape[0], 1, model.input_size)  # type: ignore[union-attr]
    B = ref.shape[0]
    values: list[Tensor] = [] if x0 is not None else [y_last]  # type: ignore[list-item]
    n = n_steps if x0 is not None else n_steps - 1  # steps the loop runs
    if n > 0:
        x = torch.cat([ref, ref.new_zeros(B, n - 1, ref.shape[2])], 1)
        mask = torch.zeros(B, n, dtype=torch.bool, device=x.device)
        nz = noise
        if nz is not None:
            # the loop's step t chooses from y(t-1) = values[t] (after a prime) or values[t-1]
            # (from the decoder's start, whose step 0 reads x0: its row is never used)
            nz = nz[:, :n] if x0 is None else torch.cat([nz[:, :1], nz[:, : n - 1]], 1)
        y, _ = run(model, x, state, None, mask, True, y_last, nz)
        values.extend(y.unbind(1))
    v = torch.stack(values, 1)  # (B, n_steps, O)
    if not model.tokens:
        return v, None
    return v, choose(v, noise)
