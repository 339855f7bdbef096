r"""Zoneout (Krueger et al. 2016) as a wrapper cell.

Shapes: B batch, n a state field's size.

At every step and for every unit of a state field s, the unit keeps its previous value with
probability p_s instead of taking the cell's new value s̃(t):

.. math::
    \text{train:}\quad d \sim \mathrm{Bernoulli}(p_s)^n \text{ (fresh each step)}, \qquad
    s(t) = d \odot s(t-1) + (1 - d) \odot \tilde s(t) \\
    \text{eval:}\quad s(t) = p_s\, s(t-1) + (1 - p_s)\, \tilde s(t)

(the paper's deterministic mixture, its expectation). The LSTM takes separate rates for h and
c (z_c = 0.5, z_h = 0.05 are the authors' rates for character-level Penn Treebank, per the
README of their code, github.com/teganmaharaj/zoneout). Unlike dropout, the gradient flows
through the kept units to s(t-1) unchanged, which is the paper's point: zoneout is a per-unit
stochastic identity connection through time.

The cell's output: for cells whose output *is* a state field (``feedback_field``: LSTM and GRU
h, Jordan y, Elman without an output layer) the output is the zoned value, as in the paper; an
Elman cell with an output layer reads out its un-zoned candidate h̃(t).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .._checks import check_probability
from ._philox import keep_draws, step_keys
from .base import Cell, _describe
from .registry import cell_to_config

__all__ = ["ZoneoutCell"]


class ZoneoutCell(Cell):
    """Zoneout around any cell with a NamedTuple state (equations in the module docstring).

    Args:
        cell: the cell whose state is zoned out.
        rates: p for every state field (a float; dropout masks excepted), or a mapping
            field -> p (fields not named keep p = 0), e.g. ``{"h": 0.05, "c": 0.5}`` for an LSTM.
        generator: the random generator of the per-step draws (default torch's global RNG).

    Example:
        >>> cell = ZoneoutCell(LSTMCell(3, 4), {"h": 0.05, "c": 0.5}).eval()
        >>> s0 = cell.initial_state(2)
        >>> y, s1 = cell(torch.randn(2, 3), s0)
        >>> bool((y == s1.h).all())
        True

    Reference: D. Krueger et al., "Zoneout: Regularizing RNNs by Randomly Preserving Hidden
    Activations", ICLR 2017 (arXiv:1606.01305).
    """

    def __init__(
        self,
        cell: Cell,
        rates: float | Mapping[str, float],
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected an rnnlab Cell, got {_describe(cell)}")
        fields = list(cell.state_sizes())
        if isinstance(rates, Mapping):
            unknown = sorted(set(rates) - set(fields))
            if unknown:
                raise ValueError(
                    f"rates: expected state fields of {type(cell).__name__} ({fields}), "
                    f"got {unknown}"
                )
            masks = sorted(f for f in rates if f.startswith("mask_") and f in fields)
            if masks and getattr(cell, "stochastic_state", False):
                raise ValueError(
                    f"rates: {masks} are dropout masks (constant over a sequence), not state "
                    f"to zone out; expected a subset of {[f for f in fields if f not in masks]}"
                )
            given = dict(rates)
        elif isinstance(rates, (int, float)) and not isinstance(rates, bool):
            # mask_* fields belong to a VariationalDropoutCell inside: never zoned.
            given = {f: rates for f in fields if not f.startswith("mask_")}
        else:
            raise TypeError(f"rates: expected a float or a mapping field -> float, got {rates!r}")
        self.rates: dict[str, float] = {}
        for f in fields:
            self.rates[f] = check_probability(given.get(f, 0.0), f"rates[{f!r}]", include_one=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {_describe(generator)}")
        self.cell = cell
        self.generator = generator
        self.input_size = cell.input_size
        self.hidden_size = cell.hidden_size
        self.output_size = cell.output_size
        self.feedback_field = cell.feedback_field
        self.State = cell.State
        self.input_shape = getattr(cell, "input_shape", None)

    def state_sizes(self) -> dict[str, int]:
        return self.cell.state_sizes()

    def initial_state(self, batch_size: int, **kw: Any) -> Any:
        return self.cell.initial_state(batch_size, **kw)

    def check_state(
        self, state: Any, batch_size: int, like: Tensor, argument: str = "state"
    ) -> Any:
        return self.cell.check_state(state, batch_size, like, argument)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        y, cand = self.cell.step(x, state)
        rates = list(self.rates.values())
        zoned = [k for k, p in enumerate(rates) if p > 0.0]
        keeps: dict[int, Tensor] = {}
        if self.training and zoned:
            # one key per step from the generator, the decisions from Philox (docs/design/0020)
            key = step_keys(1, self.generator, cand[zoned[0]].device)
            sizes = [cand[k].numel() for k in zoned]
            drawn = keep_draws(key, sizes, [rates[k] for k in zoned], torch.bool)
            keeps = {k: d.view(cand[k].shape) for k, d in zip(zoned, drawn)}
        out = []
        for k, (p, prev, new) in enumerate(zip(rates, state, cand)):
            if p == 0.0:
                out.append(new)
            elif not self.training:
                out.append(p * prev + (1.0 - p) * new)
            else:
                out.append(torch.where(keeps[k], prev, new))
        zoned = type(cand)(*out)
        field = self.feedback_field
        if field is not None and self.rates.get(field, 0.0) > 0.0:
            y = getattr(zoned, field)
        return y, zoned

    def config(self) -> dict[str, Any]:
        return {"cell": cell_to_config(self.cell), "rates": dict(self.rates)}

    def extra_repr(self) -> str:
        return f"rates={self.rates}"
