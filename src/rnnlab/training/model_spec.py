"""The JSON-able spec of a :class:`~rnnlab.training.SequenceModel` (checked, with defaults) and
the recurrent core it builds: ``Recurrent(cell)`` layers wrapped in ``Bidirectional`` and
``Stacked`` as asked. The spec's keys are described in :mod:`rnnlab.training.model`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from .._checks import check_choice, check_int, check_probability
from ..cells.base import Cell
from ..layers import Bidirectional, Recurrent, Stacked

FEEDBACKS = ("none", "state", "input")
READOUTS = ("linear", "none")

MODEL_DEFAULTS: dict[str, Any] = {
    "cell": "LSTMCell",
    "cell_options": {},
    "input_size": None,
    "hidden_size": 32,
    "output_size": None,
    "num_layers": 1,
    "bidirectional": False,
    "dropout": 0.0,
    "dropout_input": 0.0,
    "dropout_state": 0.0,
    "zoneout": {},
    "readout": "linear",
    "feedback": "none",
    "tokens": False,
    "seq2seq": False,
}

_RESERVED = {"self", "input_size", "hidden_size", "output_size", "device", "dtype"}


def buildable_cells() -> dict[str, type[Cell]]:
    """Registered cells whose constructor starts ``(input_size, hidden_size, ...)``."""
    from ..cells import CELL_TYPES

    out = {}
    for name, cls in CELL_TYPES.items():
        params = list(inspect.signature(cls.__init__).parameters)[1:3]
        if params == ["input_size", "hidden_size"]:
            out[name] = cls
    return out


def _check_int(value: Any, argument: str, low: int) -> int:
    return check_int(value, argument, low=low, what=f"an int >= {low}")


def _check_bool(value: Any, argument: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{argument}: expected true or false, got {value!r}")
    return value


def check_model_spec(spec: Mapping[str, Any], prefix: str = "model.") -> dict[str, Any]:
    """The spec with defaults filled in; errors name the key, the expected and the given value."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"{prefix.rstrip('.')}: expected a mapping, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(MODEL_DEFAULTS))
    if unknown:
        raise ValueError(
            f"{prefix}{unknown[0]}: unknown model key; expected one of {sorted(MODEL_DEFAULTS)}"
        )
    s = {**copy.deepcopy(MODEL_DEFAULTS), **copy.deepcopy(dict(spec))}
    cells = buildable_cells()
    check_choice(s["cell"], prefix + "cell", sorted(cells))
    if not isinstance(s["cell_options"], Mapping):
        raise ValueError(
            f"{prefix}cell_options: expected a mapping, got {type(s['cell_options']).__name__}"
        )
    allowed = set(inspect.signature(cells[s["cell"]].__init__).parameters) - _RESERVED
    for key in s["cell_options"]:
        if key not in allowed:
            raise ValueError(
                f"{prefix}cell_options.{key}: {s['cell']} has no such option; "
                f"expected one of {sorted(allowed)}"
            )
    for key in ("input_size", "output_size", "hidden_size", "num_layers"):
        _check_int(s[key], prefix + key, 1)
    for key in ("bidirectional", "tokens", "seq2seq"):
        _check_bool(s[key], prefix + key)
    d = s["dropout"]
    check_probability(d, prefix + "dropout")
    if d > 0 and s["num_layers"] < 2:
        raise ValueError(
            f"{prefix}dropout: acts between layers, so it needs num_layers >= 2; "
            f"got dropout={d} with num_layers={s['num_layers']}"
        )
    for key in ("dropout_input", "dropout_state"):
        check_probability(s[key], prefix + key)
    z = s["zoneout"]
    if isinstance(z, bool) or not isinstance(z, (int, float, Mapping)):
        raise ValueError(
            f"{prefix}zoneout: expected a rate or a mapping state field -> rate, got {z!r}"
        )
    check_choice(s["readout"], prefix + "readout", READOUTS)
    check_choice(s["feedback"], prefix + "feedback", FEEDBACKS)
    if s["seq2seq"] and s["feedback"] != "input":
        raise ValueError(
            f"{prefix}feedback: an encoder-decoder's decoder is autoregressive, so it needs "
            f"'input', got {s['feedback']!r}"
        )
    if s["bidirectional"] and s["feedback"] != "none":
        raise ValueError(
            f"{prefix}feedback: a bidirectional model reads the future, so it cannot feed its "
            f"outputs back; expected 'none', got {s['feedback']!r}"
        )
    if s["feedback"] == "input" and not s["seq2seq"] and s["input_size"] != s["output_size"]:
        raise ValueError(
            f"{prefix}feedback: 'input' feeds y(t-1) back as x(t), so input_size must equal "
            f"output_size; got {s['input_size']} and {s['output_size']}"
        )
    if s["feedback"] == "state":
        if s["num_layers"] != 1:
            raise ValueError(
                f"{prefix}feedback: 'state' feeds the reference into the cell's state, which "
                f"needs num_layers=1; got {s['num_layers']}"
            )
        if s["readout"] != "none":
            raise ValueError(
                f"{prefix}readout: feedback 'state' needs the cell's output to be the model's "
                f"output, so readout must be 'none'; got {s['readout']!r}"
            )
    return s


