"""Conventions shared by every data set of :mod:`rnnlab.data`.

Shapes: N examples, B batch, T time, F features per step, C classes, D state dimension.

* **Batch-first.** Sequence inputs are (N, T, F) when stored and (B, T, F) when batched.
* **Items are dicts.** ``dataset[i]`` returns ``{"x": Tensor, "y": Tensor}``; variable-length
  sets add ``"length"`` (a 0-d int64 tensor) and return ``x`` (and a time-indexed ``y``) cut to
  that length. torch's default collate batches fixed-length items; :func:`pad_collate` batches
  variable-length ones and returns ``"lengths"`` (B,).
* **The lecture's unfolding case** of each task is its ``case`` attribute:
  1: input at the first step only, target at every step; 2: one fixed input at every step, target
  at the last step; 3: time-varying input, target at the last step; 4: time-varying input, target
  at every step. Time-indexed targets (cases 1 and 4) have a time axis; cases 2 and 3 do not.
* **A trivial baseline** for every task: ``baseline_prediction()`` is the trivial predictor's
  output for the whole set, ``baseline_loss()`` its loss on the set, and
  ``expected_baseline_loss`` its loss in expectation where a closed form exists. A model is read
  against it: a loss near the baseline means nothing was learnt.
* **Determinism.** Every generator takes ``seed`` (an int or a ``numpy.random.Generator``) and
  never touches a global RNG; the generating parameters are kept in ``params``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_choice
from .._sequences import length_mask

LOSSES = ("mse", "cross_entropy")
IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


def sequence_loss(
    prediction: Tensor, target: Tensor, kind: str, lengths: Tensor | None = None
) -> Tensor:
    """Mean loss over every valid target element (steps beyond ``lengths`` are ignored).

    Args:
        prediction: for ``"mse"`` the same shape as ``target``; for ``"cross_entropy"`` logits
            with one more trailing axis than ``target``, (..., C).
        target: (N, T, ...) time-indexed or (N, ...) otherwise; class indices (int64) for
            cross-entropy, where ``-100`` marks an element to ignore.
        kind: ``"mse"`` or ``"cross_entropy"``.
        lengths: (N,) valid steps of each time-indexed target, or None.

    Returns:
        A 0-d tensor: the mean over valid elements.
    """
    check_choice(kind, "kind", LOSSES)
    mask: Tensor | None = None
    if lengths is not None:
        mask = length_mask(lengths, target.shape[1], target.device)  # (N, T)
    if kind == "mse":
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction: expected shape {tuple(target.shape)} (as target), "
                f"got {tuple(prediction.shape)}"
            )
        err = (prediction - target.to(prediction.dtype)) ** 2
        if mask is None:
            return err.mean()
        m = mask.reshape(mask.shape + (1,) * (err.dim() - 2)).expand_as(err)
        return err[m].mean()
    if prediction.shape[:-1] != target.shape:
        raise ValueError(
            f"prediction: expected logits of shape {tuple(target.shape)} + (C,), "
            f"got {tuple(prediction.shape)}"
        )
    target = target.long()
    if mask is not None:
        target = target.masked_fill(
            ~mask.reshape(mask.shape + (1,) * (target.dim() - 2)), IGNORE_INDEX
        )
    return F.cross_entropy(
        prediction.reshape(-1, prediction.shape[-1]),
        target.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


class SequenceTask(Dataset[dict[str, Tensor]]):
    """A data set held as tensors: inputs ``x`` (N, T, F), targets ``y``, optional ``lengths``.

    Subclasses set the class attributes and implement :meth:`baseline_prediction`.

    Attributes:
        x: inputs, (N, T, F) (padded with zeros beyond ``lengths``).
        y: targets: (N, T, ...) for cases 1 and 4, (N, ...) for cases 2 and 3.
        lengths: (N,) int64 valid steps of each sequence, or None when all have length T.
        params: the generating parameters (JSON-serialisable).
        case: the lecture's unfolding case (1-4, see :mod:`rnnlab.data.base`).
        loss: ``"mse"`` or ``"cross_entropy"`` (targets are then class indices).
        baseline: one line naming the trivial predictor.
    """

    case: ClassVar[int]
    loss: ClassVar[str]
    baseline: ClassVar[str]

    def __init__(
        self, x: Tensor, y: Tensor, params: Mapping[str, Any], lengths: Tensor | None = None
    ) -> None:
        self.x = x
        self.y = y
        self.lengths = lengths
        self.params: dict[str, Any] = dict(params)

    @property
    def time_indexed_targets(self) -> bool:
        """Whether ``y`` has a time axis (cases 1 and 4)."""
        return self.case in (1, 4)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if self.lengths is None:
            return {"x": self.x[index], "y": self.y[index]}
        n = int(self.lengths[index])
        y = self.y[index, :n] if self.time_indexed_targets else self.y[index]
        return {"x": self.x[index, :n], "y": y, "length": self.lengths[index]}

    def tensors(self) -> tuple[Tensor, Tensor]:
        """The whole set as ``(x, y)`` (padded where lengths differ; see ``lengths``)."""
        return self.x, self.y

    def baseline_prediction(self) -> Tensor:  # pragma: no cover - abstract
        """The trivial predictor's output for every example (the shape of ``y``, or logits)."""
        raise NotImplementedError

    def baseline_loss(self) -> float:
        """The trivial predictor's loss on this set (mean over valid target elements)."""
        lengths = self.lengths if self.time_indexed_targets else None
        return float(sequence_loss(self.baseline_prediction(), self.y, self.loss, lengths))

    @property
    def expected_baseline_loss(self) -> float | None:
        """The baseline's loss in expectation over the generator, where a closed form exists."""
        return None

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if k != "task")
        return f"{type(self).__name__}({shown})"


