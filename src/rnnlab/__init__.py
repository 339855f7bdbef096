"""rnnlab: the systems of the recurrent-networks lecture, real, fast and analysable.

The public API, re-exported by name.
"""

from . import export, init, nn
from ._version import __version__
from .cells import (
    Cell,
    ConvLSTMCell,
    DeepOutput,
    DeepTransition,
    ElmanCell,
    ElmanState,
    GeneralCell,
    GeneralState,
    GRUCell,
    GRUState,
    JordanCell,
    JordanState,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    LSTMFGRState,
    LSTMState,
    RCLCell,
    RecurrentMLPCell,
    VariationalDropoutCell,
    ZoneoutCell,
    cell_from_config,
    cell_to_config,
    register_cell,
)
from .layers import (
    RCL,
    RCNN,
    Alternating,
    Bidirectional,
    BidirectionalOutput,
    FreeRunning,
    GivenMask,
    Mixed,
    Recurrent,
    RecurrentMLP,
    RecurrentResult,
    Stacked,
    TeacherForcing,
)

_SUBMODULES = ("data", "training", "dynamics", "experiments", "engine", "plots")


def __getattr__(name: str) -> object:
    # Heavier sub-packages load on first use: ``rnnlab.training``, ``rnnlab.dynamics``, ...
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")


__all__ = [
    "RCL",
    "RCLCell",
    "RCNN",
    "RecurrentMLP",
    "RecurrentMLPCell",
    "Alternating",
    "Bidirectional",
    "BidirectionalOutput",
    "Cell",
    "ConvLSTMCell",
    "DeepOutput",
    "DeepTransition",
    "ElmanCell",
    "ElmanState",
    "FreeRunning",
    "GRUCell",
    "GRUState",
    "GeneralCell",
    "GeneralState",
    "JordanCell",
    "JordanState",
    "LSTMCell",
    "LSTMFGRState",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "VariationalDropoutCell",
    "ZoneoutCell",
    "LSTMState",
    "GivenMask",
    "Mixed",
    "Recurrent",
    "RecurrentResult",
    "Stacked",
    "TeacherForcing",
    "__version__",
    "cell_from_config",
    "cell_to_config",
    "export",
    "init",
    "nn",
    "register_cell",
]
