r"""Linear stability: Jacobians, eigenvalues, labels, time constants, linearised prediction.

Around a fixed point h* = f(h*, x*) the map is, to first order,

.. math:: h(t+1) \approx h^* + A\,(h(t) - h^*) + B\,(x(t) - x^*), \quad
          A = \partial f / \partial h, \; B = \partial f / \partial x

and h* is *stable* when the spectral radius ρ(A) < 1 (in 1-D: |f'(h*)| < 1, the lecture's
rule), *unstable* when ρ(A) > 1 and *marginal* on the unit circle. With a tolerance ``tol`` the
labels are: "stable" if ρ < 1 - tol, "marginal" if |ρ - 1| <= tol, "unstable" if ρ > 1 + tol;
the number of unstable directions counts eigenvalues with |λ| > 1 + tol. A mode with
eigenvalue λ decays (or grows) by a factor e every τ = -1/ln|λ| steps: its time constant.

Jacobians come from autodiff (``torch.func.jacfwd`` under ``vmap``), never finite differences.

Shapes: B points, N state size, I input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_float
from ._checks import as_tensor, check_finite, check_states
from ._map_base import check_output
from .maps import Map, as_map

STABLE, MARGINAL, UNSTABLE = "stable", "marginal", "unstable"

#: default tolerance of the stability labels around |λ| = 1
DEFAULT_STABILITY_TOL = 1e-6


def _points(m: Map, h: Any, argument: str = "h") -> tuple[Tensor, bool]:
    t = check_states(h, m.state_size, argument)
    single = t.dim() == 1
    t = t[None] if single else t
    if t.dim() != 2:
        raise ValueError(
            f"{argument}: expected (B, {m.state_size}) or ({m.state_size},), got {tuple(t.shape)}"
        )
    if m.dtype is not None:
        t = t.to(m.dtype)
    return t, single


def jacobian(f: Any, h: Any, x: Any = None, *, input: Any = None) -> Tensor:
    """∂f/∂h at each state: (B, N, N) for ``h`` (B, N), (N, N) for ``h`` (N,).

    Args:
        f: anything :func:`rnnlab.dynamics.as_map` accepts.
        h: states (flat).
        x: the input at each state, (B, I) or (I,); None: the map's fixed input or zeros.
        input: a constant input making ``f`` autonomous (alternative to ``x``).

    Example:
        >>> jacobian(Map.linear([[0.8]], [1.0]), torch.tensor([5.0]))
        tensor([[0.8000]], dtype=torch.float64)
    """
    m = as_map(f, input=input)
    hs, single = _points(m, h)
    xs = m.check_input(x, hs.shape[0])
    check_output(m.step(hs[:1], None if xs is None else xs[:1]), hs[:1], m.name)
    J = m.jacobian(hs, None if xs is None else xs.to(hs.dtype))
    return J[0] if single else J


def input_jacobian(f: Any, h: Any, x: Any = None) -> Tensor:
    """∂f/∂x at each (state, input): (B, N, I) (or (N, I) for one state)."""
    m = as_map(f)
    hs, single = _points(m, h)
    if m.input_size == 0:
        raise ValueError("f: this map has no input (input_size=0), so no input Jacobian")
    xs = m.check_input(x, hs.shape[0])
    J = m.input_jacobian(hs, None if xs is None else xs.to(hs.dtype))
    return J[0] if single else J


def sorted_eig(J: Tensor, vectors: bool = False) -> tuple[Tensor, Tensor | None]:
    """Eigenvalues (B, N) (and eigenvectors, columns) sorted by modulus, largest first."""
    if vectors:
        w, V = torch.linalg.eig(J)
    else:
        w, V = torch.linalg.eigvals(J), None
    order = torch.argsort(w.abs(), dim=-1, descending=True, stable=True)
    w = torch.gather(w, -1, order)
    if V is not None:
        V = torch.gather(V, -1, order[..., None, :].expand_as(V))
    return w, V


def classify(
    eigenvalues: Tensor, tol: float = DEFAULT_STABILITY_TOL
) -> tuple[tuple[str, ...], Tensor]:
    """Labels ("stable"/"marginal"/"unstable") and numbers of unstable directions.

    Args:
        eigenvalues: (B, N) (or (N,)) eigenvalues of the Jacobians.
        tol: width of the marginal band around |λ| = 1, in [0, 1).
    """
    tol = check_float(tol, "tol", low=0.0, high=1.0, high_open=True)
    ev = eigenvalues if eigenvalues.dim() == 2 else eigenvalues.reshape(1, -1)
    mod = ev.abs()
    rho = mod.max(dim=-1).values
    n_unstable = (mod > 1.0 + tol).sum(dim=-1)
    labels = tuple(
        STABLE if r < 1.0 - tol else (MARGINAL if r <= 1.0 + tol else UNSTABLE)
        for r in rho.tolist()
    )
    return labels, n_unstable


def time_constants(eigenvalues: Tensor) -> Tensor:
    r"""τ = -1/ln|λ| in steps: > 0 decay, < 0 growth (|τ| e-folding steps), inf on |λ| = 1."""
    mod = eigenvalues.abs().to(torch.float64)
    with torch.no_grad():
        tau = -1.0 / torch.log(mod)
    tau = torch.where(mod == 1, torch.full_like(tau, math.inf), tau)
    return torch.where(mod == 0, torch.zeros_like(tau), tau)


@dataclass(frozen=True)
class Stability:
    """Linear stability of a map at B points.

    Attributes:
        jacobian: (B, N, N) ∂f/∂h.
        eigenvalues: (B, N) complex, by modulus, largest first.
        eigenvectors: (B, N, N) complex; column k belongs to ``eigenvalues[:, k]``.
        spectral_radius: (B,) max |λ|.
        labels: "stable" / "marginal" / "unstable" per point.
        n_unstable: (B,) eigenvalues with |λ| > 1 + tol.
        tol: the marginal band.
    """

    jacobian: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor
    spectral_radius: Tensor
    labels: tuple[str, ...]
    n_unstable: Tensor
    tol: float

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def time_constants(self) -> Tensor:
        """(B, N) τ = -1/ln|λ| per eigenvalue (see :func:`time_constants`)."""
        return time_constants(self.eigenvalues)

    @property
    def multiplier(self) -> Tensor:
        """(B,) f'(h*) of a 1-D map (its only eigenvalue, real)."""
        if self.jacobian.shape[-1] != 1:
            raise ValueError(
                f"multiplier: defined for 1-D maps, got state size {self.jacobian.shape[-1]}"
            )
        return self.jacobian[:, 0, 0]


