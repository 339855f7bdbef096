"""Elman (1990), "Finding structure in time": temporal XOR and the letter task.

Shapes: N streams, T steps; XOR inputs/targets (N, T, 1); letters (N, T, 6).

Both are next-element prediction on one continuous stream: the input at step t is element t, the
target element t + 1. Lecture case 4 (time-varying input, target at every step), loss MSE, as in
the paper.

**Temporal XOR.** The stream is a concatenation of triples (a, b, a XOR b) of random bits; only
every third bit is predictable. ``TemporalXOR.predictable`` marks the steps whose target is an XOR
bit. Trivial baseline: always predict 0.5; its MSE is exactly 0.25 (every target is 0 or 1). The
best possible predictor reaches (2/3) * 0.25 = 1/6 (the two random bits of a triple stay at
0.25, the XOR bit at 0).

**Letters.** Consonants b, d, g are drawn uniformly at random and each is replaced by a fixed
syllable: b -> "ba", d -> "dii", g -> "guuu". Each letter is a 6-bit articulatory feature vector
in the spirit of Elman's Table 2 (this is the table used here, :data:`LETTER_FEATURES`):

====== =========== ======= =========== ==== ==== ======
letter consonantal vocalic interrupted high back voiced
====== =========== ======= =========== ==== ==== ======
b      1           0       1           0    0    1
d      1           0       1           1    0    1
g      1           0       1           0    1    1
a      0           1       0           0    1    1
i      0           1       0           1    0    1
u      0           1       0           1    1    1
====== =========== ======= =========== ==== ==== ======

Consonants are unpredictable, the vowels after a consonant are (their identity and number).
Trivial baseline: always predict the stream's mean feature vector. A syllable has 3 letters on
average, so the letter frequencies are b, d, g, a: 1/9 each, i: 2/9, u: 3/9, and the baseline's
MSE in expectation is the mean over features of p(1 - p): (4 * 2/9 + 20/81 + 0)/6 = 46/243.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int
from ._checks import make_rng, seed_value
from .base import SequenceTask

FEATURE_NAMES = ("consonantal", "vocalic", "interrupted", "high", "back", "voiced")
LETTER_FEATURES: dict[str, tuple[int, int, int, int, int, int]] = {
    "b": (1, 0, 1, 0, 0, 1),
    "d": (1, 0, 1, 1, 0, 1),
    "g": (1, 0, 1, 0, 1, 1),
    "a": (0, 1, 0, 0, 1, 1),
    "i": (0, 1, 0, 1, 0, 1),
    "u": (0, 1, 0, 1, 1, 1),
}
SYLLABLES = {"b": "ba", "d": "dii", "g": "guuu"}
LETTERS = tuple(LETTER_FEATURES)
LETTER_BASELINE_MSE = 46.0 / 243.0
XOR_BASELINE_MSE = 0.25
XOR_OPTIMAL_MSE = 1.0 / 6.0


def xor_stream(n_bits: int, *, seed: Any = 0) -> np.ndarray:
    """A stream of ``n_bits`` bits made of triples (a, b, a XOR b), cut to length; (n_bits,)."""
    n_bits = check_int(n_bits, "n_bits", low=1)
    rng = make_rng(seed)
    triples = -(-n_bits // 3)
    ab = rng.integers(0, 2, size=(triples, 2))
    stream = np.concatenate([ab, ab[:, :1] ^ ab[:, 1:]], axis=1).reshape(-1)
    return stream[:n_bits].astype(np.int64)


def letter_stream(n_letters: int, *, seed: Any = 0) -> str:
    """A string of ``n_letters`` letters: random consonants, each expanded to its syllable."""
    n_letters = check_int(n_letters, "n_letters", low=1)
    rng = make_rng(seed)
    parts: list[str] = []
    size = 0
    while size < n_letters:
        # 3 letters per syllable on average: draw a few more than needed, in chunks
        for c in rng.choice(["b", "d", "g"], size=n_letters // 3 + 4):
            parts.append(SYLLABLES[str(c)])
            size += len(parts[-1])
    return "".join(parts)[:n_letters]


def letters_to_features(letters: str) -> Tensor:
    """The feature vectors of a string of letters b, d, g, a, i, u; (len(letters), 6) float32."""
    bad = sorted(set(letters) - set(LETTERS))
    if bad:
        raise ValueError(f"letters: expected only the letters {''.join(LETTERS)}, got {bad}")
    table = torch.tensor([LETTER_FEATURES[c] for c in LETTERS], dtype=torch.float32)
    index = torch.tensor([LETTERS.index(c) for c in letters], dtype=torch.long)
    return table[index]


class TemporalXOR(SequenceTask):
    """Elman's temporal XOR as next-bit prediction (see the module docstring).

    Args:
        n: number of independent streams N.
        length: T steps per stream (each stream has T + 1 bits; it starts at a triple).
        seed: int or ``numpy.random.Generator``.

    Items: ``{"x": (T, 1), "y": (T, 1)}`` float32 bits, ``y[t] = x[t + 1]``.
    ``predictable``: (T,) bool, True where the target is the XOR of the two previous inputs.
    """

    case = 4
    loss = "mse"
    baseline = "constant 0.5"

    def __init__(self, n: int, length: int, *, seed: Any = 0) -> None:
        n = check_int(n, "n", low=1)
        length = check_int(length, "length", low=1)
        rng = make_rng(seed)
        bits = np.stack([xor_stream(length + 1, seed=rng) for _ in range(n)])  # (N, T + 1)
        stream = torch.from_numpy(bits).float().unsqueeze(-1)  # (N, T + 1, 1)
        params = {"task": "temporal_xor", "n": n, "length": length, "seed": seed_value(seed)}
        super().__init__(stream[:, :-1], stream[:, 1:], params)
        self.predictable = (torch.arange(length) + 1) % 3 == 2  # (T,)

    def baseline_prediction(self) -> Tensor:
        return torch.full_like(self.y, 0.5)

    @property
    def expected_baseline_loss(self) -> float:
        return XOR_BASELINE_MSE


class ElmanLetters(SequenceTask):
    """Elman's letter task as next-letter prediction on feature vectors (module docstring).

    Args:
        n: number of independent streams N.
        length: T steps per stream (each stream has T + 1 letters; it starts at a consonant).
        seed: int or ``numpy.random.Generator``.

    Items: ``{"x": (T, 6), "y": (T, 6)}`` float32 feature vectors, ``y[t] = x[t + 1]``.
    ``letters``: the N letter strings (T + 1 letters each).
    """

    case = 4
    loss = "mse"
    baseline = "constant mean feature vector"

    def __init__(self, n: int, length: int, *, seed: Any = 0) -> None:
        n = check_int(n, "n", low=1)
        length = check_int(length, "length", low=1)
        rng = make_rng(seed)
        self.letters = [letter_stream(length + 1, seed=rng) for _ in range(n)]
        feats = torch.stack([letters_to_features(s) for s in self.letters])  # (N, T + 1, 6)
        params = {"task": "elman_letters", "n": n, "length": length, "seed": seed_value(seed)}
        super().__init__(feats[:, :-1], feats[:, 1:], params)

    def baseline_prediction(self) -> Tensor:
        """The mean target feature vector of the set, repeated: (N, T, 6)."""
        return self.y.mean(dim=(0, 1), keepdim=True).expand_as(self.y)

    @property
    def expected_baseline_loss(self) -> float:
        return LETTER_BASELINE_MSE
