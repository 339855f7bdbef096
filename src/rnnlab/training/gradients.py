"""Gradient tools: global clipping, and the per-time-step gradient ∂L/∂h(t) - clipped (Graves
2013) and measured (the lecture's vanishing / exploding picture on the user's own run).

Shapes: B batch, T time, n a state field's size.

:class:`StateGradientTap` puts a thin cell around every recurrent layer's cell while it is
active. The wrapper steps the real cell and hooks each new state tensor h(t) (every field: an
LSTM's h and c), so the backward pass hands it the *total* ∂L/∂h(t) - from the output at t and
from every later step. The hook records ‖∂L/∂h(t)‖ (over the batch and the field's units) and
may replace the gradient by a clipped one, which then flows on to earlier steps and to the
parameters. The wrapped cell has a type of its own, so the engine's fast kernels stand aside
and the reference loop runs.

References: A. Graves, "Generating sequences with recurrent neural networks", arXiv:1308.0850
(2013), section 2.1 (derivatives clipped to a range); R. Pascanu, T. Mikolov, Y. Bengio, "On
the difficulty of training recurrent neural networks", ICML 2013 (norm clipping).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_float
from ..cells.base import Cell
from ..layers import Bidirectional, Recurrent


def clip_gradients(
    parameters: Iterable[nn.Parameter],
    *,
    max_norm: float | None = None,
    max_value: float | None = None,
) -> float:
    """Clip in place: each entry to [-max_value, max_value], then the global norm to max_norm.

    Returns:
        The global gradient norm before clipping (inf or nan when a gradient is not finite).
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    grads = [p.grad.detach() for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2) for g in grads]))
    if max_value is not None:
        if max_value <= 0:
            raise ValueError(f"max_value: expected a positive number, got {max_value!r}")
        torch.nn.utils.clip_grad_value_(params, max_value)
    if max_norm is not None:
        if max_norm <= 0:
            raise ValueError(f"max_norm: expected a positive number, got {max_norm!r}")
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm)


class _TapCell(Cell):
    """Steps ``inner`` and hooks the new state (see :class:`StateGradientTap`)."""

    def __init__(self, inner: Cell, tap: StateGradientTap, key: str) -> None:
        super().__init__()
        self.inner = inner
        self._tap = [tap]  # a list: not a submodule
        self.key = key
        self.input_size = inner.input_size
        self.hidden_size = inner.hidden_size
        self.output_size = inner.output_size
        self.State = inner.State
        self.feedback_field = inner.feedback_field

    def state_sizes(self) -> dict[str, int]:
        return self.inner.state_sizes()

    def config(self) -> dict[str, Any]:
        return self.inner.config()

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        inner = self.inner
        y, new = inner.step(x, state) if type(inner).forward is Cell.forward else inner(x, state)
        tap = self._tap[0]
        t = tap._next_index(self.key)
        fields = getattr(new, "_fields", [str(k) for k in range(len(new))])
        for name, value in zip(fields, new):
            if isinstance(value, Tensor) and value.requires_grad:
                value.register_hook(tap._hook(f"{self.key}.{name}", t))
        return y, new


class StateGradientTap:
    """Record and/or clip ∂L/∂h(t) at every step of every recurrent layer of ``model``.

    Use as a context manager around the forward *and* backward pass::

        tap = StateGradientTap(model, clip_value=1.0)
        with tap:
            loss = criterion(model(x).output, r)
            loss.backward()
        tap.norms()   # {"core.cell.h": tensor (T,), ...}: ‖∂L/∂h(t)‖ before clipping

    Args:
        model: any module containing :class:`~rnnlab.layers.Recurrent` layers.
        record: keep the squared norms per step (read them with :meth:`norms`).
        clip_value: clip each element of ∂L/∂h(t) to [-clip_value, clip_value] (Graves 2013).
        clip_norm: rescale each sequence's ∂L/∂h(t) (per field) to norm <= clip_norm.
        scale: the backward gradients are ``scale`` times the ones to record and clip (e.g. the
            number of processes, when each process's loss is scaled up for DDP's averaging).

    Keys are ``"<module path of the layer>.<state field>"``. Indices count steps in the order
    they are run since :meth:`reset`; a bidirectional layer's backward half runs in reverse,
    and :meth:`norms` puts it back in time order (for sequences of full length).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        record: bool = True,
        clip_value: float | None = None,
        clip_norm: float | None = None,
        scale: float = 1.0,
    ) -> None:
        for name, v in (("clip_value", clip_value), ("clip_norm", clip_norm)):
            if v is not None:
                check_float(v, name, low=0.0, low_open=True, what="a positive number or None")
        self.model = model
        self.record = bool(record)
        self.clip_value = clip_value
        self.clip_norm = clip_norm
        self.scale = float(scale)
        self._layers: list[tuple[str, Recurrent]] = []
        self._backward: set[str] = set()
        for name, m in model.named_modules():
            if isinstance(m, Recurrent):
                self._layers.append((name or "layer", m))
            if isinstance(m, Bidirectional):
                self._backward.add(f"{name}.backward_layer" if name else "backward_layer")
        if not self._layers:
            raise ValueError(f"model: expected recurrent layers inside, got {type(model).__name__}")
        self._active = False
        self.reset()

    def reset(self) -> None:
        """Forget the recorded norms and restart the step count."""
        self._count: dict[str, int] = {}
        self._sq: dict[str, dict[int, Tensor]] = {}

    def __enter__(self) -> StateGradientTap:
        if self._active:
            raise RuntimeError("StateGradientTap: already active")
        for key, layer in self._layers:
            layer.cell = _TapCell(layer.cell, self, key)
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        for _, layer in self._layers:
            if isinstance(layer.cell, _TapCell):
                layer.cell = layer.cell.inner
        self._active = False

    def _next_index(self, key: str) -> int:
        t = self._count.get(key, 0)
        self._count[key] = t + 1
        return t

    def _hook(self, key: str, t: int) -> Any:
        def hook(g: Tensor) -> Tensor | None:
            true = g * self.scale if self.scale != 1.0 else g
            if self.record:
                sq = true.detach().float().pow(2).sum()
                store = self._sq.setdefault(key, {})
                store[t] = store[t] + sq if t in store else sq
            if self.clip_value is None and self.clip_norm is None:
                return None
            out = true
            if self.clip_value is not None:
                out = out.clamp(-self.clip_value, self.clip_value)
            if self.clip_norm is not None:
                n = torch.linalg.vector_norm(out, 2, dim=-1, keepdim=True)  # (B, 1)
                out = out * torch.clamp(self.clip_norm / (n + 1e-12), max=1.0)
            return out / self.scale if self.scale != 1.0 else out

        return hook

    def squared_norms(self) -> dict[str, Tensor]:
        """{key: (T,) float32 squared norms} in time order (zeros where no gradient came)."""
        out = {}
        for key, store in self._sq.items():
            steps = self._count.get(key.rsplit(".", 1)[0], len(store))
            v = torch.zeros(steps)
            for t, sq in store.items():
                v[t] = float(sq)
            layer = key.rsplit(".", 1)[0]
            if layer in self._backward:
                v = v.flip(0)
            out[key] = v
        return dict(sorted(out.items()))

    def norms(self) -> dict[str, Tensor]:
        """{key: (T,) ‖∂L/∂h(t)‖} per layer and state field, before any clipping."""
        return {k: v.sqrt() for k, v in self.squared_norms().items()}
