"""Recurrent convolutional networks: the RCL layer, the recurrent MLP, RCNN-K and its baselines.

Shapes: B batch, C input channels, K feature maps, H x W spatial size, T iterations (the
iterates are x(0), ..., x(T)), I input features, N hidden units, L classes.

The lecture's case 2 of unfolding for whole layers: each layer's input is computed once and
re-injected at every iteration, the recurrent weights are shared over the iterations, and the
label sits after the last one. :class:`RCNN` is the network of Liang & Hu (CVPR 2015) exactly
(LRN, one bias per RCL, no parameters outside the convolutions and the softmax layer), with
per-iteration BatchNorm as the common variant (``norm="batch"``); :class:`FeedForwardCNN` is the
same network without recurrence (the paper's CNN baseline, and WCNN when widened to the same
parameter count), and ``RCNN(..., input_at="first")`` is the paper's rCNN, whose input enters
only at t = 0.

Speed (see ``benchmarks/bench_rcnn.py``): the feed-forward convolution runs once per RCL, the
recurrent convolution's output receives it in place, ReLU and LRN are one autograd function
(an exact LRN: the window sum over feature maps is a 1x1 convolution with a band matrix), and
:class:`RCNN` runs in channels_last memory format.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_probability
from ..cells.base import check_positive_int
from ..cells.conv import check_image
from .rcl import (
    INPUT_AT,
    NORMS,
    RCL,
    RecurrentMLP,
    _check_like_parameters,
    _check_steps,
    _ConvLayer,
    _Dropout,
)

MODEL_KINDS = ("RCNN", "rCNN", "FF", "WCNN")


# --- networks ---------------------------------------------------------------------------------
def _image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"image_size: expected None, an int or (H, W) of positive ints, got {value!r}")


class _Backbone(nn.Module):
    """Layer 1, the four recurrent or feed-forward layers, pooling, dropout and softmax layer."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int,
        *,
        norm: str,
        dropout: float,
        image_size: Any,
        first_kernel_size: int,
        channels_last: bool,
        device: Any,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.channels = check_positive_int(channels, "channels")
        check_choice(norm, "norm", NORMS)
        check_probability(dropout, "dropout")
        self.norm = norm
        self.image_size = _image_size(image_size)
        self.channels_last = bool(channels_last)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        check_positive_int(first_kernel_size, "first_kernel_size")
        if first_kernel_size % 2 != 1:
            raise ValueError(f"first_kernel_size: expected an odd int, got {first_kernel_size!r}")
        self.layer1 = _ConvLayer(in_channels, channels, first_kernel_size, norm, **kw)
        # 3x3 max-pooling with stride 2; padding 1 gives Caffe's ceil sizes (32->16, 28->14).
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dropout = _Dropout(float(dropout))
        self.classifier = nn.Linear(channels, num_classes, **kw)

    def _check_x(self, x: Tensor) -> None:
        check_image(x, self.in_channels, size=self.image_size, argument="x")
        _check_like_parameters(x, self, "x")

    def _finish_init(self) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _head(self, features: Tensor) -> Tensor:
        return self.classifier(features)  # (B, L): logits, softmax in the loss


