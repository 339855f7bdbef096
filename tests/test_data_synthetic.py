"""Synthetic tasks: structure against independent rules, baselines evaluated on generated data,
determinism, collate, and every bad-input case."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from rnnlab.data import (
    LETTER_BASELINE_MSE,
    LETTER_FEATURES,
    XOR_OPTIMAL_MSE,
    AddingProblem,
    CopyMemory,
    ElmanLetters,
    FlipFlop,
    FutureContext,
    MapSequences,
    TemporalXOR,
    adding_baseline_mse,
    copy_memory_baseline_ce,
    flipflop_baseline_mse,
    flipflop_targets,
    letter_stream,
    letters_to_features,
    pad_collate,
    sequence_loss,
    xor_stream,
)

# ---------------------------------------------------------------------------------------------
# adding problem


def _marked(task: AddingProblem) -> tuple[torch.Tensor, torch.Tensor]:
    values, markers = task.x[..., 0], task.x[..., 1]
    return values, markers


def test_adding_le_structure_and_target() -> None:
    task = AddingProblem(500, 40, seed=0)
    assert task.x.shape == (500, 40, 2) and task.y.shape == (500, 1) and task.case == 3
    values, markers = _marked(task)
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert (markers.sum(1) == 2).all()
    # one marker in each half
    assert (markers[:, :20].sum(1) == 1).all() and (markers[:, 20:].sum(1) == 1).all()
    assert values.min() >= 0 and values.max() <= 1
    torch.testing.assert_close(task.y[:, 0], (values * markers).sum(1))


def test_adding_hochreiter_structure_and_target() -> None:
    T = 30
    task = AddingProblem(2000, T, variant="hochreiter", seed=1)
    values, markers = _marked(task)
    assert (markers.sum(1) == 2).all()  # two distinct positions
    pos = markers.nonzero()[:, 1].reshape(-1, 2)
    assert (pos[:, 0] < 10).all() and (pos.max(1).values < T // 2 - 1).all()
    assert values.min() >= -1 and values.max() <= 1 and values.min() < -0.9
    torch.testing.assert_close(task.y[:, 0], 0.5 + (values * markers).sum(1) / 4)


@pytest.mark.parametrize(
    ("variant", "constant", "expected", "tol"),
    [("le", 1.0, 1 / 6, 0.006), ("hochreiter", 0.5, 1 / 24, 0.0015)],
)
def test_adding_baseline(variant: str, constant: float, expected: float, tol: float) -> None:
    task = AddingProblem(20000, 20, variant=variant, seed=2)
    mse = ((task.y - constant) ** 2).mean().item()  # the trivial predictor, evaluated here
    assert mse == pytest.approx(expected, abs=tol)
    assert task.baseline_loss() == pytest.approx(mse, rel=1e-5)
    assert task.expected_baseline_loss == adding_baseline_mse(variant) == expected


def test_adding_variable_length_and_pad_collate() -> None:
    task = AddingProblem(64, 30, min_length=10, seed=3)
    lengths = task.lengths
    assert lengths is not None and lengths.min() >= 10 and lengths.max() <= 30
    assert len(set(lengths.tolist())) > 5
    values, markers = _marked(task)
    steps = torch.arange(30)
    beyond = steps[None, :] >= lengths[:, None]
    assert (task.x[beyond] == 0).all()  # markers and values only inside each sequence
    for i in range(64):
        item = task[i]
        n = int(lengths[i])
        assert item["x"].shape == (n, 2) and item["y"].shape == (1,) and int(item["length"]) == n
        half = n // 2
        assert item["x"][:half, 1].sum() == 1 and item["x"][half:, 1].sum() == 1
    loader = DataLoader(task, batch_size=8, collate_fn=pad_collate)
    batch = next(iter(loader))
    want = lengths[:8]
    assert torch.equal(batch["lengths"], want)
    assert batch["x"].shape == (8, int(want.max()), 2) and batch["y"].shape == (8, 1)
    for b in range(8):
        n = int(want[b])
        assert torch.equal(batch["x"][b, :n], task.x[b, :n])
        assert (batch["x"][b, n:] == 0).all()


# ---------------------------------------------------------------------------------------------
# copy memory


def test_copy_memory_structure() -> None:
    T, K, C = 15, 10, 8
    task = CopyMemory(200, T, seed=0)
    ids = CopyMemory(200, T, one_hot=False, seed=0).x
    assert task.x.shape == (200, T + 2 * K, C + 2) and task.y.shape == (200, T + 2 * K)
    assert torch.equal(task.x.argmax(-1), ids) and (task.x.sum(-1) == 1).all()
    symbols = ids[:, :K]
    assert symbols.min() >= 1 and symbols.max() <= C
    assert (ids[:, K : T + K - 1] == 0).all()
    assert (ids[:, T + K - 1] == C + 1).all()  # the delimiter
    assert (ids[:, T + K :] == 0).all()
    assert (task.y[:, : T + K] == 0).all()
    assert torch.equal(task.y[:, T + K :], symbols)


@pytest.mark.parametrize("T", [1, 50])
def test_copy_memory_baseline(T: int) -> None:
    task = CopyMemory(100, T, seed=1)
    # the memoryless predictor, written here: p(blank) = 1 before the last 10 steps, 1/8 after
    per_step = torch.zeros(task.y.shape)
    per_step[:, T + 10 :] = math.log(8)
    assert per_step.mean().item() == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-6)
    assert task.baseline_loss() == pytest.approx(per_step.mean().item(), rel=1e-5)
    assert task.expected_baseline_loss == pytest.approx(copy_memory_baseline_ce(T))
    # the loss does measure: a perfect predictor scores 0
    perfect = F.one_hot(task.y, task.n_tokens).float() * 1e4
    assert sequence_loss(perfect, task.y, "cross_entropy").item() < 1e-6


# ---------------------------------------------------------------------------------------------
# Elman 1990


def test_xor_rule_on_every_third_bit() -> None:
    task = TemporalXOR(20, 301, seed=0)
    bits = torch.cat([task.x[:, :1, 0], task.y[..., 0]], dim=1).long()  # (N, T + 1) stream
    assert torch.equal(task.y[:, :-1], task.x[:, 1:])
    j = torch.arange(2, bits.shape[1], 3)
    assert torch.equal(bits[:, j], bits[:, j - 1] ^ bits[:, j - 2])
    # on the other phases the rule fails about half the time: the triples are aligned
    other = torch.arange(3, bits.shape[1], 3)
    assert 0.35 < (bits[:, other] == bits[:, other - 1] ^ bits[:, other - 2]).float().mean() < 0.65
    assert torch.equal(task.predictable, (torch.arange(301) + 1) % 3 == 2)
    s = xor_stream(9, seed=5)
    assert all(s[k + 2] == s[k] ^ s[k + 1] for k in (0, 3, 6))


def test_xor_baselines() -> None:
    task = TemporalXOR(50, 300, seed=1)
    assert ((task.y - 0.5) ** 2).mean().item() == 0.25 == task.baseline_loss()
    # the best predictor: XOR of the two last inputs where predictable, 0.5 elsewhere
    pred = torch.full_like(task.y, 0.5)
    xor = (task.x[:, 1:, 0].long() ^ task.x[:, :-1, 0].long()).float()  # for targets t >= 1
    mask = task.predictable[1:]
    pred[:, 1:, 0][:, mask] = xor[:, mask]
    assert ((pred - task.y) ** 2).mean().item() == pytest.approx(XOR_OPTIMAL_MSE, abs=2e-3)


def test_letters_grammar_and_features() -> None:
    task = ElmanLetters(10, 200, seed=0)
    table = {c: torch.tensor(v, dtype=torch.float32) for c, v in LETTER_FEATURES.items()}
    assert len({tuple(v) for v in LETTER_FEATURES.values()}) == 6  # six distinct codes
    for c in "bdg":
        assert LETTER_FEATURES[c][:2] == (1, 0)  # consonantal, not vocalic
    for c in "aiu":
        assert LETTER_FEATURES[c][:2] == (0, 1)
    for row, letters in enumerate(task.letters):
        assert len(letters) == 201
        assert re.fullmatch(r"(ba|dii|guuu)*(b|d|di|g|gu|guu)?", letters), letters
        expect = torch.stack([table[c] for c in letters])
        assert torch.equal(task.x[row], expect[:-1]) and torch.equal(task.y[row], expect[1:])
    with pytest.raises(ValueError, match="letters: expected only"):
        letters_to_features("bax")
    assert set(letter_stream(300, seed=1)) == set("bdgaiu")


def test_letters_baseline() -> None:
    task = ElmanLetters(40, 500, seed=2)
    mean = task.y.reshape(-1, 6).mean(0)
    mse = ((task.y - mean) ** 2).mean().item()
    assert mse == pytest.approx(LETTER_BASELINE_MSE, abs=3e-3)
    assert task.baseline_loss() == pytest.approx(mse, rel=1e-5)
    # the closed form, from the letter frequencies 1/9 (b, d, g, a), 2/9 (i), 3/9 (u)
    freq = {"b": 1 / 9, "d": 1 / 9, "g": 1 / 9, "a": 1 / 9, "i": 2 / 9, "u": 3 / 9}
    p = sum(f * np.array(LETTER_FEATURES[c]) for c, f in freq.items())
    assert float(np.mean(p * (1 - p))) == pytest.approx(46 / 243)


# ---------------------------------------------------------------------------------------------
# flip-flop


def test_flipflop_targets_follow_pulses() -> None:
    task = FlipFlop(50, 200, pulse_prob=0.05, seed=0)
    x, y = task.x.numpy(), task.y.numpy()
    assert set(np.unique(x)) == {-1.0, 0.0, 1.0} and x.shape == (50, 200, 3)
    held = np.zeros((50, 3))
    for t in range(200):  # an independent loop: hold the last pulse of each channel
        held = np.where(x[:, t] != 0, x[:, t], held)
        np.testing.assert_array_equal(y[:, t], held)
    # the output changes only when a pulse of the other sign arrives
    change = y[:, 1:] != y[:, :-1]
    assert (x[:, 1:][change] == y[:, 1:][change]).all()
    assert 0.03 < (x != 0).mean() < 0.07


def test_flipflop_targets_validates() -> None:
    with pytest.raises(ValueError, match=r"pulses: expected a tensor \(N, T, K\)"):
        flipflop_targets(torch.zeros(3, 4))


def test_flipflop_baseline() -> None:
    T, p = 100, 0.05
    task = FlipFlop(2000, T, pulse_prob=p, seed=1)
    mse = (task.y**2).mean().item()  # predict 0
    closed = 1 - sum((1 - p) ** (t + 1) for t in range(T)) / T
    assert flipflop_baseline_mse(T, p) == pytest.approx(closed)
    assert mse == pytest.approx(closed, abs=0.012)
    assert task.baseline_loss() == pytest.approx(mse, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# future context ("bank")


def test_bank_labels_come_from_the_future() -> None:
    task = FutureContext(300, 40, max_delay=4, seed=0)
    tok, lab = task.tokens, task.y
    assert torch.equal(task.x.argmax(-1), tok)
    banks = (tok == task.bank).nonzero().tolist()
    assert len(banks) > 300
    senses = []
    for row, t in banks:
        after = tok[row, t + 1 :]
        cue = ((after == task.river) | (after == task.money)).nonzero()[0].item()
        assert cue < 4  # within max_delay
        sense = 1 if after[cue] == task.river else 2
        assert lab[row, t] == sense
        senses.append(sense)
    assert (lab[tok != task.bank] == 0).all()
    # the sense is a coin flip given the past: a causal model cannot know it
    assert 0.4 < np.mean(np.array(senses) == 1) < 0.6
    # a model that reads the next cue gets every label right
    oracle = torch.full(lab.shape + (3,), -1e4)
    for row, t in banks:
        oracle[row, t, int(lab[row, t])] = 0.0
    oracle[..., 0] = torch.where(tok == task.bank, -1e4, 0.0)
    assert sequence_loss(oracle, lab, "cross_entropy").item() < 1e-6


def test_bank_baseline() -> None:
    task = FutureContext(200, 60, seed=1)
    expected = (task.tokens == task.bank).float().mean().item() * math.log(2)
    assert expected > 0.02
    assert task.baseline_loss() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# collate and loss


def test_pad_collate_time_indexed_targets_and_masked_loss() -> None:
    items = [
        {"x": torch.ones(n, 2), "y": torch.arange(n) % 3, "length": torch.tensor(n)}
        for n in (4, 2, 3)
    ]
    batch = pad_collate(items)
    assert batch["x"].shape == (3, 4, 2) and batch["y"].shape == (3, 4)
    assert batch["lengths"].tolist() == [4, 2, 3]
    assert (batch["x"][1, 2:] == 0).all() and (batch["y"][1, 2:] == -100).all()
    logits = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(0))
    valid = [(b, t) for b in range(3) for t in range(batch["lengths"][b])]
    manual = torch.stack([F.cross_entropy(logits[b, t], batch["y"][b, t]) for b, t in valid])
    got = sequence_loss(logits, batch["y"], "cross_entropy", batch["lengths"])
    torch.testing.assert_close(got, manual.mean())
    pred = torch.zeros(3, 4, 2)
    target = batch["x"]
    mse = sequence_loss(pred, target, "mse", batch["lengths"])
    assert mse.item() == pytest.approx(1.0)  # the padded zeros are not counted


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.integers(1, 3))
def test_pad_collate_then_cut_gives_the_items_back(lengths: list[int], features: int) -> None:
    gen = torch.Generator().manual_seed(sum(lengths))
    items = [
        {
            "x": torch.randn(n, features, generator=gen),
            "y": torch.randint(0, 5, (n,), generator=gen),
            "z": torch.randn(2, generator=gen),
            "length": torch.tensor(n),
        }
        for n in lengths
    ]
    batch = pad_collate(items)
    assert batch["lengths"].tolist() == lengths and batch["z"].shape == (len(lengths), 2)
    for b, item in enumerate(items):
        n = lengths[b]
        assert torch.equal(batch["x"][b, :n], item["x"]) and torch.equal(
            batch["y"][b, :n], item["y"]
        )
        assert (batch["x"][b, n:] == 0).all() and (batch["y"][b, n:] == -100).all()
        assert torch.equal(batch["z"][b], item["z"])


def test_pad_collate_bad_input() -> None:
    with pytest.raises(ValueError, match="batch: expected a non-empty"):
        pad_collate([])
    with pytest.raises(TypeError, match=r"batch\[0\]: expected a dict"):
        pad_collate([(torch.zeros(2), torch.zeros(1))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="kind: expected one of"):
        sequence_loss(torch.zeros(2), torch.zeros(2), "l1")
    with pytest.raises(ValueError, match=r"prediction: expected shape \(2,\)"):
        sequence_loss(torch.zeros(3), torch.zeros(2), "mse")


# ---------------------------------------------------------------------------------------------
# determinism and bad input, for every task

TASKS = [
    lambda seed: AddingProblem(16, 12, seed=seed),
    lambda seed: AddingProblem(16, 12, min_length=6, variant="hochreiter", seed=seed),
    lambda seed: CopyMemory(16, 5, seed=seed),
    lambda seed: TemporalXOR(4, 30, seed=seed),
    lambda seed: ElmanLetters(4, 30, seed=seed),
    lambda seed: FlipFlop(16, 30, pulse_prob=0.2, seed=seed),
    lambda seed: FutureContext(16, 30, seed=seed),
    lambda seed: MapSequences("logistic", 8, 10, seed=seed),
]


@pytest.mark.parametrize("make", TASKS)
def test_seeded_determinism_without_global_rng(make) -> None:  # type: ignore[no-untyped-def]
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    a, b, c = make(3), make(3), make(4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not (torch.equal(a.x, c.x) and torch.equal(a.y, c.y))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    gen = make(np.random.default_rng(3))  # a Generator is accepted too
    assert gen.x.shape == a.x.shape
    assert a.case in (1, 2, 3, 4) and a.params["seed"] == 3 and repr(a).startswith(type(a).__name__)


BAD = [
    (lambda: AddingProblem(0, 10), ValueError, "n: expected an int >= 1, got 0"),
    (lambda: AddingProblem(4, 1), ValueError, "length: expected an int >= 2, got 1"),
    (
        lambda: AddingProblem(4, 5, variant="hochreiter"),
        ValueError,
        "length: expected an int >= 6, got 5",
    ),
    (
        lambda: AddingProblem(4, 10, variant="sum"),
        ValueError,
        "variant: expected one of 'le', 'hochreiter', got 'sum'",
    ),
    (
        lambda: AddingProblem(4, 10, min_length=11),
        ValueError,
        "min_length: expected 2 <= min_length <= 10, got 11",
    ),
    (lambda: AddingProblem(4, 10.0), TypeError, "length: expected an int, got float 10.0"),
    (
        lambda: AddingProblem(4, 10, seed=-1),
        ValueError,
        "seed: expected a non-negative int, got -1",
    ),
    (lambda: AddingProblem(4, 10, seed="a"), TypeError, "seed: expected a non-negative int"),
    (lambda: CopyMemory(4, 0), ValueError, "length: expected an int >= 1, got 0"),
    (lambda: CopyMemory(4, 5, n_categories=1), ValueError, "n_categories: expected an int >= 2"),
    (lambda: CopyMemory(4, 5, one_hot=1), TypeError, "one_hot: expected a bool, got int"),
    (lambda: copy_memory_baseline_ce(0), ValueError, "length: expected an int >= 1, got 0"),
    (lambda: TemporalXOR(4, 0), ValueError, "length: expected an int >= 1, got 0"),
    (lambda: ElmanLetters(-1, 5), ValueError, "n: expected an int >= 1, got -1"),
    (
        lambda: FlipFlop(4, 10, pulse_prob=0.0),
        ValueError,
        "pulse_prob: expected 0.0 < pulse_prob <= 1.0, got 0.0",
    ),
    (
        lambda: FlipFlop(4, 10, pulse_prob=float("nan")),
        ValueError,
        "pulse_prob: expected a finite number, got nan",
    ),
    (lambda: FlipFlop(4, 10, n_bits=0), ValueError, "n_bits: expected an int >= 1, got 0"),
    (lambda: FutureContext(4, 5, max_delay=5), ValueError, "length: expected an int >= 6, got 5"),
    (
        lambda: FutureContext(4, 10, bank_prob=2),
        ValueError,
        "bank_prob: expected 0.0 < bank_prob <= 1.0, got 2.0",
    ),
    (lambda: adding_baseline_mse("x"), ValueError, "variant: expected one of"),
]


@pytest.mark.parametrize(("call", "kind", "message"), BAD)
def test_bad_input(call, kind, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(kind) as info:
        call()
    assert message in str(info.value)
