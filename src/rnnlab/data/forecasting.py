"""Forecasting windows over a :class:`~rnnlab.data.series.Series`, and train/validation splits.

Shapes: N windows, T = ``input_length``, H = ``horizon``, D dimensions.

A window starting at sample i has inputs s[i : i + T] (T, D) and, with

* ``target="last"`` (lecture case 3, time-varying input, target at the last step): the next H
  samples s[i + T : i + T + H], (H, D);
* ``target="every"`` (lecture case 4, target at every step): s[t + H] for every input step t,
  i.e. s[i + H : i + H + T], (T, D).

Trivial baseline: persistence (tomorrow = today): the last input s[i + T - 1] for every future
sample with ``"last"``, s[t] for s[t + H] with ``"every"``.

:func:`forecasting_split` splits a series by position before cutting windows (no window straddles
the split, so no validation sample is seen in training) and normalises both parts with the
training part's mean and standard deviation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_int
from .base import SequenceTask
from .series import Series


class ForecastWindows(SequenceTask):
    """Sliding windows over a series (see the module docstring).

    Args:
        series: a :class:`Series` (or an (L, D) / (L,) tensor).
        input_length: T, 1 <= T < L.
        horizon: H, 1 <= H <= L - T.
        target: ``"last"`` (case 3, the next H samples) or ``"every"`` (case 4).
        stride: samples between window starts (default 1).
        mean, std: normalisation applied to the values before windowing (default none); kept
            in ``params`` and used by :meth:`denormalise`.

    Items: ``{"x": (T, D), "y": (H, D) or (T, D)}`` float32.
    """

    case = 3
    loss = "mse"
    baseline = "persistence (the last observed value)"

    def __init__(
        self,
        series: Series | Tensor,
        input_length: int,
        horizon: int = 1,
        *,
        target: str = "last",
        stride: int = 1,
        mean: Tensor | None = None,
        std: Tensor | None = None,
    ) -> None:
        if isinstance(series, Tensor):
            values = series[:, None] if series.dim() == 1 else series
            series = Series(values.to(torch.float64), "tensor")
        if not isinstance(series, Series) or series.values.dim() != 2:
            raise TypeError(f"series: expected a Series or an (L, D) tensor, got {series!r:.80}")
        length = len(series)
        if length < 2:
            raise ValueError(f"series: expected at least 2 samples, got {length}")
        input_length = check_int(input_length, "input_length", low=1, high=length - 1)
        horizon = check_int(horizon, "horizon", low=1, high=length - input_length)
        target = check_choice(target, "target", ("last", "every"))
        stride = check_int(stride, "stride", low=1)
        values = series.values
        if mean is not None or std is not None:
            mean = torch.zeros(series.dim) if mean is None else torch.as_tensor(mean)
            std = torch.ones(series.dim) if std is None else torch.as_tensor(std)
            if (std <= 0).any():
                raise ValueError(f"std: expected positive values, got {std.tolist()}")
            values = (values - mean.to(values)) / std.to(values)
        self.mean, self.std = mean, std

        span = input_length + horizon
        # (N, D, span) -> (N, span, D): every window of input and future, at each stride
        windows = values.unfold(0, span, stride).transpose(1, 2)
        x = windows[:, :input_length]
        y = windows[:, input_length:] if target == "last" else windows[:, horizon:]
        params = {
            **series.params,
            "series": series.name,
            "input_length": input_length,
            "horizon": horizon,
            "target": target,
            "stride": stride,
            "mean": None if mean is None else mean.tolist(),
            "std": None if std is None else std.tolist(),
        }
        super().__init__(x.float().contiguous(), y.float().contiguous(), params)
        self.target = target
        self.case = 3 if target == "last" else 4  # type: ignore[misc]

    def baseline_prediction(self) -> Tensor:
        """Persistence: the last input repeated (H, D), or each input itself (T, D)."""
        if self.target == "last":
            return self.x[:, -1:].expand_as(self.y).clone()
        return self.x.clone()

    def denormalise(self, values: Tensor) -> Tensor:
        """Undo the normalisation: values * std + mean (the identity without one)."""
        if self.mean is None or self.std is None:
            return values
        return values * self.std.to(values) + self.mean.to(values)


def forecasting_split(
    series: Series,
    input_length: int,
    horizon: int = 1,
    *,
    val_fraction: float = 0.2,
    target: str = "last",
    stride: int = 1,
    normalise: bool = True,
) -> tuple[ForecastWindows, ForecastWindows]:
    """Train and validation windows from a positional split of ``series``.

    The first ``1 - val_fraction`` of the samples give the training windows, the rest the
    validation windows. With ``normalise``, both are scaled by the training part's per-dimension
    mean and standard deviation (kept in ``params``).

    Returns:
        ``(train, val)`` :class:`ForecastWindows`.
    """
    if not isinstance(series, Series):
        raise TypeError(f"series: expected a Series, got {type(series).__name__}")
    train, val = series.split(val_fraction)
    for part in (train, val):
        need = check_int(input_length, "input_length", low=1) + check_int(horizon, "horizon", low=1)
        if len(part) < need:
            raise ValueError(
                f"val_fraction: the {part.params['part']} part has {len(part)} samples, fewer "
                f"than input_length + horizon = {need}; lower them or change val_fraction"
            )
    kwargs: dict[str, Any] = {"target": target, "stride": stride}
    if normalise:
        kwargs["mean"] = train.values.mean(dim=0)
        kwargs["std"] = train.values.std(dim=0).clamp_min(1e-12)
    return (
        ForecastWindows(train, input_length, horizon, **kwargs),
        ForecastWindows(val, input_length, horizon, **kwargs),
    )