class RCNN(_Backbone):
    r"""RCNN-K of Liang & Hu (CVPR 2015): a feed-forward layer, four RCLs, global max-pooling.

    Layer 1 is a 5x5 feed-forward convolution (ReLU and the same normalisation as the RCLs)
    followed by 3x3 max-pooling with stride 2; then RCL, RCL, 3x3/2 max-pooling, RCL, RCL, each
    with K feature maps and T iterations; dropout after each RCL except the last; global
    max-pooling over space gives a K-vector; a softmax layer gives L classes (this module returns
    the logits). Unfolded it has 4(T + 1) + 2 parameterised layers.

    With ``norm="lrn"`` the parameter count is the paper's: RCNN-96 / 128 / 160 on CIFAR-10 have
    0.67 / 1.19 / 1.86 M parameters, RCNN-32 / 64 / 96 on MNIST 0.08 / 0.30 / 0.67 M.

    Args:
        in_channels: C of the images.
        num_classes: L.
        channels: K.
        steps: T (3 in the paper); ``forward(x, steps=...)`` changes it at inference.
        norm: ``"lrn"`` (the paper's), ``"batch"`` (BatchNorm per iteration) or ``"none"``.
        input_at: ``"all"``, or ``"first"`` for the paper's rCNN (input only at t = 0).
        dropout: dropout probability after RCLs 1-3.
        image_size: (H, W) the network checks its input against, or None for any size.
        first_kernel_size: layer 1's kernel (5 in the paper). kernel_size: the RCLs' (3).
        channels_last: keep parameters and activations in channels_last memory format (faster
            convolutions on CPUs and recent GPUs; results are the same).

    Example:
        >>> net = RCNN(1, 10, channels=32, image_size=28)
        >>> net(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> count_parameters(net)
        75018
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: int = 96,
        steps: int = 3,
        *,
        norm: str = "lrn",
        input_at: str = "all",
        dropout: float = 0.5,
        image_size: int | tuple[int, int] | None = None,
        first_kernel_size: int = 5,
        kernel_size: int = 3,
        channels_last: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            channels,
            norm=norm,
            dropout=dropout,
            image_size=image_size,
            first_kernel_size=first_kernel_size,
            channels_last=channels_last,
            device=device,
            dtype=dtype,
        )
        self.steps = check_positive_int(steps, "steps", allow_zero=True)
        self.input_at = input_at
        self.rcls = nn.ModuleList(
            RCL(
                channels,
                channels,
                steps,
                kernel_size=kernel_size,
                norm=norm,
                input_at=input_at,
                device=device,
                dtype=dtype,
            )
            for _ in range(4)
        )
        self._finish_init()

    def features(self, x: Tensor, steps: int | None = None) -> Tensor:
        """The global max-pooled feature vector, (B, K)."""
        self._check_x(x)
        steps = _check_steps(steps, self.steps)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.pool(self.layer1(x))  # (B, K, H/2, W/2)
        for i in range(4):
            h = cast(RCL, self.rcls[i])._iterate(h, steps, keep=False)[-1]
            if i < 3:
                h = self.dropout(h)
            if i == 1:
                h = self.pool(h)  # (B, K, H/4, W/4)
        return h.amax(dim=(2, 3))  # (B, K)

    def forward(self, x: Tensor, steps: int | None = None) -> Tensor:
        """Logits (B, L) for images ``x`` (B, C, H, W)."""
        return self._head(self.features(x, steps))


class FeedForwardCNN(_Backbone):
    """RCNN-K without recurrence: the paper's CNN baseline, and WCNN when widened.

    The same network as :class:`RCNN` with every RCL replaced by a feed-forward 3x3 convolution
    (ReLU and the same normalisation). ``FeedForwardCNN(channels=wcnn_channels(K, ...))`` is the
    wider CNN with about RCNN-K's parameter count.

    Example:
        >>> net = FeedForwardCNN(1, 10, channels=45, image_size=28)
        >>> count_parameters(net)     # about RCNN-32's 75018
        74710
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: int = 96,
        *,
        norm: str = "lrn",
        dropout: float = 0.5,
        image_size: int | tuple[int, int] | None = None,
        first_kernel_size: int = 5,
        kernel_size: int = 3,
        channels_last: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            channels,
            norm=norm,
            dropout=dropout,
            image_size=image_size,
            first_kernel_size=first_kernel_size,
            channels_last=channels_last,
            device=device,
            dtype=dtype,
        )
        check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size: expected an odd int, got {kernel_size!r}")
        self.convs = nn.ModuleList(
            _ConvLayer(channels, channels, kernel_size, norm, device=device, dtype=dtype)
            for _ in range(4)
        )
        self._finish_init()

    def features(self, x: Tensor) -> Tensor:
        """The global max-pooled feature vector, (B, K)."""
        self._check_x(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.pool(self.layer1(x))  # (B, K, H/2, W/2)
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < 3:
                h = self.dropout(h)
            if i == 1:
                h = self.pool(h)  # (B, K, H/4, W/4)
        return h.amax(dim=(2, 3))  # (B, K)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, L) for images ``x`` (B, C, H, W)."""
        return self._head(self.features(x))


def count_parameters(module: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def wcnn_channels(
    channels: int,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    steps: int = 3,
    norm: str = "lrn",
    first_kernel_size: int = 5,
    kernel_size: int = 3,
) -> int:
    """The width K' whose :class:`FeedForwardCNN` has the parameter count closest to RCNN-K's."""
    common: dict[str, Any] = {
        "norm": norm,
        "first_kernel_size": first_kernel_size,
        "kernel_size": kernel_size,
        "channels_last": False,
        "device": "meta",
    }
    target = count_parameters(
        RCNN(in_channels, num_classes, channels, steps, dropout=0.0, **common)
    )
    best, best_gap = channels, None
    width = channels
    while True:
        n = count_parameters(FeedForwardCNN(in_channels, num_classes, width, **common))
        gap = abs(n - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = width, gap
        if n >= target:
            return best
        width += 1


def build_model(
    kind: str,
    channels: int,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    steps: int = 3,
    norm: str = "lrn",
    dropout: float = 0.5,
    image_size: int | tuple[int, int] | None = None,
    channels_last: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """One of the paper's models at width K: ``"RCNN"``, ``"rCNN"``, ``"FF"`` or ``"WCNN"``.

    ``"FF"`` is RCNN-K without recurrence (fewer parameters), ``"WCNN"`` the feed-forward CNN
    widened to about RCNN-K's parameter count (:func:`wcnn_channels`), ``"rCNN"`` RCNN-K with the
    input only at t = 0 (the same parameters as RCNN-K).
    """
    check_choice(kind, "kind", MODEL_KINDS)
    common: dict[str, Any] = {
        "norm": norm,
        "dropout": dropout,
        "image_size": image_size,
        "channels_last": channels_last,
        "device": device,
        "dtype": dtype,
    }
    if kind in ("RCNN", "rCNN"):
        input_at = "all" if kind == "RCNN" else "first"
        return RCNN(in_channels, num_classes, channels, steps, input_at=input_at, **common)
    width = channels
    if kind == "WCNN":
        width = wcnn_channels(
            channels, in_channels=in_channels, num_classes=num_classes, steps=steps, norm=norm
        )
    return FeedForwardCNN(in_channels, num_classes, width, **common)


__all__ = [
    "INPUT_AT",
    "MODEL_KINDS",
    "NORMS",
    "RCL",
    "RCNN",
    "FeedForwardCNN",
    "RecurrentMLP",
    "build_model",
    "count_parameters",
    "wcnn_channels",
]
