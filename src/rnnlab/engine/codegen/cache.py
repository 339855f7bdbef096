"""The on-disk cache of compiled cells: ``<key>.so`` and ``<key>.json``, written atomically.

Location: ``$RNNLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnlab``, else ``~/.cache/rnnlab``
(a ``cells/`` folder inside, with a marker file saying it is rnnlab's). The key hashes what
decides the generated code: the step's ``torch.fx.symbolic_trace`` code (17 ms, no ``make_fx``
and no dynamo), the cell's module tree (sizes, options such as a layer norm's eps), the
parameters' names, shapes and dtypes, the batch size, the torch version, the compiler and
flags, and the code generator's version. Files are written to a temporary name in the same
folder and renamed, so a reader never sees half a file, and two processes compiling the same
cell both end with a whole one. Nothing in the cache is ever deleted by rnnlab.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

VERSION = "7"  # bump when the generated code changes meaning (7: dense hoist, row threads)
MARKER = ".rnnlab-cache"
SMALLGEMM_H = Path(__file__).resolve().parent.parent / "csrc" / "smallgemm.h"
CXX = os.environ.get("CXX", "g++")


def flags() -> list[str]:
    f = ["-O3", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
         "-pthread"]  # fmt: skip
    if platform.machine() in ("x86_64", "AMD64"):
        f.append("-march=native")  # the cache lives on the machine that compiled
    return f


def cache_dir() -> Path:
    root = os.environ.get("RNNLAB_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "rnnlab"
    d = base / "cells"
    d.mkdir(parents=True, exist_ok=True)
    marker = d / MARKER
    if not marker.exists():
        marker.write_text("compiled rnnlab CompiledCell loops; safe to delete\n")
    return d


def key(parts: dict[str, Any]) -> str:
    # the generated code pastes csrc/smallgemm.h in (its text is part of the key) and uses it
    # unless RNNLAB_CC_SMALLGEMM=0 (codegen.cpp.SMALL_GEMM)
    sg = "off"
    if os.environ.get("RNNLAB_CC_SMALLGEMM", "1") != "0":
        sg = hashlib.sha256(SMALLGEMM_H.read_bytes()).hexdigest()[:16]
    blob = json.dumps({**parts, "torch": torch.__version__, "cxx": CXX, "flags": flags(),
                       "version": VERSION, "smallgemm": sg},
                      sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # only our own temporary file
        raise


def lookup(k: str) -> tuple[Path, dict[str, Any]] | None:
    d = cache_dir()
    so, meta = d / f"{k}.so", d / f"{k}.json"
    if so.exists() and meta.exists():
        try:
            return so, json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
    return None


def compile_and_store(k: str, source: str, meta: dict[str, Any], keep: bool = True) -> Path:
    """Compile ``source`` with g++ into the cache (``keep``) or into a temporary folder of
    this process (a step without a cache key); raise RuntimeError with g++'s message."""
    d = cache_dir() if keep else Path(tempfile.mkdtemp(prefix="rnnlab-cell-"))
    so = d / f"{k}.so"
    with tempfile.TemporaryDirectory(prefix="rnnlab-cc-") as tmp:
        cpp, out = Path(tmp) / "cell.cpp", Path(tmp) / "cell.so"
        cpp.write_text(source)
        lib_dir = Path(torch.__file__).parent / "lib"
        cmd = [CXX, *flags(), str(cpp), "-o", str(out), f"-L{lib_dir}", "-ltorch_cpu"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{CXX} failed: {res.stderr[-600:]}")
        _atomic_write(so, out.read_bytes())
    _atomic_write(d / f"{k}.cpp", source.encode())  # for reading, never loaded
    _atomic_write(d / f"{k}.json", json.dumps(meta, indent=1).encode())
    return so
