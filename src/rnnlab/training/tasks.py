"""The tasks ``rnnlab train`` knows, as tensors ready for training.

Shapes: N sequences, T time, I input features, O outputs (C classes), V vocabulary.

Each task wraps a data set of :mod:`rnnlab.data` (imported only when the task is built) and
states its lecture case, its loss and its sizes. Token inputs (text) are kept as ids and turned
into one-hot vectors per batch, so a large text costs no (N, T, V) tensor.

Every task takes ``length`` (T), ``n_train`` and ``n_val`` (for the data sets of fixed size:
the first n of each part) and ``seed``; its own options (``task.options``) are listed in
:data:`TASKS` with their defaults.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_int


@dataclass
class Split:
    """One part of a task: inputs, targets and (optional) lengths.

    ``x`` is (N, T, I) float, (N, T) int64 token ids (one-hot per batch), or (N, I) for a static
    input (cases 1 and 2); ``y`` is (N, T, ...) for targets at every step, (N, ...) otherwise.
    """

    x: Tensor
    y: Tensor
    lengths: Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class TaskData:
    """A built task (see the module docstring)."""

    name: str
    train: Split
    val: Split
    case: int | str
    loss: str
    input_size: int
    output_size: int
    tokens: bool = False  # targets are class indices (logits out)
    one_hot: int | None = None  # inputs are ids over this many tokens
    next_step: bool = False  # x(t+1) is the reference y(t): autoregressive feedback possible
    vocab: Any = None  # a CharVocab for text
    stream: Tensor | None = None  # (L,) training ids of a text, for streamed batches
    baseline: float | None = None  # the trivial predictor's validation loss
    params: dict[str, Any] = field(default_factory=dict)

    def inputs(self, x: Tensor) -> Tensor:
        """Batch inputs as floats: one-hot token ids, leave features as they are."""
        if self.one_hot is not None and not x.is_floating_point():
            return F.one_hot(x, self.one_hot).float()
        return x

    def batch(self, split: str, index: Tensor) -> dict[str, Tensor | None]:
        """``{"x", "y", "lengths"}`` of the examples ``index`` of ``"train"`` or ``"val"``."""
        part = self.train if split == "train" else self.val
        lengths = None if part.lengths is None else part.lengths[index]
        x, y = part.x[index], part.y[index]
        if lengths is not None:
            # trim the time axis to the longest sequence of the batch
            T = int(lengths.max())
            timed_x = x.dim() == 3 or self.one_hot is not None
            x = x[:, :T] if timed_x and x.shape[1] > T else x
            if y.dim() >= 2 and self.case in (1, 4, "seq2seq") and y.shape[1] > T:
                y = y[:, :T]
        return {"x": self.inputs(x), "y": y, "lengths": lengths}


@dataclass(frozen=True)
class TaskSpec:
    description: str
    options: dict[str, Any]
    build: Callable[..., TaskData]
    needs: str = ""  # where its data come from, for --help


def _take(t: Tensor | None, n: int | None) -> Tensor | None:
    return t if t is None or n is None else t[:n]


def _split(ds: Any, n: int | None = None) -> Split:
    lengths = getattr(ds, "lengths", None)
    return Split(ds.x[:n], ds.y[:n], _take(lengths, n) if lengths is not None else None)


def _baseline(ds: Any) -> float | None:
    try:
        return float(ds.baseline_loss())
    except Exception:  # a baseline is a courtesy, never a reason to stop
        return None


def _synthetic(
    cls_name: str,
    case: int,
    loss: str,
    next_step: bool = False,
    classes: Callable[[Any], int] | None = None,
) -> Callable[..., TaskData]:
    def build(
        name: str, *, length: int, n_train: int, n_val: int, seed: int, **opts: Any
    ) -> TaskData:
        from .. import data

        cls = getattr(data, cls_name)
        train = cls(n_train, length, seed=seed, **opts)
        val = cls(n_val, length, seed=seed + 1_000_003, **opts)
        tokens = classes is not None
        I = int(train.x.shape[-1])
        O = classes(train) if classes is not None else int(train.y.shape[-1])
        return TaskData(
            name,
            _split(train),
            _split(val),
            case,
            loss,
            I,
            O,
            tokens=tokens,
            next_step=next_step,
            baseline=_baseline(val),
            params=dict(train.params),
        )

    return build


def _map(
    name: str, *, length: int, n_train: int, n_val: int, seed: int, map: str, mode: str
) -> TaskData:
    from ..data import MapSequences

    train = MapSequences(map, n_train, length, mode=mode, seed=seed)
    val = MapSequences(map, n_val, length, mode=mode, seed=seed + 1_000_003)
    D = int(train.x.shape[-1])
    case = 1 if mode == "initial" else 4
    return TaskData(
        name,
        _split(train),
        _split(val),
        case,
        "mse",
        D,
        D,
        next_step=mode == "one_step",
        baseline=_baseline(val),
        params=dict(train.params),
    )


def _series(
    name: str,
    *,
    length: int,
    n_train: int,
    n_val: int,
    seed: int,
    series: str,
    series_length: int,
    horizon: int,
    target: str,
    val_fraction: float,
    stride: int,
) -> TaskData:
    from ..data import forecasting_split, make_series

    s = make_series(series, series_length)
    train, val = forecasting_split(
        s, length, horizon, val_fraction=val_fraction, target=target, stride=stride
    )
    tr, va = _split(train, n_train), _split(val, n_val)
    D = s.dim
    O = D
    if target == "last":  # case 3: the whole horizon is read out at the last step
        tr.y, va.y = tr.y.reshape(len(tr), -1), va.y.reshape(len(va), -1)
        O = horizon * D
    return TaskData(
        name,
        tr,
        va,
        3 if target == "last" else 4,
        "mse",
        D,
        O,
        next_step=target == "every" and horizon == 1,
        baseline=_baseline(val),
        params=dict(train.params),
    )


def _text(
    name: str,
    *,
    length: int,
    n_train: int,
    n_val: int,
    seed: int,
    path: str | None,
    val_fraction: float,
    stride: int | None,
) -> TaskData:
    from ..data import CharCorpus, CharSequences

    if path is None:
        path = os.environ.get("RNNLAB_TEXT")
    if path is None:
        raise ValueError(
            "task.options.path: expected a UTF-8 text file (or the environment variable "
            "RNNLAB_TEXT), got none"
        )
    corpus = CharCorpus.from_file(path, val_fraction=val_fraction)
    V = len(corpus.vocab)
    train = CharSequences(corpus.train, length, V, stride=stride)
    val = CharSequences(corpus.val, length, V, stride=stride, log_probs=corpus.unigram_log_probs())
    va = _split(val, n_val)
    base = None
    try:
        base = float(
            F.cross_entropy(val.log_probs.expand(*va.y.shape, -1).reshape(-1, V), va.y.reshape(-1))
        )
    except Exception:
        pass
    return TaskData(
        name,
        _split(train, n_train),
        va,
        4,
        "cross_entropy",
        V,
        V,
        tokens=True,
        one_hot=V,
        next_step=True,
        vocab=corpus.vocab,
        stream=corpus.train,
        baseline=base,
        params={**corpus.params, "length": length},
    )


def _images(
    name: str, *, length: int, n_train: int, n_val: int, seed: int, view: str, **opts: Any
) -> TaskData:
    from ..data import ImageClassification

    train: ImageClassification
    val: ImageClassification
    used: dict[str, Any] = {}
    if name == "digits":
        from ..data import Digits

        train = Digits("train", view=view, seed=seed, **opts)
        val = Digits("test", view=view, seed=seed, **opts)
    else:
        from ..data import FashionMNIST
        from ..data.images import find_fashion_mnist

        # the folder actually used (an explicit root must hold the data; see find_fashion_mnist)
        root = find_fashion_mnist(opts.get("root"), train=True)[0].parent
        used["root"] = str(root)
        train = FashionMNIST(root, train=True, view=view)
        val = FashionMNIST(root, train=False, view=view)
    parts = []
    for ds, n in ((train, n_train), (val, n_val)):
        keep = min(n, len(ds))
        sub = ImageClassification(
            ds.images[:keep], ds.labels[:keep], view=view, scale=ds.scale, n_classes=10
        )
        x, y = sub.tensors()
        if view == "image":
            x = x.reshape(x.shape[0], -1)  # (N, H W): case 2 presents it at every step
        parts.append(Split(x, y))
    I = int(parts[0].x.shape[-1])
    return TaskData(
        name,
        parts[0],
        parts[1],
        2 if view == "image" else 3,
        "cross_entropy",
        I,
        10,
        tokens=True,
        params={"dataset": name, "view": view, **used},
    )


class ReverseTokens:
    """An encoder-decoder task: read a random token sequence, emit it reversed.

    x (N, T, V) one-hot source; y (N, T) the reversed ids (within each length); lengths when
    ``min_length`` is given. Chance level: cross-entropy ln V.
    """

    def __init__(
        self, n: int, length: int, *, vocab: int = 8, min_length: int | None = None, seed: int = 0
    ) -> None:
        for arg, v, low in (("n", n, 1), ("length", length, 1), ("vocab", vocab, 2)):
            check_int(v, arg, low=low, what=f"an int >= {low}")
        if min_length is not None:
            what = f"an int in [1, {length}]"
            check_int(min_length, "min_length", low=1, high=length, what=what)
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab, (n, length), generator=g)
        lo = length if min_length is None else min_length
        lengths = torch.randint(lo, length + 1, (n,), generator=g)
        t = torch.arange(length)
        idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
        y = ids.gather(1, idx).masked_fill(t >= lengths[:, None], -100)
        self.x = F.one_hot(ids, vocab).float().masked_fill((t >= lengths[:, None])[..., None], 0)
        self.y = y
        self.lengths = None if min_length is None else lengths
        self.params = {
            "task": "reverse",
            "n": n,
            "length": length,
            "vocab": vocab,
            "min_length": min_length,
            "seed": seed,
        }


def _reverse(
    name: str,
    *,
    length: int,
    n_train: int,
    n_val: int,
    seed: int,
    vocab: int,
    min_length: int | None,
) -> TaskData:
    train = ReverseTokens(n_train, length, vocab=vocab, min_length=min_length, seed=seed)
    val = ReverseTokens(n_val, length, vocab=vocab, min_length=min_length, seed=seed + 1_000_003)
    import math

    return TaskData(
        name,
        _split(train),
        _split(val),
        "seq2seq",
        "cross_entropy",
        vocab,
        vocab,
        tokens=True,
        baseline=math.log(vocab),
        params=train.params,
    )


TASKS: dict[str, TaskSpec] = {
    "adding": TaskSpec(
        "adding problem, case 3 (Le et al. 2015)",
        {"variant": "le", "min_length": None},
        _synthetic("AddingProblem", 3, "mse"),
    ),
    "copy_memory": TaskSpec(
        "copy memory, case 4, cross-entropy (Arjovsky et al. 2016)",
        {"n_symbols": 10, "n_categories": 8},
        _synthetic("CopyMemory", 4, "cross_entropy", classes=lambda d: int(d.n_tokens)),
    ),
    "temporal_xor": TaskSpec(
        "Elman's temporal XOR, next-bit prediction, case 4",
        {},
        _synthetic("TemporalXOR", 4, "mse", True),
    ),
    "elman_letters": TaskSpec(
        "Elman's letters, next-letter features, case 4",
        {},
        _synthetic("ElmanLetters", 4, "mse", True),
    ),
    "flipflop": TaskSpec(
        "K-bit flip-flop, case 4 (Sussillo & Barak 2013)",
        {"n_bits": 3, "pulse_prob": 0.05},
        _synthetic("FlipFlop", 4, "mse"),
    ),
    "bank": TaskSpec(
        "the lecture's 'bank': labels from future words, case 4",
        {"n_fillers": 5, "max_delay": 5, "bank_prob": 0.1},
        _synthetic("FutureContext", 4, "cross_entropy", classes=lambda d: 3),
    ),
    "map": TaskSpec(
        "orbits of a map (stable_linear, unstable_linear, logistic, henon); "
        "mode initial = case 1, one_step = case 4",
        {"map": "logistic", "mode": "one_step"},
        _map,
    ),
    "series": TaskSpec(
        "windows of a series (sine, damped_oscillator, logistic, henon, lorenz, "
        "mackey_glass); target every = case 4, last = case 3",
        {
            "series": "sine",
            "series_length": 2000,
            "horizon": 1,
            "target": "every",
            "val_fraction": 0.2,
            "stride": 1,
        },
        _series,
    ),
    "text": TaskSpec(
        "character-level text from a UTF-8 file, next character, case 4",
        {"path": None, "val_fraction": 0.1, "stride": None},
        _text,
        needs="a text file: task.options.path or RNNLAB_TEXT",
    ),
    "digits": TaskSpec(
        "scikit-learn's 8x8 digits; view image = case 2, rows/pixels/permuted = case 3",
        {"view": "rows", "test_fraction": 0.2},
        _images,
        needs="scikit-learn",
    ),
    "fashion_mnist": TaskSpec(
        "Fashion-MNIST; view image = case 2, rows/pixels/permuted = case 3",
        {"view": "rows", "root": None},
        _images,
        needs="the IDX files (root, RNNLAB_DATA or Debian's package)",
    ),
    "reverse": TaskSpec(
        "reverse a token sequence, encoder-decoder (seq2seq)",
        {"vocab": 8, "min_length": None},
        _reverse,
    ),
}


def build_task(
    name: str,
    *,
    length: int,
    n_train: int,
    n_val: int,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> TaskData:
    """Build a task of :data:`TASKS`; errors name the option, the expected and the given value."""
    check_choice(name, "task.name", sorted(TASKS))
    spec = TASKS[name]
    options = dict(options or {})
    for key in options:
        if key not in spec.options:
            raise ValueError(
                f"task.options.{key}: the task {name!r} has no such option; expected one of "
                f"{sorted(spec.options) or '(none)'}"
            )
    kw = {**spec.options, **options}
    try:
        return spec.build(name, length=length, n_train=n_train, n_val=n_val, seed=seed, **kw)
    except (FileNotFoundError, ImportError):
        raise
    except (TypeError, ValueError) as err:
        msg = str(err)
        raise ValueError(msg if msg.startswith("task") else f"task ({name}): {msg}") from None
