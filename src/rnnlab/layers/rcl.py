"""The layers of the recurrent convolutional networks: the RCL layer (with its fused ReLU + LRN
and per-iteration normalisation) and the recurrent MLP. The networks built from them (RCNN-K,
the CNN and WCNN baselines, :func:`build_model`) are in :mod:`rnnlab.layers.rcnn`; split from it
by job (layers vs builders, issue 16).

Shapes: B batch, C input channels, K feature maps, H x W spatial size, T iterations (the
iterates are x(0), ..., x(T)), I input features, N hidden units, L classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._checks import check_choice, check_probability
from ..cells.activations import ActivationSpec
from ..cells.base import check_input, check_positive_int
from ..cells.conv import RCLCell, RecurrentMLPCell, check_image, paper_lrn_size

NORMS = ("lrn", "batch", "none")
INPUT_AT = ("all", "first")


# --- fused ReLU + LRN -------------------------------------------------------------------------
def _lrn_band(channels: int, size: int, *, device: Any, dtype: torch.dtype) -> Tensor:
    """(K, K, 1, 1) 0/1 matrix: feature map k sums maps k - size//2 ... k + (size-1)//2.

    The window is torch.nn.functional.local_response_norm's (symmetric for odd sizes, as the
    paper's N = K/8 + 1 is for K a multiple of 16).
    """
    k = torch.arange(channels, device=device)
    offset = k[None, :] - k[:, None]  # (K, K): k' - k
    band = (offset >= -(size // 2)) & (offset <= (size - 1) // 2)
    return band.to(dtype).view(channels, channels, 1, 1)


def _rsqrt_pow(r: Tensor, beta: float, out: Tensor | None = None) -> Tensor:
    """q^(-β) from r = q^(-1/2), i.e. r^(2β); for β = 3/4, r * sqrt(r) (cheaper than pow)."""
    if beta == 0.75:
        return torch.sqrt(r, out=out).mul_(r) if out is not None else torch.sqrt(r).mul_(r)
    return torch.pow(r, 2.0 * beta, out=out) if out is not None else torch.pow(r, 2.0 * beta)


class _ReLULRN(torch.autograd.Function):
    """y = g(relu(z)), g the LRN, with a hand-written backward that keeps memory low.

    With a = relu(z), q = k + c B a² (B the band matrix of ``_lrn_band``, c = α/N) and
    d = q^(-β): y = a d, and

        dL/dz = [a > 0] (g d + 2 c a B^T t),  t = -β g a d / q = -β g y / q.

    Only y (the output, which the next layer keeps anyway) and r = q^(-1/2) are saved; the
    backward recovers d = r^(2β) and a = y / d. On CPUs fresh memory costs page faults that
    outweigh a few extra element-wise passes, so the forward allocates one saved tensor and,
    with ``inplace``, writes y over z. ``band`` is c B, ``band_t`` is -2 β c B^T and ``bias``
    holds k, so the scaling happens inside the convolutions.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        band: Tensor,
        band_t: Tensor,
        bias: Tensor,
        beta: float,
        inplace: bool,
    ) -> Tensor:
        if inplace:
            ctx.mark_dirty(z)
            a = z.relu_()
        else:
            a = torch.relu(z)
        sq = a * a
        r = F.conv2d(sq, band, bias).rsqrt_()  # (B, K, H, W): (k + c Σ_window a²)^(-1/2)
        y = a.mul_(_rsqrt_pow(r, beta, out=sq))  # a q^(-β), in a's memory
        ctx.save_for_backward(y, r, band_t)
        ctx.beta = beta
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        y, r, band_t = ctx.saved_tensors
        t = (g * y).mul_(r).mul_(r)  # g y / q
        s = F.conv2d(t, band_t)  # 2 c B^T (-β g y / q)
        d = _rsqrt_pow(r, ctx.beta, out=t)  # q^(-β), in t's memory
        s.mul_(y).div_(d).addcmul_(g, d)  # times a = y / d, plus g d
        # [a > 0] = [y > 0]: ReLU's own backward kernel applies the mask, in place.
        torch.ops.aten.threshold_backward.grad_input(s, y, 0.0, grad_input=s)
        return s, None, None, None, None, None


