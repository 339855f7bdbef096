"""rnnlab._checks: the one checker per kind of argument (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab._checks import ArgumentTypeError, check_int, check_probability


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
