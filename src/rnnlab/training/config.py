"""The training configuration: one table of options behind the YAML file, the flags and --help.

A config is a mapping of sections (``task``, ``model``, ``supervision``, ``forcing``, ``bptt``,
``optim``, ``clip``, ``train``) to keys; :data:`OPTIONS` lists every key with its type, default,
choices and help, and is the single source of the YAML schema, the command-line flags and their
``--help`` text. :func:`check_config` rejects unknown sections, keys and values; :func:`resolve`
fills the ``"auto"`` values from the task and rejects incompatible combinations, before any file
is touched or any training starts.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..layers.feedback import Alternating, FreeRunning, Mixed, TeacherForcing
from .forcing import DECAYS, Forcing, ScheduledSampling
from .tasks import TASKS, TaskData


class ConfigError(ValueError):
    """A configuration problem: names the key, what was expected and what was given."""


@dataclass(frozen=True)
class Option:
    section: str
    key: str
    default: Any
    help: str
    kind: str  # int, float, bool, str, dict, case
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    low: float | None = None
    flag: str = ""

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


def _o(section: str, key: str, default: Any, kind: str, help: str, flag: str, **kw: Any) -> Option:
    return Option(section, key, default, help, kind, flag=flag, **kw)


OPTIONS: tuple[Option, ...] = (
    # task
    _o(
        "task",
        "name",
        "series",
        "str",
        "the task (see the list below)",
        "--task",
        choices=tuple(sorted(TASKS)),
    ),
    _o(
        "task",
        "length",
        20,
        "int",
        "sequence length T (window length for series and text)",
        "--length",
        low=1,
    ),
    _o(
        "task",
        "n_train",
        256,
        "int",
        "training sequences (data sets: the first n_train)",
        "--n-train",
        low=1,
    ),
    _o(
        "task",
        "n_val",
        64,
        "int",
        "validation sequences (data sets: the first n_val)",
        "--n-val",
        low=1,
    ),
    _o("task", "seed", 0, "int", "seed of the generated data", "--task-seed", low=0),
    _o(
        "task",
        "options",
        {},
        "dict",
        "task options KEY=VALUE (repeat; see the list below)",
        "--task-option",
    ),
    # model
    _o(
        "model",
        "cell",
        "LSTMCell",
        "str",
        "recurrent cell",
        "--cell",
        choices=("ElmanCell", "GRUCell", "JordanCell", "LSTMCell"),
    ),
    _o(
        "model",
        "cell_options",
        {},
        "dict",
        "cell options KEY=VALUE (repeat), e.g. variant=V, reset=before, activation=relu",
        "--cell-option",
    ),
    _o("model", "hidden_size", 32, "int", "hidden units H per layer", "--hidden-size", low=1),
    _o("model", "num_layers", 1, "int", "stacked recurrent layers", "--layers", low=1),
    _o("model", "bidirectional", False, "bool", "bidirectional layers", "--bidirectional"),
    _o("model", "dropout", 0.0, "float", "dropout between layers", "--dropout", low=0.0),
    _o(
        "model",
        "readout",
        "auto",
        "str",
        "output layer: linear (y = W h + b), none (the cell's output), auto (none with state "
        "feedback, else linear)",
        "--readout",
        choices=("auto", "linear", "none"),
    ),
    _o(
        "model",
        "feedback",
        "auto",
        "str",
        "output feedback: none, state (y(t-1) in the cell's state: Jordan), input "
        "(autoregressive), auto (input for next-step tasks, state for a Jordan cell with "
        "forcing, else none)",
        "--feedback",
        choices=("auto", "none", "state", "input"),
    ),
    # supervision
    _o(
        "supervision",
        "case",
        "auto",
        "case",
        "the lecture's unfolding case (1-4, seq2seq); auto: the task's",
        "--case",
        choices=("auto", 1, 2, 3, 4, "seq2seq"),
    ),
    _o(
        "supervision",
        "loss",
        "auto",
        "str",
        "loss; auto: the task's",
        "--loss",
        choices=("auto", "mse", "cross_entropy"),
    ),
    _o(
        "supervision",
        "steps",
        8,
        "int",
        "unfolding steps q for a static input (case 2 images)",
        "--unfold-steps",
        low=1,
    ),
    # forcing
    _o(
        "forcing",
        "mode",
        "none",
        "str",
        "what is fed back in training: none, teacher (reference r(t-1)), free (own y(t-1)), "
        "alternating (k teacher then m free steps), mixed (reference with probability p), "
        "scheduled (probability eps_i decaying over training)",
        "--forcing",
        choices=("none", "teacher", "free", "alternating", "mixed", "scheduled"),
    ),
    _o(
        "forcing",
        "teacher_steps",
        1,
        "int",
        "alternating: k teacher-forced steps per block",
        "--teacher-steps",
        low=0,
    ),
    _o(
        "forcing",
        "free_steps",
        1,
        "int",
        "alternating: m free-running steps per block",
        "--free-steps",
        low=0,
    ),
    _o(
        "forcing",
        "p",
        0.5,
        "float",
        "mixed: probability of feeding the reference",
        "--feed-prob",
        low=0.0,
    ),
    _o(
        "forcing",
        "decay",
        "inverse_sigmoid",
        "str",
        "scheduled: eps_i = max(eps_min, k - c i) (linear), k^i (exponential), "
        "k / (k + exp(i / k)) (inverse_sigmoid)",
        "--decay",
        choices=("linear", "exponential", "inverse_sigmoid"),
    ),
    _o(
        "forcing",
        "k",
        None,
        "float",
        "scheduled: k (none: 1.0 linear, 0.999 exponential, 100 inverse_sigmoid)",
        "--decay-k",
        nullable=True,
    ),
    _o("forcing", "c", 0.001, "float", "scheduled, linear: slope c", "--decay-c", low=0.0),
    _o(
        "forcing", "eps_min", 0.0, "float", "scheduled, linear: floor eps_min", "--eps-min", low=0.0
    ),
    _o(
        "forcing",
        "per",
        "step",
        "str",
        "mixed/scheduled: one coin per step or per sequence",
        "--coin-per",
        choices=("step", "sequence"),
    ),
    _o(
        "forcing",
        "unit",
        "step",
        "str",
        "scheduled: i counts training steps or epochs",
        "--decay-unit",
        choices=("step", "epoch"),
    ),
    _o("forcing", "detach", True, "bool", "fed-back model outputs carry no gradient", "--detach"),
    _o(
        "forcing",
        "warmup",
        0,
        "int",
        "the first W steps always feed the reference (a burn-in; also in the free-running "
        "validation)",
        "--warmup",
        low=0,
    ),
    _o(
        "forcing",
        "token_feedback",
        "argmax",
        "str",
        "token models: feed back the argmax or a sample of y(t-1)",
        "--token-feedback",
        choices=("argmax", "sample"),
    ),
    # bptt
    _o(
        "bptt",
        "k1",
        None,
        "int",
        "truncated BPTT: update every k1 steps (none: full BPTT)",
        "--k1",
        nullable=True,
        low=1,
    ),
    _o(
        "bptt",
        "k2",
        None,
        "int",
        "truncated BPTT: backpropagate k2 >= k1 steps (none: k1)",
        "--k2",
        nullable=True,
        low=1,
    ),
    _o(
        "bptt",
        "stream",
        False,
        "bool",
        "text: read parallel streams in chunks of task.length, carrying the state",
        "--stream",
    ),
    # optim
    _o(
        "optim",
        "name",
        "adam",
        "str",
        "optimizer",
        "--optimizer",
        choices=("adam", "adamw", "sgd", "rmsprop"),
    ),
    _o("optim", "lr", 0.003, "float", "learning rate", "--lr", low=0.0),
    _o("optim", "weight_decay", 0.0, "float", "weight decay", "--weight-decay", low=0.0),
    _o("optim", "momentum", 0.0, "float", "momentum (sgd, rmsprop)", "--momentum", low=0.0),
    _o(
        "optim",
        "scheduler",
        "none",
        "str",
        "learning-rate schedule, stepped every update",
        "--scheduler",
        choices=("none", "step", "exponential", "cosine"),
    ),
    _o(
        "optim",
        "step_size",
        1000,
        "int",
        "step scheduler: updates between decays",
        "--step-size",
        low=1,
    ),
    _o(
        "optim",
        "gamma",
        0.5,
        "float",
        "step/exponential scheduler: decay factor",
        "--gamma",
        low=0.0,
    ),
    _o(
        "optim",
        "t_max",
        None,
        "int",
        "cosine scheduler: period (none: train.steps)",
        "--t-max",
        nullable=True,
        low=1,
    ),
    # clip
    _o(
        "clip",
        "grad_norm",
        1.0,
        "float",
        "clip the global gradient norm (none: off)",
        "--clip-norm",
        nullable=True,
        low=0.0,
    ),
    _o(
        "clip",
        "grad_value",
        None,
        "float",
        "clip each gradient entry to [-v, v] (none: off)",
        "--clip-value",
        nullable=True,
        low=0.0,
    ),
    _o(
        "clip",
        "state_value",
        None,
        "float",
        "clip each entry of dL/dh(t) to [-v, v] at every step (Graves 2013; none: off)",
        "--clip-state-value",
        nullable=True,
        low=0.0,
    ),
    _o(
        "clip",
        "state_norm",
        None,
        "float",
        "clip each sequence's dL/dh(t) to this norm at every step (none: off)",
        "--clip-state-norm",
        nullable=True,
        low=0.0,
    ),
    # train
    _o(
        "train",
        "steps",
        300,
        "int",
        "parameter updates (a batch ends the run once reached)",
        "--steps",
        low=1,
    ),
    _o(
        "train",
        "batch_size",
        32,
        "int",
        "global batch size (split over processes)",
        "--batch-size",
        low=1,
    ),
    _o("train", "eval_every", 100, "int", "updates between validations", "--eval-every", low=1),
    _o(
        "train",
        "log_every",
        10,
        "int",
        "updates between training-loss log lines",
        "--log-every",
        low=1,
    ),
    _o(
        "train",
        "checkpoint_every",
        100,
        "int",
        "updates between checkpoints",
        "--checkpoint-every",
        low=1,
    ),
    _o("train", "keep", 3, "int", "checkpoints kept (plus best.safetensors)", "--keep", low=1),
    _o(
        "train",
        "patience",
        None,
        "int",
        "early stopping: validations without improvement (none: off)",
        "--patience",
        nullable=True,
        low=1,
    ),
    _o(
        "train",
        "min_delta",
        0.0,
        "float",
        "early stopping: smallest improvement",
        "--min-delta",
        low=0.0,
    ),
    _o(
        "train",
        "divergence_factor",
        1e6,
        "float",
        "a finite training loss above this factor times the lowest loss so far stops the run "
        "as diverged (like NaN), keeping the last good checkpoint",
        "--divergence-factor",
        low=1.0,
    ),
    _o(
        "train",
        "monitor",
        "val_loss",
        "str",
        "early stopping and best checkpoint: val_loss (free-running for feedback models) or "
        "val_forced_loss",
        "--monitor",
        choices=("val_loss", "val_forced_loss"),
    ),
    _o(
        "train",
        "grad_monitor_every",
        50,
        "int",
        "updates between recordings of the per-step gradient norms |dL/dh(t)| (0: never)",
        "--grad-monitor-every",
        low=0,
    ),
    _o(
        "train",
        "seed",
        0,
        "int",
        "seed of the model's initialisation and of training",
        "--seed",
        low=0,
    ),
    _o("train", "device", "auto", "str", "cpu, cuda, cuda:N, mps or auto", "--device"),
    _o("train", "progress", True, "bool", "show a progress bar", "--progress"),
    _o(
        "train",
        "plots",
        True,
        "bool",
        "draw loss.png and grad_norms.png into the run directory when training ends",
        "--plots",
    ),
)

SECTIONS = tuple(dict.fromkeys(o.section for o in OPTIONS))
BY_NAME = {o.name: o for o in OPTIONS}
# keys that may change when a run is resumed (the rest must match the saved config)
RESUMABLE = {
    "train.steps",
    "train.eval_every",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep",
    "train.patience",
    "train.min_delta",
    "train.divergence_factor",
    "train.device",
    "train.progress",
    "train.grad_monitor_every",
    "train.plots",
}


def default_config() -> dict[str, dict[str, Any]]:
    """Every option at its default, by section."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for o in OPTIONS:
        out[o.section][o.key] = copy.deepcopy(o.default)
    return out


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_value(o: Option, value: Any) -> Any:
    """``value`` checked against option ``o`` (ints accepted for floats)."""
    if value is None:
        if o.nullable:
            return None
        raise ConfigError(f"{o.name}: expected a value ({o.kind}), got null")
    if o.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{o.name}: expected true or false, got {value!r}")
        return value
    if o.kind == "dict":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{o.name}: expected a mapping of names to values, got {value!r}")
        return dict(value)
    if o.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{o.name}: expected an int, got {value!r}")
    if o.kind == "float":
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; a number written as text is a number
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(
                    f"{o.name}: expected a number, got the string {value!r} (write numbers "
                    "like 0.001 or 1.0e-3)"
                ) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{o.name}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{o.name}: expected a finite number, got {value!r}")
    if o.kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{o.name}: expected a string, got {value!r}")
    if o.choices is not None and (value not in o.choices or isinstance(value, bool)):
        raise ConfigError(
            f"{o.name}: expected one of {list(o.choices)}, got {value!r}"
            + _suggest(value, o.choices)
        )
    if o.low is not None and value < o.low:
        raise ConfigError(f"{o.name}: expected a value >= {o.low:g}, got {value!r}")
    return value


