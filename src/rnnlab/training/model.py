"""Sequence models built from a JSON-able spec, so that a checkpoint can rebuild its model.

Shapes: B batch, T time, S source time (encoder-decoder), I input, H hidden, O output (classes
C for token models).

A spec names a registered cell, its options and the sizes::

    {"cell": "LSTMCell", "cell_options": {"variant": "V"}, "input_size": 2, "hidden_size": 32,
     "output_size": 1, "num_layers": 2, "bidirectional": false, "dropout": 0.0,
     "readout": "linear", "feedback": "none", "tokens": false, "seq2seq": false,
     "dropout_input": 0.0, "dropout_state": 0.0, "zoneout": {}}

and :class:`SequenceModel` builds ``Recurrent(cell)`` layers (wrapped in ``Bidirectional`` and
``Stacked`` as asked; with ``dropout_input``/``dropout_state`` (variational dropout) or
``zoneout`` (a rate, or rates per state field) each layer's cell is wrapped as
``ZoneoutCell(VariationalDropoutCell(cell))``, the masks travelling in the carried state) and
a readout: ``"linear"`` (y = W h + b on the last layer's output) or ``"none"`` (the cell's
output is the model's output; a Jordan cell's y, an Elman cell's W_y h).

Output feedback (docs/design/0001-output-feedback.md):

* ``"none"``: the plain recursion; no reference is ever fed.
* ``"state"``: the cell's state holds y(t-1) (Jordan; LSTM/GRU/Elman-without-output-layer, whose
  output is their state h); teacher forcing puts r(t-1) in its place. Needs one causal layer and
  ``readout="none"``, so that the fed-back quantity *is* the model's output.
* ``"input"``: autoregressive: y(t-1) becomes the next input (real values: itself; tokens: the
  one-hot of its argmax or of a sample), so I = O. The given input x is the reference (x(t) =
  r(t-1), a next-step task). Works at any depth; :meth:`SequenceModel.generate` runs free.

With ``seq2seq`` an encoder of the same structure reads the source and hands its final state to
an autoregressive decoder whose reference input is the shifted target.

Input feedback under a mixed or free-running mask, and :meth:`SequenceModel.generate`, run in
:mod:`.autoregressive`: one engine call per chunk (``rnnlab::fed_input``: the readout and the
token choice applied per step in C++) for a one-layer Elman, GRU or LSTM model with a linear
readout, else the model stepped one time step at a time in Python (the reference; counted in
``FALLBACKS``). Sampled tokens are a Gumbel-max draw made up front, the same in both
(docs/design/0019-input-feedback-engine.md). ``tests/test_training_forcing.py`` checks the loop
against ``Recurrent(..., input_feedback=...)`` on a one-layer model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int
from .._sequences import where_state
from ..layers import Recurrent
from ..layers.feedback import GivenMask
from . import autoregressive
from .model_spec import (  # noqa: F401  (re-exported: the spec's names lived here)
    FEEDBACKS,
    MODEL_DEFAULTS,
    READOUTS,
    _make_core,
    buildable_cells,
    check_model_spec,
    initial_state,
)


class ModelOutput(NamedTuple):
    """What :meth:`SequenceModel.forward` returns.

    Attributes:
        output: y (B, T, O) (logits for token models).
        state: the final state.
        split_state: with ``split=s``, the state after the first s steps; else None.
    """

    output: Tensor
    state: Any
    split_state: Any | None


class Generated(NamedTuple):
    """What :meth:`SequenceModel.generate` returns.

    Attributes:
        values: (B, steps, O): values[0] is the prediction after the prime (or the decoder's
            start), values[k] the output after feeding back the choice made from values[k-1].
        tokens: (B, steps) the chosen tokens (token models), else None.
    """

    values: Tensor
    tokens: Tensor | None


class SequenceModel(nn.Module):
    """An RNN built from a spec (module docstring): recurrent layers, readout, feedback.

    Example:
        >>> model = SequenceModel({"cell": "GRUCell", "input_size": 2, "hidden_size": 8,
        ...                        "output_size": 1, "num_layers": 2})
        >>> model(torch.randn(4, 10, 2)).output.shape
        torch.Size([4, 10, 1])
        >>> rebuilt = SequenceModel(model.config())
        >>> _ = rebuilt.load_state_dict(model.state_dict())
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        s = check_model_spec(spec)
        self.spec = s
        O = s["output_size"]
        last_out = O if s["readout"] == "none" else None
        dec_in = O if s["seq2seq"] else s["input_size"]
        self.encoder = _make_core(s, s["input_size"], last_out) if s["seq2seq"] else None
        self.core = _make_core(s, dec_in, last_out)
        core_out = int(self.core.output_size)
        self.readout = nn.Linear(core_out, O) if s["readout"] == "linear" else None
        if self.readout is None and core_out != O:
            raise ValueError(
                f"model.readout: 'none' makes the last layer's output ({core_out} units from "
                f"{s['cell']}{' x2 directions' if s['bidirectional'] else ''}) the model's "
                f"output, but output_size is {O}; use readout 'linear' or matching sizes"
            )
        if s["feedback"] == "state":
            assert isinstance(self.core, Recurrent)
            cell = self.core.cell
            field = cell.feedback_field
            if field is None:
                raise ValueError(
                    f"model.feedback: {s['cell']} with these options has no output feedback "
                    "(its state does not hold y(t-1)); use feedback 'none' or 'input', or a "
                    "cell such as JordanCell"
                )
            if cell.state_sizes()[field] != O:
                raise ValueError(
                    f"model.feedback: the state field {field!r} of {s['cell']} has "
                    f"{cell.state_sizes()[field]} units, the output {O}"
                )

    # --- properties -------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return int(self.spec["input_size"])

    @property
    def output_size(self) -> int:
        return int(self.spec["output_size"])

    @property
    def feedback(self) -> str:
        return str(self.spec["feedback"])

    @property
    def tokens(self) -> bool:
        return bool(self.spec["tokens"])

    @property
    def seq2seq(self) -> bool:
        return bool(self.spec["seq2seq"])

    @property
    def causal(self) -> bool:
        """Whether y(t) depends on x(≤ t) only (no bidirectional layer)."""
        return not self.spec["bidirectional"]

    def config(self) -> dict[str, Any]:
        """The JSON-able spec that rebuilds this model (``SequenceModel(model.config())``)."""
        return copy.deepcopy(self.spec)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> Any:
        p = next(self.parameters())
        return initial_state(self.core, batch_size, device or p.device, dtype or p.dtype)

    # --- running ----------------------------------------------------------------------------
    def encode(self, source: Tensor, lengths: Tensor | None = None) -> Any:
        """The encoder's final state for ``source`` (B, S, I) (encoder-decoder models)."""
        if self.encoder is None:
            raise ValueError("source: this model has no encoder (spec seq2seq is false)")
        _check_x(source, self.input_size, "source")
        _, state = self.encoder(source, lengths=lengths)
        return state

    def forward(
        self,
        x: Tensor,
        state: Any = None,
        *,
        lengths: Tensor | None = None,
        feed_mask: Tensor | None = None,
        detach: bool = True,
        reference: Tensor | None = None,
        prev_reference: Tensor | None = None,
        prev_output: Tensor | None = None,
        split: int | None = None,
        source: Tensor | None = None,
        source_lengths: Tensor | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelOutput:
        """Run the model over ``x`` (B, T, I).

        Args:
            x: the inputs; for ``feedback="input"`` also the reference (x(t) = r(t-1)); for an
                encoder-decoder the decoder's inputs (the shifted target, start at t=0).
            state: initial state (default: zeros, or the encoder's final state for ``source``).
            lengths: (B,) valid steps per sequence, 0 <= length <= T (0: the sequence ended
                before this chunk; its state passes through unchanged). Past a length the
                state is held and the core's output is zero, so y there is the readout of
                zero (b_r for ``"linear"``), under every feedback schedule.
            feed_mask: (B, T) bool, True where the reference is fed (see
                :func:`rnnlab.training.feed_mask`); None: no substitution.
            detach: fed-back model outputs carry no gradient.
            reference: r (B, T, O) for ``feedback="state"``: r(t-1) replaces y(t-1) at step t.
            prev_reference: r at the step before this chunk (B, O) (``"state"``; a chunk that
                continues a sequence substitutes at its step 0 too).
            prev_output: y at the step before this chunk (B, O) (``"input"``; same purpose).
            split: also return the state after this many steps (truncated BPTT's carry).
            source, source_lengths: the encoder's input (encoder-decoder models).
            sample: token feedback by sampling from softmax(y) instead of argmax (Gumbel-max:
                argmax(y + g), g drawn for the whole chunk up front, docs/design/0019).
            generator: random generator for sampling.
        """
        _check_x(x, self.input_size if not self.seq2seq else self.output_size, "x")
        B, T = x.shape[0], x.shape[1]
        if feed_mask is not None:
            if self.feedback == "none":
                raise ValueError(
                    "feed_mask: this model has no output feedback (spec feedback 'none'), so "
                    "there is nothing to teacher-force; build it with feedback 'state' or 'input'"
                )
            if feed_mask.shape != (B, T) or feed_mask.dtype != torch.bool:
                raise ValueError(
                    f"feed_mask: expected a bool tensor ({B}, {T}), got "
                    f"{feed_mask.dtype} {tuple(feed_mask.shape)}"
                )
            feed_mask = feed_mask.to(x.device)
        if self.feedback == "state" and feed_mask is not None:
            want = (B, T, self.output_size)
            if reference is None or tuple(reference.shape) != want:
                got = None if reference is None else tuple(reference.shape)
                raise ValueError(f"reference: expected {want} with feed_mask, got {got}")
        if state is None and self.seq2seq:
            if source is None:
                raise ValueError("source: an encoder-decoder needs the source sequence")
            state = self.encode(source, source_lengths)
        if split is not None and not (0 <= split <= T):
            raise ValueError(f"split: expected 0 <= split <= T={T}, got {split}")

        def part(a: int, b: int, st: Any, prev_r: Tensor | None, prev_y: Tensor | None) -> Any:
            L = None if lengths is None else (lengths - a).clamp(0, b - a)
            return self._run(
                x[:, a:b],
                st,
                L,
                None if feed_mask is None else feed_mask[:, a:b],
                detach,
                None if reference is None else reference[:, a:b],
                prev_r,
                prev_y,
                sample,
                generator,
            )

        if split is None or split in (0, T):
            y, new = part(0, T, state, prev_reference, prev_output)
            split_state = None
            if split == 0:
                split_state = state if state is not None else self.initial_state(B)
            elif split == T:
                split_state = new
            return ModelOutput(y, new, split_state)
        y1, mid = part(0, split, state, prev_reference, prev_output)
        prev_r = None if reference is None else reference[:, split - 1]
        y2, new = part(split, T, mid, prev_r, y1[:, -1])
        return ModelOutput(torch.cat([y1, y2], 1), new, mid)

    def _read(self, h: Tensor) -> Tensor:
        return h if self.readout is None else self.readout(h)

    def _core(self, x: Tensor, state: Any, lengths: Tensor | None, **kw: Any) -> tuple[Tensor, Any]:
        """The core over x, accepting zero lengths (those sequences' states pass through and
        their outputs are zero at every step, as past any length)."""
        if lengths is None or bool((lengths >= 1).all()):
            h, new = self.core(x, state, lengths=lengths, **kw)
            return h, new
        if state is None:
            state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        h, new = self.core(x, state, lengths=lengths.clamp(min=1), **kw)
        read = (lengths >= 1).view(-1, *(1,) * (h.dim() - 1))  # (B, 1, ...): the core read x
        return torch.where(read, h, h.new_zeros(())), where_state(lengths >= 1, new, state)

    def _run(
        self,
        x: Tensor,
        state: Any,
        lengths: Tensor | None,
        mask: Tensor | None,
        detach: bool,
        reference: Tensor | None,
        prev_reference: Tensor | None,
        prev_output: Tensor | None,
        sample: bool,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Any]:
        if mask is None or self.feedback == "none":
            h, new = self._core(x, state, lengths)
            return self._read(h), new
        if self.feedback == "state":
            assert isinstance(self.core, Recurrent) and reference is not None
            field = self.core.cell.feedback_field
            assert field is not None
            if state is not None and prev_reference is not None:
                # this chunk continues a sequence: its step 0 has a previous output too
                own = getattr(state, field)
                own = own.detach() if detach else own
                fed = torch.where(mask[:, :1], prev_reference.to(own.dtype), own)
                state = state._replace(**{field: fed})
            h, new = self._core(
                x,
                state,
                lengths,
                feedback=GivenMask(mask, detach),  # all True: the parallel path
                reference=reference,
            )
            return h, new
        return self._autoregressive(x, state, lengths, mask, detach, prev_output, sample, generator)

    def _autoregressive(
        self,
        x: Tensor,
        state: Any,
        lengths: Tensor | None,
        mask: Tensor,
        detach: bool,
        prev_output: Tensor | None,
        sample: bool,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Any]:
        if bool(mask[:, 1:].all()) and (prev_output is None or bool(mask[:, 0].all())):
            h, new = self._core(x, state, lengths)  # the reference everywhere: one parallel run
            return self._read(h), new
        # the readout of the last layer is fed back as the next input: one engine call for the
        # chunk where covered, else the counted Python loop (training/autoregressive.py)
        noise = autoregressive.choice_noise(self, x.shape[0], x.shape[1], sample, 1.0, generator, x)
        return autoregressive.run(self, x, state, lengths, mask, detach, prev_output, noise)

    def choose(
        self,
        y: Tensor,
        *,
        sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The token chosen from logits y (B, C): the argmax (lowest index on a tie), or a
        sample of softmax(y / T) by Gumbel-max, argmax(y + T g) with g drawn from
        ``generator`` (docs/design/0019; the same draw the engine's loop uses)."""
        noise = autoregressive.choice_noise(self, y.shape[0], 1, sample, temperature, generator, y)
        return autoregressive.choose(y, None if noise is None else noise[:, 0])

    def feed_output(
        self,
        y: Tensor,
        *,
        sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """What y(t-1) (B, O) becomes as the next input: itself, or a token's one-hot."""
        if not self.tokens:
            return y
        tok = self.choose(y, sample=sample, temperature=temperature, generator=generator)
        return F.one_hot(tok, self.output_size).to(y.dtype)

    @torch.no_grad()
    def generate(
        self,
        steps: int,
        *,
        prime: Tensor | None = None,
        source: Tensor | None = None,
        source_lengths: Tensor | None = None,
        sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Generated:
        """Free-running generation of an autoregressive model (feedback ``"input"``).

        Args:
            steps: how many outputs to generate.
            prime: (B, P, I) inputs read first (teacher-forced), e.g. the start of a text or a
                series; required unless the model is an encoder-decoder.
            source: (B, S, I) the encoder's input (encoder-decoder models); the decoder starts
                from a zero input.
            sample, temperature: token models sample from softmax(y / temperature) instead of
                taking the argmax: argmax(y + temperature · g), g Gumbel noise (B, steps, C)
                drawn up front from ``generator`` (docs/design/0019).
        """
        if self.feedback != "input":
            raise ValueError(
                f"model: generation feeds outputs back as inputs, which needs feedback 'input'; "
                f"this model has feedback {self.feedback!r} (run it on inputs instead)"
            )
        check_int(steps, "steps", low=1, what="a positive int")
        p = next(self.parameters())
        if self.seq2seq:
            if source is None:
                raise ValueError("source: an encoder-decoder generates from a source sequence")
            state = self.encode(source, source_lengths)
            x0, y_last = source.new_zeros(source.shape[0], 1, self.output_size).to(p.dtype), None
        else:
            if prime is None:
                raise ValueError(f"prime: expected the first inputs (B, P, {self.input_size})")
            _check_x(prime, self.input_size, "prime")
            h, state = self.core(prime, None)
            x0, y_last = None, self._read(h)[:, -1]
        B = (prime if prime is not None else source).shape[0]  # type: ignore[union-attr]
        # the choices' noise for all steps up front: row k chooses from values[k]
        noise = autoregressive.choice_noise(self, B, steps, sample, temperature, generator, p)
        values, tokens = autoregressive.generate(self, steps, state, x0, y_last, noise)
        return Generated(values, tokens)


def _check_x(x: Any, features: int, argument: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{argument}: expected a floating-point tensor (B, T, {features}), {got}")
    if x.dim() != 3 or x.shape[-1] != features:
        raise ValueError(f"{argument}: expected (B, T, {features}), got {tuple(x.shape)}")


def build_model(spec: Mapping[str, Any]) -> SequenceModel:
    """Build a :class:`SequenceModel` from its spec (the same as ``SequenceModel(spec)``)."""
    return SequenceModel(spec)
