"""Cells with a static input: the recurrent convolutional layer (RCL) and the recurrent MLP.

Shapes: B batch, C input channels, K feature maps (the RCL's channels), H x W spatial size;
I input features and N hidden units (recurrent MLP).

The lecture's case 2 of unfolding applied to whole layers: the input u is fixed and presented
at every step, the state evolves, the label sits at the last step. Both cells follow the cell
contract: ``forward(u, state) -> (x, new_state)`` with the *same* u at every step, and the zero
state gives the paper's t = 0 iterate (only the feed-forward input is present), because the
recurrent term of a zero state is zero. The layers in :mod:`rnnlab.layers.rcnn` iterate these
cells with the feed-forward term computed once.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_float
from .activations import ActivationSpec, resolve_activation
from .base import Cell, activation_config, check_positive_int

RCL_NORMS = ("lrn", "none")


def paper_lrn_size(channels: int) -> int:
    """The paper's LRN window for K feature maps: N = K/8 + 1 (Liang & Hu 2015, Sec. 3.1)."""
    return channels // 8 + 1


class RCLState(NamedTuple):
    """State of an RCL: the feature maps x(t-1), (B, K, H, W)."""

    x: Tensor


class RecurrentMLPState(NamedTuple):
    """State of a recurrent-MLP layer: the hidden units h(t-1), (B, N)."""

    h: Tensor


def _odd_kernel(value: Any, argument: str) -> int:
    check_positive_int(value, argument)
    if value % 2 != 1:
        # An even kernel cannot keep H x W with symmetric padding, and the state must keep it.
        raise ValueError(f"{argument}: expected an odd positive int, got {value!r}")
    return int(value)


