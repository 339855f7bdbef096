"""Every built-in cell configuration, for the contract tests (one registry, many tests)."""

from __future__ import annotations

from collections.abc import Callable

from rnnlab.cells import (
    LSTM_VARIANTS,
    Cell,
    DeepOutput,
    DeepTransition,
    ElmanCell,
    GRUCell,
    JordanCell,
    LSTMCell,
    RecurrentMLPCell,
)

I, H, O = 3, 5, 2

ZOO: dict[str, Callable[[], Cell]] = {
    "elman_tanh": lambda: ElmanCell(I, H),
    "elman_relu_out": lambda: ElmanCell(I, H, O, activation="relu"),
    "elman_sigmoid_out_tanh": lambda: ElmanCell(
        I, H, O, activation="sigmoid", output_activation="tanh"
    ),
    "elman_identity_nobias": lambda: ElmanCell(I, H, activation="identity", bias=False),
    "jordan": lambda: JordanCell(I, H, O),
    "jordan_nobias": lambda: JordanCell(I, H, O, activation="relu", bias=False),
    "jordan_sigmoid": lambda: JordanCell(I, H, O, activation="sigmoid", output_activation="tanh"),
    "gru_after": lambda: GRUCell(I, H),
    "gru_before": lambda: GRUCell(I, H, reset="before"),
    "gru_before_sigmoid": lambda: GRUCell(I, H, reset="before", activation="sigmoid"),
    "lstm_proj": lambda: LSTMCell(I, H, proj_size=O),
    "lstm_peephole_proj": lambda: LSTMCell(I, H, proj_size=O, peephole=True),
    "deep_transition": lambda: DeepTransition(GRUCell(I, H), [4]),
    "deep_output": lambda: DeepOutput(ElmanCell(I, H), [4], output_size=O),
    "recurrent_mlp": lambda: RecurrentMLPCell(I, H),
}
for _v in LSTM_VARIANTS:
    ZOO[f"lstm_{_v.lower()}"] = (lambda v: lambda: LSTMCell(I, H, variant=v))(_v)
