r"""Vanishing and exploding states and gradients: the lecture's "Challenges", measured.

With σ_h the identity, b = 0 and the input only at the start, the Elman network gives
h(t) = U^t h(0), and back-propagation δ(T - t) = (Uᵀ)^t δ(T). With the eigen-decomposition
U = V diag(λ) V⁻¹,

.. math:: U^t = V \operatorname{diag}(\lambda)^t V^{-1},

so every component with |λ_i| away from 1 vanishes or explodes. This module computes

* :func:`spectrum`: eigenvalues, singular values and spectral radius of U;
* :func:`predict_state_norms`, :func:`predict_gradient_norms`: ‖U^t h(0)‖ and ‖(Uᵀ)^t δ(T)‖
  predicted from the eigen-decomposition next to what repeated multiplication measures;
* :func:`jacobian_products`: singular values of J(t-1)···J(0) along a real trajectory of any map
  (the nonlinear version of U^t; their logs divided by t are finite-time Lyapunov exponents);
* :func:`gradient_flow`: ‖∂L/∂h(t)‖ measured by autograd through the unrolled network, against
  the Jacobian-product prediction and the lecture's linear prediction ‖(Uᵀ)^{T-t} δ(T)‖.

Shapes: B batch, T time, N state size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int
from ..cells.simple import ElmanCell
from ._checks import as_tensor, check_finite, check_states
from ._map_base import check_sequence_inputs
from .maps import (
    CellMap,
    LinearMap,
    Map,
    StackedCellsMap,
    TorchRNNMap,
    as_map,
    autonomous,
)
from .stability import sorted_eig


@dataclass(frozen=True)
class MatrixSpectrum:
    """Spectrum of a recurrent matrix U.

    Attributes:
        eigenvalues: (N,) complex, by modulus, largest first.
        singular_values: (N,) largest first.
        spectral_radius: max |λ|: the asymptotic growth factor per step of U^t.
        norm: the largest singular value: the worst one-step growth.
        eigenvector_condition: cond(V) of the eigenvector matrix (large: non-normal U, transient
            growth before the eigenvalues take over; inf: not diagonalisable).
    """

    eigenvalues: Tensor
    singular_values: Tensor
    spectral_radius: float
    norm: float
    eigenvector_condition: float

    def regime(self, tol: float = 1e-6) -> str:
        """ "vanishing" (ρ < 1 - tol), "exploding" (ρ > 1 + tol) or "marginal"."""
        if self.spectral_radius < 1 - tol:
            return "vanishing"
        return "exploding" if self.spectral_radius > 1 + tol else "marginal"


def _matrix(U: Any, argument: str = "U") -> Tensor:
    t = as_tensor(U, argument).detach().to(torch.float64)
    if t.dim() != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"{argument}: expected a square matrix (N, N), got {tuple(t.shape)}")
    return check_finite(t, argument)


def recurrent_weight(f: Any) -> Tensor:
    """The lecture's U of an Elman network (ElmanCell, single-layer torch.nn.RNN) or A of a
    linear map. Gated cells have several U blocks; use :func:`jacobian_products` for them.
    """
    obj = f.cell if isinstance(f, CellMap) else f
    if isinstance(obj, StackedCellsMap) and len(obj.module) == 1:  # type: ignore[arg-type]
        obj = obj.module[0]  # type: ignore[index]  # a one-layer drop-in (rnnlab.nn.RNN) maps through its cell
    if isinstance(obj, Map) and not isinstance(obj, (LinearMap, TorchRNNMap)):
        obj = getattr(obj, "module", obj)
    if isinstance(obj, LinearMap):
        return obj.A.detach()
    if isinstance(obj, ElmanCell):
        return obj.weight_hh.detach()
    if isinstance(obj, TorchRNNMap):
        obj = obj.module
    if isinstance(obj, (nn.RNN, nn.RNNCell)) and getattr(obj, "num_layers", 1) == 1:
        name = "weight_hh_l0" if isinstance(obj, nn.RNN) else "weight_hh"
        w: Tensor = getattr(obj, name)
        return w.detach()
    raise TypeError(
        "f: expected an ElmanCell, a one-layer torch.nn.RNN/RNNCell or a linear map to read U "
        f"from, got {type(obj).__name__}; pass U explicitly or use jacobian_products"
    )


def spectrum(U: Any) -> MatrixSpectrum:
    """Eigenvalues, singular values and spectral radius of U (a matrix, or see
    :func:`recurrent_weight` for what else is accepted).

    Example:
        >>> spectrum(torch.diag(torch.tensor([0.5, 1.2]))).regime()
        'exploding'
    """
    M = _matrix(U if isinstance(U, Tensor) else recurrent_weight(U))
    w, V = sorted_eig(M, vectors=True)
    assert V is not None
    sv = torch.linalg.svdvals(M)
    try:
        cond = float(torch.linalg.cond(V))
    except RuntimeError:  # pragma: no cover - singular V
        cond = math.inf
    return MatrixSpectrum(
        w, sv, float(w.abs().max()), float(sv[0]), cond if math.isfinite(cond) else math.inf
    )


@dataclass(frozen=True)
class NormPrediction:
    """Predicted and measured norms of U^t v (or (Uᵀ)^t v), t = 0..T.

    Attributes:
        steps: (T+1,) t.
        predicted: (T+1,) from the eigen-decomposition V diag(λ)^t V⁻¹ v.
        measured: (T+1,) by multiplying by U t times.
        asymptotic: (T+1,) ρ^t ‖v‖, the spectral-radius rate alone.
        spectral_radius: ρ(U).
    """

    steps: Tensor
    predicted: Tensor
    measured: Tensor
    asymptotic: Tensor
    spectral_radius: float

    @property
    def max_relative_error(self) -> float:
        """max_t |predicted - measured| / measured over the finite, non-zero entries."""
        ok = torch.isfinite(self.measured) & (self.measured > 0) & torch.isfinite(self.predicted)
        if not bool(ok.any()):
            return math.nan
        return float(((self.predicted - self.measured).abs() / self.measured)[ok].max())


def _power_norms(M: Tensor, v: Tensor, T: int) -> NormPrediction:
    w, V = torch.linalg.eig(M)
    coeff = torch.linalg.solve(V, v.to(V.dtype))  # V⁻¹ v
    t = torch.arange(T + 1, dtype=torch.float64)
    # λ^t for every t by repeated products (exact integer powers, 0^0 = 1)
    powers = torch.cat(
        [torch.ones_like(w)[None], torch.cumprod(w.expand(T, -1), dim=0)]
    )  # (T+1, N)
    pred = ((powers * coeff[None, :]) @ V.T).real.norm(dim=1)
    measured = torch.empty(T + 1, dtype=torch.float64)
    x = v.clone()
    measured[0] = x.norm()
    for k in range(1, T + 1):
        x = M @ x
        measured[k] = x.norm()
    rho = float(w.abs().max())
    return NormPrediction(t, pred, measured, float(v.norm()) * rho**t, rho)


def predict_state_norms(U: Any, h0: Any, steps: int) -> NormPrediction:
    """‖h(t)‖ = ‖U^t h(0)‖ predicted from U's eigen-decomposition vs measured, t = 0..steps."""
    M = _matrix(U if isinstance(U, Tensor) else recurrent_weight(U))
    v = check_states(h0, M.shape[0], "h0").to(torch.float64)
    if v.dim() != 1:
        raise ValueError(f"h0: expected one state ({M.shape[0]},), got {tuple(v.shape)}")
    return _power_norms(M, v, check_int(steps, "steps", low=0))


