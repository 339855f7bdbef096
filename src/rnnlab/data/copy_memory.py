"""The copy-memory task (Arjovsky, Shah & Bengio 2016, "Unitary evolution recurrent networks").

Shapes: N examples, L = T + 2K steps (K = ``n_symbols``, 10 by default), A = C + 2 tokens.

Tokens: 0 is the blank, 1..C the categories (C = ``n_categories``, 8 by default), C + 1 the
delimiter. An input sequence is K symbols drawn uniformly from the categories, T - 1 blanks, the
delimiter, then K blanks (length T + 2K). The target is T + K blanks followed by the K symbols:
the network must reproduce them after the delimiter. Lecture case 4 (time-varying input, target
at every step), loss cross-entropy over all T + 2K steps.

Trivial baseline (memoryless): predict the blank with certainty for the first T + K steps and a
uniform guess over the C categories for the last K; its cross-entropy is K ln C / (T + 2K)
(10 ln 8 / (T + 20) with the defaults).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int
from ._checks import make_rng, seed_value
from .base import SequenceTask

_IMPOSSIBLE = -1e4  # a logit whose probability is 0 in float32 (exp underflows)


def copy_memory_baseline_ce(length: int, n_symbols: int = 10, n_categories: int = 8) -> float:
    """Cross-entropy of the memoryless baseline: ``n_symbols * ln(n_categories) / (T + 2 K)``."""
    length = check_int(length, "length", low=1)
    n_symbols = check_int(n_symbols, "n_symbols", low=1)
    n_categories = check_int(n_categories, "n_categories", low=2)
    return n_symbols * math.log(n_categories) / (length + 2 * n_symbols)


class CopyMemory(SequenceTask):
    """The copy-memory task as a data set (see the module docstring).

    Args:
        n: number of examples N.
        length: T, the delay between the last symbol and the delimiter plus one (T >= 1); the
            sequences have T + 2K steps.
        n_symbols: K, symbols to remember (default 10).
        n_categories: C, the alphabet of symbols (default 8).
        one_hot: inputs as one-hot floats (L, C + 2) (default) or token ids (L,) int64.
        seed: int or ``numpy.random.Generator``.

    Items: ``{"x": (L, C + 2) float32 or (L,) int64, "y": (L,) int64}``; ``blank``,
    ``delimiter`` and ``n_tokens`` give the token ids.

    Example:
        >>> task = CopyMemory(100, 50, seed=0)
        >>> task.x.shape, task.y.shape
        (torch.Size([100, 70, 10]), torch.Size([100, 70]))
    """

    case = 4
    loss = "cross_entropy"
    baseline = "memoryless: blank for the first T + K steps, uniform over categories after"
    blank = 0

    def __init__(
        self,
        n: int,
        length: int,
        *,
        n_symbols: int = 10,
        n_categories: int = 8,
        one_hot: bool = True,
        seed: Any = 0,
    ) -> None:
        n = check_int(n, "n", low=1)
        length = check_int(length, "length", low=1)
        n_symbols = check_int(n_symbols, "n_symbols", low=1)
        n_categories = check_int(n_categories, "n_categories", low=2)
        if not isinstance(one_hot, bool):
            raise TypeError(f"one_hot: expected a bool, got {type(one_hot).__name__}")
        rng = make_rng(seed)
        k, total = n_symbols, length + 2 * n_symbols
        self.delimiter = n_categories + 1
        self.n_tokens = n_categories + 2
        self.n_symbols, self.n_categories, self.length = k, n_categories, length

        symbols = rng.integers(1, n_categories + 1, size=(n, k))  # (N, K)
        tokens = np.zeros((n, total), dtype=np.int64)
        tokens[:, :k] = symbols
        tokens[:, length + k - 1] = self.delimiter
        target = np.zeros((n, total), dtype=np.int64)
        target[:, length + k :] = symbols

        ids = torch.from_numpy(tokens)
        x = F.one_hot(ids, self.n_tokens).float() if one_hot else ids  # (N, L, A) or (N, L)
        params = {
            "task": "copy_memory",
            "n": n,
            "length": length,
            "n_symbols": k,
            "n_categories": n_categories,
            "one_hot": one_hot,
            "seed": seed_value(seed),
        }
        super().__init__(x, torch.from_numpy(target), params)

    def baseline_prediction(self) -> Tensor:
        """Logits (N, L, C + 2): certain blank for T + K steps, uniform categories after."""
        n, total = self.y.shape
        logits = torch.full((n, total, self.n_tokens), _IMPOSSIBLE)
        logits[:, :, self.blank] = 0.0
        tail = slice(self.length + self.n_symbols, total)
        logits[:, tail, :] = _IMPOSSIBLE
        logits[:, tail, 1 : self.n_categories + 1] = 0.0
        return logits

    @property
    def expected_baseline_loss(self) -> float:
        return copy_memory_baseline_ce(self.length, self.n_symbols, self.n_categories)
