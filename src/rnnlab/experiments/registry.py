"""The experiment registry behind ``rnnlab run``.

An experiment is a function ``run(ctx: RunContext) -> list[Claim]`` registered under a name
with :func:`experiment`. It writes its figures into ``ctx.out_dir`` and returns one
:class:`Claim` per measured statement; ``rnnlab run`` writes them to ``claims.json``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["pass", "fail", "info"]


@dataclass
class Claim:
    """One row of ``claims.json``: what was claimed, what was measured, and whether it held."""

    experiment: str
    claim: str
    measured: Any
    expected: Any
    source: str
    status: Status
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunContext:
    """What an experiment gets: where to write, which version to run, a seed, a progress hook."""

    name: str
    out_dir: Path
    full: bool = False
    seed: int = 0
    tour: bool = False  # run as part of the tour: experiments may choose a shorter version
    progress: Callable[[str], None] = print
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class Experiment:
    name: str
    description: str
    run: Callable[[RunContext], list[Claim]]
    order: int = 100  # position in the tour
    tour: bool = True  # part of `rnnlab run tour`


EXPERIMENTS: dict[str, Experiment] = {}

# Modules whose import registers experiments; one per experiment family.
_MODULES: list[str] = [
    "rnnlab.experiments.maps",
    "rnnlab.experiments.lecture",
    "rnnlab.experiments.architectures",
    "rnnlab.experiments.cases",
    "rnnlab.experiments.forcing",
    "rnnlab.experiments.flipflop",
    "rnnlab.experiments.henon",
    "rnnlab.experiments.rcnn",
    "rnnlab.experiments.speed",
]


def experiment(
    name: str, description: str, *, order: int = 100, tour: bool = True
) -> Callable[[Callable[[RunContext], list[Claim]]], Callable[[RunContext], list[Claim]]]:
    """Register ``run(ctx) -> list[Claim]`` as ``rnnlab run NAME`` (and in the tour)."""

    def deco(fn: Callable[[RunContext], list[Claim]]) -> Callable[[RunContext], list[Claim]]:
        EXPERIMENTS[name] = Experiment(name, description, fn, order, tour)
        return fn

    return deco


def load_all() -> dict[str, Experiment]:
    for mod in _MODULES:
        importlib.import_module(mod)
    return EXPERIMENTS
