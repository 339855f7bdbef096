"""Dynamic-system time series, for training an RNN to imitate a system.

Shapes: L samples, D dimensions; every generator returns a :class:`Series` with ``values``
(L, D) float64 and the generating parameters in ``params``. Time between samples is ``interval``
(1 for maps). ``transient`` time units (or iterations, for maps) are run and dropped first.

============================ ================================================== ====
name                         system                                             D
============================ ================================================== ====
``"sine"``                   A sin(2π t / period + φ), sampled exactly          1
``"damped_oscillator"``      x'' + 2ζω x' + ω² x = 0, sampled exactly (matrix   1/2
                             exponential of the linear system; any ζ ≥ 0)
``"logistic"``               x(k+1) = r x(k) (1 - x(k)), r = 3.9                1
``"henon"``                  (x, y) -> (1 - a x² + y, b x), a = 1.4, b = 0.3    2
``"lorenz"``                 σ = 10, ρ = 28, β = 8/3; classical RK4 at ``step`` 3
                             0.01, sampled every ``interval`` 0.02
``"mackey_glass"``           x' = β x(t-τ)/(1 + x(t-τ)^n) - γ x, τ = 17,        1
                             β = 0.2, γ = 0.1, n = 10, history x = 1.2 for t ≤ 0;
                             classical RK4 at ``step`` 0.1 with the delayed
                             value at half steps from cubic Hermite
                             interpolation (4th order overall), sampled every
                             ``interval`` 1 time unit
============================ ================================================== ====

The step must divide the sampling interval (and τ for Mackey-Glass); halving the step changes a
short trajectory by O(step^4) (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_float, check_int
from .maps import henon_map, iterate_map, logistic_map


@dataclass(frozen=True, eq=False)
class Series:
    """A sampled trajectory with the parameters that generated it.

    Attributes:
        values: (L, D) float64.
        name: the generator's name.
        interval: time between consecutive samples.
        params: every generating parameter (JSON-serialisable), plus any split or normalisation.
    """

    values: Tensor
    name: str
    interval: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        """D, the number of dimensions."""
        return int(self.values.shape[1])

    def split(self, val_fraction: float = 0.2) -> tuple[Series, Series]:
        """Split by position: the first ``1 - val_fraction`` for training, the rest to validate.

        Both parts keep ``params`` plus ``"part"`` and ``"start"`` (the first sample's index).
        """
        f = check_float(
            val_fraction, "val_fraction", low=0.0, high=1.0, low_open=True, high_open=True
        )
        cut = len(self) - int(round(f * len(self)))
        if cut < 1 or cut >= len(self):
            raise ValueError(
                f"val_fraction: expected both parts of the {len(self)} samples to be non-empty, "
                f"got {f} (a {cut}/{len(self) - cut} split)"
            )
        train = Series(
            self.values[:cut],
            self.name,
            self.interval,
            {**self.params, "part": "train", "start": 0, "val_fraction": f},
        )
        val = Series(
            self.values[cut:],
            self.name,
            self.interval,
            {**self.params, "part": "val", "start": cut, "val_fraction": f},
        )
        return train, val


def _series(values: np.ndarray | Tensor, name: str, interval: float, **params: Any) -> Series:
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.dim() == 1:
        v = v[:, None]  # (L, 1)
    return Series(v, name, interval, {"system": name, "interval": interval, **params})


def sine_series(
    n_steps: int,
    *,
    period: float = 25.0,
    amplitude: float = 1.0,
    phase: float = 0.0,
    interval: float = 1.0,
) -> Series:
    """A sin(2π t / period + phase) at t = k * interval, k = 0..n_steps-1; (L, 1)."""
    n_steps = check_int(n_steps, "n_steps", low=1)
    period = check_float(period, "period", low=0.0, low_open=True)
    amplitude = check_float(amplitude, "amplitude")
    phase = check_float(phase, "phase")
    interval = check_float(interval, "interval", low=0.0, low_open=True)
    t = np.arange(n_steps) * interval
    values = amplitude * np.sin(2 * math.pi * t / period + phase)
    return _series(
        values, "sine", interval, n_steps=n_steps, period=period, amplitude=amplitude, phase=phase
    )


def damped_oscillator_series(
    n_steps: int,
    *,
    omega: float = 1.0,
    zeta: float = 0.1,
    x0: float = 1.0,
    v0: float = 0.0,
    interval: float = 0.1,
    full_state: bool = False,
) -> Series:
    """x'' + 2 ζ ω x' + ω² x = 0 sampled exactly; (L, 1) position, or (L, 2) (x, x') state.

    Exact: each sample is the previous one times expm(A * interval), A = [[0, 1], [-ω², -2ζω]].
    """
    n_steps = check_int(n_steps, "n_steps", low=1)
    omega = check_float(omega, "omega", low=0.0, low_open=True)
    zeta = check_float(zeta, "zeta", low=0.0)
    x0 = check_float(x0, "x0")
    v0 = check_float(v0, "v0")
    interval = check_float(interval, "interval", low=0.0, low_open=True)
    a = torch.tensor([[0.0, 1.0], [-(omega**2), -2.0 * zeta * omega]], dtype=torch.float64)
    step = torch.linalg.matrix_exp(a * interval)
    states = torch.empty(n_steps, 2, dtype=torch.float64)
    states[0] = torch.tensor([x0, v0], dtype=torch.float64)
    for k in range(1, n_steps):
        states[k] = step @ states[k - 1]
    values = states if full_state else states[:, :1]
    return _series(
        values,
        "damped_oscillator",
        interval,
        n_steps=n_steps,
        omega=omega,
        zeta=zeta,
        x0=x0,
        v0=v0,
        full_state=bool(full_state),
    )


def logistic_series(n_steps: int, *, r: float = 3.9, x0: float = 0.2, transient: int = 0) -> Series:
    """The logistic map x(k+1) = r x(k)(1 - x(k)) from x0, after ``transient`` iterations."""
    n_steps = check_int(n_steps, "n_steps", low=1)
    transient = check_int(transient, "transient", low=0)
    x0 = check_float(x0, "x0", low=0.0, high=1.0)
    orbit = iterate_map(
        logistic_map(r), torch.tensor([[x0]], dtype=torch.float64), transient + n_steps - 1
    )
    return _series(
        orbit[0, transient:],
        "logistic",
        1.0,
        n_steps=n_steps,
        r=float(r),
        x0=x0,
        transient=transient,
    )


def henon_series(
    n_steps: int,
    *,
    a: float = 1.4,
    b: float = 0.3,
    x0: float = 0.0,
    y0: float = 0.0,
    transient: int = 100,
) -> Series:
    """The Hénon map from (x0, y0), after ``transient`` iterations; (L, 2) columns (x, y)."""
    n_steps = check_int(n_steps, "n_steps", low=1)
    transient = check_int(transient, "transient", low=0)
    h0 = torch.tensor([[check_float(x0, "x0"), check_float(y0, "y0")]], dtype=torch.float64)
    orbit = iterate_map(henon_map(a, b), h0, transient + n_steps - 1)
    return _series(
        orbit[0, transient:],
        "henon",
        1.0,
        n_steps=n_steps,
        a=float(a),
        b=float(b),
        x0=x0,
        y0=y0,
        transient=transient,
    )


def _substeps(step: float, interval: float, what: str = "interval") -> int:
    ratio = interval / step
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-9 * max(1.0, ratio):
        raise ValueError(
            f"step: expected a divisor of {what} = {interval}, got {step} (ratio {ratio:g})"
        )
    return k


def lorenz_series(
    n_steps: int,
    *,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    initial: Sequence[float] = (1.0, 1.0, 1.0),
    step: float = 0.01,
    interval: float = 0.02,
    transient: float = 0.0,
) -> Series:
    """The Lorenz system, classical RK4 at ``step``, sampled every ``interval``; (L, 3) (x, y, z).

    x' = σ (y - x), y' = x (ρ - z) - y, z' = x y - β z. ``transient`` time units are dropped.
    """
    n_steps = check_int(n_steps, "n_steps", low=1)
    sigma, rho, beta = (
        check_float(v, n) for v, n in ((sigma, "sigma"), (rho, "rho"), (beta, "beta"))
    )
    step = check_float(step, "step", low=0.0, low_open=True)
    interval = check_float(interval, "interval", low=0.0, low_open=True)
    transient = check_float(transient, "transient", low=0.0)
    if len(initial) != 3:
        raise ValueError(f"initial: expected 3 numbers (x, y, z), got {len(initial)}")
    x, y, z = (check_float(v, f"initial[{i}]") for i, v in enumerate(initial))
    per_sample = _substeps(step, interval)
    skip = _substeps(step, transient, "transient") if transient > 0 else 0

    def f(x: float, y: float, z: float) -> tuple[float, float, float]:
        return sigma * (y - x), x * (rho - z) - y, x * y - beta * z

    def rk4(x: float, y: float, z: float) -> tuple[float, float, float]:
        h = step
        a1, b1, c1 = f(x, y, z)
        a2, b2, c2 = f(x + h / 2 * a1, y + h / 2 * b1, z + h / 2 * c1)
        a3, b3, c3 = f(x + h / 2 * a2, y + h / 2 * b2, z + h / 2 * c2)
        a4, b4, c4 = f(x + h * a3, y + h * b3, z + h * c3)
        return (
            x + h / 6 * (a1 + 2 * a2 + 2 * a3 + a4),
            y + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4),
            z + h / 6 * (c1 + 2 * c2 + 2 * c3 + c4),
        )

    for _ in range(skip):
        x, y, z = rk4(x, y, z)
    out = np.empty((n_steps, 3))
    for k in range(n_steps):
        out[k] = (x, y, z)
        for _ in range(per_sample):
            x, y, z = rk4(x, y, z)
    return _series(
        out,
        "lorenz",
        interval,
        n_steps=n_steps,
        sigma=sigma,
        rho=rho,
        beta=beta,
        initial=[float(v) for v in initial],
        step=step,
        transient=transient,
        method="rk4",
    )


def mackey_glass_series(
    n_steps: int,
    *,
    tau: float = 17.0,
    beta: float = 0.2,
    gamma: float = 0.1,
    n: float = 10.0,
    history: float = 1.2,
    step: float = 0.1,
    interval: float = 1.0,
    transient: float = 0.0,
) -> Series:
    """The Mackey-Glass delay equation sampled every ``interval`` time units; (L, 1).

    x'(t) = β x(t-τ) / (1 + x(t-τ)^n) - γ x(t), x(t) = ``history`` for t ≤ 0. Classical RK4 at
    ``step`` (which must divide τ and ``interval``); the delayed value at a half step comes from
    cubic Hermite interpolation between the stored grid values and slopes, which keeps the
    scheme 4th order. ``transient`` time units are dropped. The first sample is x(transient).
    """
    n_steps = check_int(n_steps, "n_steps", low=1)
    tau = check_float(tau, "tau", low=0.0, low_open=True)
    beta = check_float(beta, "beta")
    gamma = check_float(gamma, "gamma")
    n = check_float(n, "n")
    history = check_float(history, "history", low=0.0)
    step = check_float(step, "step", low=0.0, low_open=True)
    interval = check_float(interval, "interval", low=0.0, low_open=True)
    transient = check_float(transient, "transient", low=0.0)
    lag = _substeps(step, tau, "tau")
    per_sample = _substeps(step, interval)
    skip = _substeps(step, transient, "transient") if transient > 0 else 0
    total = skip + (n_steps - 1) * per_sample  # grid steps to take

    def f(x: float, d: float) -> float:
        return beta * d / (1.0 + d**n) - gamma * x

    xs = np.empty(total + 1)  # x at t_k = k * step, k >= 0
    slopes = np.empty(total + 1)  # x'(t_k) (right derivative at k = 0)
    xs[0] = history
    h = step
    for k in range(total):
        j = k - lag  # grid index of t_k - τ
        x = xs[k]
        d0 = history if j < 0 else xs[j]
        k1 = f(x, d0)
        slopes[k] = k1  # x'(t_k), read below when lag == 1
        if j < 0:  # the delayed interval [t_j, t_j+1] lies in the constant history
            d_mid = d1 = history
        else:  # Hermite midpoint from the stored values and slopes on [t_j, t_j+1]
            d1 = xs[j + 1]
            d_mid = 0.5 * (d0 + d1) + h / 8.0 * (slopes[j] - slopes[j + 1])
        k2 = f(x + h / 2 * k1, d_mid)
        k3 = f(x + h / 2 * k2, d_mid)
        k4 = f(x + h * k3, d1)
        xs[k + 1] = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    values = xs[skip::per_sample][:n_steps]
    return _series(
        values,
        "mackey_glass",
        interval,
        n_steps=n_steps,
        tau=tau,
        beta=beta,
        gamma=gamma,
        n=n,
        history=history,
        step=step,
        transient=transient,
        method="rk4+hermite",
    )


SERIES: dict[str, Callable[..., Series]] = {
    "sine": sine_series,
    "damped_oscillator": damped_oscillator_series,
    "logistic": logistic_series,
    "henon": henon_series,
    "lorenz": lorenz_series,
    "mackey_glass": mackey_glass_series,
}


def make_series(name: str, n_steps: int, **kwargs: Any) -> Series:
    """Generate the named series of :data:`SERIES` (``"sunspots"`` lives in
    :func:`rnnlab.data.sunspots_series`)."""
    check_choice(name, "name", SERIES)
    return SERIES[name](n_steps, **kwargs)
