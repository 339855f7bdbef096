"""Images from IDX files (Fashion-MNIST), as images and as sequences.

Shapes: N images, H x W pixels (28 x 28 for Fashion-MNIST), T time, F features.

Views of an image (:data:`VIEWS`), all float32 in [0, 1]:

* ``"image"``: (1, H, W), for the recurrent CNN; lecture case 2 (the same input at every step
  of the recurrent convolution, label at the last step);
* ``"rows"``: (T = H, F = W), one row per step; lecture case 3;
* ``"pixels"``: (T = H W, F = 1), one pixel per step in row-major order; case 3;
* ``"permuted"``: (T = H W, F = 1), the pixels in a fixed order drawn once from
  ``permutation_seed`` (the same for every image and every run); case 3.

Items are ``{"x": view, "y": () int64 label}``. Trivial baseline: predict the class frequencies
(no look at the image); its cross-entropy is the entropy of the labels, ln 10 for the balanced
Fashion-MNIST.

The IDX reader needs neither torchvision nor a network: IDX is a 4-byte magic number (two zero
bytes, a type code, the number of dimensions), big-endian uint32 sizes, then the data.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_choice, check_int

VIEWS = ("image", "rows", "pixels", "permuted")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected from its content) or raw.

    Returns:
        The array in native byte order, shaped by the header (e.g. (N, 28, 28) uint8).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a corrupt gzip stream, a bad magic number or type code, or a size that
            disagrees with the header (truncated or trailing data); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: expected an IDX file, got {str(path)!r} (no such file)")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: expected an IDX header of at least 4 bytes, got {len(raw)}")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_TYPES or ndim < 1:
        raise ValueError(
            f"{path}: expected an IDX magic number 00 00 <type in "
            f"{', '.join(f'{c:02x}' for c in _IDX_TYPES)}> <ndim >= 1>, "
            f"got {raw[:4].hex(' ')}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated header, expected {header} bytes for {ndim} dimensions, "
            f"got {len(raw)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "trailing bytes after the data"
        raise ValueError(
            f"{path}: {what}: expected {expected} data bytes for shape {dims} ({dtype.name}), "
            f"got {got}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _candidates(root: str | os.PathLike[str] | None) -> list[Path]:
    if root is not None:
        # an explicit root is used as written: no silent fallback to another copy of the data.
        # It may hold the files, or be a data root in torchvision's layout or in rnnlab's own
        # ($RNNLAB_DATA's: <root>/fashion-mnist).
        return [Path(root), Path(root) / "FashionMNIST" / "raw", Path(root) / "fashion-mnist"]
    places: list[Path] = []
    env = os.environ.get("RNNLAB_DATA")
    if env:
        places += [Path(env) / "fashion-mnist", Path(env) / "FashionMNIST" / "raw"]
    places.append(DEBIAN_DIR)
    return places


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(
    root: str | os.PathLike[str] | None = None, *, train: bool = True
) -> tuple[Path, Path]:
    """The (images, labels) IDX files of one split, from the first folder that has both.

    Search order: an explicit ``root`` is used as written: ``root``,
    ``root/FashionMNIST/raw`` (torchvision's layout) or ``root/fashion-mnist`` (the layout
    searched under ``$RNNLAB_DATA``), else an error. Without ``root``:
    ``$RNNLAB_DATA/fashion-mnist``, ``$RNNLAB_DATA/FashionMNIST/raw``, then the Debian
    package's ``/usr/share/datasets/fashion-mnist``. Each file may be raw or ``.gz``.

    Raises:
        FileNotFoundError: naming every folder searched and how to get the data.
    """
    if not isinstance(train, bool):
        raise TypeError(f"train: expected a bool, got {type(train).__name__}")
    stems = _FILES[train]
    places = _candidates(root)
    for folder in places:
        found = [_find(folder, stem) for stem in stems]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    searched = "\n".join(f"  {p}" for p in places)
    if root is not None:
        raise FileNotFoundError(
            f"root: the folder given, {str(root)!r}, does not hold Fashion-MNIST's "
            f"{'train' if train else 'test'} split: no folder holds both {stems[0]}[.gz] and "
            f"{stems[1]}[.gz]. Looked in:\n{searched}\n(RNNLAB_DATA and Debian's "
            f"{DEBIAN_DIR} are searched only when no root is given)"
        )
    raise FileNotFoundError(
        f"Fashion-MNIST ({'train' if train else 'test'} split): no folder holds both "
        f"{stems[0]}[.gz] and {stems[1]}[.gz]. Searched:\n{searched}\n"
        "Get the data offline with the Debian package `dataset-fashion-mnist` (apt install "
        "dataset-fashion-mnist, into /usr/share/datasets/fashion-mnist/), or put the four IDX "
        "files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, each raw or .gz) in a folder and pass it as root= or set "
        "RNNLAB_DATA to its parent with the folder named fashion-mnist/."
    )


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None, *, train: bool = True
) -> tuple[Tensor, Tensor]:
    """Load one split of Fashion-MNIST (search order: :func:`find_fashion_mnist`).

    Returns:
        images (N, 28, 28) uint8 and labels (N,) int64 in 0..9; N = 60000 (train) or 10000.
    """
    image_path, label_path = find_fashion_mnist(root, train=train)
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{image_path}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{label_path}: expected {images.shape[0]} labels (as images), got {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(
            f"{label_path}: expected labels in 0..9, got {labels.min()}..{labels.max()}"
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def fixed_permutation(size: int, seed: int = 0) -> Tensor:
    """The fixed pixel order of the ``"permuted"`` view: (size,) int64, from ``seed``."""
    size = check_int(size, "size", low=1)
    seed = check_int(seed, "permutation_seed", low=0)
    return torch.from_numpy(np.random.default_rng(seed).permutation(size)).long()


def image_view(images: Tensor, view: str, *, permutation: Tensor | None = None) -> Tensor:
    """Reshape float images (N, H, W) into a view (see the module docstring).

    Returns:
        ``"image"`` (N, 1, H, W); ``"rows"`` (N, H, W); ``"pixels"``/``"permuted"`` (N, H W, 1).
    """
    view = check_choice(view, "view", VIEWS)
    if not isinstance(images, Tensor) or images.dim() != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor (N, H, W), got {got}")
    n, h, w = images.shape
    if view == "image":
        return images.unsqueeze(1)  # (N, 1, H, W)
    if view == "rows":
        return images
    flat = images.reshape(n, h * w)  # (N, H W), row-major
    if view == "permuted":
        if permutation is None or permutation.shape != (h * w,):
            raise ValueError(
                f"permutation: expected ({h * w},) indices for the 'permuted' view, "
                f"got {None if permutation is None else tuple(permutation.shape)}"
            )
        flat = flat[:, permutation]
    return flat.unsqueeze(-1)  # (N, H W, 1)


class ImageClassification(Dataset[dict[str, Tensor]]):
    """Labelled images seen through one of :data:`VIEWS` (module docstring).

    Args:
        images: (N, H, W), uint8 or float.
        labels: (N,) int64 in 0..C-1.
        view: one of :data:`VIEWS`.
        scale: pixel value mapped to 1 (255 for uint8 images).
        permutation_seed: seed of the fixed order of the ``"permuted"`` view.
        n_classes: C.
    """

    loss = "cross_entropy"
    baseline = "class frequencies (ignore the image)"

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        view: str = "image",
        scale: float = 255.0,
        permutation_seed: int = 0,
        n_classes: int = 10,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.view = check_choice(view, "view", VIEWS)
        if not isinstance(images, Tensor) or images.dim() != 3:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images: expected a tensor (N, H, W), got {got}")
        if not isinstance(labels, Tensor) or labels.shape != images.shape[:1]:
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"labels: expected a tensor ({images.shape[0]},), got {got}")
        n_classes = check_int(n_classes, "n_classes", low=1)
        if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"labels: expected values in 0..{n_classes - 1}, "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
        self.images, self.labels = images, labels.long()
        self.scale = float(scale)
        self.n_classes = n_classes
        _, h, w = images.shape
        self.permutation = fixed_permutation(h * w, permutation_seed)
        self.case = 2 if view == "image" else 3
        self.params: dict[str, Any] = {
            **(params or {}),
            "view": view,
            "permutation_seed": permutation_seed,
        }

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = self.images[index : index + 1].float() / self.scale  # (1, H, W)
        x = image_view(image, self.view, permutation=self.permutation)[0]
        return {"x": x, "y": self.labels[index]}

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All examples as ``(x, y)``: x (N, ...) in the view's shape, y (N,)."""
        x = image_view(self.images.float() / self.scale, self.view, permutation=self.permutation)
        return x, self.labels

    def class_frequencies(self) -> Tensor:
        """(C,) float64 frequencies of the labels of this set."""
        counts = torch.bincount(self.labels, minlength=self.n_classes).double()
        return counts / counts.sum()

    def baseline_prediction(self) -> Tensor:
        """Logits (N, C): the log class frequencies, the same for every image."""
        logp = self.class_frequencies().clamp_min(1e-300).log().float()
        return logp.expand(len(self), -1)

    def baseline_loss(self) -> float:
        """Cross-entropy of the class-frequency predictor (= the entropy of the labels)."""
        return float(torch.nn.functional.cross_entropy(self.baseline_prediction(), self.labels))


