"""scikit-learn's bundled handwritten digits (8 x 8, 1797 images) as images or sequences.

Shapes: N images; views as in :mod:`rnnlab.data.images`: ``"image"`` (1, 8, 8), ``"rows"``
(8, 8), ``"pixels"``/``"permuted"`` (64, 1), float32 in [0, 1] (the pixel values 0..16 / 16).

A small, offline stand-in for image data sets, handy for quick experiments and tests. Needs
scikit-learn (the optional extra ``rnnlab[data]``), imported only when the data are loaded.
Trivial baseline: the class frequencies; cross-entropy ≈ ln 10 (the classes are near balanced).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_float, check_int
from ._checks import make_rng, seed_value
from .images import VIEWS, ImageClassification


def load_digits() -> tuple[Tensor, Tensor]:
    """All 1797 digits: images (1797, 8, 8) float32 in [0, 16] and labels (1797,) int64."""
    images, labels = _load_digits()
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())


@lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits data set needs scikit-learn, which bundles it: "
            "pip install 'rnnlab[data]' (or pip install scikit-learn)"
        ) from err
    bunch = _load()
    return np.asarray(bunch.images, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)


class Digits(ImageClassification):
    """scikit-learn's digits, split at random (seeded) into train and test parts.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        view: one of ``"image"``, ``"rows"``, ``"pixels"``, ``"permuted"``.
        test_fraction: share of the images in the test part (default 0.2).
        seed: seeds the split (int or ``numpy.random.Generator``); the same seed gives
            disjoint train and test parts that together cover the set.
        permutation_seed: seed of the ``"permuted"`` pixel order.

    Items: ``{"x": view, "y": () int64}``.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        view: str = "image",
        test_fraction: float = 0.2,
        seed: Any = 0,
        permutation_seed: int = 0,
    ) -> None:
        split = check_choice(split, "split", ("train", "test", "all"))
        check_choice(view, "view", VIEWS)
        test_fraction = check_float(
            test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True
        )
        check_int(permutation_seed, "permutation_seed", low=0)
        images, labels = load_digits()
        order = torch.from_numpy(make_rng(seed).permutation(len(labels))).long()
        n_test = int(round(test_fraction * len(labels)))
        if split == "test":
            keep = order[:n_test]
        elif split == "train":
            keep = order[n_test:]
        else:
            keep = torch.arange(len(labels))
        super().__init__(
            images[keep],
            labels[keep],
            view=view,
            scale=16.0,
            permutation_seed=permutation_seed,
            n_classes=10,
            params={
                "dataset": "sklearn-digits",
                "split": split,
                "test_fraction": test_fraction,
                "seed": seed_value(seed),
            },
        )
        self.indices = keep  # positions in scikit-learn's order
