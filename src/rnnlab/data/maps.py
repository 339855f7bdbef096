"""The lecture's maps h(t+1) = f(h(t)), and any user map, as sequence data.

Shapes: N orbits, T steps, D state dimension; inputs and targets (N, T, D).

Named maps (:data:`MAPS`):

* ``"stable_linear"``: h(t+1) = 0.8 h(t) + 1, globally stable fixed point h* = 5 (lecture);
* ``"unstable_linear"``: h(t+1) = 1.4 h(t) + 1, unstable fixed point h* = -2.5 (lecture);
* ``"logistic"``: h(t+1) = r h(t) (1 - h(t)), r = 3.9 (chaotic);
* ``"henon"``: (x, y) -> (1 - a x^2 + y, b x), a = 1.4, b = 0.3 (Hénon 1976, D = 2).

A user map is any callable taking and returning a (B, D) float64 tensor.

:class:`MapSequences` has two modes:

* ``"initial"``, lecture case 1 (input at the first step only, target at every step):
  x(0) = h(0), x(t > 0) = 0, targets h(1), ..., h(T). "You only have input at the beginning, but
  the desired output at different time is different."
* ``"one_step"``, lecture case 4 (time-varying input, target at every step): x(t) = h(t),
  targets h(t + 1) (one-step prediction; used with teacher forcing).

Trivial baseline: persistence, predicting the last known state: h(0) at every step in
``"initial"`` mode, h(t) for h(t + 1) in ``"one_step"`` mode. For a linear map a h + b started
uniformly on [lo, hi], h(t) - h(0) = (a^t - 1)(h(0) - h*), so in ``"initial"`` mode its MSE is
mean_t (a^t - 1)^2 * E[(h(0) - h*)^2].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_float, check_int
from ._checks import make_rng, seed_value
from .base import SequenceTask

Map = Callable[[Tensor], Tensor]


def linear_map(a: float, b: float) -> Map:
    """h -> a h + b (any D)."""
    a = check_float(a, "a")
    b = check_float(b, "b")
    return lambda h: a * h + b


def logistic_map(r: float = 3.9) -> Map:
    """h -> r h (1 - h), D = 1; chaotic for r near 4, orbits stay in [0, 1] for 0 <= r <= 4."""
    r = check_float(r, "r", low=0.0, high=4.0)
    return lambda h: r * h * (1.0 - h)


def henon_map(a: float = 1.4, b: float = 0.3) -> Map:
    """(x, y) -> (1 - a x^2 + y, b x), D = 2."""
    a = check_float(a, "a")
    b = check_float(b, "b")

    def f(h: Tensor) -> Tensor:
        x, y = h[..., 0], h[..., 1]
        return torch.stack([1.0 - a * x * x + y, b * x], dim=-1)

    return f


# name -> (map, state dimension D, default box of initial states, parameters)
MAPS: dict[str, tuple[Map, int, tuple[float, float], dict[str, float]]] = {
    "stable_linear": (linear_map(0.8, 1.0), 1, (-10.0, 10.0), {"a": 0.8, "b": 1.0}),
    "unstable_linear": (linear_map(1.4, 1.0), 1, (-3.0, -2.0), {"a": 1.4, "b": 1.0}),
    "logistic": (logistic_map(3.9), 1, (0.05, 0.95), {"r": 3.9}),
    "henon": (henon_map(1.4, 0.3), 2, (-0.1, 0.1), {"a": 1.4, "b": 0.3}),
}


def iterate_map(f: Map, h0: Tensor, steps: int, *, argument: str = "f") -> Tensor:
    """The orbit of ``f`` from each initial state: (B, D) -> (B, steps + 1, D), h0 included.

    Raises ValueError if ``f`` changes the shape or the orbit leaves the floating-point range.
    """
    if not callable(f):
        raise TypeError(f"{argument}: expected a callable map or a name, got {type(f).__name__}")
    if not isinstance(h0, Tensor) or h0.dim() != 2:
        got = tuple(h0.shape) if isinstance(h0, Tensor) else type(h0).__name__
        raise ValueError(f"h0: expected a tensor (B, D), got {got}")
    steps = check_int(steps, "steps", low=0)
    orbit = [h0]
    h = h0
    for k in range(steps):
        h = f(h)
        if not isinstance(h, Tensor) or h.shape != h0.shape:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(
                f"{argument}: expected to map (B, D) = {tuple(h0.shape)} to the "
                f"same shape, got {got}"
            )
        if not torch.isfinite(h).all():
            raise ValueError(
                f"{argument}: the orbit left the floating-point range at step {k + 1}; "
                "choose initial states in the basin of attraction or fewer steps"
            )
        orbit.append(h)
    return torch.stack(orbit, dim=1)  # (B, steps + 1, D)


class MapSequences(SequenceTask):
    """Orbits of a map as sequences (see the module docstring for the modes and baseline).

    Args:
        f: a name from :data:`MAPS` or a callable (B, D) -> (B, D) on float64 tensors.
        n: number of orbits N.
        length: T steps (targets h(1), ..., h(T)).
        mode: ``"initial"`` (case 1) or ``"one_step"`` (case 4).
        initial: a box (low, high) for uniform initial states, or an (N, D) tensor of them;
            default: the named map's box, or (-1, 1) for a callable.
        dim: D for a callable with a box (default 1); named maps know theirs.
        seed: int or ``numpy.random.Generator`` (for the initial states).

    Items: ``{"x": (T, D), "y": (T, D)}`` float32. ``orbits``: (N, T + 1, D) float64.

    Example:
        >>> data = MapSequences("stable_linear", 16, 60)
        >>> data.y[:, -1].sub(5).abs().max() < 1e-2  # every orbit has reached h* = 5
        tensor(True)
    """

    case = 1
    loss = "mse"
    baseline = "persistence (the last known state)"

    def __init__(
        self,
        f: str | Map,
        n: int,
        length: int,
        *,
        mode: str = "initial",
        initial: tuple[float, float] | Tensor | None = None,
        dim: int | None = None,
        seed: Any = 0,
    ) -> None:
        n = check_int(n, "n", low=1)
        length = check_int(length, "length", low=1)
        mode = check_choice(mode, "mode", ("initial", "one_step"))
        params: dict[str, Any] = {}
        if isinstance(f, str):
            check_choice(f, "f", tuple(MAPS))
            fn, d, box, map_params = MAPS[f]
            if dim is not None and dim != d:
                raise ValueError(f"dim: expected {d} for the map {f!r}, got {dim}")
            params.update(map=f, **map_params)
        elif callable(f):
            fn, box = f, (-1.0, 1.0)
            d = 1 if dim is None else check_int(dim, "dim", low=1)
            params.update(map=getattr(f, "__name__", type(f).__name__))
        else:
            raise TypeError(f"f: expected a map name or a callable, got {type(f).__name__}")

        if isinstance(initial, Tensor):
            if initial.dim() != 2 or initial.shape != (n, d):
                raise ValueError(
                    f"initial: expected a tensor ({n}, {d}), got {tuple(initial.shape)}"
                )
            h0 = initial.to(torch.float64)
            params["initial"] = "given"
        else:
            if initial is not None:
                if not (isinstance(initial, tuple | list) and len(initial) == 2):
                    raise TypeError(
                        f"initial: expected (low, high) or an (N, D) tensor, got {initial!r}"
                    )
                lo = check_float(initial[0], "initial[0]")
                hi = check_float(initial[1], "initial[1]", low=lo)
                box = (lo, hi)
            rng = make_rng(seed)
            h0 = torch.from_numpy(rng.uniform(box[0], box[1], size=(n, d)))  # (N, D) float64
            params["initial"] = list(box)
        self.orbits = iterate_map(fn, h0, length)  # (N, T + 1, D)
        if mode == "initial":
            x = torch.zeros_like(self.orbits[:, 1:])
            x[:, 0] = self.orbits[:, 0]
        else:
            x = self.orbits[:, :-1]
        params.update(
            task="map_sequences", n=n, length=length, mode=mode, dim=d, seed=seed_value(seed)
        )
        super().__init__(x.float(), self.orbits[:, 1:].float(), params)
        self.mode = mode
        # an instance attribute: the class-level default is case 1
        self.case = 1 if mode == "initial" else 4  # type: ignore[misc]

    def baseline_prediction(self) -> Tensor:
        """Persistence: h(0) repeated (``"initial"``), or x(t) itself (``"one_step"``)."""
        if self.mode == "initial":
            return self.orbits[:, :1].float().expand_as(self.y)
        return self.x.clone()
