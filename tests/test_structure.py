"""The shape of the house (issue 16, docs/design/0016-dependency-direction.md).

* Every module of src/rnnlab is placed in one part of the drawn dependency direction, and
  every import, lazy ones inside functions included (found by AST, not by importing), goes
  from a part to itself or to a part it is drawn over. Imports under ``if TYPE_CHECKING:``
  never run and are not counted.
* No import circle between modules, lazy imports included.
* No Python file under src/ is over 500 lines.

The checker is tested on a small made-up package too, so a wrong import is known to fail it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_LINES = 500

# Which part each module belongs to: the longest matching prefix wins.
PARTS: dict[str, str] = {
    "rnnlab": "api",  # the package facade (rnnlab/__init__.py): re-exports only
    "rnnlab._version": "util",
    "rnnlab._files": "util",
    "rnnlab._sequences": "util",
    "rnnlab._checks": "util",
    "rnnlab.cells": "cells",
    "rnnlab.engine": "engine",
    "rnnlab.layers": "layers",
    "rnnlab.init": "init",
    "rnnlab.nn": "nn",
    "rnnlab._nn_base": "nn",
    "rnnlab._nn_compat": "nn",
    "rnnlab.export": "export",
    "rnnlab.data": "data",
    "rnnlab.dynamics": "dynamics",
    "rnnlab.plots": "plots",
    "rnnlab.training": "training",
    "rnnlab.timing": "timing",
    "rnnlab.experiments": "experiments",
    "rnnlab.cli": "cli",
    "rnnlab.__main__": "cli",
    "rnnlab.analyze": "cli",
    "rnnlab.bench": "cli",
    "rnnlab.demo": "cli",
    "rnnlab.run": "cli",
    "rnnlab.train_cli": "cli",
    "rnnlab.generate_cli": "cli",
}

# The drawn direction: each part and the parts it may import (besides itself).
MAY_IMPORT: dict[str, set[str]] = {
    "util": set(),
    "cells": {"util"},
    "engine": {"util", "cells"},
    "layers": {"util", "cells", "engine"},
    "init": {"util", "cells"},
    "nn": {"util", "cells", "engine", "layers"},
    "export": {"util", "cells", "engine", "layers", "nn"},
    "data": {"util"},
    "api": {"util", "cells", "engine", "layers", "init", "nn", "export"},
    "dynamics": {"util", "cells", "engine", "layers", "nn"},
    "plots": {"util", "dynamics"},
    "training": {"util", "cells", "engine", "layers", "init", "nn", "data", "plots"},
    "timing": {"util", "cells", "engine", "layers", "nn"},
    "experiments": {
        "util",
        "cells",
        "engine",
        "layers",
        "init",
        "nn",
        "export",
        "data",
        "dynamics",
        "plots",
        "training",
        "timing",
    },  # fmt: skip
    "cli": {
        "util",
        "cells",
        "engine",
        "layers",
        "init",
        "nn",
        "export",
        "data",
        "dynamics",
        "plots",
        "training",
        "timing",
        "experiments",
        "api",
    },  # fmt: skip
}


# --- the checker ---------------------------------------------------------------------------------
def modules(src: Path, package: str = "rnnlab") -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level and inside functions/classes, but
    not the body of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _import_nodes(node)


def imports(src: Path, package: str = "rnnlab") -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every import inside ``package``."""
    mods = modules(src, package)
    out = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # "from pkg import sub" imports the submodule pkg.sub when there is one
                targets = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names
                ]
            for t in targets:
                if t.split(".")[0] != package:
                    continue
                while t not in mods and "." in t:
                    t = t.rpartition(".")[0]
                if t != name:
                    out.append((name, t, node.lineno))
    return out


def part_of(module: str, parts: dict[str, str]) -> str | None:
    best = None
    for prefix, part in parts.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, part)
    # "rnnlab" matches everything as a prefix; only the facade itself is "api"
    if best is not None and best[0] == "rnnlab" and module != "rnnlab":
        return None
    return None if best is None else best[1]


def direction_violations(
    src: Path, parts: dict[str, str], may: dict[str, set[str]], package: str = "rnnlab"
) -> list[str]:
    bad = []
    for a, b, line in imports(src, package):
        pa, pb = part_of(a, parts), part_of(b, parts)
        if pa is None or pb is None or pa == pb:
            continue
        if pb not in may[pa]:
            allowed = ", ".join(sorted(may[pa])) or "nothing"
            bad.append(f"{a} (line {line}) imports {b}: {pa} may import only {allowed}, not {pb}")
    return bad


