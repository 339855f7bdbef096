"""Character-level text from any UTF-8 file: vocabulary, encoding, splits and TBPTT batches.

Shapes: L characters, B parallel streams, T steps, V vocabulary size.

* :func:`read_text` reads a UTF-8 file exactly (no newline translation) and refuses an empty one.
* :class:`CharVocab` maps characters to ids 0..V-1 (sorted by code point); ``decode(encode(s))
  == s`` for every string over the vocabulary.
* :class:`CharCorpus` encodes a text and splits it by position: the first ``1 - val_fraction``
  of the characters for training, the rest for validation (no shuffling: neighbouring
  characters are never split between the two).
* :func:`batchify` cuts a stream of ids into B parallel streams (B, L // B) and
  :class:`StreamBatches` walks them in chunks of T steps for truncated BPTT: chunk k+1 continues
  chunk k in every row, so the hidden state is carried across chunks (detached).
* :class:`CharSequences`: windows of T + 1 characters as a data set (x the first T, y the next
  character at each step). Lecture case 4 (time-varying input, target at every step).

Trivial baseline: the unigram model, predicting each character with its frequency (ignoring
the past); its cross-entropy is the entropy of the character distribution (plus the mismatch
between the frequencies used and those evaluated on).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_float, check_int
from .base import SequenceTask


def read_text(path: str | os.PathLike[str]) -> str:
    """The whole UTF-8 file as a string, exactly (``\\r\\n`` stays ``\\r\\n``).

    Raises:
        FileNotFoundError: no such file. ValueError: the file is empty or not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"path: expected a UTF-8 text file, got {str(path)!r} (no such file)"
        )
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"path: expected a non-empty text file, got {str(path)!r} (0 bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"path: expected UTF-8 text, got {str(path)!r} with an invalid byte at offset "
            f"{err.start}"
        ) from None


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


class CharVocab:
    """Characters <-> ids. Ids follow the code-point order of the characters.

    Args:
        chars: the characters (any iterable of single characters; duplicates are merged).

    Example:
        >>> vocab = CharVocab.from_text("hello")
        >>> vocab.decode(vocab.encode("hole"))
        'hole'
    """

    def __init__(self, chars: Iterable[str]) -> None:
        unique = sorted(set(chars))
        if not unique:
            raise ValueError("chars: expected at least one character, got none")
        bad = [c for c in unique if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"chars: expected single characters, got {bad[:5]!r}")
        self.chars: tuple[str, ...] = tuple(unique)
        self._points = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # sorted
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The vocabulary of every character in ``text`` (which must not be empty)."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text: expected a non-empty string, got ''")
        return cls(map(chr, np.unique(_code_points(text)).tolist()))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self.stoi

    def encode(self, text: str) -> Tensor:
        """(len(text),) int64 ids; ValueError names the characters outside the vocabulary."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        points = _code_points(text)
        ids = np.searchsorted(self._points, points)
        ok = (ids < len(self._points)) & (self._points[np.minimum(ids, len(self) - 1)] == points)
        if not ok.all():
            unknown = sorted({chr(p) for p in points[~ok].tolist()})
            raise ValueError(
                f"text: expected characters of the vocabulary ({len(self)} characters), "
                f"got unknown {unknown[:10]!r}"
            )
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The string of a 1-D sequence of ids."""
        arr = np.asarray(ids.detach().cpu() if isinstance(ids, Tensor) else ids, dtype=np.int64)
        if arr.ndim != 1:
            raise ValueError(f"ids: expected a 1-D sequence, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            raise ValueError(f"ids: expected 0 <= id < {len(self)}, got {arr.min()}..{arr.max()}")
        return self._points[arr].astype("<u4").tobytes().decode("utf-32-le")

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters)"


