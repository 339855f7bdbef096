"""rnnlab._checks: the one checker per kind of argument (issue 16)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab._checks import (
    ArgumentTypeError,
    check_choice,
    check_float,
    check_int,
    check_probability,
)


def test_check_int_accepts_ints_and_numpy_ints() -> None:
    assert check_int(3, "n", low=1) == 3
    got = check_int(np.int64(7), "n", low=0, high=9)
    assert got == 7 and type(got) is int


@pytest.mark.parametrize("bad", [True, 1.0, "3", None])
def test_check_int_refuses_non_ints_as_both_type_and_value_errors(bad: object) -> None:
    with pytest.raises(ArgumentTypeError, match=f"n: expected an int, got {type(bad).__name__}"):
        check_int(bad, "n")
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


@pytest.mark.parametrize(
    ("kw", "value", "message"),
    [
        ({"low": 1}, 0, "n: expected an int >= 1, got 0"),
        ({"high": 4}, 5, "n: expected an int <= 4, got 5"),
        ({"low": 1, "high": 4}, 9, "n: expected 1 <= n <= 4, got 9"),
        ({"low": 1, "what": "a positive int"}, -2, "n: expected a positive int, got -2"),
    ],
)
def test_check_int_names_argument_expected_and_received(kw: dict, value: int, message: str) -> None:
    with pytest.raises(ValueError) as err:
        check_int(value, "n", **kw)
    assert str(err.value) == message and not isinstance(err.value, TypeError)


def test_check_probability() -> None:
    assert check_probability(0, "p") == 0.0 and check_probability(1, "p", include_one=True) == 1.0
    for bad, one in [(1.0, False), (-0.1, True), (1.5, True), (True, False), ("0.5", False)]:
        interval = "[0, 1]" if one else "[0, 1)"
        with pytest.raises(ValueError) as err:
            check_probability(bad, "p", include_one=one)
        assert str(err.value) == f"p: expected a probability in {interval}, got {bad!r}"


def test_check_float_accepts_ints_floats_and_numpy_numbers() -> None:
    got = check_float(np.float32(0.5), "x", low=0.0, high=1.0)
    assert got == 0.5 and type(got) is float
    assert check_float(3, "x") == 3.0 and type(check_float(3, "x")) is float
    assert check_float(math.inf, "x", finite=False) == math.inf


@pytest.mark.parametrize("bad", [True, "0.5", None, [1.0]])
def test_check_float_refuses_non_numbers_as_both_type_and_value_errors(bad: object) -> None:
    with pytest.raises(ArgumentTypeError) as err:
        check_float(bad, "x")
    assert str(err.value) == f"x: expected a real number, got {type(bad).__name__} {bad!r}"


@pytest.mark.parametrize(
    ("kw", "value", "message"),
    [
        ({}, math.nan, "x: expected a finite number, got nan"),
        ({}, -math.inf, "x: expected a finite number, got -inf"),
        ({"finite": False}, math.nan, "x: expected a finite number, got nan"),  # NaN: never
        ({"low": 0.0}, -0.5, "x: expected 0.0 <= x, got -0.5"),
        ({"low": 0.0, "low_open": True}, 0, "x: expected 0.0 < x, got 0.0"),
        ({"high": 1.0, "high_open": True}, 1.0, "x: expected x < 1.0, got 1.0"),
        ({"low": 0.0, "high": 1.0}, 2, "x: expected 0.0 <= x <= 1.0, got 2.0"),
        (
            {"low": 0.0, "low_open": True, "what": "a positive number"},
            -1,
            "x: expected a positive number, got -1.0",
        ),
    ],
)
def test_check_float_names_argument_expected_and_received(
    kw: dict, value: float, message: str
) -> None:
    with pytest.raises(ValueError) as err:
        check_float(value, "x", **kw)
    assert str(err.value) == message and not isinstance(err.value, TypeError)


def test_check_float_bounds_are_inclusive_unless_open() -> None:
    assert check_float(0.0, "x", low=0.0) == 0.0 and check_float(1.0, "x", high=1.0) == 1.0
    for kw in ({"low": 0.0, "low_open": True}, {"high": 0.0, "high_open": True}):
        with pytest.raises(ValueError):
            check_float(0.0, "x", **kw)


def test_check_choice() -> None:
    assert check_choice("b", "mode", ("a", "b")) == "b"
    assert check_choice(None, "direction", (None, "forward")) is None
    assert check_choice("k", "name", {"k": 1, "j": 2}) == "k"  # a mapping's keys are the choices
    with pytest.raises(ValueError) as err:
        check_choice("c", "mode", ("a", "b"))
    assert str(err.value) == "mode: expected one of 'a', 'b', got 'c'"
    assert not isinstance(err.value, TypeError)
    for bad, choices in [(1, ("a", "b")), (True, (1, 4)), (["a"], ("a",))]:
        with pytest.raises(ArgumentTypeError) as err:
            check_choice(bad, "mode", choices)
        listed = ", ".join(map(repr, choices))
        assert str(err.value) == f"mode: expected one of {listed}, got {bad!r}"
    assert check_choice(4, "case", (1, 4)) == 4
