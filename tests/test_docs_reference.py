"""The API reference covers the public surface: every name in rnnlab.__all__ and in every
public sub-package's __all__ has an entry, and every class and function has a runnable example
(in its docstring or in docs/reference/examples/<namespace>.rst).

The public names are computed here, at test time, from the packages themselves (the same
functions the Sphinx extension uses to write the pages), so a name another change adds later is
caught. This checks presence; `make docs` runs the examples (sphinx.ext.doctest).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import rnnlab_docs  # noqa: E402 - docs/_ext is not a package


def test_every_public_class_and_function_has_an_example() -> None:
    missing = rnnlab_docs.missing_examples()
    assert not missing, (
        f"{len(missing)} public name(s) have no runnable example. Add a '>>>' example to the "
        "docstring, or an entry to docs/reference/examples/<namespace>.rst:\n\n"
        "    .. example:: NAME\n\n        >>> ...\n\nmissing:\n  " + "\n  ".join(missing)
    )


def test_no_example_for_a_name_that_is_not_public() -> None:
    stale = rnnlab_docs.stale_examples()
    assert not stale, "examples for names no __all__ lists (renamed or removed?):\n  " + (
        "\n  ".join(stale)
    )


def test_every_public_name_has_exactly_one_entry() -> None:
    entries = rnnlab_docs.entries()
    spaces = rnnlab_docs.namespaces()
    pages = {space: rnnlab_docs.render_page(space, entries) for space in spaces}
    problems = []
    for entry in entries:
        page = pages[entry.canonical]
        if entry.kind == "module":
            assert entry.name in rnnlab_docs.namespaces() or f"{entry.qualname}" in spaces
            continue
        directive = rnnlab_docs._DIRECTIVE[entry.kind]
        wanted = (
            f".. py:data:: {entry.canonical}.{entry.name}"
            if entry.kind == "data"
            else f".. {directive}:: {entry.canonical}.{entry.name}"
        )
        if page.count(wanted + "\n") != 1:
            problems.append(f"{entry.qualname}: no entry on the page of {entry.canonical}")
        if (
            entry.canonical != entry.namespace
            and f"{entry.canonical}.{entry.name}`" not in (pages[entry.namespace])
        ):
            problems.append(f"{entry.qualname}: the page of {entry.namespace} does not link it")
    assert not problems, "\n".join(problems)


def test_namespaces_are_found_from_the_package() -> None:
    spaces = rnnlab_docs.namespaces()
    # Every sub-package that rnnlab loads on demand, and the modules rnnlab.__all__ exports.
    rnnlab = importlib.import_module("rnnlab")
    for sub in rnnlab._SUBMODULES:
        assert f"rnnlab.{sub}" in spaces
    assert {"rnnlab", "rnnlab.cells", "rnnlab.layers", "rnnlab.nn", "rnnlab.init"} <= set(spaces)
    assert not [s for s in spaces if any(p.startswith("_") for p in s.split("."))]


def test_kinds() -> None:
    kinds = {e.qualname: e.kind for e in rnnlab_docs.entries()}
    assert kinds["rnnlab.cells.ElmanCell"] == "class"
    assert kinds["rnnlab.cells.LSTMState"] == "state"  # listed, no example needed
    assert kinds["rnnlab.dynamics.as_map"] == "function"
    assert kinds["rnnlab.data.IGNORE_INDEX"] == "data"
    assert kinds["rnnlab.nn"] == "module"
    canon = {e.qualname: e.canonical for e in rnnlab_docs.entries()}
    assert canon["rnnlab.ElmanCell"] == "rnnlab.cells"  # one entry, where it is defined


def test_examples_file_format(tmp_path: Path) -> None:
    path = tmp_path / "rnnlab.x.rst"
    path.write_text(".. example:: f\n\n   >>> 1 + 1\n   2\n\n.. example:: g\n\n   >>> 3\n   3\n")
    assert rnnlab_docs.read_examples(path) == {"f": ">>> 1 + 1\n2", "g": ">>> 3\n3"}
    path.write_text(".. example:: f\n   >>> 1\n   1\n.. example:: f\n   >>> 2\n   2\n")
    with pytest.raises(ValueError, match="two examples for 'f'"):
        rnnlab_docs.read_examples(path)