class FashionMNIST(ImageClassification):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) as images or sequences (module docstring).

    Args:
        root: a folder with the IDX files (see :func:`find_fashion_mnist` for the search).
        train: the 60000-image training split, or the 10000-image test split.
        view: ``"image"`` (1, 28, 28), ``"rows"`` (28, 28), ``"pixels"`` or ``"permuted"``
            (784, 1); float32 in [0, 1].
        permutation_seed: seed of the ``"permuted"`` pixel order (default 0).

    Items: ``{"x": view, "y": () int64}``. ``classes``: the 10 class names.

    Example:
        >>> test = FashionMNIST(train=False, view="rows")  # doctest: +SKIP
        >>> test[0]["x"].shape, test[0]["y"]  # doctest: +SKIP
        (torch.Size([28, 28]), tensor(9))
    """

    classes: Sequence[str] = FASHION_MNIST_CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        train: bool = True,
        view: str = "image",
        permutation_seed: int = 0,
    ) -> None:
        check_choice(view, "view", VIEWS)
        images, labels = load_fashion_mnist(root, train=train)
        super().__init__(
            images,
            labels,
            view=view,
            scale=255.0,
            permutation_seed=permutation_seed,
            n_classes=10,
            params={"dataset": "fashion-mnist", "train": train},
        )