def predict_gradient_norms(U: Any, delta: Any, steps: int) -> NormPrediction:
    """‖δ(T - t)‖ = ‖(Uᵀ)^t δ(T)‖ from the eigen-decomposition of Uᵀ vs measured."""
    M = _matrix(U if isinstance(U, Tensor) else recurrent_weight(U))
    v = check_states(delta, M.shape[0], "delta").to(torch.float64)
    if v.dim() != 1:
        raise ValueError(f"delta: expected one vector ({M.shape[0]},), got {tuple(v.shape)}")
    return _power_norms(M.T.contiguous(), v, check_int(steps, "steps", low=0))


@dataclass(frozen=True)
class JacobianProducts:
    """Singular values of the products P(t) = J(t-1)···J(0) along trajectories.

    Attributes:
        steps: (T,) t = 1..T (number of factors).
        log_singular_values: (B, T, N) ln σ_i(P(t)), largest first. The products are kept
            normalised, so these do not overflow; values more than ~36 below the largest of
            the same row are at float64's rounding level.
        trajectory: (B, T+1, N) the states.
    """

    steps: Tensor
    log_singular_values: Tensor
    trajectory: Tensor

    @property
    def singular_values(self) -> Tensor:
        """(B, T, N) σ_i(P(t)) (may over/underflow where the logs would not)."""
        return self.log_singular_values.exp()

    @property
    def growth_rates(self) -> Tensor:
        """(B, T, N) ln σ_i / t: finite-time Lyapunov exponents."""
        return self.log_singular_values / self.steps[None, :, None].to(torch.float64)


