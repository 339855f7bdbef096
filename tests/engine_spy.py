"""The engine tests' spy on the kernel extension (which ops a call looked up), and their
run of a layer on the engine or the reference loop with every gradient."""

from __future__ import annotations

from typing import Any

import torch

from rnnlab import engine
from rnnlab.engine import build


def spy_ops(monkeypatch: Any) -> list[str]:
    """Replace the loaded extension by a proxy that records every op name looked up on it;
    returns the (growing) list, so a test can prove that a kernel, not the reference, ran."""
    calls: list[str] = []
    real = build.ops()

    class Spy:
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setitem(build._state, "ops", Spy())
    return calls


def run_with_grads(layer: Any, x: Any, s0: Any, lengths: Any, use_engine: bool) -> list[Any]:
    """Output, final state, and the gradients of x, the initial state's first field and every
    parameter of ``layer`` for a fixed random loss on output and state, on the engine or under
    ``engine.disabled()`` (the reference loop); zoneout's draws seeded alike on both paths."""
    torch.manual_seed(1)
    layer.zero_grad()
    x = x.detach().requires_grad_(True)
    h0 = s0[0].detach().requires_grad_(True)
    state = s0._replace(**{s0._fields[0]: h0})
    if use_engine:
        y, s = layer(x, state, lengths=lengths)
    else:
        with engine.disabled():
            y, s = layer(x, state, lengths=lengths)
    g = torch.Generator().manual_seed(2)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    loss = loss + (s[0] * torch.randn(s[0].shape, generator=g, dtype=y.dtype)).sum()
    loss.backward()
    return [y, *s, x.grad, h0.grad] + [p.grad.clone() for p in layer.parameters()]