def circles(src: Path, package: str = "rnnlab") -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in modules(src, package)}
    for a, b, _ in imports(src, package):
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


# --- the house -----------------------------------------------------------------------------------
def test_every_module_is_placed() -> None:
    unplaced = [m for m in modules(SRC) if part_of(m, PARTS) is None]
    assert unplaced == [], f"place these modules in PARTS and in docs/design: {unplaced}"
    assert set(PARTS.values()) == set(MAY_IMPORT)


def test_the_drawn_direction_has_no_circle() -> None:
    seen: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(p: str, path: list[str]) -> None:
        assert seen.get(p) != 1, f"the drawn direction has a circle: {path + [p]}"
        if seen.get(p) == 2:
            return
        seen[p] = 1
        for q in MAY_IMPORT[p]:
            visit(q, path + [p])
        seen[p] = 2

    for p in MAY_IMPORT:
        visit(p, [])


def test_imports_follow_the_drawn_direction() -> None:
    assert direction_violations(SRC, PARTS, MAY_IMPORT) == []


def test_no_import_circle() -> None:
    assert circles(SRC) == []


def test_the_engine_imports_nothing_from_the_layers() -> None:
    # The choice of docs/design/0016: the layers call the engine, never the other way round.
    assert "layers" not in MAY_IMPORT["engine"]
    assert not [
        (a, b)
        for a, b, _ in imports(SRC)
        if a.startswith("rnnlab.engine") and b.startswith("rnnlab.layers")
    ]


def test_unroll_is_the_reference_loop_alone() -> None:
    # layers/loop.py is what every fast path is proven against: it reaches no kernel and no
    # dispatcher (the choice is rnnlab.layers.dispatch's).
    seen = {b for a, b, _ in imports(SRC) if a == "rnnlab.layers.loop"}
    assert not {b for b in seen if b.startswith(("rnnlab.engine", "rnnlab.layers.dispatch"))}


def test_no_python_file_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted(SRC.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these files by job (issue 16): {long}"


def test_the_design_note_draws_this_direction() -> None:
    notes = sorted((ROOT / "docs" / "design").glob("*-dependency-direction.md"))
    assert len(notes) == 1, notes
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", notes[0].read_text(encoding="utf-8"), re.M)
    drawn = {p: {q.strip(" `") for q in deps.split(",") if q.strip(" `—-")} for p, deps in rows}
    assert drawn == MAY_IMPORT


# --- the checker catches what it should ----------------------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


_PARTS = {"pkg.low": "low", "pkg.high": "high"}
_MAY = {"low": set(), "high": {"low"}}


def test_a_lazy_import_against_the_direction_is_caught(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "low/__init__.py": "",
            "low/a.py": "def f():\n    from ..high import b\n    return b\n",
            "high/__init__.py": "",
            "high/b.py": "from ..low import a\n",
        },
    )
    bad = direction_violations(src, _PARTS, _MAY, "pkg")
    assert bad == ["pkg.low.a (line 2) imports pkg.high.b: low may import only nothing, not high"]
    assert circles(src, "pkg") == [["pkg.high.b", "pkg.low.a"]]


def test_type_checking_imports_and_the_right_direction_pass(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "low/__init__.py": "",
            "low/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.high import b\n",
            "high/__init__.py": "from . import b\n",
            "high/b.py": "import pkg.low.a\nfrom pkg.low import a as _a\n",
        },
    )
    assert direction_violations(src, _PARTS, _MAY, "pkg") == []
    assert circles(src, "pkg") == []
    assert ("pkg.high.b", "pkg.low.a", 1) in imports(src, "pkg")


@pytest.mark.parametrize("level", [".", ".."])
def test_relative_imports_resolve(tmp_path: Path, level: str) -> None:
    target = "from . import a\n" if level == "." else "from ..low import a\n"
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "low/__init__.py": "",
            "low/a.py": "",
            "low/c.py" if level == "." else "high/c.py": target,
            "high/__init__.py": "",
        },
    )
    got = [(a, b) for a, b, _ in imports(src, "pkg")]
    assert got == [("pkg.low.c" if level == "." else "pkg.high.c", "pkg.low.a")]
