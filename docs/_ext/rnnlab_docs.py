"""Sphinx extension: rnnlab's API reference, generated from the packages' ``__all__``.

At ``builder-inited`` it writes one page per public namespace into docs/reference/api/
(git-ignored): ``rnnlab`` itself, every sub-package whose ``__init__`` has an ``__all__``, and
the modules that ``rnnlab.__all__`` exports (``rnnlab.nn``, ``rnnlab.init``). Each public name
gets one entry (autodoc) on the page of the namespace closest to where it is defined; the other
namespaces that re-export it link to that entry. A name whose docstring has no ``>>>`` example
gets the example written for it in docs/reference/examples/<namespace>.rst, placed inside its
entry, so the source files need no edit. Every example runs under ``sphinx.ext.doctest``.

It also resolves references by object identity (a type hint names ``rnnlab.cells.simple.
ElmanCell``; the entry is ``rnnlab.cells.ElmanCell``) and silences the one kind of missing
reference that cannot be checked offline: targets outside rnnlab (torch, numpy, the standard
library). A missing ``rnnlab`` target stays a warning, so ``-W`` fails the build.

The same functions serve tests/test_docs_reference.py, which checks at test time that every
public name has an entry and, where one is needed, an example.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
EXAMPLES = DOCS / "reference" / "examples"
GENERATED = DOCS / "reference" / "api"

_EXAMPLE_HEAD = re.compile(r"^\.\. example:: +(\S+)\s*$")


@dataclass(frozen=True)
class Entry:
    """One public name: where it is exported, what it is and where its entry lives."""

    namespace: str  # the module whose __all__ lists it
    name: str
    kind: str  # "class", "function", "module", "data", "state"
    canonical: str  # the namespace whose page holds the entry

    @property
    def qualname(self) -> str:
        return f"{self.namespace}.{self.name}"

    @property
    def needs_example(self) -> bool:
        return self.kind in ("class", "function")


def namespaces() -> list[str]:
    """Every public namespace: rnnlab, its packages with ``__all__``, modules in rnnlab.__all__."""
    import rnnlab

    found = ["rnnlab"]
    for info in pkgutil.walk_packages(rnnlab.__path__, "rnnlab."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if info.ispkg and hasattr(importlib.import_module(info.name), "__all__"):
            found.append(info.name)
    for name in rnnlab.__all__:
        obj = getattr(rnnlab, name)
        if inspect.ismodule(obj) and hasattr(obj, "__all__") and obj.__name__ not in found:
            found.append(obj.__name__)
    return sorted(found, key=lambda n: (n.count("."), n))


def _kind(obj: Any) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        # State tuples (ElmanState, LSTMState, ...) are records the cells return: listed, and
        # documented by their fields, without an example of their own.
        if issubclass(obj, tuple) and hasattr(obj, "_fields") and obj.__name__.endswith("State"):
            return "state"
        return "class"
    if inspect.isroutine(obj):
        return "function"
    return "data"  # constants, registries, type aliases


def _home(obj: Any, spaces: list[str]) -> str | None:
    module = getattr(obj, "__module__", None) if not inspect.ismodule(obj) else obj.__name__
    if not isinstance(module, str):
        return None
    best = [s for s in spaces if module == s or module.startswith(s + ".")]
    return max(best, key=len) if best else None


def entries() -> list[Entry]:
    """All public names of all namespaces, each with the namespace that documents it."""
    spaces = namespaces()
    exported: dict[int, list[str]] = {}
    table: list[tuple[str, str, Any]] = []
    for space in spaces:
        module = importlib.import_module(space)
        for name in module.__all__:
            obj = getattr(module, name)
            table.append((space, name, obj))
            exported.setdefault(id(obj), []).append(space)
    out = []
    for space, name, obj in table:
        kind = _kind(obj)
        where = exported[id(obj)]
        if kind == "module":
            canonical = obj.__name__ if obj.__name__ in spaces else space
        elif kind == "data" or len(where) == 1:
            canonical = space  # constants (ints, dicts) have no identity worth following
        else:
            home = _home(obj, where)
            canonical = home if home is not None else where[-1]
        out.append(Entry(space, name, kind, canonical))
    return out


def read_examples(path: Path) -> dict[str, str]:
    """Parse an examples file: ``.. example:: NAME`` followed by an indented doctest block."""
    found: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines() + [".. example:: <end>"]:
        head = _EXAMPLE_HEAD.match(line)
        if head:
            if current is not None:
                if current in found:
                    raise ValueError(f"{path}: two examples for {current!r}")
                found[current] = inspect.cleandoc("\n".join(lines))
            current, lines = head.group(1), []
        elif current is not None:
            lines.append(line)
        elif line.strip() and not line.startswith(".."):
            raise ValueError(f"{path}: text before the first '.. example::': {line!r}")
    return found


def examples(namespace: str) -> dict[str, str]:
    path = EXAMPLES / f"{namespace}.rst"
    return read_examples(path) if path.exists() else {}


def has_docstring_example(entry: Entry) -> bool:
    obj = getattr(importlib.import_module(entry.namespace), entry.name)
    return ">>>" in (inspect.getdoc(obj) or "")


def missing_examples() -> list[str]:
    """Public classes and functions with neither a docstring example nor one in the docs."""
    missing = []
    for entry in entries():
        if not entry.needs_example or entry.canonical != entry.namespace:
            continue
        if has_docstring_example(entry) or entry.name in examples(entry.canonical):
            continue
        missing.append(entry.qualname)
    return missing


def stale_examples() -> list[str]:
    """Examples in docs/reference/examples/ for names no namespace documents."""
    known = {(e.canonical, e.name) for e in entries() if e.canonical == e.namespace}
    stale = []
    for path in sorted(EXAMPLES.glob("*.rst")):
        for name in read_examples(path):
            if (path.stem, name) not in known:
                stale.append(f"{path.stem}.{name} (in {path.relative_to(DOCS.parent)})")
    return stale


def _indent(text: str, by: str) -> str:
    return "\n".join(by + line if line.strip() else "" for line in text.splitlines())


_DIRECTIVE = {
    "class": "autoclass",
    "state": "autoclass",
    "function": "autofunction",
    "data": "autodata",
}


def render_page(space: str, all_entries: list[Entry]) -> str:
    """The reST of one namespace's reference page."""
    mine = [e for e in all_entries if e.namespace == space]
    extra = examples(space)
    title = f"``{space}``"
    lines = [
        f".. This page is generated by docs/_ext/rnnlab_docs.py from {space}.__all__: do not edit.",
        "",
        title,
        "=" * len(title),
        "",
        f".. automodule:: {space}",
        "   :no-members:",
        "",
        ".. testsetup:: *",
        "",
        f"   from {space} import *",
        "",
    ]
    here = [e for e in mine if e.canonical == space and e.kind != "module"]
    elsewhere = [e for e in mine if e.canonical != space or e.kind == "module"]
    groups = [
        ("Classes", [e for e in here if e.kind == "class"]),
        ("Functions", [e for e in here if e.kind == "function"]),
        ("State tuples", [e for e in here if e.kind == "state"]),
        ("Constants", [e for e in here if e.kind == "data"]),
    ]
    for heading, group in groups:
        if not group:
            continue
        lines += [heading, "-" * len(heading), ""]
        for entry in group:
            options = []
            obj = getattr(importlib.import_module(space), entry.name)
            if entry.kind == "data":
                lines += _data_entry(entry, obj)
                continue
            if entry.kind == "class":
                options = ["   :members:"]
                if obj.__bases__ != (object,):  # "Bases: object" says nothing
                    options.append("   :show-inheritance:")
                fields = getattr(obj, "_fields", None) or getattr(obj, "__dataclass_fields__", None)
                if fields:  # fields are described by the class docstring's Attributes
                    options.append(f"   :exclude-members: __init__, forward, {', '.join(fields)}")
            lines += [f".. {_DIRECTIVE[entry.kind]}:: {entry.qualname}", *options, ""]
            if entry.name in extra:
                lines += ["   .. rubric:: Example", "", _indent(extra[entry.name], "   "), ""]
    if elsewhere:
        lines += ["Re-exported here", "----------------", ""]
        lines += [
            f"These names of ``{space}.__all__`` are documented where they are defined:",
            "",
        ]
        for entry in elsewhere:
            role = "mod" if entry.kind == "module" else "obj"
            target = (
                getattr(importlib.import_module(space), entry.name).__name__
                if entry.kind == "module"
                else f"{entry.canonical}.{entry.name}"
            )
            lines.append(f"- ``{entry.name}``: :py:{role}:`{target}`")
        lines.append("")
    return "\n".join(lines)


