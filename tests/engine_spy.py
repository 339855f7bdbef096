"""The engine tests' spy on the kernel extension: which ops a call looked up."""

from __future__ import annotations

from typing import Any

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