def check_config(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Defaults merged with ``config``; unknown sections, keys and bad values are errors."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a mapping of sections, got {type(config).__name__}")
    out = default_config()
    for section, values in config.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{section}: unknown config section; expected one of {list(SECTIONS)}"
                + _suggest(section, SECTIONS)
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section}: expected a mapping of keys, got {type(values).__name__}")
        for key, value in values.items():
            name = f"{section}.{key}"
            if name not in BY_NAME:
                keys = [o.key for o in OPTIONS if o.section == section]
                raise ConfigError(
                    f"{name}: unknown config key; expected one of {keys}" + _suggest(key, keys)
                )
            out[section][key] = check_value(BY_NAME[name], value)
    return out


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file (``yaml.safe_load``: no code runs)."""
    import yaml

    if os.path.isdir(path):
        raise ConfigError(f"config: expected a YAML file, got {str(path)!r}, which is a directory")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config: expected a YAML file, got {str(path)!r} (no such file)")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"config: {str(path)!r} is not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config: expected a mapping of sections in {str(path)!r}, got {type(data).__name__}"
        )
    return dict(data)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Section-wise merge (override wins)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


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
        "readout": m["readout"],
        "feedback": m["feedback"],
        "tokens": task.tokens,
        "seq2seq": task.case == "seq2seq",
    }


def diff(saved: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Option names whose values differ between two checked configs."""
    out = []
    for o in OPTIONS:
        if saved.get(o.section, {}).get(o.key) != given.get(o.section, {}).get(o.key):
            out.append(o.name)
    return out