def _make_cell(cls: type[Cell], I: int, H: int, out: int | None, opts: Mapping[str, Any]) -> Cell:
    params = inspect.signature(cls.__init__).parameters
    kw = dict(opts)
    if "output_size" in params:
        if out is not None:
            kw["output_size"] = out
        elif params["output_size"].default is inspect.Parameter.empty:
            kw["output_size"] = H  # Jordan below a readout or another layer: y has H units
    try:
        return cls(I, H, **kw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model.cell_options: {cls.__name__}: {err}") from None


def _regularise(s: Mapping[str, Any], cell: Cell) -> Cell:
    """The cell wrapped in variational dropout and zoneout as the spec asks (issue 18)."""
    from ..cells import VariationalDropoutCell, ZoneoutCell

    if s["dropout_input"] or s["dropout_state"]:
        try:
            cell = VariationalDropoutCell(cell, s["dropout_input"], s["dropout_state"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"model.dropout_state: {err}") from None
    z = s["zoneout"]
    if z:
        try:
            cell = ZoneoutCell(cell, dict(z) if isinstance(z, Mapping) else float(z))
        except (TypeError, ValueError) as err:
            raise ValueError(f"model.zoneout: {err}") from None
    return cell


def _make_core(
    s: Mapping[str, Any], input_size: int, last_out: int | None
) -> Recurrent | Bidirectional | Stacked:
    cls = buildable_cells()[s["cell"]]
    layers: list[nn.Module] = []
    n_in = input_size
    L = s["num_layers"]
    for k in range(L):
        cell = _make_cell(
            cls, n_in, s["hidden_size"], last_out if k == L - 1 else None, s["cell_options"]
        )
        rec = Recurrent(_regularise(s, cell))
        layer: Recurrent | Bidirectional = Bidirectional(rec) if s["bidirectional"] else rec
        layers.append(layer)
        n_in = int(layer.output_size)
    if L == 1:
        return layers[0]  # type: ignore[return-value]
    return Stacked(layers, dropout=float(s["dropout"]))


def initial_state(core: nn.Module, batch_size: int, device: Any, dtype: Any) -> Any:
    """The zero (or learned) initial state of a layer, a bidirectional pair or a stack."""
    if isinstance(core, Recurrent):
        return core.initial_state(batch_size, device=device, dtype=dtype)
    if isinstance(core, Bidirectional):
        from ..layers.bidirectional import BidirectionalState

        return BidirectionalState(
            initial_state(core.forward_layer, batch_size, device, dtype),
            initial_state(core.backward_layer, batch_size, device, dtype),
        )
    if isinstance(core, Stacked):
        return tuple(initial_state(m, batch_size, device, dtype) for m in core.layers)
    raise TypeError(f"core: expected Recurrent, Bidirectional or Stacked, got {type(core)}")
