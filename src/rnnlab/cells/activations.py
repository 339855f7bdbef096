"""Activation functions by name.

Named activations are the ones a fast path can compile and a checkpoint can store. Any
callable ``Tensor -> Tensor`` is accepted as well; it runs on the reference loop only and a
cell using one refuses to be saved by name (:meth:`rnnlab.cells.Cell.config` says so).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Activation = Callable[[Tensor], Tensor]
ActivationSpec = str | Activation


def _identity(x: Tensor) -> Tensor:
    return x


ACTIVATIONS: dict[str, Activation] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "identity": _identity,
    "softsign": F.softsign,
    "hardtanh": F.hardtanh,
    "elu": F.elu,
    "softplus": F.softplus,
}
_ALIASES = {"logistic": "sigmoid", "linear": "identity", "none": "identity"}


def resolve_activation(
    spec: ActivationSpec, *, argument: str = "activation"
) -> tuple[Activation, str | None]:
    """Return ``(function, name)``; ``name`` is None for a user callable.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: neither a string nor a callable.
    """
    if isinstance(spec, str):
        key = _ALIASES.get(spec.lower(), spec.lower())
        if key not in ACTIVATIONS:
            raise ValueError(
                f"{argument}: expected one of {sorted(ACTIVATIONS)} or a callable, got {spec!r}"
            )
        return ACTIVATIONS[key], key
    if callable(spec):
        return spec, None
    raise TypeError(
        f"{argument}: expected an activation name or a callable, got {type(spec).__name__}"
    )