def check_image(
    x: Any,
    channels: int,
    *,
    size: tuple[int, int] | None = None,
    argument: str = "x",
) -> None:
    """Raise a clear error unless ``x`` is a floating (B, channels, H, W) tensor (of ``size``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{argument}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{argument}: expected a floating-point tensor, got dtype {x.dtype}")
    hw = "H, W" if size is None else f"{size[0]}, {size[1]}"
    ok = x.dim() == 4 and x.shape[1] == channels and x.shape[0] >= 1
    if ok and size is not None:
        ok = tuple(x.shape[2:]) == tuple(size)
    if ok:
        ok = x.shape[2] >= 1 and x.shape[3] >= 1
    if not ok:
        raise ValueError(f"{argument}: expected (B, {channels}, {hw}), got {tuple(x.shape)}")


class RCLCell(Cell):
    r"""Recurrent convolutional layer (RCL), one iteration.

    .. math::
        z_{ijk}(t) = (w_k^{in})^\top u^{(i,j)} + (w_k^{rec})^\top x^{(i,j)}(t-1) + b_k,
        \qquad x_{ijk}(t) = g(f(z_{ijk}(t)))

    with f = ReLU and g the local response normalisation of the paper,

    .. math::
        g(f_{ijk}) = f_{ijk} \Big/ \Big(1 + \frac{\alpha}{N}
        \sum_{k'=\max(0,\,k-N/2)}^{\min(K-1,\,k+N/2)} f_{ijk'}^2\Big)^{\beta},

    N = K/8 + 1, α = 0.001, β = 0.75. The lecture writes x(t) = σ(z(t)) with σ = g∘f. u is the
    static feed-forward input, x(t) the state; both sums are 2-D convolutions with "same" padding,
    so x keeps u's H x W. The zero state gives x(0) = g(f(w^in * u + b)), the paper's t = 0 where
    only the feed-forward input is present; T further steps give x(T).

    Parameters (lecture symbol): ``weight_ih`` the feed-forward kernels w^in (K, C, k_f, k_f);
    ``weight_hh`` the recurrent kernels w^rec (K, K, k, k), shared over iterations; ``bias`` b
    (K,), one per RCL as in the paper. The LRN has no parameters.

    This is the readable reference step. :class:`rnnlab.layers.RCL` computes w^in * u + b once,
    re-injects it at every iteration and fuses ReLU and LRN; a test proves it equals this cell
    iterated by hand (outputs and gradients). BatchNorm per iteration, the common variant, needs
    the iteration index and lives in that layer.

    Args:
        in_channels: C.
        channels: K.
        kernel_size: k of the recurrent kernels (odd; 3 in the paper).
        feedforward_kernel_size: k_f of the feed-forward kernels (odd; default ``kernel_size``).
        activation: f (default ``"relu"``, the paper's).
        norm: g, ``"lrn"`` (the paper's) or ``"none"``.
        lrn_size: N (default K/8 + 1).
        lrn_alpha: α. lrn_beta: β. lrn_k: the constant 1 in the denominator.
        bias: whether b exists.

    Example:
        >>> cell = RCLCell(3, 16)
        >>> u = torch.randn(2, 3, 8, 8)
        >>> state = cell.initial_state(2, size=(8, 8))
        >>> for t in range(4):          # x(0), ..., x(3): T = 3 as in the paper
        ...     x, state = cell(u, state)
        >>> x.shape
        torch.Size([2, 16, 8, 8])

    Reference: M. Liang and X. Hu, "Recurrent convolutional neural network for object
    recognition", CVPR 2015 (Eqs. 1-4).
    """

    State = RCLState

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int = 3,
        *,
        feedforward_kernel_size: int | None = None,
        activation: ActivationSpec = "relu",
        norm: str = "lrn",
        lrn_size: int | None = None,
        lrn_alpha: float = 1e-3,
        lrn_beta: float = 0.75,
        lrn_k: float = 1.0,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.in_channels = self.input_size = check_positive_int(in_channels, "in_channels")
        self.channels = self.hidden_size = self.output_size = check_positive_int(
            channels, "channels"
        )
        self.kernel_size = _odd_kernel(kernel_size, "kernel_size")
        self.feedforward_kernel_size = _odd_kernel(
            kernel_size if feedforward_kernel_size is None else feedforward_kernel_size,
            "feedforward_kernel_size",
        )
        self.norm = check_choice(norm, "norm", RCL_NORMS)
        self.lrn_size = check_positive_int(
            lrn_size if lrn_size is not None else paper_lrn_size(channels), "lrn_size"
        )
        self.lrn_alpha = check_float(lrn_alpha, "lrn_alpha")
        self.lrn_beta = check_float(lrn_beta, "lrn_beta")
        self.lrn_k = check_float(lrn_k, "lrn_k", low=0.0, low_open=True)
        self.activation, self.activation_name = resolve_activation(activation)
        kf, k = self.feedforward_kernel_size, self.kernel_size
        self.weight_ih = nn.Parameter(torch.empty(channels, in_channels, kf, kf, **kw))
        self.weight_hh = nn.Parameter(torch.empty(channels, channels, k, k, **kw))
        self.bias = nn.Parameter(torch.empty(channels, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.Conv2d's initialisation for both kernels and the bias."""
        for w in (self.weight_ih, self.weight_hh):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * self.feedforward_kernel_size**2)
            nn.init.uniform_(self.bias, -bound, bound)

    # --- the maths ----------------------------------------------------------------------------
    def drive(self, u: Tensor) -> Tensor:
        """The feed-forward term w^in * u + b, (B, K, H, W); constant over the iterations."""
        return F.conv2d(u, self.weight_ih, self.bias, padding=self.feedforward_kernel_size // 2)

    def recurrent(self, x_prev: Tensor) -> Tensor:
        """The recurrent term w^rec * x(t-1), (B, K, H, W)."""
        return F.conv2d(x_prev, self.weight_hh, None, padding=self.kernel_size // 2)

    def normalize(self, a: Tensor) -> Tensor:
        """g: the paper's LRN across feature maps (or the identity with ``norm="none"``)."""
        if self.norm == "none":
            return a
        return F.local_response_norm(a, self.lrn_size, self.lrn_alpha, self.lrn_beta, self.lrn_k)

    def transition(self, drive: Tensor, x_prev: Tensor | None) -> Tensor:
        """x(t) = g(f(drive + w^rec * x(t-1))); ``x_prev=None`` is t = 0 (drive alone)."""
        z = drive if x_prev is None else drive + self.recurrent(x_prev)
        return self.normalize(self.activation(z))

    def step(self, u: Tensor, state: RCLState) -> tuple[Tensor, RCLState]:
        x = self.transition(self.drive(u), state.x)
        return x, RCLState(x)

    # --- the contract -------------------------------------------------------------------------
    def forward(self, u: Tensor, state: Any = None) -> tuple[Tensor, RCLState]:
        """One iteration: validate ``u`` (B, C, H, W) and ``state``, return ``(x, RCLState(x))``."""
        check_image(u, self.in_channels, argument="u")
        if state is None:
            state = self.initial_state(
                u.shape[0], device=u.device, dtype=u.dtype, size=(u.shape[2], u.shape[3])
            )
        else:
            state = self.check_state(state, u.shape[0], u)
        return self.step(u, state)

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        size: tuple[int, int] | None = None,
    ) -> RCLState:
        """The zero state (B, K, H, W); ``size`` = (H, W) of the input is required."""
        check_positive_int(batch_size, "batch_size")
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
        ):
            raise ValueError(f"size: expected the input's spatial size (H, W), got {size!r}")
        device = device if device is not None else self.weight_hh.device
        dtype = dtype if dtype is not None else self.weight_hh.dtype
        return RCLState(
            torch.zeros(batch_size, self.channels, size[0], size[1], device=device, dtype=dtype)
        )

    def state_sizes(self) -> dict[str, int]:
        return {"x": self.channels}

    def check_state(
        self, state: Any, batch_size: int, like: Tensor, argument: str = "state"
    ) -> Any:
        """Validate a state against the input ``like`` (B, C, H, W): x must be (B, K, H, W)."""
        if isinstance(state, Tensor):
            state = (state,)
        if not isinstance(state, tuple) or len(state) != 1:
            kind = f"tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__
            raise TypeError(f"{argument}: expected RCLState(x) with 1 tensor, got {kind}")
        (x,) = state
        where = f"{argument}.x"
        if not isinstance(x, Tensor):
            raise TypeError(f"{where}: expected a tensor, got {type(x).__name__}")
        want = (batch_size, self.channels, like.shape[2], like.shape[3])
        if tuple(x.shape) != want:
            raise ValueError(f"{where}: expected shape {want}, got {tuple(x.shape)}")
        if x.dtype != like.dtype:
            raise TypeError(f"{where}: expected dtype {like.dtype} (as u), got {x.dtype}")
        if x.device != like.device:
            raise ValueError(f"{where}: expected device {like.device} (as u), got {x.device}")
        return state if type(state) is RCLState else RCLState(x)

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "feedforward_kernel_size": self.feedforward_kernel_size,
            "activation": activation_config(self.activation_name, "activation"),
            "norm": self.norm,
            "lrn_size": self.lrn_size,
            "lrn_alpha": self.lrn_alpha,
            "lrn_beta": self.lrn_beta,
            "lrn_k": self.lrn_k,
            "bias": self.bias is not None,
        }


