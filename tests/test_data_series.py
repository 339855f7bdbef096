"""Maps as sequences, dynamic-system series (against closed forms, independent solvers and step
halving), forecasting windows and splits, sunspots."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.data import (
    MAPS,
    ForecastWindows,
    MapSequences,
    Series,
    damped_oscillator_series,
    forecasting_split,
    henon_series,
    iterate_map,
    logistic_series,
    lorenz_series,
    mackey_glass_series,
    make_series,
    sine_series,
)

# ---------------------------------------------------------------------------------------------
# maps


@pytest.mark.parametrize(
    ("name", "a", "fixed"), [("stable_linear", 0.8, 5.0), ("unstable_linear", 1.4, -2.5)]
)
def test_linear_maps_closed_form(name: str, a: float, fixed: float) -> None:
    data = MapSequences(name, 32, 25, seed=0)
    h0 = data.orbits[:, 0, 0]
    t = torch.arange(26, dtype=torch.float64)
    closed = fixed + a ** t[None, :] * (h0[:, None] - fixed)  # h(t) = h* + a^t (h0 - h*)
    torch.testing.assert_close(data.orbits[..., 0], closed)
    assert data.case == 1 and data.x.shape == data.y.shape == (32, 25, 1)
    assert torch.equal(data.x[:, 0], data.orbits[:, 0].float()) and (data.x[:, 1:] == 0).all()
    torch.testing.assert_close(data.y, data.orbits[:, 1:].float())


def test_stable_linear_reaches_fixed_point() -> None:
    data = MapSequences("stable_linear", 16, 80, seed=1)
    assert (data.y[:, -1] - 5).abs().max() < 1e-5


def test_map_initial_mode_baseline_linear() -> None:
    a, lo, hi, T = 0.8, -10.0, 10.0, 20
    data = MapSequences("stable_linear", 4000, T, initial=(lo, hi), seed=2)
    h0 = data.orbits[:, 0, 0]
    pers = ((h0[:, None] - data.orbits[:, 1:, 0]) ** 2).mean().item()  # predict h(0) always
    assert data.baseline_loss() == pytest.approx(pers, rel=1e-5)
    factor = np.mean([(a**t - 1) ** 2 for t in range(1, T + 1)])
    second_moment = (hi - lo) ** 2 / 12 + ((hi + lo) / 2 - 5) ** 2  # E[(h0 - h*)^2]
    assert pers == pytest.approx(factor * second_moment, rel=0.05)


def test_map_one_step_mode_and_user_map() -> None:
    data = MapSequences("henon", 8, 30, mode="one_step", seed=0)
    assert data.case == 4 and data.x.shape == (8, 30, 2)
    x, y = data.orbits[:, :-1], data.orbits[:, 1:]
    torch.testing.assert_close(y[..., 0], 1 - 1.4 * x[..., 0] ** 2 + x[..., 1])
    torch.testing.assert_close(y[..., 1], 0.3 * x[..., 0])
    torch.testing.assert_close(data.baseline_loss(), ((data.x - data.y) ** 2).mean().item())

    def halve(h: torch.Tensor) -> torch.Tensor:
        return 0.5 * h

    h0 = torch.tensor([[1.0, -2.0], [4.0, 8.0]])
    user = MapSequences(halve, 2, 6, initial=h0, dim=2)
    torch.testing.assert_close(user.y[:, -1], h0 * 0.5**6)
    assert user.params["map"] == "halve" and user.params["initial"] == "given"


def test_logistic_orbits_stay_in_unit_interval() -> None:
    data = MapSequences("logistic", 64, 200, seed=3)
    assert data.orbits.min() >= 0 and data.orbits.max() <= 1
    x = data.orbits[:, :-1]
    torch.testing.assert_close(data.orbits[:, 1:], 3.9 * x * (1 - x))
    assert set(MAPS) == {"stable_linear", "unstable_linear", "logistic", "henon"}


def test_map_bad_input() -> None:
    with pytest.raises(ValueError, match="f: expected one of 'stable_linear'"):
        MapSequences("tent", 2, 5)
    with pytest.raises(TypeError, match="f: expected a map name or a callable, got int"):
        MapSequences(3, 2, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"f: expected to map \(B, D\) = \(2, 1\)"):
        MapSequences(lambda h: h[:, :0], 2, 5)
    with pytest.raises(ValueError, match="f: the orbit left the floating-point range"):
        MapSequences("henon", 4, 40, initial=(5.0, 6.0))
    with pytest.raises(ValueError, match=r"initial: expected a tensor \(2, 1\), got \(3, 1\)"):
        MapSequences("logistic", 2, 5, initial=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="dim: expected 2 for the map 'henon', got 1"):
        MapSequences("henon", 2, 5, dim=1)
    with pytest.raises(ValueError, match="mode: expected one of 'initial', 'one_step'"):
        MapSequences("logistic", 2, 5, mode="free")
    with pytest.raises(ValueError, match="initial\\[1\\]: expected 1.0 <= initial\\[1\\]"):
        MapSequences("logistic", 2, 5, initial=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"h0: expected a tensor \(B, D\)"):
        iterate_map(lambda h: h, torch.zeros(3), 2)


# ---------------------------------------------------------------------------------------------
# closed-form series


def test_sine_series() -> None:
    s = sine_series(50, period=10.0, amplitude=2.0, phase=0.3, interval=0.5)
    t = np.arange(50) * 0.5
    np.testing.assert_allclose(s.values[:, 0].numpy(), 2 * np.sin(2 * np.pi * t / 10 + 0.3))
    assert s.params["period"] == 10.0 and s.interval == 0.5 and s.dim == 1


@pytest.mark.parametrize("zeta", [0.1, 1.5])
def test_damped_oscillator_closed_form(zeta: float) -> None:
    omega, x0, v0, dt = 2.0, 1.0, 0.5, 0.05
    s = damped_oscillator_series(
        200, omega=omega, zeta=zeta, x0=x0, v0=v0, interval=dt, full_state=True
    )
    t = np.arange(200) * dt
    if zeta < 1:
        alpha, wd = zeta * omega, omega * math.sqrt(1 - zeta**2)
        k = (v0 + alpha * x0) / wd
        decay = np.exp(-alpha * t)
        x = decay * (x0 * np.cos(wd * t) + k * np.sin(wd * t))
        v = -alpha * x + decay * wd * (k * np.cos(wd * t) - x0 * np.sin(wd * t))
    else:
        r1 = -omega * (zeta - math.sqrt(zeta**2 - 1))
        r2 = -omega * (zeta + math.sqrt(zeta**2 - 1))
        b = (v0 - r1 * x0) / (r2 - r1)
        x = (x0 - b) * np.exp(r1 * t) + b * np.exp(r2 * t)
        v = (x0 - b) * r1 * np.exp(r1 * t) + b * r2 * np.exp(r2 * t)
    np.testing.assert_allclose(s.values[:, 0].numpy(), x, atol=1e-10)
    np.testing.assert_allclose(s.values[:, 1].numpy(), v, atol=1e-10)
    assert damped_oscillator_series(5).values.shape == (5, 1)


def test_logistic_and_henon_series() -> None:
    s = logistic_series(100, r=3.7, x0=0.3, transient=5)
    v = s.values[:, 0]
    torch.testing.assert_close(v[1:], 3.7 * v[:-1] * (1 - v[:-1]))
    x = 0.3
    for _ in range(5):
        x = 3.7 * x * (1 - x)
    assert v[0].item() == pytest.approx(x)
    h = henon_series(1000)
    x, y = h.values[:, 0], h.values[:, 1]
    torch.testing.assert_close(x[1:], 1 - 1.4 * x[:-1] ** 2 + y[:-1])
    torch.testing.assert_close(y[1:], 0.3 * x[:-1])
    assert x.abs().max() < 1.3 and y.abs().max() < 0.4  # the attractor's extent
    assert h.params["a"] == 1.4 and h.params["b"] == 0.3 and h.params["transient"] == 100


# ---------------------------------------------------------------------------------------------
# integrators


def test_lorenz_converges_when_step_is_halved() -> None:
    # t in [0, 2] sampled every 0.02; RK4 is 4th order: halving h divides the change by ~16
    runs = [lorenz_series(101, step=h, interval=0.02).values for h in (0.01, 0.005, 0.0025)]
    d1 = (runs[0] - runs[1]).abs().max().item()
    d2 = (runs[1] - runs[2]).abs().max().item()
    assert d1 < 1e-3 and d2 < 1e-4
    assert d1 / d2 > 8
    s = lorenz_series(10, step=0.01, interval=0.05)
    assert s.params["step"] == 0.01 and s.interval == 0.05 and s.params["method"] == "rk4"
    assert s.params["sigma"] == 10 and s.params["rho"] == 28 and s.params["beta"] == 8 / 3


def test_lorenz_against_independent_solver() -> None:
    integrate = pytest.importorskip("scipy.integrate")
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0

    def field(_t: float, u: np.ndarray) -> list[float]:
        x, y, z = u
        return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]

    t = np.arange(51) * 0.02
    ref = integrate.solve_ivp(
        field, (0, 1.0), [1.0, 1.0, 1.0], t_eval=t, method="DOP853", rtol=1e-13, atol=1e-13
    ).y.T
    errors = [
        np.abs(lorenz_series(51, step=h, interval=0.02).values.numpy() - ref).max()
        for h in (0.005, 0.0025)
    ]
    assert errors[1] < 1e-5
    assert errors[0] / errors[1] > 10  # converges to the reference at 4th order
    later = lorenz_series(3, step=0.0025, interval=0.02, transient=0.5).values.numpy()
    np.testing.assert_allclose(later, ref[25:28], atol=1e-5)


def test_mackey_glass_converges_when_step_is_halved() -> None:
    runs = [mackey_glass_series(301, step=h).values for h in (0.1, 0.05, 0.025)]
    d1 = (runs[0] - runs[1]).abs().max().item()
    d2 = (runs[1] - runs[2]).abs().max().item()
    assert d1 < 1e-6 and d2 < 1e-7
    assert d1 / d2 > 8  # 4th order (Hermite-interpolated delay keeps RK4's order)
    v = runs[0][100:, 0]
    assert 0.2 < v.min() < 0.6 and 1.1 < v.max() < 1.4  # the tau = 17 attractor's range


def test_mackey_glass_against_method_of_steps() -> None:
    integrate = pytest.importorskip("scipy.integrate")
    beta, gamma, n, tau, x0 = 0.2, 0.1, 10.0, 17.0, 1.2
    s = mackey_glass_series(35, step=0.1).values[:, 0].numpy()  # t = 0..34
    # on [0, tau] the delayed value is the constant history: a linear ODE in closed form
    c = beta * x0 / (1 + x0**n)
    t1 = np.arange(18.0)
    first = c / gamma + (x0 - c / gamma) * np.exp(-gamma * t1)
    np.testing.assert_allclose(s[:18], first, atol=1e-9)

    def delayed(t: float) -> float:  # the closed form, shifted by tau
        return c / gamma + (x0 - c / gamma) * math.exp(-gamma * (t - tau))

    def rhs(t: float, x: np.ndarray) -> list[float]:
        d = delayed(t)
        return [beta * d / (1 + d**n) - gamma * x[0]]

    t2 = np.arange(17.0, 35.0)
    ref = integrate.solve_ivp(
        rhs, (17.0, 34.0), [first[-1]], t_eval=t2, method="DOP853", rtol=1e-12, atol=1e-12
    ).y[0]
    np.testing.assert_allclose(s[17:], ref, atol=1e-8)


def test_mackey_glass_params_and_sampling() -> None:
    s = mackey_glass_series(20, interval=2.0, transient=10.0)
    fine = mackey_glass_series(60, interval=1.0).values[:, 0]
    torch.testing.assert_close(s.values[:, 0], fine[10::2][:20])
    for key, value in dict(
        tau=17.0,
        beta=0.2,
        gamma=0.1,
        n=10.0,
        history=1.2,
        step=0.1,
        interval=2.0,
        method="rk4+hermite",
        transient=10.0,
    ).items():
        assert s.params[key] == value


def test_series_bad_input() -> None:
    with pytest.raises(ValueError, match="step: expected a divisor of interval = 0.02, got 0.03"):
        lorenz_series(10, step=0.03)
    with pytest.raises(ValueError, match="step: expected a divisor of tau = 17.0, got 0.3"):
        mackey_glass_series(10, step=0.3)
    with pytest.raises(ValueError, match=r"initial: expected 3 numbers \(x, y, z\), got 2"):
        lorenz_series(10, initial=(1.0, 2.0))
    with pytest.raises(ValueError, match="n_steps: expected an int >= 1, got 0"):
        sine_series(0)
    with pytest.raises(ValueError, match="period: expected 0.0 < period, got -1.0"):
        sine_series(5, period=-1)
    with pytest.raises(ValueError, match="zeta: expected 0.0 <= zeta, got -0.1"):
        damped_oscillator_series(5, zeta=-0.1)
    with pytest.raises(ValueError, match="x0: expected 0.0 <= x0 <= 1.0, got 2.0"):
        logistic_series(5, x0=2.0)
    with pytest.raises(ValueError, match="name: expected one of 'sine'"):
        make_series("sunspots", 10)


@pytest.mark.parametrize(
    "name", ["sine", "damped_oscillator", "logistic", "henon", "lorenz", "mackey_glass"]
)
def test_make_series_is_deterministic_and_stores_params(name: str) -> None:
    a, b = make_series(name, 30), make_series(name, 30)
    assert torch.equal(a.values, b.values) and a.values.dtype == torch.float64
    assert len(a) == 30 and a.params["system"] == name and a.params["n_steps"] == 30
    assert torch.isfinite(a.values).all()


# ---------------------------------------------------------------------------------------------
# forecasting windows


def _ramp(n: int) -> Series:
    return Series(torch.arange(n, dtype=torch.float64)[:, None], "ramp", 1.0, {"system": "ramp"})


@pytest.mark.parametrize("stride", [1, 3])
def test_windows_last_target(stride: int) -> None:
    L, T, H = 40, 7, 3
    w = ForecastWindows(_ramp(L), T, H, stride=stride)
    assert len(w) == (L - T - H) // stride + 1 and w.case == 3
    for i in range(len(w)):
        start = i * stride
        item = w[i]
        assert item["x"][:, 0].tolist() == list(range(start, start + T))
        assert item["y"][:, 0].tolist() == list(range(start + T, start + T + H))
    # persistence misses by 1, 2, ..., H on a ramp
    assert w.baseline_loss() == pytest.approx(np.mean(np.arange(1, H + 1) ** 2))
    assert w.params["input_length"] == T and w.params["horizon"] == H
    assert w.params["system"] == "ramp"


def test_windows_every_target() -> None:
    w = ForecastWindows(torch.arange(30.0), 5, 2, target="every")
    assert w.case == 4 and w.y.shape == (len(w), 5, 1)
    torch.testing.assert_close(w.y, w.x + 2)
    assert w.baseline_loss() == pytest.approx(4.0)


def test_forecasting_split_normalises_with_training_statistics() -> None:
    s = make_series("mackey_glass", 500)
    train, val = forecasting_split(s, 30, 5, val_fraction=0.2)
    raw_train = s.values[:400, 0]
    mean, std = raw_train.mean().item(), raw_train.std().item()
    assert train.params["mean"] == pytest.approx([mean])
    assert val.params["std"] == pytest.approx([std])
    torch.testing.assert_close(
        val.x[0, :, 0].double(), (s.values[400:430, 0] - mean) / std, rtol=1e-5, atol=1e-5
    )
    assert len(train) == 400 - 35 + 1 and len(val) == 100 - 35 + 1
    torch.testing.assert_close(
        train.denormalise(train.x[0]).double(), s.values[:30], rtol=1e-5, atol=1e-5
    )
    assert train.params["tau"] == 17.0 and val.params["part"] == "val"
    assert val.params["start"] == 400
    # no leakage: a ramp's validation windows hold only validation samples
    tr, va = forecasting_split(_ramp(100), 5, 2, normalise=False)
    assert va.x.min() >= 80 and tr.y.max() < 80
    pers = ((train.y - train.x[:, -1:]) ** 2).mean().item()
    assert train.baseline_loss() == pytest.approx(pers, rel=1e-5)


def test_forecasting_bad_input() -> None:
    ramp = _ramp(60)
    with pytest.raises(ValueError) as info:
        ForecastWindows(ramp, 10, 80)
    assert str(info.value) == "horizon: expected 1 <= horizon <= 50, got 80"
    with pytest.raises(ValueError, match="input_length: expected 1 <= input_length <= 59, got 0"):
        ForecastWindows(ramp, 0)
    with pytest.raises(ValueError, match="target: expected one of 'last', 'every', got 'all'"):
        ForecastWindows(ramp, 5, target="all")
    with pytest.raises(ValueError, match="stride: expected an int >= 1, got 0"):
        ForecastWindows(ramp, 5, stride=0)
    with pytest.raises(TypeError, match="series: expected a Series"):
        ForecastWindows([1.0, 2.0], 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="val_fraction: the val part has 12 samples, fewer than"):
        forecasting_split(ramp, 10, 5)
    with pytest.raises(ValueError, match="val_fraction: expected 0.0 < val_fraction < 1.0"):
        ramp.split(1.0)
    with pytest.raises(ValueError, match="std: expected positive values"):
        ForecastWindows(ramp, 5, std=torch.tensor([0.0]))


# ---------------------------------------------------------------------------------------------
# sunspots


def test_sunspots() -> None:
    pytest.importorskip("statsmodels")
    from rnnlab.data import sunspots_forecasting, sunspots_series

    s = sunspots_series()
    assert s.values.shape == (309, 1) and s.params["years"] == [1700, 2008]
    assert s.values[:4, 0].tolist() == [5.0, 11.0, 16.0, 23.0]  # 1700-1703
    assert s.values.min() >= 0
    train, val = sunspots_forecasting(20, 3)
    cut = 309 - round(0.2 * 309)
    assert len(train) == cut - 23 + 1 and len(val) == 309 - cut - 23 + 1
    assert train.y.shape == (len(train), 3, 1)
    train, val = sunspots_forecasting(20, 1)
    mean, std = s.values[:cut].mean().item(), s.values[:cut].std().item()
    assert train.params["mean"] == pytest.approx([mean])
    assert train.params["std"] == pytest.approx([std])
    assert abs(train.x.mean().item()) < 0.1  # normalised by the training years
    # one year ahead, persistence beats predicting the mean (MSE about 1 after normalising)
    assert 0 < train.baseline_loss() < 1
