"""Half precision on the CPU kernels (docs/design/0015, "Half precision").

A bfloat16 call runs the float32 kernel with its matrix products in bf16: the op's CPU
implementation (:mod:`.ops`) casts the arguments to float32 as before (state, gates and
accumulators stay float32), and :func:`scope` registers each float32 weight with its bf16
tensor for the kernel's products (``csrc/half.h``: oneDNN's bf16 matmul, fp32 accumulation
inside). The outputs return in bf16. float16 has no fast product on this CPU: it is computed
in float32 and cast at the op boundary.

``NATIVE_BF16`` (env ``RNNLAB_ENGINE_BF16=0`` turns it off) chooses between the two for bf16;
``RNNLAB_ENGINE_BF16GEMM=1`` forces the bf16 products at every size (the tests' tiny layers),
``=0`` never, unset: by size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

NATIVE_BF16 = os.environ.get("RNNLAB_ENGINE_BF16", "1") not in ("0", "false", "no")

# the weight arguments of each op (multiplied by the state in the kernel's products)
WEIGHTS = {
    "elman_forward": (1,), "elman_backward": (2,),
    "jordan_forward": (1, 2), "jordan_backward": (3, 4),
    "gru_forward": (1,), "gru_backward": (4,),
    "lstm_forward": (1, 5, 6), "lstm_backward": (8, 12, 13),
    # engine/regularised.py (zoneout, dropout: issue 18)
    "lstm_reg_forward": (1,), "lstm_reg_backward": (6,),
    "gru_reg_forward": (1,), "gru_reg_backward": (4,),
    # engine/regularised_ln.py (layer norm, issue 18)
    "ln_lstm_forward": (1,), "ln_lstm_backward": (10,),
    "ln_gru_forward": (1,), "ln_gru_backward": (6,),
}  # fmt: skip


def wanted(name: str, args: tuple[Any, ...], compute: torch.dtype) -> bool:
    """Whether a call of op ``name`` computed in ``compute`` takes the bf16 products: a float32
    computation with a bf16 argument, of an op whose weights are known here (another op's
    products stay float32, cast at the boundary)."""
    return (
        NATIVE_BF16
        and name in WEIGHTS
        and compute == torch.float32
        and any(isinstance(a, Tensor) and a.dtype == torch.bfloat16 for a in args)
    )


@contextlib.contextmanager
def scope(kernels: Any, name: str, args: tuple[Any, ...], cargs: list[Any]) -> Iterator[None]:
    """Register op ``name``'s float32 weights (``cargs``, made contiguous in place so that the
    kernel reads the registered memory) with bf16 copies (``args``' own when bf16) for the
    duration of the kernel call."""
    f32: list[Tensor] = []
    b16: list[Tensor] = []
    for i in WEIGHTS[name]:
        a = args[i]
        if a is None or a.numel() == 0:
            continue
        cargs[i] = cargs[i].contiguous()
        f32.append(cargs[i])
        b16.append(a.to(torch.bfloat16).contiguous())
    kernels.half_scope(f32, b16)
    try:
        yield
    finally:
        kernels.half_scope([], [])


def native() -> bool:
    """Whether this CPU runs the kernels' bf16 products (oneDNN's bf16 matmul; False on an
    AVX2-only CPU, where a bf16 call computes its products in float32: correct, not faster)."""
    global _NATIVE
    if _NATIVE is None:
        from . import build

        kernels = build.ops()
        if kernels is None:
            return False
        _NATIVE = bool(kernels.half_native())  # probed once by the extension: fixed per process
    return _NATIVE


_NATIVE: bool | None = None


def gemms() -> int:
    """bf16 products run by the kernels so far in this process (0 without the build)."""
    from . import build

    kernels = build.ops()
    return 0 if kernels is None else int(kernels.half_gemms())


# ------------------------------------------------------------------------------ autocast ----
def autocast_dtype() -> torch.dtype:
    """The dtype a CPU autocast region casts the ops' inputs to: bf16 under bf16 autocast (the
    bf16 products, measured faster than casting to float32: docs/design/0015), float32
    otherwise (float16 autocast, or ``NATIVE_BF16`` off), as torch.nn's RNNs."""
    if NATIVE_BF16 and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return torch.bfloat16
    return torch.float32


def _cast(args: tuple[Any, ...]) -> list[Any]:
    dt = autocast_dtype()
    return [
        a.to(dt)
        if isinstance(a, Tensor)
        and a.is_floating_point()
        and a.device.type == "cpu"
        and a.dtype != torch.float64
        else a
        for a in args
    ]


def register_autocast(lib: torch.library.Library, name: str, opoverload: Any) -> None:
    """torch.library.register_autocast with the cast dtype chosen per call (autocast_dtype):
    the same two registrations (a py_impl for tracing, an AutocastCPU kernel for eager)."""
    key = torch._C.DispatchKey.AutocastCPU
    guard = torch._C.DispatchKeySet(key)

    @opoverload.py_impl(key)
    def _traced(*args: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(guard):
            return opoverload(*_cast(args))

    def kernel(_keyset: Any, *args: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(guard):
            return opoverload(*_cast(args))

    lib.impl(name, kernel, "AutocastCPU", with_keyset=True)
