"""A future-context task for bidirectional RNNs: the lecture's "bank" example.

Shapes: N examples, T steps, A = V + 3 tokens (V filler words); inputs (N, T, A) one-hot or
(N, T) ids; targets (N, T) class ids in {0, 1, 2}.

"*Bank* is the side of a river." / "*Bank* provides various financial services." The sense of
the ambiguous word is fixed by words that come after it. Here a sequence is random filler words
(ids 0..V-1) in which the ambiguous token ``BANK`` (id V) appears now and then; 1 to
``max_delay`` steps after each one comes a cue, ``RIVER`` (id V + 1) or ``MONEY`` (id V + 2),
drawn with equal probability. The label at step t is 0 ("not an ambiguous word") except at a
``BANK``, where it is 1 (river sense) or 2 (money sense), the sense of the *next* cue: it depends
on inputs after t only. Lecture case 4 (time-varying input, target at every step), loss
cross-entropy.

Trivial baseline: the current-token predictor, "0 unless the token is BANK, then 1 or 2 with
probability 1/2". Senses are independent of everything before the word, so this is also the best
a causal (forward-only) model can do: its cross-entropy is (fraction of BANK steps) * ln 2,
while a bidirectional model can reach 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_float, check_int
from ._checks import make_rng, seed_value
from .base import SequenceTask

OTHER, RIVER_SENSE, MONEY_SENSE = 0, 1, 2


class FutureContext(SequenceTask):
    """The "bank" task (see the module docstring).

    Args:
        n: number of examples N.
        length: T steps (T > ``max_delay``).
        n_fillers: V filler words (default 5).
        max_delay: the cue follows its ``BANK`` after 1..``max_delay`` steps (default 5).
        bank_prob: probability that a free step starts a ``BANK`` (default 0.1).
        one_hot: inputs as one-hot floats (default) or ids.
        seed: int or ``numpy.random.Generator``.

    Attributes ``bank``, ``river``, ``money`` and ``n_tokens`` give the token ids.

    Items: ``{"x": (T, V + 3) float32 or (T,) int64, "y": (T,) int64}``.
    """

    case = 4
    loss = "cross_entropy"
    baseline = "current token only: 0, or 1/2-1/2 between the senses at BANK"

    def __init__(
        self,
        n: int,
        length: int,
        *,
        n_fillers: int = 5,
        max_delay: int = 5,
        bank_prob: float = 0.1,
        one_hot: bool = True,
        seed: Any = 0,
    ) -> None:
        n = check_int(n, "n", low=1)
        n_fillers = check_int(n_fillers, "n_fillers", low=1)
        max_delay = check_int(max_delay, "max_delay", low=1)
        length = check_int(length, "length", low=max_delay + 1)
        bank_prob = check_float(bank_prob, "bank_prob", low=0.0, high=1.0, low_open=True)
        if not isinstance(one_hot, bool):
            raise TypeError(f"one_hot: expected a bool, got {type(one_hot).__name__}")
        rng = make_rng(seed)
        self.bank, self.river, self.money = n_fillers, n_fillers + 1, n_fillers + 2
        self.n_tokens = n_fillers + 3

        tokens = rng.integers(0, n_fillers, size=(n, length))
        labels = np.zeros((n, length), dtype=np.int64)
        for row in range(n):
            t = 0
            while t + max_delay < length:
                if rng.random() < bank_prob:
                    sense = int(rng.integers(RIVER_SENSE, MONEY_SENSE + 1))
                    delay = int(rng.integers(1, max_delay + 1))
                    tokens[row, t] = self.bank
                    labels[row, t] = sense
                    tokens[row, t + delay] = self.river if sense == RIVER_SENSE else self.money
                    t += delay + 1
                else:
                    t += 1
        ids = torch.from_numpy(tokens)
        x = F.one_hot(ids, self.n_tokens).float() if one_hot else ids
        self.tokens = ids  # (N, T) ids, whatever the input encoding
        params = {
            "task": "future_context",
            "n": n,
            "length": length,
            "n_fillers": n_fillers,
            "max_delay": max_delay,
            "bank_prob": bank_prob,
            "one_hot": one_hot,
            "seed": seed_value(seed),
        }
        super().__init__(x, torch.from_numpy(labels), params)

    def baseline_prediction(self) -> Tensor:
        """Logits (N, T, 3): certain 0 off ``BANK``, log(1/2) for each sense at ``BANK``."""
        logits = torch.full(self.y.shape + (3,), -1e4)
        at_bank = self.tokens == self.bank  # (N, T)
        logits[..., OTHER] = torch.where(at_bank, -1e4, 0.0)
        half = torch.where(at_bank, math.log(0.5), -1e4)
        logits[..., RIVER_SENSE] = half
        logits[..., MONEY_SENSE] = half
        return logits
