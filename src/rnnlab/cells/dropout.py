r"""Variational recurrent dropout (Gal & Ghahramani 2016) as a wrapper cell.

Shapes: B batch, I input, n the size of the recurrent field (H, or O for Jordan, P with a
projection).

One Bernoulli mask per sequence on the input and one on the recurrent input, drawn once and
used at *every* step (the "variational", tied-weights form of Gal & Ghahramani's Sec. 4: the
same masks for every gate block):

.. math::
    m_x \sim \mathrm{Bernoulli}(1 - p_x)^I / (1 - p_x), \qquad
    m_h \sim \mathrm{Bernoulli}(1 - p_h)^n / (1 - p_h) \\
    y(t), s(t) = \mathrm{cell}\big(m_x \odot x(t),\ s(t-1) \text{ with } m_h \odot h(t-1)
        \text{ in every product } U h(t-1)\big)

Only the products see the mask: the carried state itself is not dropped (the GRU's
interpolation z ⊙ h(t-1) and the LSTM's c(t-1) use the true values). The inverted scaling
1/(1-p) keeps expectations, so eval() simply switches the masks off.

The masks travel *in the state* (fields ``mask_x`` and ``mask_h`` after the cell's own), so a
state carried between truncated-BPTT windows or stream chunks keeps its masks, and a restored
state (or a generator restored to the same seed) reproduces them exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_probability
from .base import Cell, _describe
from .gru import GRUCell, GRUState
from .layernorm import LayerNormGRUCell, LayerNormLSTMCell
from .lstm import LSTMCell
from .registry import cell_to_config
from .simple import ElmanCell, JordanCell

__all__ = ["VariationalDropoutCell", "dropout_mask"]

_STATE_TYPES: dict[type, type] = {}


def _state_type(inner: type) -> type:
    """The inner state's NamedTuple with ``mask_x`` and ``mask_h`` appended (one per type)."""
    if inner not in _STATE_TYPES:
        own: tuple[str, ...] = inner._fields  # type: ignore[attr-defined]
        fields = [(f, Tensor) for f in (*own, "mask_x", "mask_h")]
        name = f"{inner.__name__}WithDropout"
        cls = NamedTuple(name, fields)  # type: ignore[misc]
        cls.__module__ = __name__
        cls.__doc__ = f"{inner.__name__}'s fields, then the dropout masks mask_x and mask_h."
        globals()[name] = cls  # importable by name, so pickled states load again
        _STATE_TYPES[inner] = cls
    return _STATE_TYPES[inner]


