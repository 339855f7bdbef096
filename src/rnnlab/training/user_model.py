"""A model of the user's own in the trainer (docs/design/0018).

The contract: any ``nn.Module`` called as ``model(x, lengths=None)`` with x (B, T, I) returns
y, either (B, T, O) (an output at every step) or (B, O) (one output per sequence, for the
one-label cases 2 and 3); O is the task's output size (classes for cross-entropy tasks, whose
outputs are logits).

What only a model that declares it gets (:class:`SequenceModel` today): forcing schedules
(output feedback), truncated BPTT, carried state across stream chunks, encoder-decoders. For a
user model these options are refused by name before any work (:func:`check_user_config`).
State-gradient clipping and the gradient monitor need rnnlab recurrent layers inside the model;
without any, state clipping is refused and the monitor records nothing.

A user model is rebuilt (for ``rnnlab eval``, ``generate``, ``analyze`` and resume) from
``model.factory``, an import path ``"package.module:function"`` called with
``model.factory_kwargs``; a factory parameter named ``input_size`` or ``output_size`` that the
kwargs do not give gets the task's size.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import Bidirectional, Recurrent
from .config import ConfigError
from .model import ModelOutput
from .tasks import TaskData


def check_user_config(c: Mapping[str, Any]) -> None:
    """Refuse the options that only a :class:`SequenceModel` has, naming the first one given."""
    checks = [
        ("forcing.mode", c["forcing"]["mode"], "none", "output feedback (forcing schedules)"),
        ("model.feedback", c["model"]["feedback"], ("auto", "none"), "output feedback"),
        ("bptt.k1", c["bptt"]["k1"], None, "truncated BPTT"),
        ("bptt.stream", c["bptt"]["stream"], False, "a state carried across stream chunks"),
        ("supervision.case", c["supervision"]["case"], ("auto", 1, 2, 3, 4), "encoder-decoders"),
    ]
    for name, value, ok, what in checks:
        allowed = ok if isinstance(ok, tuple) else (ok,)
        if value not in allowed:
            raise ConfigError(
                f"{name}: {what} applies to models that declare it (SequenceModel); a model of "
                f"your own (model.factory or Trainer(model=...)) is trained with "
                f"{name} {allowed[0]!r}, got {value!r}"
            )


def import_factory(path: Any, option: str = "model.factory") -> Any:
    """The callable named by ``"package.module:function"`` (``model.factory``,
    ``train.callback``); errors name ``option``."""
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise ConfigError(
            f"{option}: expected an import path 'package.module:function', got {path!r}"
        )
    mod_name, attr = path.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise ConfigError(
            f"{option}: could not import {mod_name!r} ({err}); is it on the Python path?"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{option}: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{option}: {path!r} is not callable ({type(obj).__name__})")
    return obj


def factory_kwargs(fn: Any, kwargs: Mapping[str, Any], task: TaskData) -> dict[str, Any]:
    """``kwargs`` plus the task's ``input_size``/``output_size`` where ``fn`` takes them."""
    out = dict(kwargs)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return out
    for name, value in (("input_size", task.input_size), ("output_size", task.output_size)):
        if name in params and name not in out:
            out[name] = value
    return out


def build_from_factory(c: Mapping[str, Any], task: TaskData) -> nn.Module:
    """Call ``model.factory`` with its kwargs; the result must be an ``nn.Module``."""
    m = c["model"]
    fn = import_factory(m["factory"])
    kw = factory_kwargs(fn, m["factory_kwargs"], task)
    try:
        net = fn(**kw)
    except TypeError as err:
        raise ConfigError(
            f"model.factory: {m['factory']}(**{kw!r}) failed: {err} (check model.factory_kwargs)"
        ) from None
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"model.factory: expected {m['factory']} to return an nn.Module, got "
            f"{type(net).__name__}"
        )
    return net


def has_recurrent_layers(net: nn.Module) -> bool:
    return any(isinstance(m, (Recurrent, Bidirectional)) for m in net.modules())


class UserModel(nn.Module):
    """Presents a user model to the loop as a model without output feedback: called like a
    :class:`SequenceModel`, it calls ``net(x, lengths=lengths)`` and returns the output as
    (B, T, O) (a (B, O) output is broadcast over the steps: only the masked last step counts).

    Example:
        >>> class Last(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.lin = nn.Linear(3, 2)
        ...     def forward(self, x, lengths=None):
        ...         return self.lin(x[:, -1])
        >>> m = UserModel(Last(), output_size=2, tokens=True)
        >>> tuple(m(torch.zeros(4, 5, 3)).output.shape)
        (4, 5, 2)
    """

    feedback = "none"
    seq2seq = False

    def __init__(self, net: nn.Module, *, output_size: int, tokens: bool) -> None:
        super().__init__()
        self.net = net
        self.output_size, self.tokens = output_size, tokens

    def forward(
        self, x: Tensor, state: Any = None, *, lengths: Tensor | None = None, **ignored: Any
    ) -> ModelOutput:
        y = self.net(x, lengths=lengths)
        return ModelOutput(self._steps(y, x), None, None)

    def _steps(self, y: Any, x: Tensor) -> Tensor:
        B, T = x.shape[0], x.shape[1]
        O = self.output_size
        if not isinstance(y, Tensor):
            raise TypeError(
                f"model: expected model(x, lengths=None) to return a tensor (B, T, O) or "
                f"(B, O), got {type(y).__name__}"
            )
        if y.dim() == 2 and tuple(y.shape) == (B, O):
            return y.unsqueeze(1).expand(B, T, O)
        if y.dim() == 3 and tuple(y.shape) == (B, T, O):
            return y
        raise ValueError(
            f"model: expected an output of shape (B, T, O) = {(B, T, O)} or (B, O) = {(B, O)} "
            f"(O: the task's output size), got {tuple(y.shape)}"
        )


def probe(model: UserModel, task: TaskData, case: Any, x: Tensor, lengths: Any) -> None:
    """One forward on a few validation sequences, before training: the output contract, and a
    (B, O) output refused for a task with a target at every step. Draws from no generator."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            y = model.net(x, lengths=lengths)
            model._steps(y, x)
    finally:
        model.train(was)
    if y.dim() == 2 and case not in (2, 3):
        raise ValueError(
            f"model: returns one output per sequence (B, O) = {tuple(y.shape)}, but the task "
            f"{task.name!r} is case {case!r}, with a target at every step; return (B, T, O)"
        )


def _user_model(self: Any, given: nn.Module | None) -> UserModel:
    """The trainer's user model (a :class:`~rnnlab.training.Trainer` method): the one given,
    or built by ``model.factory``; a model given together with a factory must have the
    factory's parameters (``rnnlab eval`` rebuilds it from there). Checked by a probe forward."""
    c, task = self.config, self.task
    net = given if given is not None else build_from_factory(c, task)
    if given is not None and c["model"]["factory"] is not None:
        with torch.random.fork_rng(devices=[]):
            ref = build_from_factory(c, task)
        mine = {k: tuple(v.shape) for k, v in given.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        if mine != theirs:
            odd = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
            raise ConfigError(
                f"model.factory: {c['model']['factory']} builds a model with other parameters "
                f"than the model given (first differences {odd}); eval could not rebuild it"
            )
    um = UserModel(net, output_size=task.output_size, tokens=task.tokens).to(self.device)
    self.model = um
    n = min(2, len(task.val))
    p = self._prepare(task.batch("val", torch.arange(n)))
    lengths = None if p["lengths"] is None else p["lengths"].to(self.device)
    probe(um, task, self.supervision.case, p["x"].to(self.device), lengths)
    return um