def stability(
    f: Any, h: Any = None, x: Any = None, *, tol: float = DEFAULT_STABILITY_TOL, input: Any = None
) -> Stability:
    """Eigen-decomposition and labels of ∂f/∂h at the states ``h`` (or of given Jacobians).

    Args:
        f: a map (anything :func:`as_map` accepts) with ``h`` (B, N) or (N,), or a Jacobian
            tensor (N, N) / (B, N, N) with ``h`` None.
        tol: marginal band around |λ| = 1, in [0, 1).

    Example:
        >>> s = stability(Map.linear([[1.4]], [1.0]), torch.tensor([-2.5]))
        >>> s.labels, round(s.multiplier.item(), 6)
        (('unstable',), 1.4)
    """
    tol = check_float(tol, "tol", low=0.0, high=1.0, high_open=True)
    if h is None:
        if not isinstance(f, Tensor):
            raise TypeError(f"h: required unless f is a Jacobian tensor, got f={type(f).__name__}")
        J = as_tensor(f, "f")
        if J.dim() == 2:
            J = J[None]
        if J.dim() != 3 or J.shape[-1] != J.shape[-2]:
            raise ValueError(f"f: expected Jacobians (N, N) or (B, N, N), got {tuple(f.shape)}")
        check_finite(J, "f")
    else:
        J = jacobian(f, h, x, input=input)
        J = J[None] if J.dim() == 2 else J
    J = J.detach().to(torch.float64)
    w, V = sorted_eig(J, vectors=True)
    assert V is not None
    labels, n_unstable = classify(w, tol)
    return Stability(J, w, V, w.abs().max(dim=-1).values, labels, n_unstable, tol)


def multiplier(f: Any, h: Any, *, input: Any = None) -> Tensor:
    """f'(h) of a 1-D map at each state: (B,) for ``h`` (B, 1), a scalar for one state."""
    m = as_map(f, input=input)
    if m.state_size != 1:
        raise ValueError(f"f: multiplier is for 1-D maps, got state size {m.state_size}")
    J = jacobian(m, h)
    return J[..., 0, 0]


@dataclass(frozen=True)
class Linearization:
    """The first-order model of a map around (h*, x*).

    Attributes:
        point: h* (N,).
        input: x* (I,) or None (no input).
        value: f(h*, x*) (N,), equal to h* at a fixed point.
        A: ∂f/∂h at (h*, x*), (N, N).
        B: ∂f/∂x at (h*, x*), (N, I), or None.
    """

    point: Tensor
    input: Tensor | None
    value: Tensor
    A: Tensor
    B: Tensor | None

    def predict(self, h: Any, x: Any = None) -> Tensor:
        """One linearised step: f(h*, x*) + A (h - h*) + B (x - x*), for h (..., N)."""
        hs = check_states(h, self.point.shape[0], "h").to(self.A)
        out = self.value + (hs - self.point) @ self.A.T
        if x is not None:
            if self.B is None or self.input is None:
                raise ValueError("x: this linearisation has no input, got a tensor")
            xs = check_states(x, self.B.shape[1], "x").to(self.A)
            out = out + (xs - self.input) @ self.B.T
        return out


def linearize(f: Any, point: Any, x: Any = None, *, input: Any = None) -> Linearization:
    """Linearise ``f`` around ``point`` (N,) and input ``x`` (I,) (or the fixed/absent one)."""
    m = as_map(f, input=input)
    h = check_states(point, m.state_size, "point")
    if h.dim() != 1:
        raise ValueError(f"point: expected one state ({m.state_size},), got {tuple(h.shape)}")
    if m.dtype is not None:
        h = h.to(m.dtype)
    hb = h[None]
    xb = m._resolve_input(hb, m.check_input(x, 1))
    value = m.step(hb, xb)
    check_output(value, hb, m.name)
    A = m.jacobian(hb, xb)[0]
    B = m.input_jacobian(hb, xb)[0] if m.input_size else None
    x_star = None if xb is None else xb[0].detach()
    return Linearization(
        h.detach(), x_star, value[0].detach(), A.detach(), None if B is None else B.detach()
    )


__all__ = [
    "DEFAULT_STABILITY_TOL",
    "Linearization",
    "MARGINAL",
    "STABLE",
    "Stability",
    "UNSTABLE",
    "classify",
    "input_jacobian",
    "jacobian",
    "linearize",
    "multiplier",
    "stability",
    "time_constants",
]
