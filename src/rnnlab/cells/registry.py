"""Cells by name, for configs and checkpoints: ``{"type": "LSTMCell", "args": {...}}``."""

from __future__ import annotations

from typing import Any

from .._checks import check_choice
from .base import Cell

CELL_TYPES: dict[str, type[Cell]] = {}


def register_cell(cls: type[Cell]) -> type[Cell]:
    """Make ``cls`` rebuildable from :func:`cell_to_config` output (usable as a decorator)."""
    CELL_TYPES[cls.__name__] = cls
    return cls


def cell_to_config(cell: Cell) -> dict[str, Any]:
    """``{"type": name, "args": cell.config()}``; raises ValueError for unsaveable cells."""
    name = type(cell).__name__
    if CELL_TYPES.get(name) is not type(cell):
        raise ValueError(
            f"cell: {name} is not a registered cell type; call rnnlab.cells.register_cell({name})"
        )
    return {"type": name, "args": cell.config()}


def cell_from_config(config: dict[str, Any]) -> Cell:
    """Rebuild a cell from :func:`cell_to_config` output."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"config: expected {{'type': ..., 'args': {{...}}}}, got {config!r}")
    name = config["type"]
    check_choice(name, "config['type']", sorted(CELL_TYPES))
    args = dict(config.get("args", {}))
    if "cell" in args and isinstance(args["cell"], dict):
        args["cell"] = cell_from_config(args["cell"])
    return CELL_TYPES[name](**args)
