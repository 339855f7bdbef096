"""Callbacks: code of the user's own that the trainer calls as a run goes.

A callback is any object with some of the methods ``on_step(trainer, info)`` (after every
training batch), ``on_eval(trainer, metrics)`` (after every validation), ``on_checkpoint(trainer,
path)`` (after every checkpoint written) and ``on_end(trainer, result)`` (when :meth:`fit`
returns); a missing method is skipped, so subclassing :class:`Callback` is optional. A callback
stops the run with ``trainer.request_stop("reason")``: the run checkpoints and ends after the
batch, and :attr:`FitResult.stopped` is the reason.

A callback with ``state_dict()`` and ``load_state_dict(state)`` has its state saved in every
checkpoint (under its position and class name) and put back on resume. The state is a mapping of
JSON values and tensors.

Two callbacks are built in and always present: :class:`EarlyStopping` (``train.patience``,
``train.min_delta``, ``train.monitor``; it also decides ``best.safetensors``) and
:class:`GradMonitor` (writes the per-step gradient norms ‖∂L/∂h(t)‖ that the step recorded
every ``train.grad_monitor_every`` updates to ``grad_norms.jsonl``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .faults import FitResult
    from .trainer import Trainer

HOOKS = ("on_step", "on_eval", "on_checkpoint", "on_end")


class Callback:
    """A base with every hook doing nothing (optional: any object with some hooks works).

    Example:
        >>> class Count(Callback):
        ...     def __init__(self):
        ...         self.steps = 0
        ...     def on_step(self, trainer, info):
        ...         self.steps += 1
        ...     def state_dict(self):
        ...         return {"steps": self.steps}
        ...     def load_state_dict(self, state):
        ...         self.steps = state["steps"]
        >>> c = Count(); c.on_step(None, {"step": 1}); c.state_dict()
        {'steps': 1}
    """

    def on_step(self, trainer: Trainer, info: Mapping[str, Any]) -> None:
        """After a training batch: ``info`` has step, epoch, loss, grad_norm, epsilon."""

    def on_eval(self, trainer: Trainer, metrics: Mapping[str, float]) -> None:
        """After a validation: ``metrics`` has loss, forced_loss (and accuracy for
        cross-entropy tasks)."""

    def on_checkpoint(self, trainer: Trainer, path: Any) -> None:
        """After a checkpoint was written to ``path`` (rank 0; None on the other ranks)."""

    def on_end(self, trainer: Trainer, result: FitResult) -> None:
        """When :meth:`~rnnlab.training.Trainer.fit` returns ``result``."""


class EarlyStopping(Callback):
    """Track the monitored validation loss; stop after ``patience`` validations without an
    improvement of more than ``min_delta`` (None: never stop). ``improved`` says whether the
    last validation was a new best (the trainer then writes ``best.safetensors``).

    Example:
        >>> es = EarlyStopping(patience=2, monitor="loss")
        >>> class T:
        ...     step, stop = 0, None
        ...     def request_stop(self, why): self.stop = why
        >>> t = T()
        >>> for t.step, v in enumerate([3.0, 2.0, 2.5, 2.4]):
        ...     es.on_eval(t, {"loss": v})
        >>> es.best, es.best_step, es.bad_evals, t.stop
        (2.0, 1, 2, 'early_stopping')
    """

    def __init__(
        self, patience: int | None = None, min_delta: float = 0.0, monitor: str = "loss"
    ) -> None:
        self.patience, self.min_delta, self.monitor = patience, min_delta, monitor
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.improved = False

    def on_eval(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        value = metrics[self.monitor]
        self.improved = self.best is None or value < self.best - self.min_delta
        if self.improved:
            self.best, self.best_step, self.bad_evals = value, trainer.step, 0
        else:
            self.bad_evals += 1
        if self.patience is not None and self.bad_evals >= self.patience:
            trainer.request_stop("early_stopping")

    # its state travels in the checkpoint's progress (as before callbacks existed)
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_step = state["best"], state["best_step"]
        self.bad_evals = int(state["bad_evals"])


class GradMonitor(Callback):
    """Append the per-step gradient norms a batch recorded (``info["grad_norms"]``) to the run's
    ``grad_norms.jsonl`` (rank 0, with a run directory).

    Example:
        >>> GradMonitor().on_step(None, {"step": 1, "grad_norms": []})  # nothing recorded
    """

    def on_step(self, trainer: Any, info: Mapping[str, Any]) -> None:
        rows = info.get("grad_norms") or []
        if rows:
            trainer._guarded(lambda: trainer.writer.grad_norms(rows), trainer._last_ckpt)


def check_callbacks(callbacks: Any) -> list[Any]:
    """The callbacks as a list; anything without a single hook is refused (by its position)."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, Sequence) or isinstance(callbacks, (str, bytes)):
        raise TypeError(
            f"callbacks: expected a list of callback objects, got {type(callbacks).__name__}"
        )
    out = list(callbacks)
    for i, cb in enumerate(out):
        if not any(callable(getattr(cb, h, None)) for h in HOOKS):
            raise TypeError(
                f"callbacks[{i}]: expected an object with at least one of {list(HOOKS)}, got "
                f"{type(cb).__name__}"
            )
        has = [callable(getattr(cb, m, None)) for m in ("state_dict", "load_state_dict")]
        if any(has) and not all(has):
            raise TypeError(
                f"callbacks[{i}]: {type(cb).__name__} has one of state_dict/load_state_dict; "
                "expected both or neither"
            )
    return out


def callback_key(i: int, cb: Any) -> str:
    return f"{i}:{type(cb).__name__}"


def callback_states(callbacks: Sequence[Any]) -> dict[str, Any]:
    """``{position:class: state}`` of the callbacks that have a state."""
    return {
        callback_key(i, cb): cb.state_dict()
        for i, cb in enumerate(callbacks)
        if callable(getattr(cb, "state_dict", None))
    }


def load_callback_states(callbacks: Sequence[Any], states: Mapping[str, Any] | None) -> None:
    """Put saved states back; a callback with a state that the checkpoint lacks is refused."""
    states = states or {}
    for i, cb in enumerate(callbacks):
        if not callable(getattr(cb, "load_state_dict", None)):
            continue
        key = callback_key(i, cb)
        if key not in states:
            raise ValueError(
                f"callbacks[{i}]: the checkpoint holds no state for {key!r} (it has "
                f"{sorted(states)}); resume with the callbacks the run was started with"
            )
        cb.load_state_dict(states[key])


def call(callbacks: Sequence[Any], hook: str, trainer: Any, arg: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if callable(fn):
            fn(trainer, arg)
