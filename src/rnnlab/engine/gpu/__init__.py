"""The engine on CUDA: torch's cuDNN functions for the plain cells, fused Triton ops for the
lecture's cells that cuDNN lacks (Elman with an output layer, Jordan, GRU with the reset before
the product, the LSTM with peepholes and Greff et al.'s variants).

Nothing here runs for CPU tensors: :func:`register_all` registers :func:`dispatch.cuda_kernel`
under ``device="cuda"`` in the engine registry, beside (not instead of) the CPU kernels.
Triton is imported only when a fused op first runs (the optional ``rnnlab[gpu]`` extra).
See docs/design/0014-gpu-engine.md.
"""

from __future__ import annotations

from .dispatch import CUDNN, TRITON, cuda_kernel, plan, triton_available

__all__ = ["CUDNN", "TRITON", "cuda_kernel", "plan", "register_all", "triton_available"]


def register_all() -> None:
    """Register :func:`cuda_kernel` for the built-in cells it covers, under ``device="cuda"``
    (done when :mod:`rnnlab.engine` is imported; calling it again changes nothing).

    Example:
        >>> from rnnlab import engine
        >>> from rnnlab.cells import JordanCell
        >>> register_all()
        >>> engine.lookup(JordanCell(2, 3, 1)) is not None
        True
    """
    from ...cells.gru import GRUCell
    from ...cells.lstm import LSTMCell
    from ...cells.simple import ElmanCell, JordanCell
    from ..registry import register

    for cell_type in (ElmanCell, JordanCell, GRUCell, LSTMCell):
        register(cell_type, cuda_kernel, device="cuda")
