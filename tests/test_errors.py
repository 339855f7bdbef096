"""Bad input: each case raises a ValueError/TypeError naming the argument, the expected and the
received value, before any work is done."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab import (
    Bidirectional,
    ElmanCell,
    GRUCell,
    JordanCell,
    LSTMCell,
    Recurrent,
    Stacked,
    TeacherForcing,
)

X = torch.randn(4, 6, 3)


def layer():
    return Recurrent(GRUCell(3, 5))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"x: expected \(B, T, 3\), got \(6, 3\)"):
        layer()(torch.randn(6, 3))


def test_wrong_feature_size():
    with pytest.raises(ValueError, match=r"x: expected \(B, T, 3\), got \(4, 6, 2\)"):
        layer()(torch.randn(4, 6, 2))
    with pytest.raises(ValueError, match=r"x: expected \(B, 3\), got \(4, 2\)"):
        GRUCell(3, 5)(torch.randn(4, 2))


def test_time_first_message():
    with pytest.raises(ValueError, match=r"x: expected \(T, B, 3\)"):
        Recurrent(GRUCell(3, 5), batch_first=False)(torch.randn(4, 6, 2))


def test_integer_input():
    with pytest.raises(
        TypeError, match="x: expected a floating-point tensor, got dtype torch.int64"
    ):
        layer()(torch.ones(4, 6, 3, dtype=torch.int64))


def test_lengths_zero():
    with pytest.raises(ValueError, match=r"lengths: expected values in \[1, T=6\], got min 0"):
        layer()(X, lengths=torch.tensor([6, 0, 2, 3]))


def test_lengths_longer_than_T():
    with pytest.raises(
        ValueError, match=r"lengths: expected values in \[1, T=6\], got min 2 and max 9"
    ):
        layer()(X, lengths=torch.tensor([6, 9, 2, 3]))


def test_lengths_wrong_count():
    with pytest.raises(
        ValueError, match=r"lengths: expected shape \(4,\) \(one per sequence\), got \(3,\)"
    ):
        layer()(X, lengths=torch.tensor([6, 2, 3]))


def test_lengths_float():
    with pytest.raises(
        TypeError, match="lengths: expected an integer tensor, got dtype torch.float32"
    ):
        layer()(X, lengths=torch.tensor([6.0, 2.0, 3.0, 1.0]))


def test_state_wrong_shape():
    with pytest.raises(ValueError, match=r"state.h: expected shape \(4, 5\), got \(4, 4\)"):
        layer()(X, (torch.zeros(4, 4),))
    with pytest.raises(
        TypeError, match=r"state: expected LSTMState\(h, c\) with 2 tensors, got tuple of 1"
    ):
        Recurrent(LSTMCell(3, 5))(X, (torch.zeros(4, 5),))


def test_state_dtype_mismatch():
    with pytest.raises(
        TypeError, match=r"state.h: expected dtype torch.float32 \(as x\), got torch.float64"
    ):
        layer()(X, (torch.zeros(4, 5, dtype=torch.float64),))


def test_input_dtype_vs_parameters():
    with pytest.raises(
        TypeError, match=r"x: expected dtype torch.float32 \(the parameters'\), got torch.float64"
    ):
        layer()(X.double())


def test_device_mismatch():
    meta = torch.zeros(4, 5, device="meta")
    with pytest.raises(ValueError, match=r"state.h: expected device cpu \(as x\), got meta"):
        layer()(X, (meta,))


def test_unknown_variant_and_activation_names():
    with pytest.raises(ValueError, match=r"variant: expected one of 'NP', 'V', .*got 'XYZ'"):
        LSTMCell(3, 5, variant="XYZ")
    with pytest.raises(ValueError, match=r"activation: expected one of .*got 'swishy'"):
        ElmanCell(3, 5, activation="swishy")
    with pytest.raises(ValueError, match="reset: expected one of 'after', 'before', got 'middle'"):
        GRUCell(3, 5, reset="middle")
    with pytest.raises(
        TypeError, match="activation: expected an activation name or a callable, got int"
    ):
        ElmanCell(3, 5, activation=3)


def test_bad_sizes():
    with pytest.raises(ValueError, match="hidden_size: expected a positive int, got 0"):
        ElmanCell(3, 0)
    with pytest.raises(ValueError, match=r"proj_size: expected < hidden_size=5, got 5"):
        LSTMCell(3, 5, proj_size=5)


def test_callable_activation_cannot_be_saved_by_name():
    cell = ElmanCell(3, 5, activation=lambda v: v.clamp(-1, 1))
    y, _ = Recurrent(cell)(X)  # runs fine on the reference loop
    assert y.abs().max() <= 1
    with pytest.raises(
        ValueError, match="activation: a callable activation cannot be saved by name"
    ):
        rnnlab.cell_to_config(cell)


def test_feedback_errors():
    with pytest.raises(ValueError, match="feedback: ElmanCell has no output feedback"):
        Recurrent(ElmanCell(3, 5, 2))(X, feedback=TeacherForcing(), reference=torch.zeros(4, 6, 2))
    with pytest.raises(ValueError, match=r"reference: required with feedback"):
        Recurrent(JordanCell(3, 5, 2))(X, feedback=TeacherForcing())
    with pytest.raises(ValueError, match=r"reference: expected shape \(4, 6, 2\), got \(4, 5, 2\)"):
        Recurrent(JordanCell(3, 5, 2))(X, feedback=TeacherForcing(), reference=torch.zeros(4, 5, 2))
    with pytest.raises(TypeError, match="feedback: expected a FeedbackSchedule"):
        Recurrent(JordanCell(3, 5, 2))(X, feedback="teacher", reference=torch.zeros(4, 6, 2))
    with pytest.raises(ValueError, match=r"p: expected a probability in \[0, 1\], got 1.5"):
        rnnlab.Mixed(1.5)


def test_composition_errors():
    with pytest.raises(
        ValueError, match=r"layers\[1\]: expected input_size 5 \(layer 0's output 5\), got 4"
    ):
        Stacked([Recurrent(GRUCell(3, 5)), Recurrent(GRUCell(4, 5))])
    with pytest.raises(ValueError, match="merge: 'sum' needs equal output sizes, got 5 and 4"):
        Bidirectional(Recurrent(GRUCell(3, 5)), Recurrent(GRUCell(3, 4)), merge="sum")
    with pytest.raises(ValueError, match=r"dropout: expected a value in \[0, 1\), got 1.5"):
        Stacked([Recurrent(GRUCell(3, 5))], dropout=1.5)
    with pytest.raises(TypeError, match="cell: expected an rnnlab Cell, got Linear"):
        Recurrent(torch.nn.Linear(3, 3))


def test_dropin_errors():
    lstm = rnnlab.nn.LSTM(3, 5, 2)
    with pytest.raises(
        ValueError, match=r"hx\[0\] \(h_0\): expected shape \(2, 4, 5\), got \(1, 4, 5\)"
    ):
        lstm(torch.randn(6, 4, 3), (torch.zeros(1, 4, 5), torch.zeros(2, 4, 5)))
    with pytest.raises(ValueError, match="input: expected 3 features, got 2"):
        lstm(torch.randn(6, 4, 2))
    with pytest.raises(ValueError, match="dropout: expected a number in"):
        rnnlab.nn.GRU(3, 5, dropout=2.0)


def test_nothing_is_computed_before_validation():
    # A wrong lengths tensor must fail before the cell runs even once.
    calls = []

    class Spy(ElmanCell):
        def step(self, x, state):
            calls.append(1)
            return super().step(x, state)

    with pytest.raises(ValueError):
        Recurrent(Spy(3, 5))(X, lengths=torch.tensor([7, 1, 1, 1]))
    assert calls == []