class RecurrentMLPCell(Cell):
    r"""One fully connected layer of a recurrent MLP, one iteration on its fixed input.

    .. math:: h(t) = \sigma(W^{in} u + W^{rec} h(t-1) + b)

    The lecture's case 2 of unfolding for a layer: u is fixed and present at every step. The
    zero state gives h(0) = σ(W^in u + b), the feed-forward layer; the RCL is this cell with the
    full connections replaced by convolutions.

    Parameters (lecture symbol): ``weight_ih`` W^in (N, I); ``weight_hh`` W^rec (N, N), shared
    over iterations; ``bias`` b (N,).

    Args:
        input_size: I.
        hidden_size: N.
        activation: σ (default ``"relu"``, as the RCL's f).
        bias: whether b exists.

    Example:
        >>> cell = RecurrentMLPCell(4, 8)
        >>> u, state = torch.randn(2, 4), cell.initial_state(2)
        >>> for t in range(4):
        ...     h, state = cell(u, state)
        >>> h.shape
        torch.Size([2, 8])

    Reference: M. Liang and X. Hu, CVPR 2015, Sec. 3 (the RCL as the convolutional RMLP).
    """

    State = RecurrentMLPState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        activation: ActivationSpec = "relu",
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = self.output_size = check_positive_int(hidden_size, "hidden_size")
        self.activation, self.activation_name = resolve_activation(activation)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **kw))
        self.bias = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.Linear's initialisation for both matrices and the bias."""
        for w in (self.weight_ih, self.weight_hh):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.input_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def drive(self, u: Tensor) -> Tensor:
        """The feed-forward term W^in u + b, (B, N); constant over the iterations."""
        return F.linear(u, self.weight_ih, self.bias)

    def transition(self, drive: Tensor, h_prev: Tensor | None) -> Tensor:
        """h(t) = σ(drive + W^rec h(t-1)); ``h_prev=None`` is t = 0."""
        z = drive if h_prev is None else drive + F.linear(h_prev, self.weight_hh)
        return self.activation(z)

    def step(self, u: Tensor, state: RecurrentMLPState) -> tuple[Tensor, RecurrentMLPState]:
        h = self.transition(self.drive(u), state.h)
        return h, RecurrentMLPState(h)

    def state_sizes(self) -> dict[str, int]:
        return {"h": self.hidden_size}

    def config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "activation": activation_config(self.activation_name, "activation"),
            "bias": self.bias is not None,
        }
