"""Building the compiled kernels: on first use, cached, with one clear warning on failure.

The C++ sources in ``csrc/`` are compiled with ``torch.utils.cpp_extension.load`` (needs a C++
compiler and ninja, both installed by the project's set-up) into torch's extension cache
(``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``); later processes load the cached
library in well under a second. ``RNNLAB_ENGINE=0`` switches the compiled kernels off.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

_SRC = Path(__file__).parent / "csrc"
_lock = threading.Lock()
_state: dict[str, Any] = {
    "ops": None,
    "tried": False,
    "error": None,
    "seconds": None,
    "malloc": False,
}


def _flags() -> list[str]:
    flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c++17"]
    # One translation unit holds every kernel: past GCC's default inlining budget for a unit
    # (inline-unit-growth) it stops inlining the small per-step helpers (the packed GEMM, the
    # activations) into the time loops, everywhere at once. Measured (2026-12-03, noisy
    # machine, B=16, H=64, T=100): with the masked GRU/LSTM ops added, Jordan's plain forward
    # 0.7-1.0 ms instead of 0.13, GRU's 1.0-1.5 instead of 0.5; with these limits 0.10 / 0.35.
    if sys.platform.startswith("linux"):  # GCC's parameters
        flags += [
            "--param=inline-unit-growth=1000",
            "--param=large-function-growth=1000",
            "--param=max-inline-insns-auto=100",
        ]
    if sys.platform.startswith("linux"):
        # OpenMP for the unit-partitioned loops: resolves to the libgomp torch has loaded
        flags.append("-fopenmp")
    if platform.machine() in ("x86_64", "AMD64"):
        # Tuned for the machine that builds (the cache lives on that machine).
        flags.append("-march=native")
    return flags


def enabled() -> bool:
    return os.environ.get("RNNLAB_ENGINE", "1") not in ("0", "false", "no")


def ops() -> Any | None:
    """The compiled ops namespace (``torch.ops.rnnlab_engine``), building it on first call;
    None when disabled or when the build failed (warned once)."""
    if _state["ops"] is not None or _state["tried"] or not enabled():
        return _state["ops"]
    with _lock:
        if _state["tried"]:
            return _state["ops"]
        _state["tried"] = True
        t0 = time.perf_counter()
        try:
            from torch.utils.cpp_extension import load

            # pip's ninja lives beside this interpreter; make it findable without activating
            # the virtual environment.
            bindir = str(Path(sys.executable).parent)
            if bindir not in os.environ.get("PATH", "").split(os.pathsep):
                os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")

            load(
                name="rnnlab_engine",
                sources=[str(_SRC / "kernels.cpp"), str(_SRC / "draws.cpp")],
                extra_include_paths=[str(_SRC)],
                extra_cflags=_flags(),
                extra_ldflags=["-fopenmp"] if sys.platform.startswith("linux") else [],
                is_python_module=False,
                verbose=os.environ.get("RNNLAB_ENGINE_VERBOSE") == "1",
            )
            _state["ops"] = torch.ops.rnnlab_engine
            _state["malloc"] = _keep_freed_memory()
        except Exception as exc:  # noqa: BLE001 - any build failure means: fall back
            _state["error"] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                "rnnlab.engine: the compiled CPU kernels could not be built "
                f"({_state['error'][:300]}); rnnlab keeps working on its reference loops, "
                "which are slower. Set RNNLAB_ENGINE=0 to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
        _state["seconds"] = time.perf_counter() - t0
    return _state["ops"]


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # the most glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 128 << 20


def _keep_freed_memory() -> bool:
    """Let glibc keep the engine's large buffers for reuse instead of returning them to the
    kernel on every free; True when set. RNNLAB_ENGINE_MALLOC=0: leave malloc as it is.

    Each training step allocates and frees tens of MB (the gate buffers and input projections
    alone are T·B·3H floats, 10 MB at S1). glibc serves blocks above its mmap threshold with a
    fresh ``mmap`` and ``munmap``s them on free; its dynamic threshold only rises to the size of
    the largest block freed, so same-sized blocks keep being mapped again. Every step then
    first-touches fresh zeroed pages: about 5600 minor faults per GRU S1 step (22 MB), which
    cost 20% of the step on a loaded 2-core machine (2026-12-04) and vary between processes.
    With the threshold at 32 MB and the trim threshold at 128 MB, freed blocks stay in the heap
    (up to 128 MB free at its top before glibc trims) and the step has no faults. Process-wide,
    as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` would be; an environment that
    already sets either of them, or another allocator, is left alone.
    """
    if os.environ.get("RNNLAB_ENGINE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    if platform.libc_ver()[0] != "glibc" or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        return bool(ok and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError):
        return False


def available() -> bool:
    """Whether the compiled kernels are switched on and built (building them on first call).
    Traced code sees the answer as a constant: the build is a one-time side effect."""
    return _available()


def _available() -> bool:
    return enabled() and ops() is not None


# torch.compiler.assume_constant_result(_available), without importing torch._dynamo when
# rnnlab is imported (a process that never compiles must not load Dynamo and Inductor): the
# decorator only sets this attribute.
_available._dynamo_marked_constant = True  # type: ignore[attr-defined]


def status() -> dict[str, Any]:
    """Whether the kernels are built, the error if not, and how long loading took."""
    return {
        "enabled": enabled(),
        "built": _state["ops"] is not None,
        "error": _state["error"],
        "load_seconds": _state["seconds"],
        "malloc_tuned": _state["malloc"],
    }