def _trajectory_and_jacobians(
    f: Any, h0: Any, steps: int | None, inputs: Any, input: Any, dtype: torch.dtype
) -> tuple[Map, Tensor, Tensor | None, Tensor]:
    m = as_map(f)
    if input is not None:
        m = m.with_input(input)
    h = check_states(h0, m.state_size, "h0")
    h = (h[None] if h.dim() == 1 else h).to(dtype)
    B, N = h.shape
    xs = None
    if inputs is not None:
        xs = check_sequence_inputs(m, inputs, B).to(dtype)
        T = xs.shape[1]
        if steps is not None and steps != T:
            raise ValueError(f"steps: expected None or {T} (the length of inputs), got {steps}")
    else:
        m = autonomous(m)
        if steps is None:
            raise ValueError("steps: expected an int >= 1 without inputs, got None")
        T = check_int(steps, "steps", low=1)
    m = m.to(dtype=dtype)
    states = [h]
    with torch.no_grad():
        for t in range(T):
            h = m.step(h, None if xs is None else xs[:, t])
            states.append(h)
        traj = torch.stack(states, dim=1)  # (B, T+1, N)
        H = traj[:, :T].reshape(B * T, N)
        X = None if xs is None else xs.reshape(B * T, -1)
        J = m.jacobian(H, X).reshape(B, T, N, N) if T else traj.new_zeros(B, 0, N, N)
    return m, traj, xs, J


def jacobian_products(
    f: Any,
    h0: Any,
    steps: int | None = None,
    *,
    inputs: Any = None,
    input: Any = None,
    dtype: torch.dtype = torch.float64,
) -> JacobianProducts:
    """Singular values of J(t-1)···J(0) along the trajectories from ``h0`` (B, N).

    ``inputs`` (T, I) or (B, T, I) drive the map; otherwise it runs ``steps`` steps with its
    fixed (or absent) input.
    """
    _, traj, _, J = _trajectory_and_jacobians(f, h0, steps, inputs, input, dtype)
    B, T, N, _ = J.shape
    P = torch.eye(N, dtype=dtype).expand(B, N, N).clone()
    logscale = torch.zeros(B, dtype=torch.float64)
    out = torch.empty(B, T, N, dtype=torch.float64)
    for t in range(T):
        P = J[:, t] @ P
        c = P.flatten(1).norm(dim=1).clamp_min(torch.finfo(dtype).tiny)  # keep P at unit scale
        P = P / c[:, None, None]
        logscale += c.log().to(torch.float64)
        out[:, t] = torch.linalg.svdvals(P).log().to(torch.float64) + logscale[:, None]
    return JacobianProducts(torch.arange(1, T + 1), out, traj)


