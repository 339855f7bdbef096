"""One step of each system of the lecture (the cell contract is in :mod:`rnnlab.cells.base`)."""

from .activations import ACTIVATIONS, resolve_activation
from .base import Cell
from .conv import RCLCell, RCLState, RecurrentMLPCell, RecurrentMLPState, paper_lrn_size
from .convlstm import ConvLSTMCell, FlatConvLSTMCell
from .dropout import VariationalDropoutCell, dropout_mask
from .general import DeepOutput, DeepTransition, GeneralCell, GeneralState
from .gru import GRUCell, GRUState
from .layernorm import LayerNormGRUCell, LayerNormLSTMCell, layer_norm_lstm_cell
from .lstm import VARIANTS as LSTM_VARIANTS
from .lstm import LSTMCell, LSTMFGRState, LSTMState
from .registry import CELL_TYPES, cell_from_config, cell_to_config, register_cell
from .simple import ElmanCell, ElmanState, JordanCell, JordanState
from .zoneout import ZoneoutCell

for _cls in (
    ElmanCell,
    JordanCell,
    LSTMCell,
    GRUCell,
    DeepTransition,
    DeepOutput,
    RCLCell,
    RecurrentMLPCell,
    LayerNormLSTMCell,
    LayerNormGRUCell,
    VariationalDropoutCell,
    ZoneoutCell,
    ConvLSTMCell,
):
    register_cell(_cls)

__all__ = [
    "ACTIVATIONS",
    "CELL_TYPES",
    "Cell",
    "ConvLSTMCell",
    "DeepOutput",
    "DeepTransition",
    "ElmanCell",
    "ElmanState",
    "FlatConvLSTMCell",
    "GRUCell",
    "GRUState",
    "GeneralCell",
    "GeneralState",
    "JordanCell",
    "JordanState",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "LSTMCell",
    "LSTMFGRState",
    "LSTMState",
    "LSTM_VARIANTS",
    "RCLCell",
    "RCLState",
    "RecurrentMLPCell",
    "RecurrentMLPState",
    "VariationalDropoutCell",
    "ZoneoutCell",
    "paper_lrn_size",
    "cell_from_config",
    "cell_to_config",
    "dropout_mask",
    "layer_norm_lstm_cell",
    "register_cell",
    "resolve_activation",
]
