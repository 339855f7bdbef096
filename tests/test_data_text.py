"""Character-level text: round trips, positional split, parallel streams for truncated BPTT,
the unigram baseline, and bad input."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data import (
    CharCorpus,
    CharSequences,
    CharVocab,
    StreamBatches,
    batchify,
    read_text,
    split_by_position,
    unigram_log_probs,
)

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "shakespeare"
TRAGEDIES = SHAKESPEARE / "tragedies.txt"
needs_text = pytest.mark.skipif(
    not TRAGEDIES.is_file(),
    reason=f"Shakespeare text not found at {TRAGEDIES} (shared/ beside the repository)",
)


@needs_text
def test_shakespeare_round_trip_and_split() -> None:
    text = TRAGEDIES.read_bytes().decode("utf-8")
    corpus = CharCorpus.from_file(TRAGEDIES, val_fraction=0.1)
    vocab = corpus.vocab
    assert vocab.chars == tuple(sorted(set(text)))
    assert vocab.decode(corpus.ids) == text  # decode(encode(s)) == s on the whole file
    n = len(text)
    assert len(corpus.train) + len(corpus.val) == n
    cut = len(corpus.train)
    assert cut == n - round(0.1 * n)
    assert vocab.decode(corpus.train) == text[:cut] and vocab.decode(corpus.val) == text[cut:]
    assert corpus.params["vocab_size"] == len(vocab) and corpus.params["source"] == str(TRAGEDIES)
    ids = corpus.ids[:50].tolist()
    assert ids == [vocab.stoi[c] for c in text[:50]]  # the plain dictionary agrees


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_round_trip_any_unicode(text: str) -> None:
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert ids.dtype == torch.int64 and (ids < len(vocab)).all()
    assert list(vocab.chars) == sorted(set(text))


def test_vocab_errors() -> None:
    vocab = CharVocab("abc")
    assert vocab.decode([2, 0, 1]) == "cab" and "a" in vocab and len(vocab) == 3
    unknown = r"text: expected characters of the vocabulary .* \['d', 'é'\]"
    with pytest.raises(ValueError, match=unknown):
        vocab.encode("abdé")
    with pytest.raises(ValueError, match=r"ids: expected 0 <= id < 3, got 0..3"):
        vocab.decode([0, 3])
    with pytest.raises(ValueError, match="ids: expected a 1-D sequence"):
        vocab.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="text: expected a str, got bytes"):
        vocab.encode(b"ab")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text: expected a non-empty string"):
        CharVocab.from_text("")
    with pytest.raises(ValueError, match="chars: expected single characters"):
        CharVocab(["ab"])


def test_read_text(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        read_text(empty)
    assert "path: expected a non-empty text file" in str(info.value)
    assert str(empty) in str(info.value)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="expected UTF-8 text, .* invalid byte at offset 3"):
        read_text(bad)
    with pytest.raises(FileNotFoundError, match="path: expected a UTF-8 text file"):
        read_text(tmp_path / "none.txt")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes("a\r\nb\n€".encode())
    assert read_text(crlf) == "a\r\nb\n€"  # exact: no newline translation
    with pytest.raises(ValueError, match="path: expected a non-empty"):
        CharCorpus.from_file(empty)


def test_split_batchify_and_streams() -> None:
    ids = torch.arange(103)
    train, val = split_by_position(ids, 0.2)
    assert torch.equal(torch.cat([train, val]), ids) and len(val) == round(0.2 * 103)
    streams = batchify(ids, 4)
    assert streams.shape == (4, 25)
    for b in range(4):
        assert torch.equal(streams[b], ids[b * 25 : (b + 1) * 25])
    batches = StreamBatches(ids, 4, 7)
    chunks = list(batches)
    assert len(chunks) == len(batches) == math.ceil(24 / 7)
    assert [c["x"].shape[1] for c in chunks] == [7, 7, 7, 3]
    # consecutive chunks continue every stream: together they are the streams, shifted by one
    assert torch.equal(torch.cat([c["x"] for c in chunks], 1), streams[:, :-1])
    assert torch.equal(torch.cat([c["y"] for c in chunks], 1), streams[:, 1:])
    hot = next(iter(StreamBatches(ids, 4, 7, one_hot=True, vocab_size=103)))
    assert hot["x"].shape == (4, 7, 103) and torch.equal(hot["x"].argmax(-1), chunks[0]["x"])


def test_char_sequences_and_unigram_baseline() -> None:
    text = "the quick brown fox jumps over the lazy dog; " * 30
    corpus = CharCorpus(text, val_fraction=0.25)
    data = CharSequences(corpus.train, 20, len(corpus.vocab))
    assert data.case == 4 and data.x.shape == ((len(corpus.train) - 21) // 20 + 1, 20)
    assert torch.equal(data.y[:, :-1], data.x[:, 1:])  # y(t) is the next character
    assert torch.equal(data.x[1, 0], data.y[0, -1])  # windows tile the text (stride 20)
    # the unigram predictor written here: add-one smoothed frequencies of the training ids
    counts = Counter(corpus.train.tolist())
    total = len(corpus.train) + len(corpus.vocab)
    logp = {i: math.log((counts.get(i, 0) + 1) / total) for i in range(len(corpus.vocab))}
    ce = -sum(logp[int(i)] for i in data.y.reshape(-1)) / data.y.numel()
    assert data.baseline_loss() == pytest.approx(ce, rel=1e-5)
    # without smoothing: the targets scored by the stream's own character frequencies
    ids = corpus.train
    exact = CharSequences(
        ids,
        20,
        len(corpus.vocab),
        log_probs=unigram_log_probs(ids, len(corpus.vocab), smoothing=0.0),
    )
    freq = Counter(ids.tolist())
    targets = Counter(exact.y.reshape(-1).tolist())
    n = sum(freq.values())
    cross = -sum(c * math.log(freq[i] / n) for i, c in targets.items()) / exact.y.numel()
    assert exact.baseline_loss() == pytest.approx(cross, rel=1e-5)
    val = CharSequences(
        corpus.val, 10, len(corpus.vocab), one_hot=True, log_probs=corpus.unigram_log_probs()
    )
    assert val.x.shape[1:] == (10, len(corpus.vocab)) and val.baseline_loss() > 0


def test_text_bad_input() -> None:
    ids = torch.arange(10)
    with pytest.raises(ValueError, match="batch_size: expected 1 <= batch_size <= 5, got 6"):
        batchify(ids, 6)
    with pytest.raises(ValueError, match=r"ids: expected a 1-D tensor \(L,\), got \(2, 5\)"):
        batchify(ids.reshape(2, 5), 1)
    with pytest.raises(ValueError, match="seq_len: expected an int >= 1, got 0"):
        StreamBatches(ids, 2, 0)
    with pytest.raises(ValueError, match="vocab_size: expected an int with one_hot=True"):
        StreamBatches(ids, 2, 3, one_hot=True)
    with pytest.raises(ValueError, match="length: expected 1 <= length <= 9, got 10"):
        CharSequences(ids, 10, 10)
    with pytest.raises(ValueError, match="vocab_size: expected an int >= 10, got 5"):
        CharSequences(ids, 3, 5)
    with pytest.raises(ValueError, match="val_fraction: expected 0.0 < val_fraction < 1.0"):
        split_by_position(ids, 0.0)
    with pytest.raises(ValueError, match="val_fraction: expected both parts"):
        split_by_position(ids[:1], 0.5)
    with pytest.raises(ValueError, match=r"log_probs: expected shape \(10,\)"):
        CharSequences(ids, 3, 10, log_probs=torch.zeros(4))