def split_by_position(ids: Tensor, val_fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """(L,) -> the first ``1 - val_fraction`` and the rest, both non-empty."""
    f = check_float(val_fraction, "val_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    cut = len(ids) - int(round(f * len(ids)))
    if cut < 1 or cut >= len(ids):
        raise ValueError(
            f"val_fraction: expected both parts of the {len(ids)} characters to be non-empty, "
            f"got {f}"
        )
    return ids[:cut], ids[cut:]


class CharCorpus:
    """A text encoded with its vocabulary and split by position (module docstring).

    Args:
        text: the whole text (non-empty).
        val_fraction: share of the characters, at the end, kept for validation (default 0.1).
        vocab: a vocabulary to use (default: every character of ``text``, so the validation
            part has no unknown character).

    Attributes: ``vocab``, ``train`` (L_train,) and ``val`` (L_val,) int64 ids, ``params``.
    """

    def __init__(
        self,
        text: str,
        *,
        val_fraction: float = 0.1,
        vocab: CharVocab | None = None,
        source: str | None = None,
    ) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text: expected a non-empty string, got ''")
        self.vocab = CharVocab.from_text(text) if vocab is None else vocab
        self.ids = self.vocab.encode(text)  # (L,)
        self.train, self.val = split_by_position(self.ids, val_fraction)
        self.params: dict[str, Any] = {
            "source": source,
            "characters": len(text),
            "vocab_size": len(self.vocab),
            "val_fraction": float(val_fraction),
            "split": "by position",
        }

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, val_fraction: float = 0.1) -> CharCorpus:
        """Read a UTF-8 file (:func:`read_text`) and build the corpus."""
        return cls(read_text(path), val_fraction=val_fraction, source=str(path))

    def unigram_log_probs(self, smoothing: float = 1.0) -> Tensor:
        """(V,) log frequencies of the training characters, add-``smoothing`` smoothed."""
        return unigram_log_probs(self.train, len(self.vocab), smoothing)


def unigram_log_probs(ids: Tensor, vocab_size: int, smoothing: float = 1.0) -> Tensor:
    """(V,) float32 log frequencies of ``ids`` with add-``smoothing`` (Laplace) smoothing."""
    vocab_size = check_int(vocab_size, "vocab_size", low=1)
    smoothing = check_float(smoothing, "smoothing", low=0.0)
    counts = torch.bincount(ids.reshape(-1), minlength=vocab_size).double() + smoothing
    return (counts / counts.sum()).log().float()


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """Cut a stream (L,) into ``batch_size`` parallel streams (B, L // B); the tail is dropped.

    Row b holds ids[b * (L // B) : (b + 1) * (L // B)], so each row reads on in order.
    """
    if not isinstance(ids, Tensor) or ids.dim() != 1:
        got = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"ids: expected a 1-D tensor (L,), got {got}")
    batch_size = check_int(batch_size, "batch_size", low=1, high=max(1, len(ids) // 2))
    per_row = len(ids) // batch_size
    return ids[: per_row * batch_size].reshape(batch_size, per_row)  # (B, L // B)


class StreamBatches:
    """Consecutive (x, y) chunks of parallel streams, for truncated BPTT.

    Args:
        ids: (L,) ids of one text (e.g. ``corpus.train``).
        batch_size: B parallel streams (see :func:`batchify`).
        seq_len: T steps per chunk (the TBPTT length k1); the last chunk may be shorter.
        one_hot: x as one-hot floats (B, T, V) (needs ``vocab_size``) instead of ids (B, T).
        vocab_size: V, for ``one_hot``.

    Iterating yields ``{"x": (B, T) int64 or (B, T, V) float32, "y": (B, T) int64}`` with
    ``y[:, t]`` the character after ``x[:, t]``; chunk k+1 starts where chunk k ended in each
    row, so a model carries its (detached) state from one chunk to the next.

    Example:
        >>> corpus = CharCorpus("to be or not to be " * 50)
        >>> batches = StreamBatches(corpus.train, batch_size=4, seq_len=16)
        >>> next(iter(batches))["x"].shape
        torch.Size([4, 16])
    """

    def __init__(
        self,
        ids: Tensor,
        batch_size: int,
        seq_len: int,
        *,
        one_hot: bool = False,
        vocab_size: int | None = None,
    ) -> None:
        self.streams = batchify(ids, batch_size)  # (B, L // B)
        width = self.streams.shape[1]
        if width < 2:
            raise ValueError(
                f"batch_size: expected at most {len(ids) // 2} streams for {len(ids)} ids "
                f"(each stream needs 2 ids), got {batch_size}"
            )
        self.seq_len = check_int(seq_len, "seq_len", low=1)
        if one_hot:
            if vocab_size is None:
                raise ValueError("vocab_size: expected an int with one_hot=True, got None")
            vocab_size = check_int(vocab_size, "vocab_size", low=int(ids.max()) + 1)
        self.one_hot = bool(one_hot)
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return -(-(self.streams.shape[1] - 1) // self.seq_len)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        width = self.streams.shape[1]
        for start in range(0, width - 1, self.seq_len):
            k = min(self.seq_len, width - 1 - start)
            x = self.streams[:, start : start + k]  # (B, k)
            y = self.streams[:, start + 1 : start + 1 + k]  # (B, k)
            if self.one_hot and self.vocab_size is not None:
                yield {"x": F.one_hot(x, self.vocab_size).float(), "y": y}
            else:
                yield {"x": x, "y": y}


class CharSequences(SequenceTask):
    """Windows of T + 1 characters as a data set: predict the next character at every step.

    Args:
        ids: (L,) ids.
        length: T steps per window, 1 <= T <= L - 1.
        vocab_size: V.
        stride: characters between window starts (default T: windows tile the text).
        one_hot: x as one-hot floats (T, V) instead of ids (T,).
        log_probs: (V,) log frequencies of the unigram baseline (default: those of ``ids``,
            add-one smoothed); pass the training set's for a validation set.

    Items: ``{"x": (T,) int64 or (T, V) float32, "y": (T,) int64}``.
    """

    case = 4
    loss = "cross_entropy"
    baseline = "unigram character frequencies (ignore the past)"

    def __init__(
        self,
        ids: Tensor,
        length: int,
        vocab_size: int,
        *,
        stride: int | None = None,
        one_hot: bool = False,
        log_probs: Tensor | None = None,
    ) -> None:
        if not isinstance(ids, Tensor) or ids.dim() != 1:
            got = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"ids: expected a 1-D tensor (L,), got {got}")
        if len(ids) < 2:
            raise ValueError(f"ids: expected at least 2 ids, got {len(ids)}")
        length = check_int(length, "length", low=1, high=len(ids) - 1)
        vocab_size = check_int(vocab_size, "vocab_size", low=int(ids.max()) + 1)
        stride = length if stride is None else check_int(stride, "stride", low=1)
        windows = ids.unfold(0, length + 1, stride)  # (N, T + 1)
        x: Tensor = windows[:, :-1]
        if one_hot:
            x = F.one_hot(x, vocab_size).float()  # (N, T, V)
        self.log_probs = unigram_log_probs(ids, vocab_size) if log_probs is None else log_probs
        if self.log_probs.shape != (vocab_size,):
            raise ValueError(
                f"log_probs: expected shape ({vocab_size},), got {tuple(self.log_probs.shape)}"
            )
        params = {
            "task": "char_sequences",
            "length": length,
            "vocab_size": vocab_size,
            "stride": stride,
            "one_hot": bool(one_hot),
            "characters": len(ids),
        }
        super().__init__(x.contiguous(), windows[:, 1:].contiguous(), params)

    def baseline_prediction(self) -> Tensor:
        """Logits (N, T, V): the unigram log frequencies at every step."""
        return self.log_probs.expand(*self.y.shape, -1)
