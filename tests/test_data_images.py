"""IDX reader (real Fashion-MNIST files and hand-made corrupt ones), the search for the data,
image/sequence views, and scikit-learn's digits."""

from __future__ import annotations

import gzip
import math
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rnnlab.data import (
    FASHION_MNIST_CLASSES,
    FashionMNIST,
    ImageClassification,
    find_fashion_mnist,
    fixed_permutation,
    image_view,
    load_fashion_mnist,
    read_idx,
)
from rnnlab.data import images as images_module

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION = SHARED / "fashion-mnist"
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST IDX files not found in {FASHION} (shared/ beside the repository)",
)


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture(autouse=True)
def _no_system_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Searches see only what a test puts in place (not this machine's Debian folder)."""
    monkeypatch.delenv("RNNLAB_DATA", raising=False)
    monkeypatch.setattr(images_module, "DEBIAN_DIR", tmp_path / "no-debian")


# ---------------------------------------------------------------------------------------------
# IDX reader on hand-made files


@pytest.mark.parametrize(
    ("dtype", "code"),
    [
        (np.uint8, 0x08),
        (np.int8, 0x09),
        (np.int16, 0x0B),
        (np.int32, 0x0C),
        (np.float32, 0x0D),
        (np.float64, 0x0E),
    ],
)
def test_read_idx_every_type_raw_and_gz(tmp_path: Path, dtype: type, code: int) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    data = _idx_bytes(array, code)
    (tmp_path / "a.idx").write_bytes(data)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(data))
    for name in ("a.idx", "a.idx.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.dtype(dtype) and got.shape == (3, 4, 5)
        np.testing.assert_array_equal(got, array)


CORRUPT = [
    (b"", "expected an IDX header of at least 4 bytes, got 0"),
    (b"\x00\x01\x08\x01" + struct.pack(">I", 2) + b"ab", "expected an IDX magic number"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "got 00 00 07 01"),
    (b"\x00\x00\x08\x00", "expected an IDX magic number"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header, expected 16 bytes"),
    (
        b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc",
        "truncated: expected 5 data bytes for shape (5,) (uint8), got 3",
    ),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abc", "trailing bytes after the data"),
    (b"\x1f\x8b\x08\x00garbage-not-deflate", "corrupt gzip stream"),
]


@pytest.mark.parametrize(("content", "message"), CORRUPT)
def test_read_idx_corrupt(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_idx(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(_idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 100) % 7, 8))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt gzip stream"):
        read_idx(path)
    with pytest.raises(FileNotFoundError, match="path: expected an IDX file"):
        read_idx(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# the real Fashion-MNIST files


@pytest.fixture(scope="module")
def fashion_train() -> tuple[torch.Tensor, torch.Tensor]:
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST IDX files not found in {FASHION}")
    return load_fashion_mnist(FASHION, train=True)


@needs_fashion
def test_fashion_mnist_counts_and_labels(fashion_train: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = fashion_train
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [6000] * 10  # balanced, labels 0..9
    assert labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the published order
    test_images, test_labels = load_fashion_mnist(FASHION, train=False)
    assert test_images.shape == (10000, 28, 28)
    assert torch.bincount(test_labels).tolist() == [1000] * 10
    assert test_labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert images.max() == 255 and images.min() == 0
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"


@needs_fashion
def test_fashion_mnist_gz_equals_raw_and_independent_header(tmp_path: Path) -> None:
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(FASHION / f"{stem}.gz", "rb") as src, open(raw_dir / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    gz_images, gz_labels = load_fashion_mnist(FASHION, train=False)
    raw_images, raw_labels = load_fashion_mnist(raw_dir, train=False)
    assert torch.equal(gz_images, raw_images) and torch.equal(gz_labels, raw_labels)
    # an independent parse of the raw file: header by struct, pixels by offset
    blob = (raw_dir / "t10k-images-idx3-ubyte").read_bytes()
    magic, n, rows, cols = struct.unpack(">IIII", blob[:16])
    assert (magic, n, rows, cols) == (0x0803, 10000, 28, 28)
    last = np.frombuffer(blob[16 + 9999 * 784 :], dtype=np.uint8).reshape(28, 28)
    assert torch.equal(raw_images[-1], torch.from_numpy(last.copy()))


@needs_fashion
def test_search_order_env_and_torchvision_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $RNNLAB_DATA/fashion-mnist/
    env = tmp_path / "env"
    env.mkdir()
    (env / "fashion-mnist").symlink_to(FASHION, target_is_directory=True)
    monkeypatch.setenv("RNNLAB_DATA", str(env))
    images, _ = find_fashion_mnist(train=False)
    assert images == env / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    # torchvision's <root>/FashionMNIST/raw/, given explicitly, comes before the environment
    root = tmp_path / "tv"
    (root / "FashionMNIST").mkdir(parents=True)
    (root / "FashionMNIST" / "raw").symlink_to(FASHION, target_is_directory=True)
    images, labels = find_fashion_mnist(root, train=False)
    assert images.parent == root / "FashionMNIST" / "raw"
    assert labels.name == "t10k-labels-idx1-ubyte.gz"
    # the Debian folder last
    monkeypatch.delenv("RNNLAB_DATA")
    monkeypatch.setattr(images_module, "DEBIAN_DIR", FASHION)
    assert find_fashion_mnist(train=True)[0].parent == FASHION


def test_missing_data_names_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "env"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train-images-idx3-ubyte").write_bytes(b"")  # labels missing
    monkeypatch.setattr(images_module, "DEBIAN_DIR", tmp_path / "no-debian")
    # an explicit root is used as written: an error naming it, no fallback
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(tmp_path / "half")
    text = str(info.value)
    assert text.startswith(f"root: the folder given, {str(tmp_path / 'half')!r}, does not hold")
    for place in (tmp_path / "half", tmp_path / "half" / "FashionMNIST" / "raw"):
        assert str(place) in text
    assert "train-labels-idx1-ubyte" in text and str(tmp_path / "env" / "fashion-mnist") not in text
    # no root: the documented fallback, every place named
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist()
    text = str(info.value)
    for place in (
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "env" / "FashionMNIST" / "raw",
        tmp_path / "no-debian",
    ):
        assert str(place) in text
    assert "dataset-fashion-mnist" in text and "train-labels-idx1-ubyte" in text
    with pytest.raises(TypeError, match="train: expected a bool, got str"):
        find_fashion_mnist(tmp_path, train="yes")  # type: ignore[arg-type]


def test_corrupt_fashion_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 4)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2, np.uint8), 8))
    with pytest.raises(ValueError, match="truncated header"):
        load_fashion_mnist(tmp_path, train=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(
        _idx_bytes(np.zeros((2, 28, 28), np.uint8), 8)
    )
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([1, 12], np.uint8), 8))
    with pytest.raises(ValueError, match="expected labels in 0..9, got 1..12"):
        load_fashion_mnist(tmp_path, train=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([1], np.uint8), 8))
    with pytest.raises(ValueError, match=r"expected 2 labels \(as images\)"):
        load_fashion_mnist(tmp_path, train=False)


