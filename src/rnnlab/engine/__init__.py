"""Fast paths behind the layers. A kernel is registered for an *exact* cell type (never
isinstance, so a user's subclass that overrides ``step`` is never silently replaced); a layer
asks :func:`lookup` before falling back to its reference loop. Never a second API.
"""

from . import draws as _draws  # noqa: F401  (rnnlab::zoneout_keep, zoneout's keep draws)
from . import fed_input as _fed_input  # noqa: F401  (rnnlab::fed_input, input feedback)
from . import ops as _ops  # noqa: F401  (defines torch.ops.rnnlab.* before any trace)
from . import regularised as _regularised  # noqa: F401  (the ops of issue 18, likewise)
from . import regularised_jordan as _regularised_jordan  # noqa: F401
from . import regularised_ln as _regularised_ln  # noqa: F401
from .build import status
from .compiled import CompiledCell
from .registry import (
    Kernel,
    clear,
    disabled,
    lookup,
    lookup_masked,
    lookup_teacher_forced,
    register,
    register_masked,
    register_teacher_forced,
)

__all__ = [
    "CompiledCell",
    "Kernel",
    "clear",
    "disabled",
    "lookup",
    "lookup_masked",
    "lookup_teacher_forced",
    "register",
    "register_defaults",
    "register_masked",
    "register_teacher_forced",
    "status",
]


def register_defaults() -> None:
    """Register the compiled kernels of the built-in cells (done on import)."""
    from .feedback import register_feedback
    from .feedback_gated import register_gated
    from .gpu import register_all as register_gpu
    from .kernels import register_all
    from .kernels_extra import register_extra

    register_all()
    register_gpu()
    register_extra()
    register_feedback()
    register_gated()


register_defaults()
