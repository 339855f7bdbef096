r"""Lyapunov spectra by the QR method (Benettin et al. 1980; Eckmann & Ruelle 1985).

Along a trajectory h(t+1) = f(h(t), x(t)) an orthonormal frame Q is pushed through the Jacobians
and re-orthonormalised each step:

.. math:: J(t)\,Q(t) = Q(t+1)\,R(t+1), \qquad
          \lambda_i = \frac1T \sum_{t=1}^{T} \ln \lvert R_{ii}(t) \rvert .

λ₁ > 0 means chaos (nearby states separate like e^{λ₁ t}); Σλ_i is the mean log-volume change,
ln|det J| averaged along the trajectory. Autonomous maps use their fixed (or absent) input;
input-driven RNNs take the input sequence, and the spectrum then describes how the driven
network separates nearby states (negative exponents: its state forgets where it started).

Jacobians are computed by autodiff for whole chunks of the trajectory in one vectorised call.

Shapes: B trajectories (seeds), T steps, N state size, k exponents, I input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_float, check_int
from ._checks import check_states
from ._map_base import check_output, check_sequence_inputs
from .maps import as_map, autonomous


@dataclass(frozen=True)
class LyapunovSpectrum:
    """The k largest Lyapunov exponents and how well they converged.

    Attributes:
        exponents: (k,) the mean over trajectories, largest first, per step in ``unit``.
        per_seed: (B, k) each trajectory's estimate.
        history: (C, k) the running estimate (mean over trajectories) at ``history_steps``.
        history_steps: (C,) number of accumulated steps at each history entry.
        stderr: (k,) standard error over trajectories (NaN for one trajectory).
        drift: (k,) |estimate after T steps - estimate after T/2 steps|.
        converged: every drift <= tol.
        unit: "nats" (natural log) or "bits" (log base 2).
        steps: T accumulated steps; warmup: discarded steps before them.
        tol: the drift tolerance.
    """

    exponents: Tensor
    per_seed: Tensor
    history: Tensor
    history_steps: Tensor
    stderr: Tensor
    drift: Tensor
    converged: bool
    unit: str
    steps: int
    warmup: int
    tol: float

    @property
    def maximal(self) -> float:
        """λ₁."""
        return float(self.exponents[0])

    @property
    def sum(self) -> float:
        """Σλ_i (of the computed exponents)."""
        return float(self.exponents.sum())

    @property
    def kaplan_yorke_dimension(self) -> float:
        """j + Σ_{i<=j} λ_i / |λ_{j+1}| with j the largest index whose partial sum is >= 0."""
        lam = self.exponents.tolist()
        total, j = 0.0, 0
        for j, v in enumerate(lam):
            if total + v < 0:
                return j + total / abs(v)
            total += v
        return float(len(lam))

    def report(self) -> str:
        """A short text report of the estimate and its convergence."""
        vals = ", ".join(f"{v:+.4f}" for v in self.exponents.tolist())
        drift = float(self.drift.max())
        status = "converged" if self.converged else "NOT converged"
        return (
            f"Lyapunov exponents [{vals}] {self.unit}/step over {self.steps} steps "
            f"({self.per_seed.shape[0]} trajectories, {self.warmup} warm-up); max drift "
            f"{drift:.2e} vs tol {self.tol:.1e}: {status}"
        )


def lyapunov_spectrum(
    f: Any,
    h0: Any,
    steps: int | None = None,
    *,
    inputs: Any = None,
    input: Any = None,
    k: int | None = None,
    warmup: int = 100,
    unit: str = "nats",
    tol: float = 1e-2,
    chunk: int = 128,
    dtype: torch.dtype = torch.float64,
) -> LyapunovSpectrum:
    """The Lyapunov spectrum of a map from a batch of initial states (QR method).

    Args:
        f: anything :func:`rnnlab.dynamics.as_map` accepts.
        h0: initial states (B, N) or (N,).
        steps: T accumulated steps (autonomous); with ``inputs`` it is the inputs' length minus
            ``warmup``.
        inputs: input-driven: x(t) for the warm-up and the T steps, (W+T, I) or (B, W+T, I).
        input: a constant input (autonomous).
        k: how many exponents (default all N).
        warmup: steps run first (state and frame) without accumulating.
        unit: "nats" or "bits".
        tol: convergence tolerance on the drift (per step, in ``unit``).
        chunk: steps whose Jacobians are computed in one vectorised call.
        dtype: computing dtype (float64 by default).

    Raises:
        ValueError: bad arguments, or a trajectory that diverges (exponents undefined).

    Example:
        >>> from rnnlab.dynamics import Map
        >>> logistic = Map.from_function(lambda h: 4 * h * (1 - h), 1)   # r = 4: chaos
        >>> round(lyapunov_spectrum(logistic, torch.rand(16, 1), 4000).maximal, 2)  # ln 2
        0.69
    """
    unit = check_choice(unit, "unit", ("nats", "bits"))
    tol = check_float(tol, "tol", low=0.0, low_open=True)
    W = check_int(warmup, "warmup", low=0)
    chunk = check_int(chunk, "chunk", low=1)
    m = as_map(f)
    if input is not None:
        m = m.with_input(input)
    h = check_states(h0, m.state_size, "h0")
    h = (h[None] if h.dim() == 1 else h).to(dtype)
    if h.dim() != 2:
        raise ValueError(
            f"h0: expected (B, {m.state_size}) or ({m.state_size},), got {tuple(h.shape)}"
        )
    B, N = h.shape
    xs = None
    if inputs is not None:
        xs = check_sequence_inputs(m, inputs, B).to(dtype)
        total = xs.shape[1]
        if total <= W:
            raise ValueError(f"inputs: expected more than warmup={W} steps, got {total}")
        T = total - W
        if steps is not None and steps != T:
            raise ValueError(f"steps: expected None or {T} (len(inputs) - warmup), got {steps}")
    else:
        m = autonomous(m)
        if steps is None:
            raise ValueError("steps: expected an int >= 1 without inputs, got None")
        T = check_int(steps, "steps", low=1)
    kk = N if k is None else check_int(k, "k", low=1)
    if kk > N:
        raise ValueError(f"k: expected at most the state size {N}, got {kk}")
    m = m.to(dtype=dtype)
    check_output(m.step(h[:1], None if xs is None else xs[:1, 0]), h[:1], m.name)

    Q = torch.eye(N, kk, dtype=dtype).expand(B, N, kk).clone()
    logsum = torch.zeros(B, kk, dtype=torch.float64)
    n_hist = min(T, 64)
    marks = {max(1, round(T * (j + 1) / n_hist)) for j in range(n_hist)}
    marks.add(max(1, T // 2))
    hist: list[Tensor] = []
    hist_steps: list[int] = []
    half: Tensor | None = None
    total = W + T
    t = 0
    with torch.no_grad():
        while t < total:
            c = min(chunk, total - t)
            states, ins = [], []
            for j in range(c):
                x_t = None if xs is None else xs[:, t + j]
                states.append(h)
                ins.append(x_t)
                h = m.step(h, x_t)
            if not bool(torch.isfinite(h).all()):
                raise ValueError(
                    f"h0: a trajectory diverged before step {t + c}; Lyapunov exponents are "
                    "defined on bounded trajectories (start on or near the attractor)"
                )
            H = torch.stack(states).reshape(c * B, N)
            X = None if xs is None else torch.stack(ins).reshape(c * B, -1)  # type: ignore[arg-type]
            J = m.jacobian(H, X).reshape(c, B, N, N)
            for j in range(c):
                Q, R = torch.linalg.qr(J[j] @ Q)
                if t + j >= W:
                    logsum += torch.diagonal(R, dim1=1, dim2=2).abs().log().to(torch.float64)
                    n = t + j - W + 1
                    if n in marks:
                        est = logsum.mean(dim=0) / n
                        hist.append(est)
                        hist_steps.append(n)
                        if n == max(1, T // 2):
                            half = est
            t += c
    to_unit = 1.0 if unit == "nats" else 1.0 / math.log(2.0)
    per_seed = logsum / T * to_unit
    exps = per_seed.mean(dim=0)
    stderr = (
        per_seed.std(dim=0) / math.sqrt(B)
        if B > 1
        else torch.full((kk,), math.nan, dtype=torch.float64)
    )
    history = torch.stack(hist) * to_unit
    half_est = (half if half is not None else hist[0]) * to_unit
    drift = (exps - half_est).abs()
    return LyapunovSpectrum(
        exponents=exps,
        per_seed=per_seed,
        history=history,
        history_steps=torch.as_tensor(hist_steps),
        stderr=stderr,
        drift=drift,
        converged=bool((drift <= tol).all()),
        unit=unit,
        steps=T,
        warmup=W,
        tol=tol,
    )


__all__ = ["LyapunovSpectrum", "lyapunov_spectrum"]
