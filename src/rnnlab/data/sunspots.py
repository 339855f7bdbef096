"""Yearly sunspot numbers, 1700-2008 (309 values), as shipped inside statsmodels.

Shapes: L = 309 years, D = 1.

A real, offline time series with a roughly 11-year cycle. Needs statsmodels (the optional extra
``rnnlab[data]``), imported only when the data are loaded. :func:`sunspots_forecasting` splits
by position (the last years for validation) and normalises with the training years' mean and
standard deviation (see :mod:`rnnlab.data.forecasting`; trivial baseline: persistence).
"""

from __future__ import annotations

import numpy as np
import torch

from .forecasting import ForecastWindows, forecasting_split
from .series import Series


def sunspots_series() -> Series:
    """The yearly sunspot numbers (``SUNACTIVITY``), (309, 1) float64; ``params["years"]``
    holds the first and last year."""
    try:
        from statsmodels.datasets import sunspots
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the sunspots series needs statsmodels, which bundles it: "
            "pip install 'rnnlab[data]' (or pip install statsmodels)"
        ) from err
    frame = sunspots.load_pandas().data
    years = np.asarray(frame["YEAR"], dtype=np.float64)
    values = torch.from_numpy(np.array(frame["SUNACTIVITY"], dtype=np.float64))[:, None]
    return Series(
        values,
        "sunspots",
        1.0,
        {
            "system": "sunspots",
            "source": "statsmodels.datasets.sunspots",
            "years": [int(years[0]), int(years[-1])],
            "unit": "yearly mean sunspot number",
            "interval": 1.0,
        },
    )


def sunspots_forecasting(
    input_length: int = 20,
    horizon: int = 1,
    *,
    val_fraction: float = 0.2,
    target: str = "last",
) -> tuple[ForecastWindows, ForecastWindows]:
    """Normalised train/validation forecasting windows of the sunspot numbers.

    Returns:
        ``(train, val)`` with x (N, input_length, 1) and y (N, horizon, 1) (``target="last"``).
    """
    return forecasting_split(
        sunspots_series(),
        input_length,
        horizon,
        val_fraction=val_fraction,
        target=target,
        normalise=True,
    )