# ---------------------------------------------------------------------------------------------
# views


@needs_fashion
def test_fashion_views() -> None:
    sets = {
        view: FashionMNIST(FASHION, train=False, view=view)
        for view in ("image", "rows", "pixels", "permuted")
    }
    raw, labels = load_fashion_mnist(FASHION, train=False)
    k = 123
    image = raw[k].float() / 255
    item = sets["image"][k]
    assert item["x"].shape == (1, 28, 28) and item["y"] == labels[k]
    torch.testing.assert_close(item["x"][0], image)
    torch.testing.assert_close(sets["rows"][k]["x"], image)  # row t at step t
    pixels = sets["pixels"][k]["x"]
    assert pixels.shape == (784, 1)
    for t in (0, 29, 400, 783):
        assert pixels[t, 0] == image[t // 28, t % 28]
    perm = sets["permuted"].permutation
    assert sorted(perm.tolist()) == list(range(784)) and not torch.equal(perm, torch.arange(784))
    torch.testing.assert_close(sets["permuted"][k]["x"], pixels[perm])
    again = FashionMNIST(FASHION, train=False, view="permuted")
    assert torch.equal(again.permutation, perm)  # fixed across instances
    assert torch.equal(fixed_permutation(784, 0), perm)
    assert not torch.equal(fixed_permutation(784, 1), perm)
    assert sets["image"].case == 2 and sets["pixels"].case == 3
    batch = next(iter(DataLoader(sets["pixels"], batch_size=5)))
    assert batch["x"].shape == (5, 784, 1) and batch["y"].shape == (5,)
    x, y = sets["rows"].tensors()
    assert x.shape == (10000, 28, 28) and x.min() >= 0 and x.max() <= 1


@needs_fashion
def test_fashion_baseline_is_label_entropy() -> None:
    data = FashionMNIST(FASHION, train=False, view="rows")
    # predicting the class frequencies, evaluated here: balanced classes give ln 10
    freq = torch.bincount(data.labels).double() / len(data)
    ce = -(freq.log()[data.labels]).mean().item()
    assert ce == pytest.approx(math.log(10), rel=1e-9)
    assert data.baseline_loss() == pytest.approx(ce, rel=1e-5)


def test_image_view_bad_input() -> None:
    with pytest.raises(ValueError, match="view: expected one of 'image', 'rows', 'pixels'"):
        image_view(torch.zeros(2, 3, 3), "columns")
    with pytest.raises(ValueError, match=r"images: expected a tensor \(N, H, W\), got \(3, 3\)"):
        image_view(torch.zeros(3, 3), "rows")
    with pytest.raises(ValueError, match=r"permutation: expected \(9,\) indices"):
        image_view(torch.zeros(2, 3, 3), "permuted")
    with pytest.raises(ValueError, match="view: expected one of"):
        FashionMNIST(FASHION, view="col")
    with pytest.raises(ValueError, match=r"labels: expected a tensor \(4,\), got \(3,\)"):
        ImageClassification(torch.zeros(4, 2, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels: expected values in 0..1, got 0..2"):
        ImageClassification(torch.zeros(3, 2, 2), torch.tensor([0, 1, 2]), n_classes=2)
    own = ImageClassification(
        torch.full((2, 2, 3), 255, dtype=torch.uint8),
        torch.tensor([0, 1]),
        view="pixels",
        n_classes=2,
    )
    assert own[1]["x"].shape == (6, 1) and (own[1]["x"] == 1).all()
    assert own.baseline_loss() == pytest.approx(math.log(2))


# ---------------------------------------------------------------------------------------------
# scikit-learn digits


def test_digits_views_split_and_baseline() -> None:
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits as sk_digits

    from rnnlab.data import Digits

    reference = sk_digits()
    train = Digits("train", view="rows", seed=0)
    test = Digits("test", view="pixels", seed=0)
    assert len(train) + len(test) == 1797 and len(test) == round(0.2 * 1797)
    assert not set(train.indices.tolist()) & set(test.indices.tolist())
    k = 5
    source = int(train.indices[k])
    expect = torch.from_numpy(reference.images[source]).float() / 16
    torch.testing.assert_close(train[k]["x"], expect)
    assert train[k]["y"].item() == reference.target[source]
    assert test[0]["x"].shape == (64, 1) and train.case == 3
    full = Digits("all", view="image")
    assert full[0]["x"].shape == (1, 8, 8) and full.images.max() == 16
    x, _ = full.tensors()
    assert x.max() == 1.0 and x.min() == 0.0
    counts = Counter(full.labels.tolist())
    entropy = -sum(c / 1797 * math.log(c / 1797) for c in counts.values())
    assert full.baseline_loss() == pytest.approx(entropy, rel=1e-5)
    assert entropy == pytest.approx(math.log(10), abs=0.01)
    other = Digits("train", seed=1)
    assert not torch.equal(other.indices, train.indices)
    assert torch.equal(Digits("train", seed=0).indices, train.indices)
    with pytest.raises(ValueError, match="split: expected one of 'train', 'test', 'all'"):
        Digits("valid")
    with pytest.raises(ValueError, match="test_fraction: expected 0.0 < test_fraction < 1.0"):
        Digits(test_fraction=1.0)
