"""A reader for CIFAR-10's python-pickle batches (no torchvision), refusing any pickled global
but numpy's arrays (split from experiments/rcnn.py by job, issue 16; re-exported there).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

# --- CIFAR-10 ---------------------------------------------------------------------------------
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


_CIFAR_TEST = ("test_batch",)


# The globals a CIFAR-10 batch pickle needs (numpy arrays); anything else is refused, since
# unpickling can run arbitrary code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"CIFAR-10 batch: refusing to load global {module}.{name} (not a numpy array)"
            )
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _CifarUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: expected keys b'data' and b'labels', got {sorted(batch)}")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected uint8 data (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: expected {data.shape[0]} labels (as data), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: expected labels in 0..9, got {labels.min()}..{labels.max()}")
    return data, labels


def load_cifar10(root: str | os.PathLike[str], train: bool = True) -> tuple[Tensor, Tensor]:
    """Load one split of CIFAR-10 from its python-pickle batches.

    ``root`` is the folder ``cifar-10-batches-py`` (or its parent) with ``data_batch_1`` ...
    ``data_batch_5`` and ``test_batch``. Only numpy arrays are unpickled; any other global is
    refused.

    Returns:
        images (N, 3, 32, 32) uint8 (RGB planes, as stored) and labels (N,) int64 in 0..9;
        N = 50000 (train) or 10000 (test).

    Raises:
        FileNotFoundError: a batch file is missing (the message names it).
        ValueError: a batch is not CIFAR-10's layout.
    """
    if not isinstance(train, bool):
        raise TypeError(f"train: expected a bool, got {type(train).__name__}")
    folder = Path(root)
    if not (folder / _CIFAR_TEST[0]).is_file() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    datas, labels = [], []
    for name in _CIFAR_TRAIN if train else _CIFAR_TEST:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"root: expected CIFAR-10's python batches in {folder}, missing {path}"
            )
        d, lab = _read_cifar_batch(path)
        datas.append(d)
        labels.append(lab)
    data = np.concatenate(datas).reshape(-1, 3, 32, 32)  # (N, 3, 32, 32): R, G, B planes
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(np.concatenate(labels))
