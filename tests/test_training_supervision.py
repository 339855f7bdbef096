"""The lecture's unfolding cases, masked losses and the model builder (rnnlab.training)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnlab.cells import GRUCell, JordanCell, LSTMCell
from rnnlab.layers import Recurrent
from rnnlab.training import (
    SequenceModel,
    Supervision,
    masked_loss,
    step_targets,
    unfold_input,
)

torch.manual_seed(0)


# --- cases: inputs and where the target sits -----------------------------------------------------
def test_case1_static_input_at_first_step_only():
    x = torch.randn(3, 4)
    u = unfold_input(x, 1, steps=5)
    assert u.shape == (3, 5, 4)
    assert torch.equal(u[:, 0], x) and bool((u[:, 1:] == 0).all())


def test_case2_static_input_at_every_step():
    x = torch.randn(3, 4)
    u = unfold_input(x, 2, steps=6)
    for t in range(6):
        assert torch.equal(u[:, t], x)


def test_time_varying_input_taken_as_is():
    x = torch.randn(2, 7, 3)
    for case in (1, 2, 3, 4):
        assert unfold_input(x, case, None) is x


def test_case3_target_at_last_valid_step():
    y = torch.tensor([[1.0], [2.0], [3.0]])
    target, mask = step_targets(y, 3, 5, torch.tensor([5, 2, 1]))
    assert mask.int().tolist() == [[0, 0, 0, 0, 1], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]
    assert target.shape == (3, 5, 1) and float(target[1, 1, 0]) == 2.0


def test_case2_target_at_last_step_and_case4_every_valid_step():
    _, m2 = step_targets(torch.zeros(2, 3), 2, 4)
    assert m2.int().tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]
    _, m4 = step_targets(torch.zeros(2, 4, 1), 4, 4, torch.tensor([4, 2]))
    assert m4.int().tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_class_targets_ignore_index_is_masked():
    y = torch.tensor([[1, 2, -100], [0, -100, -100]])
    _, mask = step_targets(y, 4, 3)
    assert mask.int().tolist() == [[1, 1, 0], [1, 0, 0]]


def test_masked_mse_equals_mean_over_valid_elements():
    pred, r = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    lengths = torch.tensor([5, 3, 1])
    got = masked_loss(pred, r, "mse", lengths=lengths)
    errs = [((pred[b, :L] - r[b, :L]) ** 2).flatten() for b, L in enumerate(lengths.tolist())]
    assert torch.allclose(got, torch.cat(errs).mean())


def test_masked_cross_entropy_equals_mean_over_valid_steps():
    logits, r = torch.randn(2, 4, 5), torch.randint(0, 5, (2, 4))
    lengths = torch.tensor([4, 2])
    got = masked_loss(logits, r, "cross_entropy", lengths=lengths)
    want = F.cross_entropy(torch.cat([logits[0], logits[1, :2]]), torch.cat([r[0], r[1, :2]]))
    assert torch.allclose(got, want)


def test_case3_loss_ignores_padding():
    """Case 3 on padded sequences: the loss sees each sequence's last *valid* output, which is
    the output of running that sequence alone, unpadded."""
    model = SequenceModel({"cell": "GRUCell", "input_size": 2, "output_size": 1, "hidden_size": 6})
    x, y = torch.randn(3, 6, 2), torch.randn(3, 1)
    lengths = torch.tensor([6, 4, 2])
    sup = Supervision(3, "mse")
    out = model(x, lengths=lengths).output
    got = sup(out, y, lengths)
    alone = torch.stack(
        [model(x[b : b + 1, :L]).output[0, -1] for b, L in enumerate(lengths.tolist())]
    )
    assert torch.allclose(got, ((alone - y) ** 2).mean(), atol=1e-6)


def test_supervision_bad_input():
    with pytest.raises(ValueError, match="case: expected one of"):
        Supervision(5)
    with pytest.raises(ValueError, match="loss: expected one of"):
        Supervision(4, "l1")
    with pytest.raises(ValueError, match=r"x: expected \(B, T, I\) for case 3"):
        unfold_input(torch.randn(2, 3), 3, None)
    with pytest.raises(ValueError, match="steps: expected the number of unfolding steps"):
        unfold_input(torch.randn(2, 3), 2, None)
    with pytest.raises(ValueError, match=r"y: expected targets at every step"):
        step_targets(torch.randn(2, 3), 4, 5)


# --- the model builder ----------------------------------------------------------------------
def test_model_matches_hand_built_layers():
    """A 2-layer LSTM with a linear readout equals the same layers stepped by hand."""
    spec = {
        "cell": "LSTMCell",
        "cell_options": {"variant": "V"},
        "input_size": 3,
        "hidden_size": 5,
        "output_size": 2,
        "num_layers": 2,
    }
    m = SequenceModel(spec)
    x = torch.randn(2, 4, 3)
    c0, c1 = m.core.layers[0].cell, m.core.layers[1].cell
    s0, s1, ys = c0.initial_state(2), c1.initial_state(2), []
    for t in range(4):
        h0, s0 = c0(x[:, t], s0)
        h1, s1 = c1(h0, s1)
        ys.append(m.readout(h1))
    assert torch.allclose(m(x).output, torch.stack(ys, 1), atol=1e-6)
    assert isinstance(c0, LSTMCell) and c0.peephole


def test_model_rebuilds_from_config():
    spec = {
        "cell": "GRUCell",
        "cell_options": {"reset": "before"},
        "input_size": 2,
        "hidden_size": 4,
        "output_size": 3,
        "num_layers": 2,
        "bidirectional": True,
    }
    a = SequenceModel(spec)
    b = SequenceModel(a.config())
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 2)
    assert torch.equal(a(x).output, b(x).output)
    assert a.config() == {**b.config()}


def test_jordan_readout_none_is_the_lectures_jordan_net():
    m = SequenceModel(
        {
            "cell": "JordanCell",
            "input_size": 2,
            "hidden_size": 4,
            "output_size": 3,
            "readout": "none",
            "feedback": "state",
        }
    )
    assert isinstance(m.core, Recurrent) and isinstance(m.core.cell, JordanCell)
    assert m.core.cell.output_size == 3 and m.readout is None


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"cell": "Nope"}, r"model\.cell: expected one of"),
        ({"colour": 1}, r"model\.colour: unknown model key"),
        ({"cell_options": {"variant": "ZZ"}}, r"model\.cell_options: LSTMCell: variant"),
        ({"cell_options": {"spin": 1}}, r"model\.cell_options\.spin: LSTMCell has no"),
        ({"dropout": 0.2}, r"model\.dropout: acts between layers"),
        ({"feedback": "state"}, r"model\.feedback: 'state' .* needs num_layers=1|readout"),
        (
            {"feedback": "state", "readout": "none", "num_layers": 1, "cell": "ElmanCell"},
            r"model\.feedback: ElmanCell with these options has no output feedback",
        ),
        ({"feedback": "input", "output_size": 2}, r"input_size must equal output_size"),
        ({"bidirectional": True, "feedback": "input"}, r"bidirectional model reads the future"),
        ({"readout": "none"}, r"model\.readout: 'none' makes the last layer's output"),
    ],
)
def test_model_spec_errors(spec, match):
    base = {"cell": "LSTMCell", "input_size": 3, "hidden_size": 4, "output_size": 3}
    with pytest.raises(ValueError, match=match):
        SequenceModel({**base, **spec})


def test_feed_mask_on_model_without_feedback_is_an_error():
    m = SequenceModel({"cell": "GRUCell", "input_size": 2, "hidden_size": 4, "output_size": 2})
    with pytest.raises(ValueError, match="feed_mask: this model has no output feedback"):
        m(torch.randn(1, 3, 2), feed_mask=torch.ones(1, 3, dtype=torch.bool))


# --- encoder-decoder --------------------------------------------------------------------------
def test_encoder_decoder_teacher_forced_and_free_running_by_hand():
    V = 4
    m = SequenceModel(
        {
            "cell": "GRUCell",
            "input_size": 3,
            "hidden_size": 6,
            "output_size": V,
            "feedback": "input",
            "tokens": True,
            "seq2seq": True,
        }
    )
    src = torch.randn(2, 5, 3)
    r = torch.randint(0, V, (2, 4))
    dec_in = torch.cat([torch.zeros(2, 1, V), F.one_hot(r[:, :-1], V).float()], 1)
    enc, dec = m.encoder.cell, m.core.cell
    assert isinstance(enc, GRUCell) and isinstance(dec, GRUCell)

    def encode():
        s = enc.initial_state(2)
        for t in range(5):
            _, s = enc(src[:, t], s)
        return s

    # teacher forcing: the decoder reads start, r(0), r(1), ...
    s, ys = encode(), []
    for t in range(4):
        h, s = dec(dec_in[:, t], s)
        ys.append(m.readout(h))
    forced = m(dec_in, source=src).output
    assert torch.allclose(forced, torch.stack(ys, 1), atol=1e-6)
    # free running: the decoder reads start, then the one-hot of its own argmax
    s, ys, inp = encode(), [], torch.zeros(2, V)
    for _ in range(4):
        h, s = dec(inp, s)
        y = m.readout(h)
        ys.append(y)
        inp = F.one_hot(y.argmax(-1), V).float()
    free = m(dec_in, source=src, feed_mask=torch.zeros(2, 4, dtype=torch.bool)).output
    assert torch.allclose(free, torch.stack(ys, 1), atol=1e-6)
    gen = m.generate(4, source=src)
    assert torch.allclose(gen.values, torch.stack(ys, 1), atol=1e-6)
    assert torch.equal(gen.tokens, torch.stack(ys, 1).argmax(-1))