class _Normalization(nn.Module):
    """x = g(relu(z)) for one layer: the paper's LRN (fused), BatchNorm per iteration, or none.

    With ``norm="batch"`` it holds ``iterations`` BatchNorm2d modules, one per iterate; at
    inference with more iterations than trained, the later iterates reuse the last one.
    """

    band: Tensor
    band_t: Tensor

    def __init__(
        self,
        channels: int,
        norm: str,
        *,
        iterations: int = 1,
        lrn_size: int | None = None,
        lrn_alpha: float = 1e-3,
        lrn_beta: float = 0.75,
        lrn_k: float = 1.0,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.norm = check_choice(norm, "norm", NORMS)
        self.channels = channels
        self.lrn_size = lrn_size if lrn_size is not None else paper_lrn_size(channels)
        self.lrn_alpha, self.lrn_beta, self.lrn_k = lrn_alpha, lrn_beta, lrn_k
        self.batch_norms = (
            nn.ModuleList(
                nn.BatchNorm2d(channels, device=device, dtype=dtype) for _ in range(iterations)
            )
            if norm == "batch"
            else None
        )
        if norm == "lrn":
            # 0/1 entries, exact in every dtype; scaled per call (a K x K op) so that α/N is
            # rounded in the input's dtype.
            band = _lrn_band(channels, self.lrn_size, device=device, dtype=dtype or torch.float32)
            self.register_buffer("band", band, persistent=False)
            self.register_buffer("band_t", band.transpose(0, 1).contiguous(), persistent=False)

    def forward(self, z: Tensor, t: int = 0, *, inplace: bool = False) -> Tensor:
        if self.norm == "lrn":
            c = self.lrn_alpha / self.lrn_size
            band, band_t = self.band.to(z.dtype), self.band_t.to(z.dtype)
            bias = torch.full((self.channels,), self.lrn_k, dtype=z.dtype, device=z.device)
            out: Tensor = _ReLULRN.apply(
                z, band * c, band_t * (-2.0 * self.lrn_beta * c), bias, self.lrn_beta, inplace
            )
            return out
        a = F.relu(z, inplace=inplace)
        if self.batch_norms is None:
            return a
        bn = self.batch_norms[min(t, len(self.batch_norms) - 1)]
        out = bn(a)
        return out


class _Dropout(nn.Module):
    """Inverted dropout whose mask is ``rand >= p``: the distribution of nn.Dropout's, and on
    CPUs about 4x cheaper to draw than its ``bernoulli_`` mask (a third of an RCNN-32 step)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))  # 0 or 1/(1-p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _check_steps(steps: Any, default: int) -> int:
    if steps is None:
        return default
    return check_positive_int(steps, "steps", allow_zero=True)


def _check_like_parameters(x: Tensor, module: nn.Module, argument: str) -> None:
    for p in module.parameters():
        if p.dtype != x.dtype:
            raise TypeError(
                f"{argument}: expected dtype {p.dtype} (the parameters'), got {x.dtype}"
            )
        if p.device != x.device:
            raise ValueError(
                f"{argument}: expected device {p.device} (the parameters'), got {x.device}"
            )
        return


# --- the RCL layer ----------------------------------------------------------------------------
class RCL(nn.Module):
    r"""Recurrent convolutional layer: T iterations of an :class:`~rnnlab.cells.RCLCell` on u.

    .. math::
        x(0) = g(f(w^{in} * u + b)), \qquad
        x(t) = g(f(w^{in} * u + w^{rec} * x(t-1) + b)), \quad t = 1, \dots, T

    The feed-forward term w^in * u + b is computed once and re-injected at every iteration; the
    recurrent kernels are shared over the iterations. Unfolded, the layer is a feed-forward
    subnetwork of depth T + 1 with many paths (the lecture's "unfolding RCL through time").

    Variants:

    * ``norm="lrn"`` (default): the paper's g, LRN after ReLU (size K/8 + 1, α = 0.001,
      β = 0.75), no parameters.
    * ``norm="batch"``: BatchNorm after ReLU, one BatchNorm2d per iterate (the common variant);
      iterates beyond the trained T reuse the last one.
    * ``norm="none"``: g is the identity.
    * ``input_at="first"``: the paper's rCNN, where u enters only at t = 0:
      x(t) = g(f(w^rec * x(t-1) + b)) for t >= 1.

    Args:
        in_channels: C.
        channels: K.
        steps: T, the default number of iterations (3 in the paper); ``forward(u, steps=...)``
            changes it, also at inference.
        kernel_size: recurrent kernel size (odd, 3 in the paper).
        feedforward_kernel_size: feed-forward kernel size (odd; default ``kernel_size``).
        norm: ``"lrn"``, ``"batch"`` or ``"none"``.
        input_at: ``"all"`` (RCL) or ``"first"`` (rCNN).
        activation: f (``"relu"``; other activations run without the fused kernel).
        lrn_size, lrn_alpha, lrn_beta, lrn_k: the LRN's N (default K/8 + 1), α, β and constant.
        bias: whether b exists.

    Attributes:
        cell: the :class:`~rnnlab.cells.RCLCell` holding ``weight_ih`` (w^in), ``weight_hh``
            (w^rec) and ``bias`` (b).

    Example:
        >>> layer = RCL(3, 16, steps=3)
        >>> u = torch.randn(2, 3, 8, 8)
        >>> layer(u).shape
        torch.Size([2, 16, 8, 8])
        >>> [x.shape[1] for x in layer.iterates(u)]   # x(0), ..., x(3)
        [16, 16, 16, 16]

    Reference: M. Liang and X. Hu, "Recurrent convolutional neural network for object
    recognition", CVPR 2015.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        steps: int = 3,
        *,
        kernel_size: int = 3,
        feedforward_kernel_size: int | None = None,
        norm: str = "lrn",
        input_at: str = "all",
        activation: ActivationSpec = "relu",
        lrn_size: int | None = None,
        lrn_alpha: float = 1e-3,
        lrn_beta: float = 0.75,
        lrn_k: float = 1.0,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.steps = check_positive_int(steps, "steps", allow_zero=True)
        check_choice(norm, "norm", NORMS)
        check_choice(input_at, "input_at", INPUT_AT)
        self.norm = norm
        self.input_at = input_at
        self.cell = RCLCell(
            in_channels,
            channels,
            kernel_size,
            feedforward_kernel_size=feedforward_kernel_size,
            activation=activation,
            norm="lrn" if norm == "lrn" else "none",
            lrn_size=lrn_size,
            lrn_alpha=lrn_alpha,
            lrn_beta=lrn_beta,
            lrn_k=lrn_k,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.in_channels = self.cell.in_channels
        self.channels = self.cell.channels
        # The fused path assumes f = ReLU; any other f runs the cell's own transition.
        self._fused = self.cell.activation_name == "relu"
        self.normalization = _Normalization(
            channels,
            norm,
            iterations=self.steps + 1,
            lrn_size=self.cell.lrn_size,
            lrn_alpha=self.cell.lrn_alpha,
            lrn_beta=self.cell.lrn_beta,
            lrn_k=self.cell.lrn_k,
            device=device,
            dtype=dtype,
        )

    def forward(self, u: Tensor, steps: int | None = None) -> Tensor:
        """x(T) for the input ``u`` (B, C, H, W): (B, K, H, W)."""
        steps = self._check(u, steps)
        return self._iterate(u, steps, keep=False)[-1]

    def iterates(self, u: Tensor, steps: int | None = None) -> tuple[Tensor, ...]:
        """Every iterate x(0), ..., x(T), each (B, K, H, W): the unfolded view."""
        steps = self._check(u, steps)
        return tuple(self._iterate(u, steps, keep=True))

    def _check(self, u: Tensor, steps: int | None) -> int:
        check_image(u, self.in_channels, argument="u")
        _check_like_parameters(u, self, "u")
        return _check_steps(steps, self.steps)

    def _act_norm(self, z: Tensor, t: int, *, inplace: bool) -> Tensor:
        if self._fused:
            return self.normalization(z, t, inplace=inplace)
        a = self.cell.activation(z)
        if self.norm == "lrn":
            return self.cell.normalize(a)
        if self.norm == "batch":
            assert self.normalization.batch_norms is not None
            bn = self.normalization.batch_norms
            out: Tensor = bn[min(t, len(bn) - 1)](a)
            return out
        return a

    def _iterate(self, u: Tensor, steps: int, *, keep: bool) -> list[Tensor]:
        """The unchecked loop; returns [x(T)] or, with ``keep``, [x(0), ..., x(T)]."""
        cell = self.cell
        pad = cell.kernel_size // 2
        drive = cell.drive(u)  # (B, K, H, W), once for all iterations
        x = self._act_norm(drive, 0, inplace=False)  # drive is reused: never in place
        out = [x]
        for t in range(1, steps + 1):
            if self.input_at == "all":
                # conv2d does not save its output for backward, so the drive is added in place.
                z = F.conv2d(x, cell.weight_hh, None, padding=pad).add_(drive)
            else:
                z = F.conv2d(x, cell.weight_hh, cell.bias, padding=pad)
            x = self._act_norm(z, t, inplace=True)
            if keep:
                out.append(x)
            else:
                out[0] = x
        return out

    def extra_repr(self) -> str:
        return f"steps={self.steps}, norm={self.norm!r}, input_at={self.input_at!r}"


class _ConvLayer(nn.Module):
    """A feed-forward convolution with the same f and g as the RCLs: g(relu(w * u + b))."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int,
        norm: str,
        *,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, channels, kernel_size, padding=kernel_size // 2, device=device, dtype=dtype
        )
        self.normalization = _Normalization(channels, norm, device=device, dtype=dtype)

    def forward(self, u: Tensor) -> Tensor:
        return self.normalization(self.conv(u), 0, inplace=True)


# --- recurrent MLP ----------------------------------------------------------------------------
class RecurrentMLP(nn.Module):
    r"""A recurrent MLP: fully connected layers, each iterating T times on its fixed input.

    .. math::
        h^{(l)}(0) = \sigma(W^{in}_l h^{(l-1)} + b_l), \qquad
        h^{(l)}(t) = \sigma(W^{in}_l h^{(l-1)} + W^{rec}_l h^{(l)}(t-1) + b_l)

    with h^(0) = u and each layer's input h^(l-1) = h^(l-1)(T); an optional linear readout
    (the softmax layer's logits) follows the last layer. Layer l is a
    :class:`~rnnlab.cells.RecurrentMLPCell`; its feed-forward term is computed once.

    Args:
        input_size: I.
        hidden_sizes: N of each layer.
        steps: T (``forward(u, steps=...)`` changes it).
        output_size: L of the readout, or None for none.
        activation: σ.
        dropout: dropout probability after every layer but the last.

    Example:
        >>> net = RecurrentMLP(784, [64, 64], steps=3, output_size=10)
        >>> net(torch.randn(2, 784)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: Sequence[int],
        steps: int = 3,
        *,
        output_size: int | None = None,
        activation: ActivationSpec = "relu",
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int(input_size, "input_size")
        if (
            isinstance(hidden_sizes, (str, bytes))
            or not isinstance(hidden_sizes, Sequence)
            or (len(hidden_sizes) == 0)
        ):
            raise ValueError(
                "hidden_sizes: expected a non-empty sequence of positive ints, "
                f"got {hidden_sizes!r}"
            )
        sizes = [check_positive_int(n, "hidden_sizes") for n in hidden_sizes]
        self.steps = check_positive_int(steps, "steps", allow_zero=True)
        check_probability(dropout, "dropout")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.cells = nn.ModuleList(
            RecurrentMLPCell(n_in, n, activation=activation, **kw)
            for n_in, n in zip([input_size, *sizes[:-1]], sizes)
        )
        self.dropout = nn.Dropout(float(dropout))
        self.readout = (
            nn.Linear(sizes[-1], check_positive_int(output_size, "output_size"), **kw)
            if output_size is not None
            else None
        )
        self.output_size = output_size if output_size is not None else sizes[-1]

    def forward(self, u: Tensor, steps: int | None = None) -> Tensor:
        """The readout (B, L), or the last layer's h(T) (B, N) without one."""
        return self._run(u, steps, keep=False)[0]

    def iterates(self, u: Tensor, steps: int | None = None) -> list[tuple[Tensor, ...]]:
        """For each layer, its iterates h(0), ..., h(T), each (B, N)."""
        return self._run(u, steps, keep=True)[1]

    def _run(
        self, u: Tensor, steps: int | None, *, keep: bool
    ) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
        check_input(u, self.input_size, ndim=2, argument="u")
        _check_like_parameters(u, self, "u")
        steps = _check_steps(steps, self.steps)
        traj: list[tuple[Tensor, ...]] = []
        h = u
        for i in range(len(self.cells)):
            cell = cast(RecurrentMLPCell, self.cells[i])
            if i > 0:
                h = self.dropout(h)
            drive = cell.drive(h)  # (B, N), once for all iterations
            h = cell.transition(drive, None)
            its = [h]
            for _ in range(steps):
                h = cell.transition(drive, h)
                if keep:
                    its.append(h)
            traj.append(tuple(its))
        out = self.readout(h) if self.readout is not None else h
        return out, traj