def dropout_mask(
    batch_size: int,
    size: int,
    p: float,
    *,
    device: Any = None,
    dtype: Any = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, size) inverted-dropout mask: 0 with probability p, else 1/(1-p); ones for p = 0."""
    if p == 0.0:
        return torch.ones(batch_size, size, device=device, dtype=dtype)
    keep = torch.full((batch_size, size), 1.0 - p, device=device, dtype=dtype)
    return torch.bernoulli(keep, generator=generator) / (1.0 - p)


def _gru_step(cell: GRUCell, x: Tensor, h_prev: Tensor, h_in: Tensor) -> tuple[Tensor, Any]:
    # GRUCell.step with h_in (masked) in the products and h_prev in the interpolation.
    H = cell.hidden_size
    gi = F.linear(x, cell.weight_ih, cell.bias_ih)  # (B, 3H)
    b_hh = cell.bias_hh
    if cell.reset == "after":
        gh = F.linear(h_in, cell.weight_hh, b_hh)  # (B, 3H)
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = cell.activation(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    else:
        gh = F.linear(h_in, cell.weight_hh[: 2 * H], None if b_hh is None else b_hh[: 2 * H])
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H:])
        n = cell.activation(
            gi[:, 2 * H :]
            + F.linear(r * h_in, cell.weight_hh[2 * H :], None if b_hh is None else b_hh[2 * H :])
        )
    h = z * h_prev + (1.0 - z) * n
    return h, GRUState(h)


def _masked_field_step(field: str) -> Callable[[Cell, Tensor, Any, Tensor], tuple[Tensor, Any]]:
    # Cells whose recurrent field enters only through products: mask it and run the step.
    def run(cell: Cell, x: Tensor, state: Any, m_h: Tensor) -> tuple[Tensor, Any]:
        return cell.step(x, state._replace(**{field: getattr(state, field) * m_h}))

    return run


# Exact types only (as the engine's registry): a subclass may use h(t-1) differently.
_RECURRENT_FIELD: dict[type, str] = {
    ElmanCell: "h",
    JordanCell: "y",
    LSTMCell: "h",
    LayerNormLSTMCell: "h",
    GRUCell: "h",
    LayerNormGRUCell: "h",
}
_MASKED_STEP: dict[type, Callable[[Any, Tensor, Any, Tensor], tuple[Tensor, Any]]] = {
    ElmanCell: _masked_field_step("h"),
    JordanCell: _masked_field_step("y"),
    LSTMCell: _masked_field_step("h"),
    LayerNormLSTMCell: _masked_field_step("h"),
    GRUCell: lambda c, x, s, m: _gru_step(c, x, s.h, s.h * m),
    LayerNormGRUCell: lambda c, x, s, m: c.step_with_recurrent_input(x, s.h, s.h * m),
}


class VariationalDropoutCell(Cell):
    """Gal & Ghahramani's variational dropout around an Elman, Jordan, LSTM or GRU cell.

    The equations are in the module docstring. The state is the cell's fields followed by
    ``mask_x`` (B, I) and ``mask_h`` (B, n); :meth:`initial_state` draws them (from
    ``generator`` or torch's global RNG) in training mode and returns ones in eval mode, where
    the masks are ignored anyway. A state of the *inner* cell's type (no masks) given to a
    layer gets freshly drawn masks.

    Args:
        cell: an :class:`~rnnlab.cells.ElmanCell`, ``JordanCell``, ``LSTMCell``, ``GRUCell``,
            ``LayerNormLSTMCell`` or ``LayerNormGRUCell`` (exact types).
        dropout_input: p_x, the probability of dropping an input feature.
        dropout_state: p_h, the probability of dropping a unit of h(t-1) in the products.

    Example:
        >>> cell = VariationalDropoutCell(LSTMCell(3, 4), dropout_input=0.2, dropout_state=0.3)
        >>> s0 = cell.initial_state(2, generator=torch.Generator().manual_seed(0))
        >>> y, s1 = cell(torch.randn(2, 3), s0)
        >>> bool((s1.mask_h == s0.mask_h).all())   # the same mask at the next step
        True

    Reference: Y. Gal, Z. Ghahramani, "A Theoretically Grounded Application of Dropout in
    Recurrent Neural Networks", NeurIPS 2016.
    """

    stochastic_state = True  # layers pass their generator to initial_state/check_state

    def __init__(self, cell: Cell, dropout_input: float = 0.0, dropout_state: float = 0.0):
        super().__init__()
        if type(cell) not in _MASKED_STEP:
            names = ", ".join(t.__name__ for t in _MASKED_STEP)
            raise TypeError(f"cell: expected one of {names} (exact type), got {_describe(cell)}")
        self.cell = cell
        self.dropout_input = check_probability(dropout_input, "dropout_input")
        self.dropout_state = check_probability(dropout_state, "dropout_state")
        self.input_size = cell.input_size
        self.hidden_size = cell.hidden_size
        self.output_size = cell.output_size
        self.feedback_field = cell.feedback_field
        self.field = _RECURRENT_FIELD[type(cell)]
        self.State = _state_type(cell.State)

    def state_sizes(self) -> dict[str, int]:
        sizes = dict(self.cell.state_sizes())
        return {**sizes, "mask_x": self.input_size, "mask_h": sizes[self.field]}

    def masks(
        self,
        batch_size: int,
        *,
        device: Any = None,
        dtype: Any = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Fresh ``(mask_x, mask_h)`` for ``batch_size`` sequences (ones in eval mode)."""
        on = self.training
        n = self.cell.state_sizes()[self.field]
        kw: dict[str, Any] = {"device": device, "dtype": dtype, "generator": generator}
        return (
            dropout_mask(batch_size, self.input_size, self.dropout_input if on else 0.0, **kw),
            dropout_mask(batch_size, n, self.dropout_state if on else 0.0, **kw),
        )

    def with_masks(self, inner_state: Any, generator: torch.Generator | None = None) -> Any:
        """The inner cell's state with freshly drawn masks appended."""
        like = inner_state[0]
        m_x, m_h = self.masks(
            like.shape[0], device=like.device, dtype=like.dtype, generator=generator
        )
        return self.State(*inner_state, m_x, m_h)

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> Any:
        return self.with_masks(
            self.cell.initial_state(batch_size, device=device, dtype=dtype), generator
        )

    def check_state(
        self,
        state: Any,
        batch_size: int,
        like: Tensor,
        argument: str = "state",
        generator: torch.Generator | None = None,
    ) -> Any:
        if isinstance(state, tuple) and len(state) == len(self.cell.state_sizes()):
            inner = self.cell.check_state(state, batch_size, like, argument)
            return self.with_masks(inner, generator)
        return super().check_state(state, batch_size, like, argument)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        k = len(state) - 2
        inner = self.cell.State(*state[:k])
        if self.training:
            y, new = _MASKED_STEP[type(self.cell)](self.cell, x * state.mask_x, inner, state.mask_h)
        else:
            y, new = self.cell.step(x, inner)
        return y, self.State(*new, state.mask_x, state.mask_h)

    def config(self) -> dict[str, Any]:
        return {
            "cell": cell_to_config(self.cell),
            "dropout_input": self.dropout_input,
            "dropout_state": self.dropout_state,
        }

    def extra_repr(self) -> str:
        return f"dropout_input={self.dropout_input}, dropout_state={self.dropout_state}"