def _data_entry(entry: Entry, obj: Any) -> list[str]:
    """A constant: its type and value (a registry: its keys), not the docstring of its type."""
    if isinstance(obj, dict):
        keys = ", ".join(f"``{k}``" for k in obj)
        text = f"A ``dict`` with {len(obj)} entries: {keys}." if obj else "An empty ``dict``."
    else:
        value = repr(obj)
        if len(value) > 300:
            value = value[:300] + " ..."
        text = f"``{type(obj).__name__}``: ``{value}``"
    return [f".. py:data:: {entry.qualname}", "", f"   {text}", ""]


def write_pages() -> list[str]:
    """Write docs/reference/api/*.rst; only files whose text changed are rewritten."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    all_entries = entries()
    spaces = namespaces()
    wanted = {f"{space}.rst": render_page(space, all_entries) for space in spaces}
    for old in GENERATED.glob("*.rst"):
        if old.name not in wanted:
            old.unlink()  # a namespace that went away (the folder is generated, git-ignored)
    for name, text in wanted.items():
        path = GENERATED / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    index = ["API reference", "=============", "", ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {space}" for space in spaces]
    index_text = "\n".join(index) + "\n"
    _write_design_notes()
    path = GENERATED / "index.rst"
    if not path.exists() or path.read_text(encoding="utf-8") != index_text:
        path.write_text(index_text, encoding="utf-8")
    return spaces


def _write_design_notes() -> None:
    """List docs/design/*.md (the notes stay Markdown files in the repository, unbuilt)."""
    lines = [
        "Design notes",
        "============",
        "",
        "Each change to a public contract starts with a short note in the repository's",
        "``docs/design/`` folder: the problem, the options, the choice and why. They are",
        "Markdown files read in the repository; this list is generated from their titles.",
        "",
    ]
    for path in sorted((DOCS / "design").glob("[0-9]*.md")):
        first = path.read_text(encoding="utf-8").splitlines()[:1] or [path.stem]
        title = first[0].lstrip("# ").strip() or path.stem
        lines.append(f"- ``docs/design/{path.name}``: {title.replace('*', '')}")
    text = "\n".join(lines) + "\n"
    out = GENERATED / "design-notes.rst"
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")


# -- references -----------------------------------------------------------------------------

_ALIASES: dict[str, str] = {}
_SHORT: set[str] = set()


def _build_aliases() -> None:
    """Map every name an rnnlab object goes by to the entry that documents it."""
    _ALIASES.clear()
    _SHORT.clear()
    short: dict[str, set[str]] = {}
    for entry in entries():
        target = f"{entry.canonical}.{entry.name}"
        obj = getattr(importlib.import_module(entry.namespace), entry.name)
        _ALIASES[entry.qualname] = target
        if entry.kind in ("class", "function", "state"):
            _ALIASES[f"{obj.__module__}.{obj.__qualname__}"] = target
        elif entry.kind == "data":  # the same constant under its defining module's name
            for modname, module in list(sys.modules.items()):
                if modname.startswith(entry.namespace + ".") and module is not None:
                    if getattr(module, entry.name, None) is obj:
                        _ALIASES.setdefault(f"{modname}.{entry.name}", target)
        short.setdefault(entry.name, set()).add(target)
        _SHORT.add(entry.name)
    for name, targets in short.items():
        if len(targets) == 1 and name not in _ALIASES:
            _ALIASES[name] = next(iter(targets))


def _resolve(target: str) -> str | None:
    if target in _ALIASES:
        return _ALIASES[target]
    head, _, tail = target.rpartition(".")  # a method or attribute of a documented class
    if head in _ALIASES:
        return f"{_ALIASES[head]}.{tail}"
    return None


def _on_missing_reference(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    resolved = _resolve(target.lstrip(".~"))
    if resolved is None or resolved == target:
        return None
    domain = env.get_domain("py")
    builder = app.builder
    for role in ("obj", node.get("reftype", "obj")):
        ref = domain.resolve_xref(env, node["refdoc"], builder, role, resolved, node, contnode)
        if ref is not None:
            return ref
    return None


def _is_external(target: str) -> bool:
    target = target.lstrip(".~")
    if target.startswith("rnnlab"):
        # Private helpers (a leading underscore in any part) are not part of the public
        # surface: a type hint may name one without an entry existing.
        return any(part.startswith("_") for part in target.split("."))
    # A dotted name outside rnnlab (torch.nn.LSTM, numpy.ndarray) is external; a bare name is
    # external unless some rnnlab namespace exports that name (then it had to resolve).
    return "." in target or target not in _SHORT


def _exists(target: str) -> Any:
    """The rnnlab module or object a dotted name points to, or None."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def _on_warn_missing_reference(app: Any, domain: Any, node: Any) -> bool | None:
    if domain.name != "py":
        return None
    target = node.get("reftarget", "").lstrip(".~")
    if _is_external(target):
        return True  # torch/numpy/stdlib: cannot be checked offline, not a broken link
    if target.startswith("rnnlab.") and _exists(target) is not None:
        # A real rnnlab object without an entry of its own (a helper class in a type hint, a
        # module, a constant not in any __all__): the reference is not broken, there is just
        # no page for it, so it stays plain text. A name that does not exist still warns.
        return True
    return None


_MODULUS = re.compile(r"(?<![\\`|\w])\|([^|`\s][^|`]*?)\|(?![_\w|])")


def _escape_moduli(lines: list[str]) -> None:
    """Docstrings write |λ| for a modulus, which reST reads as a substitution: escape it.

    Lines inside ``.. math::`` blocks, literal blocks, doctests and tables keep their bars
    (there the bars are LaTeX or layout, and reST does not substitute).
    """
    block_indent: int | None = None
    for n, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue
            block_indent = None
        if stripped.startswith(".. math::") or stripped.rstrip().endswith("::"):
            block_indent = indent
            if not stripped.startswith(".."):  # "text::" paragraph: the text itself is prose
                lines[n] = _MODULUS.sub(r"\\|\1\\|", line)
            continue
        table_row = stripped.startswith("+") or (
            stripped.startswith("|") and stripped.rstrip().endswith("|") and stripped.count("|") > 2
        )
        if stripped.startswith((">>>", "...")) or table_row:
            continue
        lines[n] = _MODULUS.sub(r"\\|\1\\|", line)


def _on_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    _escape_moduli(lines)


def _on_builder_inited(app: Any) -> None:
    write_pages()
    _build_aliases()


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _on_builder_inited)
    app.connect("autodoc-process-docstring", _on_docstring)
    app.connect("missing-reference", _on_missing_reference)
    app.connect("warn-missing-reference", _on_warn_missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
