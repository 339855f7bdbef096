"""Fast paths behind the layers. A kernel is registered for an *exact* cell type (never
isinstance, so a user's subclass that overrides ``step`` is never silently replaced); a layer
asks :func:`lookup` before falling back to its reference loop. Never a second API.
"""

from .registry import Kernel, clear, disabled, lookup, register

__all__ = ["Kernel", "clear", "disabled", "lookup", "register"]
