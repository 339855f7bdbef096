"""Resolving a checked config against its task: the ``"auto"`` values filled in, incompatible
combinations refused, and the forcing schedule and model spec it asks for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...layers.feedback import Alternating, FreeRunning, Mixed, TeacherForcing
from ..forcing import DECAYS, Forcing, ScheduledSampling
from ..tasks import TaskData
from .check import check_config
from .option import ConfigError


def resolve(config: Mapping[str, Any], task: TaskData) -> dict[str, dict[str, Any]]:
    """Fill the ``"auto"`` values from the task and check the combinations.

    Returns a config with concrete values only (what a run saves and a resume reuses).
    """
    c = check_config(config)
    m, s, f, b = c["model"], c["supervision"], c["forcing"], c["bptt"]
    name = c["task"]["name"]
    if "root" in task.params:
        c["task"]["options"]["root"] = task.params["root"]  # the data folder actually used
    if s["case"] == "auto":
        s["case"] = task.case
    elif s["case"] != task.case:
        raise ConfigError(
            f"supervision.case: the task {name!r} is case {task.case!r}; got {s['case']!r}"
        )
    if s["loss"] == "auto":
        s["loss"] = task.loss
    elif s["loss"] != task.loss:
        raise ConfigError(
            f"supervision.loss: the task {name!r} is trained with {task.loss!r} (its targets "
            f"are {'class indices' if task.tokens else 'values'}); got {s['loss']!r}"
        )
    seq2seq = task.case == "seq2seq"
    forcing_on = f["mode"] != "none"
    if m["feedback"] == "auto":
        if seq2seq or (task.next_step and not m["bidirectional"]):
            m["feedback"] = "input"
        elif forcing_on and m["cell"] == "JordanCell":
            m["feedback"] = "state"
        else:
            m["feedback"] = "none"
    if m["readout"] == "auto":
        m["readout"] = "none" if m["feedback"] == "state" else "linear"
    if forcing_on and m["feedback"] == "none":
        raise ConfigError(
            f"forcing.mode: {f['mode']!r} feeds outputs back, but the model has no output "
            f"feedback (model.feedback 'none'); use model.feedback 'state' with a JordanCell, "
            f"or 'input' on a next-step task (the task {name!r} is "
            f"{'one' if task.next_step else 'not one'})"
        )
    if m["feedback"] == "input" and not (task.next_step or seq2seq):
        raise ConfigError(
            f"model.feedback: 'input' feeds y(t-1) back as the next input, which needs a "
            f"next-step task (x(t) = r(t-1)); the task {name!r} is not one"
        )
    if m["feedback"] == "state" and s["case"] not in (1, 4):
        raise ConfigError(
            f"model.feedback: 'state' feeds the reference r(t-1) at every step, which needs a "
            f"target at every step (case 1 or 4); the task {name!r} is case {s['case']!r}"
        )
    if seq2seq and m["feedback"] != "input":
        raise ConfigError(
            f"model.feedback: an encoder-decoder's decoder feeds back its outputs, so it needs "
            f"'input'; got {m['feedback']!r}"
        )
    if m["bidirectional"] and (b["k1"] is not None or b["stream"]):
        raise ConfigError(
            "bptt.k1: truncated BPTT and streams need a causal model; model.bidirectional is "
            "true (the backward direction reads the whole sequence)"
        )
    if b["k2"] is not None:
        if b["k1"] is None:
            raise ConfigError(f"bptt.k2: needs bptt.k1 (k2 >= k1), got k2={b['k2']} alone")
        if b["k2"] < b["k1"]:
            raise ConfigError(f"bptt.k2: expected k2 >= k1={b['k1']}, got {b['k2']}")
    if seq2seq and b["k1"] is not None:
        raise ConfigError("bptt.k1: truncated BPTT is not supported for encoder-decoders")
    if b["stream"] and task.stream is None:
        raise ConfigError(
            f"bptt.stream: needs a text task (one long stream), got the task {name!r}"
        )
    if f["mode"] == "alternating" and f["teacher_steps"] + f["free_steps"] == 0:
        raise ConfigError("forcing.teacher_steps: expected a block of at least one step, got 0+0")
    if f["mode"] == "mixed" and f["p"] > 1.0:
        raise ConfigError(f"forcing.p: expected a probability in [0, 1], got {f['p']}")
    if f["mode"] == "scheduled":
        make_decay(c)  # raises on a bad k
    if c["optim"]["scheduler"] == "cosine" and c["optim"]["t_max"] is None:
        c["optim"]["t_max"] = c["train"]["steps"]
    return c


def make_decay(c: Mapping[str, Any]) -> Any:
    f = c["forcing"]
    cls = DECAYS[f["decay"]]
    kw: dict[str, Any] = {}
    if f["k"] is not None:
        kw["k"] = f["k"]
    if f["decay"] == "linear":
        kw.update(c=f["c"], eps_min=f["eps_min"])
    try:
        return cls(**kw)
    except ValueError as err:
        raise ConfigError(f"forcing.{err}") from None


def make_forcing(c: Mapping[str, Any]) -> Forcing | None:
    """The forcing schedule a resolved config asks for (None: no substitution)."""
    f = c["forcing"]
    mode, detach = f["mode"], bool(f["detach"])
    if mode == "none":
        return None
    if mode == "teacher":
        return TeacherForcing(detach=detach)
    if mode == "free":
        return FreeRunning(detach=detach)
    if mode == "alternating":
        return Alternating(teacher=f["teacher_steps"], free=f["free_steps"], detach=detach)
    if mode == "mixed":
        return Mixed(f["p"], per=f["per"], detach=detach)
    return ScheduledSampling(make_decay(c), per=f["per"], unit=f["unit"], detach=detach)


def model_spec(c: Mapping[str, Any], task: TaskData) -> dict[str, Any]:
    """The :class:`~rnnlab.training.SequenceModel` spec of a resolved config."""
    m = c["model"]
    return {
        "cell": m["cell"],
        "cell_options": dict(m["cell_options"]),
        "input_size": task.input_size,
        "hidden_size": m["hidden_size"],
        "output_size": task.output_size,
        "num_layers": m["num_layers"],
        "bidirectional": m["bidirectional"],
        "dropout": m["dropout"],
        "dropout_input": m["dropout_input"],
        "dropout_state": m["dropout_state"],
        "zoneout": dict(m["zoneout"]),
        "readout": m["readout"],
        "feedback": m["feedback"],
        "tokens": task.tokens,
        "seq2seq": task.case == "seq2seq",
    }