@dataclass(frozen=True)
class GradientFlow:
    """‖∂L/∂h(t)‖ for t = 0..T with the loss on the last state h(T) (the lecture's case 2).

    Attributes:
        steps: (T+1,) t.
        measured: (B, T+1) by autograd through the unrolled map.
        predicted: (B, T+1) by the backward recursion δ(t) = J(t)ᵀ δ(t+1) with autodiff
            Jacobians (the chain rule made explicit; equals ``measured`` to rounding).
        linear: (B, T+1) the lecture's ‖(Uᵀ)^{T-t} δ(T)‖ from U's eigen-decomposition, which
            ignores σ' (exact for a linear Elman network), or None without U.
        spectral_radius: ρ(U), or None.
    """

    steps: Tensor
    measured: Tensor
    predicted: Tensor
    linear: Tensor | None
    spectral_radius: float | None


def gradient_flow(
    f: Any,
    h0: Any,
    steps: int | None = None,
    *,
    inputs: Any = None,
    input: Any = None,
    loss: Callable[[Tensor], Tensor] | None = None,
    U: Any = None,
    dtype: torch.dtype = torch.float64,
) -> GradientFlow:
    """Measured ‖∂L/∂h(t)‖ through time against its predictions.

    Args:
        f: anything :func:`rnnlab.dynamics.as_map` accepts.
        h0: (B, N) initial states.
        steps, inputs, input: as for :func:`jacobian_products`.
        loss: ``h(T) (B, N) -> (B,)`` or a scalar; default ½‖h(T)‖² per sequence.
        U: the matrix of the linear prediction; default :func:`recurrent_weight` of ``f`` when
            it has one (Elman, one-layer torch RNN, linear map), else no linear prediction.
    """
    m, traj, xs, J = _trajectory_and_jacobians(f, h0, steps, inputs, input, dtype)
    B, T, N, _ = J.shape
    h = traj[:, 0].clone().requires_grad_(True)
    hs = [h]
    with torch.enable_grad():
        for t in range(T):
            hs.append(m.step(hs[-1], None if xs is None else xs[:, t]))
        out = 0.5 * (hs[-1] ** 2).sum(dim=1) if loss is None else loss(hs[-1])
        if not isinstance(out, Tensor):
            raise TypeError(f"loss: expected to return a tensor, got {type(out).__name__}")
        grads = torch.autograd.grad(out.sum(), hs, allow_unused=True)
    measured = torch.stack(
        [torch.zeros(B, N, dtype=dtype) if g is None else g for g in grads], dim=1
    )  # (B, T+1, N)
    delta_T = measured[:, T]
    pred = torch.empty(B, T + 1, dtype=torch.float64)
    d = delta_T
    pred[:, T] = d.norm(dim=1)
    for t in range(T - 1, -1, -1):
        d = (J[:, t].transpose(1, 2) @ d[..., None])[..., 0]
        pred[:, t] = d.norm(dim=1)
    linear = None
    rho = None
    if U is None:
        try:
            U = recurrent_weight(f)
        except TypeError:
            U = None
    if U is not None:
        M = _matrix(U)
        if M.shape[0] != N:
            raise ValueError(f"U: expected ({N}, {N}) for this map, got {tuple(M.shape)}")
        lin = torch.empty(B, T + 1, dtype=torch.float64)
        for b in range(B):
            lin[b] = _power_norms(
                M.T.contiguous(), delta_T[b].detach().to(torch.float64), T
            ).predicted.flip(0)
        linear = lin
        rho = float(torch.linalg.eigvals(M).abs().max())
    return GradientFlow(
        torch.arange(T + 1), measured.norm(dim=2).detach().to(torch.float64), pred, linear, rho
    )


__all__ = [
    "GradientFlow",
    "JacobianProducts",
    "MatrixSpectrum",
    "NormPrediction",
    "gradient_flow",
    "jacobian_products",
    "predict_gradient_norms",
    "predict_state_norms",
    "recurrent_weight",
    "spectrum",
]
