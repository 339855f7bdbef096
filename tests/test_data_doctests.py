"""The examples in the docstrings of rnnlab.data run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["adding", "base", "copy_memory", "maps", "text"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"rnnlab.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