def pad_collate(
    batch: Sequence[Mapping[str, Tensor]],
    *,
    padding_value: float = 0.0,
    target_padding: int = IGNORE_INDEX,
) -> dict[str, Tensor]:
    """Batch dict items of different lengths: pad the time axis and return ``"lengths"``.

    An entry is time-indexed when its first axis has the item's length (``item["length"]``, or
    the length of ``item["x"]`` when absent); those are right-padded to the longest item, the
    others stacked. Floating entries are padded with ``padding_value``, integer entries (class
    targets) with ``target_padding`` (``-100``, which ``cross_entropy`` ignores by default).

    Args:
        batch: a sequence of items such as ``{"x": (T_i, F), "y": (T_i, ...) or (...),
            "length": ()}``.

    Returns:
        A dict with the same keys (``"length"`` becomes ``"lengths"``): time-indexed entries
        (B, T_max, ...), others (B, ...), ``"lengths"`` (B,) int64.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> from rnnlab.data import AddingProblem
        >>> loader = DataLoader(AddingProblem(8, 20, min_length=10), batch_size=4,
        ...                     collate_fn=pad_collate)
        >>> sorted(next(iter(loader)))
        ['lengths', 'x', 'y']
    """
    if not isinstance(batch, Sequence) or len(batch) == 0:
        raise ValueError(f"batch: expected a non-empty sequence of dict items, got {batch!r}")
    for i, item in enumerate(batch):
        if not isinstance(item, Mapping) or "x" not in item:
            raise TypeError(
                f"batch[{i}]: expected a dict with at least the key 'x', got {type(item).__name__}"
            )
    keys = list(batch[0])
    lengths = torch.tensor(
        [int(item["length"]) if "length" in item else int(item["x"].shape[0]) for item in batch],
        dtype=torch.long,
    )
    out: dict[str, Tensor] = {}
    for key in keys:
        if key == "length":
            continue
        values = [item[key] for item in batch]
        timed = all(v.dim() >= 1 and v.shape[0] == n for v, n in zip(values, lengths.tolist()))
        if timed and not all(v.shape == values[0].shape for v in values):
            fill = padding_value if values[0].is_floating_point() else target_padding
            out[key] = torch.nn.utils.rnn.pad_sequence(
                values, batch_first=True, padding_value=fill
            )  # (B, T_max, ...)
        else:
            out[key] = torch.stack(values)
    out["lengths"] = lengths
    return out
