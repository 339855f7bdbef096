"""One step of each system of the lecture (the cell contract is in :mod:`rnnlab.cells.base`)."""

from .activations import ACTIVATIONS, resolve_activation
from .base import Cell
from .conv import RCLCell, RCLState, RecurrentMLPCell, RecurrentMLPState, paper_lrn_size
from .general import DeepOutput, DeepTransition, GeneralCell, GeneralState
from .gru import GRUCell, GRUState
from .lstm import VARIANTS as LSTM_VARIANTS
from .lstm import LSTMCell, LSTMFGRState, LSTMState
from .registry import CELL_TYPES, cell_from_config, cell_to_config, register_cell
from .simple import ElmanCell, ElmanState, JordanCell, JordanState

for _cls in (
    ElmanCell,
    JordanCell,
    LSTMCell,
    GRUCell,
    DeepTransition,
    DeepOutput,
    RCLCell,
    RecurrentMLPCell,
):
    register_cell(_cls)

__all__ = [
    "ACTIVATIONS",
    "CELL_TYPES",
    "Cell",
    "DeepOutput",
    "DeepTransition",
    "ElmanCell",
    "ElmanState",
    "GRUCell",
    "GRUState",
    "GeneralCell",
    "GeneralState",
    "JordanCell",
    "JordanState",
    "LSTMCell",
    "LSTMFGRState",
    "LSTMState",
    "LSTM_VARIANTS",
    "RCLCell",
    "RCLState",
    "RecurrentMLPCell",
    "RecurrentMLPState",
    "paper_lrn_size",
    "cell_from_config",
    "cell_to_config",
    "register_cell",
    "resolve_activation",
]
