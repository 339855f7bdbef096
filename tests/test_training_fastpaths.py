"""Spy tests: the trainer runs the engine under every schedule where the computation is
engine-supported, the parallel path under teacher-forced Jordan training, and nothing of the
engine under RNNLAB_ENGINE=0 (the kernels' calls counted by wrapping what the dispatcher looks
up; the fallbacks counted by rnnlab.layers.dispatch.FALLBACKS)."""

from __future__ import annotations

from collections import Counter

import pytest

from rnnlab import engine
from rnnlab.engine import build
from rnnlab.layers import dispatch
from rnnlab.training import Trainer

pytestmark = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

STEPS = 3


class Spy:
    """Counts the calls of every kernel the dispatcher takes, by kind."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        for kind, name in (
            ("kernel", "lookup"),
            ("parallel", "lookup_teacher_forced"),
            ("masked", "lookup_masked"),
        ):
            monkeypatch.setattr(engine, name, self._wrap(kind, getattr(engine, name)))
        dispatch.FALLBACKS.clear()

    def _wrap(self, kind: str, lookup):  # type: ignore[no-untyped-def]
        def counted_lookup(cell):  # type: ignore[no-untyped-def]
            k = lookup(cell)
            if k is None:
                return None

            def counted(*a):  # type: ignore[no-untyped-def]
                res = k(*a)
                if res is not None:
                    self.calls[kind] += 1
                return res

            return counted

        return counted_lookup


def _train(cell: str, mode: str, task: str = "flipflop", **train) -> Trainer:  # type: ignore[no-untyped-def]
    opts = {"series": {"name": "series", "length": 12, "n_train": 16, "n_val": 8}}
    cfg = {
        "task": opts.get(task, {"name": task, "length": 12, "n_train": 16, "n_val": 8}),
        "model": {"cell": cell, "hidden_size": 6},
        "forcing": {"mode": mode},
        "train": {
            "steps": STEPS,
            "batch_size": 8,
            "progress": False,
            "eval_every": 1000,
            "plots": False,
            "grad_monitor_every": 0,
            **train,
        },
    }
    t = Trainer(cfg, None)
    t.fit()
    return t


def test_teacher_forced_jordan_trains_on_the_parallel_path(monkeypatch) -> None:
    spy = Spy(monkeypatch)
    t = _train("JordanCell", "teacher")
    assert t.model.feedback == "state"
    # every training step on the parallel path; the final evaluation: its forced loss on the
    # parallel path, its free-running loss on the masked kernel
    assert spy.calls == Counter({"parallel": STEPS + 1, "masked": 1})
    assert not dispatch.FALLBACKS


@pytest.mark.parametrize("mode", ["free", "alternating", "mixed", "scheduled"])
def test_jordan_under_every_mixture_trains_on_the_masked_kernel(monkeypatch, mode) -> None:
    spy = Spy(monkeypatch)
    _train("JordanCell", mode)
    assert spy.calls == Counter({"masked": STEPS + 1, "parallel": 1})
    assert not dispatch.FALLBACKS


@pytest.mark.parametrize("cell", ["JordanCell", "GRUCell", "LSTMCell"])
def test_no_forcing_trains_on_the_kernel(monkeypatch, cell) -> None:
    spy = Spy(monkeypatch)
    _train(cell, "none")
    assert spy.calls == Counter({"kernel": STEPS + 1})
    assert not dispatch.FALLBACKS


def test_input_feedback(monkeypatch) -> None:
    """A next-step model feeding its readout back as input: teacher forcing is one plain run of
    the core (the kernel); a mixture and free running are one rnnlab::fed_input call per chunk
    for a one-layer GRU (tests/test_engine_fed_input.py counts those); a two-layer model is the
    model-level loop, the documented, counted fallback."""
    spy = Spy(monkeypatch)
    t = _train("GRUCell", "teacher", task="series")
    assert t.model.feedback == "input"
    # training and the forced evaluation: one call each; the free-running evaluation: fed_input
    assert spy.calls["kernel"] == STEPS + 1
    assert not dispatch.FALLBACKS
    spy = Spy(monkeypatch)
    _train("GRUCell", "mixed", task="series")
    assert not dispatch.FALLBACKS
    spy = Spy(monkeypatch)
    opts = {"series": {"name": "series", "length": 12, "n_train": 16, "n_val": 8}}
    cfg = {
        "task": opts["series"],
        "model": {"cell": "GRUCell", "hidden_size": 6, "num_layers": 2},
        "forcing": {"mode": "mixed"},
        "train": {"steps": STEPS, "batch_size": 8, "progress": False, "eval_every": 1000,
                  "plots": False, "grad_monitor_every": 0},
    }  # fmt: skip
    Trainer(cfg, None).fit()
    assert dispatch.FALLBACKS["model input feedback (layers)"] == STEPS + 1


def test_state_clipping_is_the_counted_reference_loop(monkeypatch) -> None:
    """clip.state_value wraps the cells (StateGradientTap): the reference loop, counted; the
    cost is measured in benchmarks/bench_trainer.py (docs/design note on the fast paths)."""
    spy = Spy(monkeypatch)
    cfg_clip = {"state_value": 1.0}
    t = Trainer(
        {
            "task": {"name": "flipflop", "length": 12, "n_train": 16, "n_val": 8},
            "model": {"cell": "JordanCell", "hidden_size": 6},
            "forcing": {"mode": "teacher"},
            "clip": cfg_clip,
            "train": {
                "steps": STEPS,
                "batch_size": 8,
                "progress": False,
                "eval_every": 1000,
                "plots": False,
                "grad_monitor_every": 0,
            },
        },  # fmt: skip
        None,
    )
    t.fit()
    assert spy.calls["parallel"] == 1  # the evaluation only
    assert dispatch.FALLBACKS["no masked kernel for _TapCell"] == STEPS


@pytest.mark.parametrize("how", ["env", "context"])
def test_engine_off_means_no_engine_call(monkeypatch, how) -> None:
    spy = Spy(monkeypatch)
    if how == "env":
        monkeypatch.setenv("RNNLAB_ENGINE", "0")
        for mode in ("teacher", "mixed"):
            _train("JordanCell", mode)
        _train("GRUCell", "none")
    else:
        with engine.disabled():
            for mode in ("teacher", "mixed"):
                _train("JordanCell", mode)
            _train("GRUCell", "none")
    assert sum(spy.calls.values()) == 0
