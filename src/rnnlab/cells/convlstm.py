r"""Convolutional LSTM (Shi et al. 2015), and a flat-state view of it for the dynamics tools.

Shapes: B batch, T time, C input channels, F hidden channels, S = (Hs, Ws) the frame size.

A :class:`ConvLSTMCell` steps frames x (B, C, Hs, Ws) with state h, c (B, F, Hs, Ws); it
declares ``input_shape = (C, None, None)`` so :class:`~rnnlab.layers.Recurrent` accepts
(B, T, C, Hs, Ws) sequences (any frame size) and passes the frame size to
:meth:`ConvLSTMCell.initial_state`. :class:`FlatConvLSTMCell` is the same cell on flat vectors
((B, C·Hs·Ws) inputs, (B, F·Hs·Ws) state fields) for one fixed frame size: an ordinary cell, so
``rnnlab.dynamics.Map.from_cell`` (fixed points, Jacobians, Lyapunov exponents) takes it as is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Cell, check_positive_int
from .lstm import LSTMState

__all__ = ["ConvLSTMCell", "FlatConvLSTMCell"]


def _spatial(size: Any, argument: str) -> tuple[int, int]:
    ok = isinstance(size, (tuple, list, torch.Size)) and len(size) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"{argument}: expected (height, width) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


class ConvLSTMCell(Cell):
    r"""Convolutional LSTM, one step (Shi et al. 2015, eq. 3).

    .. math::
        i &= \sigma(W_{xi} * X_t + W_{hi} * H_{t-1} + W_{ci} \circ C_{t-1} + b_i) \\
        f &= \sigma(W_{xf} * X_t + W_{hf} * H_{t-1} + W_{cf} \circ C_{t-1} + b_f) \\
        C_t &= f \circ C_{t-1} + i \circ \tanh(W_{xc} * X_t + W_{hc} * H_{t-1} + b_c) \\
        o &= \sigma(W_{xo} * X_t + W_{ho} * H_{t-1} + W_{co} \circ C_t + b_o) \\
        H_t &= o \circ \tanh(C_t)

    ``*`` is a 2-D convolution with "same" zero padding (odd kernels), ``∘`` the Hadamard
    product. The peepholes W_c are, as in the paper, full (F, Hs, Ws) tensors, so
    ``peephole=True`` needs ``spatial_size``; without peepholes any frame size runs.

    Parameters, gate blocks in torch's order i, f, g (the candidate), o: ``weight_ih`` the
    W_x kernels (4F, C, k, k); ``weight_hh`` the W_h kernels (4F, F, k, k); ``bias_ih`` the b's
    (4F,); ``weight_ci``, ``weight_cf``, ``weight_co`` (F, Hs, Ws) the peepholes.

    Args:
        in_channels: C.
        hidden_channels: F.
        kernel_size: k of both convolutions (odd), or ``(k_x, k_h)`` for the input and the
            recurrent one.
        bias: whether the b's exist.
        peephole: add the peephole connections (needs ``spatial_size``).
        spatial_size: (Hs, Ws), the frame size the peepholes are for.
        forget_bias: if given, the f block of ``bias_ih`` starts at this value.

    Example:
        >>> from rnnlab.layers import Recurrent
        >>> layer = Recurrent(ConvLSTMCell(1, 8, 3))
        >>> y, state = layer(torch.randn(2, 5, 1, 16, 16))   # (B, T, C, H, W)
        >>> y.shape, state.c.shape
        (torch.Size([2, 5, 8, 16, 16]), torch.Size([2, 8, 16, 16]))

    Reference: X. Shi et al., "Convolutional LSTM Network: A Machine Learning Approach for
    Precipitation Nowcasting", NeurIPS 2015.
    """

    State = LSTMState
    feedback_field = "h"

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        bias: bool = True,
        *,
        peephole: bool = False,
        spatial_size: tuple[int, int] | None = None,
        forget_bias: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.input_size = check_positive_int(in_channels, "in_channels")
        self.hidden_size = check_positive_int(hidden_channels, "hidden_channels")
        self.output_size = self.hidden_size
        ks = (
            tuple(kernel_size)
            if isinstance(kernel_size, (tuple, list))
            else (kernel_size, kernel_size)
        )
        if len(ks) != 2:
            raise ValueError(f"kernel_size: expected k or (k_x, k_h), got {kernel_size!r}")
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(f"kernel_size: expected odd positive ints, got {kernel_size!r}")
        self.kernel_size = (int(ks[0]), int(ks[1]))
        self.bias = bool(bias)
        self.peephole = bool(peephole)
        if peephole and spatial_size is None:
            raise ValueError(
                "spatial_size: peephole=True needs the frame size (the paper's peepholes are "
                "(F, H, W) tensors), got None"
            )
        self.spatial_size = None if spatial_size is None else _spatial(spatial_size, "spatial_size")
        if forget_bias is not None and not bias:
            raise ValueError("forget_bias: needs bias=True (it sets the f block of bias_ih)")
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        # Recurrent reads this: x is (B, T, C, any H, any W) (None: any size).
        self.input_shape: tuple[int | None, ...] = (self.input_size, None, None)
        C, Fh, (kx, kh) = self.input_size, self.hidden_size, self.kernel_size
        self.weight_ih = nn.Parameter(torch.empty(4 * Fh, C, kx, kx, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * Fh, Fh, kh, kh, **kw))
        self.bias_ih = nn.Parameter(torch.empty(4 * Fh, **kw)) if bias else None
        self.weight_ci: nn.Parameter | None = None
        self.weight_cf: nn.Parameter | None = None
        self.weight_co: nn.Parameter | None = None
        if self.spatial_size is not None and peephole:
            shape = (Fh, *self.spatial_size)
            self.weight_ci = nn.Parameter(torch.empty(shape, **kw))
            self.weight_cf = nn.Parameter(torch.empty(shape, **kw))
            self.weight_co = nn.Parameter(torch.empty(shape, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.Conv2d's default bound 1/sqrt(fan_in) for both transforms.
        fan = (
            self.input_size * self.kernel_size[0] ** 2 + self.hidden_size * self.kernel_size[1] ** 2
        )
        bound = 1.0 / math.sqrt(fan)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if self.forget_bias is not None:
            assert self.bias_ih is not None
            Fh = self.hidden_size
            with torch.no_grad():
                self.bias_ih[Fh : 2 * Fh] = self.forget_bias

    def state_sizes(self) -> dict[str, int]:
        """Channels of each state field (each is (B, F, Hs, Ws))."""
        return {"h": self.hidden_size, "c": self.hidden_size}

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        spatial_size: tuple[int, int] | None = None,
    ) -> LSTMState:
        """Zeros (B, F, Hs, Ws); ``spatial_size`` defaults to the peepholes' frame size."""
        check_positive_int(batch_size, "batch_size")
        size = spatial_size if spatial_size is not None else self.spatial_size
        if size is None:
            raise ValueError("spatial_size: expected the frame size (height, width), got None")
        Hs, Ws = _spatial(size, "spatial_size")
        ref = self.weight_ih
        kw: dict[str, Any] = {
            "device": device if device is not None else ref.device,
            "dtype": dtype if dtype is not None else ref.dtype,
        }
        z = torch.zeros(batch_size, self.hidden_size, Hs, Ws, **kw)
        return LSTMState(z, z.clone())

    def check_frames(self, x: Any, argument: str = "x") -> None:
        """Raise unless ``x`` is a floating (B, C, Hs, Ws) frame of a size this cell runs."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{argument}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{argument}: expected a floating-point tensor, got dtype {x.dtype}")
        want = f"(B, {self.input_size}, H, W)"
        if x.dim() != 4 or x.shape[1] != self.input_size:
            raise ValueError(f"{argument}: expected {want}, got {tuple(x.shape)}")
        if self.spatial_size is not None and self.peephole:
            if tuple(x.shape[2:]) != self.spatial_size:
                raise ValueError(
                    f"{argument}: expected frames of {self.spatial_size} (the peepholes'), got "
                    f"{tuple(x.shape[2:])}"
                )

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """One step on frames ``x`` (B, C, Hs, Ws)."""
        self.check_frames(x)
        if state is None:
            state = self.initial_state(
                x.shape[0], device=x.device, dtype=x.dtype, spatial_size=(x.shape[2], x.shape[3])
            )
        else:
            state = self.check_state(state, x.shape[0], x)
        return self.step(x, state)

    def check_state(
        self, state: Any, batch_size: int, like: Tensor, argument: str = "state"
    ) -> LSTMState:
        if not isinstance(state, tuple) or len(state) != 2:
            raise TypeError(f"{argument}: expected LSTMState(h, c) with 2 tensors")
        want = (batch_size, self.hidden_size, *like.shape[-2:])
        for name, value in zip(("h", "c"), state):
            if not isinstance(value, Tensor):
                raise TypeError(f"{argument}.{name}: expected a tensor, got {type(value).__name__}")
            if tuple(value.shape) != want:
                raise ValueError(
                    f"{argument}.{name}: expected shape {want}, got {tuple(value.shape)}"
                )
            if value.dtype != like.dtype or value.device != like.device:
                raise TypeError(
                    f"{argument}.{name}: expected {like.dtype} on {like.device} (as x), got "
                    f"{value.dtype} on {value.device}"
                )
        return state if type(state) is LSTMState else LSTMState(*state)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, LSTMState]:
        h_prev, c_prev = state.h, state.c
        px, ph = self.kernel_size[0] // 2, self.kernel_size[1] // 2
        a = F.conv2d(x, self.weight_ih, self.bias_ih, padding=px) + F.conv2d(
            h_prev, self.weight_hh, None, padding=ph
        )  # (B, 4F, Hs, Ws)
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        if self.weight_ci is not None:
            a_i = a_i + self.weight_ci * c_prev
            a_f = a_f + self.weight_cf * c_prev
        c = torch.sigmoid(a_f) * c_prev + torch.sigmoid(a_i) * torch.tanh(a_g)
        if self.weight_co is not None:
            a_o = a_o + self.weight_co * c
        h = torch.sigmoid(a_o) * torch.tanh(c)
        return h, LSTMState(h, c)

    def flat(self, spatial_size: tuple[int, int] | None = None) -> FlatConvLSTMCell:
        """This cell on flat vectors for one frame size (shares the parameters)."""
        return FlatConvLSTMCell(self, spatial_size)

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.input_size,
            "hidden_channels": self.hidden_size,
            "kernel_size": self.kernel_size,
            "bias": self.bias,
            "peephole": self.peephole,
            "spatial_size": self.spatial_size,
            "forget_bias": self.forget_bias,
        }


class FlatConvLSTMCell(Cell):
    """A :class:`ConvLSTMCell` on flat vectors, for one frame size (a flat-state adaptor).

    x (B, C·Hs·Ws) and the state fields h, c (B, F·Hs·Ws) are the frames and maps flattened in
    (channel, row, column) order; ``step`` reshapes, runs the conv cell and flattens again, so
    the two give identical numbers. This is how the dynamics tools, which work on flat states,
    analyse a ConvLSTM: ``Map.from_cell(cell.flat((H, W)))``.

    Example:
        >>> conv = ConvLSTMCell(1, 2, 3)
        >>> flat = conv.flat((4, 4))
        >>> y, s = flat(torch.randn(3, 16))
        >>> y.shape, flat.state_sizes()
        (torch.Size([3, 32]), {'h': 32, 'c': 32})
    """

    State = LSTMState
    feedback_field = "h"

    def __init__(self, cell: ConvLSTMCell, spatial_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if not isinstance(cell, ConvLSTMCell):
            raise TypeError(f"cell: expected a ConvLSTMCell, got {type(cell).__name__}")
        size = spatial_size if spatial_size is not None else cell.spatial_size
        if size is None:
            raise ValueError("spatial_size: expected the frame size (height, width), got None")
        self.spatial_size = _spatial(size, "spatial_size")
        if cell.peephole and self.spatial_size != cell.spatial_size:
            raise ValueError(
                f"spatial_size: the peepholes are for {cell.spatial_size}, got {self.spatial_size}"
            )
        self.cell = cell
        n = self.spatial_size[0] * self.spatial_size[1]
        self.input_size = cell.input_size * n
        self.hidden_size = cell.hidden_size * n
        self.output_size = self.hidden_size

    def state_sizes(self) -> dict[str, int]:
        return {"h": self.hidden_size, "c": self.hidden_size}

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, LSTMState]:
        B = x.shape[0]
        Hs, Ws = self.spatial_size
        c_in, f = self.cell.input_size, self.cell.hidden_size
        frames = x.reshape(B, c_in, Hs, Ws)  # (B, C, Hs, Ws)
        s = LSTMState(state.h.reshape(B, f, Hs, Ws), state.c.reshape(B, f, Hs, Ws))
        y, new = self.cell.step(frames, s)
        return y.reshape(B, -1), LSTMState(new.h.reshape(B, -1), new.c.reshape(B, -1))

    def config(self) -> dict[str, Any]:
        raise ValueError("cell: save the ConvLSTMCell itself; FlatConvLSTMCell is a view of it")
