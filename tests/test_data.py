"""advlearn.data: embedded sets, files written here, a safe CIFAR reader, synthetic statistics."""

from __future__ import annotations

import builtins
import gzip
import hashlib
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm

from advlearn.data import (
    DATASETS,
    Dataset,
    DataSplit,
    digits,
    gaussian_pair,
    load_cifar,
    load_dataset,
    load_image_folder,
    load_mnist_idx,
    load_npz,
    mnist5k,
    stratified_split,
    tsipras,
)

Z = 5.0  # statistical checks allow 5 standard errors: a false alarm has probability < 1e-6


def toy(n: int = 10, num_classes: int = 2) -> Dataset:
    return Dataset(torch.rand(n, 1, 2, 2), torch.arange(n) % num_classes, num_classes=num_classes, name="toy")


def row_hashes(x: torch.Tensor) -> set[str]:
    return {hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in x.flatten(1)}


def check_split(split: DataSplit) -> None:
    """What every loader promises: float32 inputs inside bounds, int64 labels in range, matching parts."""
    for part in (split.train, split.test):
        assert part.x.dtype == torch.float32
        assert part.y.dtype == torch.int64
        assert part.y.shape == (len(part),)
        lo, hi = part.bounds
        assert lo <= float(part.x.min())
        assert float(part.x.max()) <= hi
        assert int(part.y.min()) >= 0
        assert int(part.y.max()) < part.num_classes
        if part.x.dim() == 4:
            assert part.bounds == (0.0, 1.0)
    assert split.train.input_shape == split.test.input_shape


# ----------------------------------------------------------------------------- Dataset and DataSplit


def test_dataset_basics_and_repr() -> None:
    data = toy(10)
    assert len(data) == 10
    assert data.input_shape == (1, 2, 2)
    assert "toy" in repr(data)
    assert "(10, 1, 2, 2)" in repr(data)
    assert data.subset(3).y.tolist() == [0, 1, 0]
    assert data.subset(slice(2, 4)).y.tolist() == [0, 1]
    assert data.subset(torch.tensor([9, 0])).y.tolist() == [1, 0]
    assert len(data.subset(data.y == 1)) == 5
    assert len(data.subset(0)) == 0
    with pytest.raises(ValueError, match="first 11 examples"):
        data.subset(11)
    with pytest.raises(ValueError, match="outside"):
        data.subset(torch.tensor([10]))
    with pytest.raises(ValueError, match="bool index"):
        data.subset(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="index must be"):
        data.subset(1.5)  # type: ignore[arg-type]


def test_loader_batches_and_reproducible_shuffle() -> None:
    data = toy(10)
    batches = list(data.loader(4))
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    assert [len(yb) for _, yb in data.loader(4, drop_last=True)] == [4, 4]
    torch.manual_seed(3)
    first = torch.cat([yb for _, yb in data.loader(10, shuffle=True)])
    order = torch.cat([xb for xb, _ in data.loader(10, shuffle=True)])
    torch.manual_seed(3)
    again = torch.cat([yb for _, yb in data.loader(10, shuffle=True)])
    assert torch.equal(first, again)
    assert sorted(row_hashes(order)) == sorted(row_hashes(data.x))  # a permutation of the data
    with pytest.raises(ValueError, match="batch_size"):
        data.loader(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y": torch.zeros(3, dtype=torch.int64)}, r"shape \(N,\) with N = 4"),
        ({"y": torch.tensor([0, 1, 2, 0])}, r"label 2 .* \[0, 2\)"),
        ({"y": torch.tensor([0, -1, 1, 0])}, "label -1"),
        ({"y": torch.zeros(4, dtype=torch.int32)}, "int64"),
        ({"x": torch.rand(4, 3, dtype=torch.float64)}, "float32"),
        ({"x": torch.full((4, 3), float("nan"))}, "NaN or Inf"),
        ({"x": torch.full((4, 3), 1.5)}, r"outside bounds=\(0, 1\)"),
        ({"x": torch.rand(4)}, "shape"),
        ({"num_classes": 0}, "num_classes"),
        ({"class_names": ("a", "b", "c")}, "one name per class"),
        ({"bounds": (1.0, 0.0)}, "lo < hi"),
    ],
)
def test_dataset_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"x": torch.rand(4, 3), "y": torch.tensor([0, 1, 1, 0]), "num_classes": 2}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Dataset(name="bad", **fields)  # type: ignore[arg-type]


def test_dataset_wide_bounds_allow_vectors() -> None:
    data = Dataset(torch.full((2, 3), -5.0), torch.tensor([0, 1]), 2, "v", bounds=(-10, 10))
    assert data.bounds == (-10.0, 10.0)


def test_datasplit_rejects_mismatched_parts() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        DataSplit(train=toy(4, 2), test=toy(4, 3))
    other_shape = Dataset(torch.rand(4, 1, 3, 3), torch.zeros(4, dtype=torch.int64), 2, "toy")
    with pytest.raises(ValueError, match="input_shape"):
        DataSplit(train=toy(4), test=other_shape)


def test_stratified_split_keeps_class_shares_and_is_seeded() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    data = Dataset(torch.rand(100, 4), labels, num_classes=3, name="toy")
    split = stratified_split(data, test_fraction=0.2, seed=1)
    assert torch.bincount(split.test.y).tolist() == [10, 6, 4]
    assert torch.bincount(split.train.y).tolist() == [40, 24, 16]
    assert not row_hashes(split.train.x) & row_hashes(split.test.x)
    assert row_hashes(split.train.x) | row_hashes(split.test.x) == row_hashes(data.x)
    assert torch.equal(stratified_split(data, 0.2, seed=1).test.x, split.test.x)
    assert not torch.equal(stratified_split(data, 0.2, seed=2).test.x, split.test.x)
    assert split.train.y[:10].unique().numel() > 1  # shuffled, not sorted by class
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(data, test_fraction=1.0)
    with pytest.raises(ValueError, match="both need examples"):
        stratified_split(toy(2), test_fraction=0.1)


# ----------------------------------------------------------------------------- embedded data


def test_mnist5k_shapes_split_and_determinism() -> None:
    split = mnist5k()
    check_split(split)
    assert split.train.x.shape == (4000, 1, 28, 28)
    assert split.test.x.shape == (1000, 1, 28, 28)
    assert torch.bincount(split.train.y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(split.test.y, minlength=10).tolist() == [100] * 10
    assert split.train.class_names == tuple("0123456789")
    assert float(split.train.x.max()) == 1.0
    assert float(split.train.x.min()) == 0.0
    # pixels are k / 255 for integers k
    pixels = split.test.x * 255
    assert torch.allclose(pixels, pixels.round(), atol=1e-4)
    assert not row_hashes(split.train.x) & row_hashes(split.test.x)
    split.train.x.zero_()  # callers may scribble on what they get ...
    again = mnist5k()
    assert float(again.train.x.max()) == 1.0  # ... without touching the next call
    assert torch.equal(again.test.x, split.test.x)
    assert torch.equal(again.train.y, split.train.y)


def test_digits_shapes_and_split() -> None:
    split = digits()
    check_split(split)
    assert split.train.x.shape[1:] == (1, 8, 8)
    assert len(split.train) + len(split.test) == 1797
    assert float(split.train.x.max()) == 1.0
    total = torch.bincount(torch.cat([split.train.y, split.test.y]), minlength=10)
    share = torch.bincount(split.test.y, minlength=10) / total
    assert ((share - 0.25).abs() <= 1 / total).all()
    assert torch.equal(digits().test.x, split.test.x)


# ----------------------------------------------------------------------------- MNIST IDX


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    magic = magic if magic is not None else 2048 + array.ndim
    blob = (
        struct.pack(">I", magic)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(np.uint8).tobytes()
    )
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)
    return path


@pytest.fixture
def idx_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 5, 7), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 5, 7), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    for k, (stem, array) in enumerate(arrays.items()):
        write_idx(tmp_path / (stem + (".gz" if k % 2 else "")), array)  # mix raw and gzipped
    return tmp_path, arrays


def test_idx_round_trip_raw_and_gz(idx_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, arrays = idx_dir
    split = load_mnist_idx(root, name="fashion-mnist")
    check_split(split)
    assert split.train.name == "fashion-mnist"
    assert split.train.x.shape == (12, 1, 5, 7)
    assert split.test.x.shape == (4, 1, 5, 7)
    assert np.array_equal(
        (split.train.x[:, 0] * 255).round().numpy().astype(np.uint8), arrays["train-images-idx3-ubyte"]
    )
    assert np.array_equal(
        (split.test.x[:, 0] * 255).round().numpy().astype(np.uint8), arrays["t10k-images-idx3-ubyte"]
    )
    assert split.train.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert split.test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    by_name = load_dataset("mnist", path=str(root))
    assert torch.equal(by_name.test.x, split.test.x)


def test_idx_wrong_magic_names_file(idx_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, arrays = idx_dir
    write_idx(root / "train-images-idx3-ubyte", arrays["train-images-idx3-ubyte"], magic=2049)
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte starts with magic number 2049, expected 2051"
    ):
        load_mnist_idx(root)


def test_idx_truncated_file_names_file(idx_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = idx_dir
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte declares shape \(12, 5, 7\).*truncated"):
        load_mnist_idx(root)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte ends inside its 16-byte IDX header"):
        load_mnist_idx(root)


def test_idx_truncated_gzip_names_file(idx_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = idx_dir
    path = root / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz could not be read"):
        load_mnist_idx(root)


def test_idx_missing_file_and_count_mismatch(idx_dir: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = idx_dir
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte\.gz in "):
        load_mnist_idx(root)
    write_idx(root / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"holds 4 images but .*holds 3 labels"):
        load_mnist_idx(root)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mnist_idx(root / "nowhere")


# ----------------------------------------------------------------------------- CIFAR


def _op_str(b: bytes) -> bytes:
    """A Python 2 ``str`` (SHORT_BINSTRING or BINSTRING)."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _op_int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) writes for ``{'data': data, 'labels': labels}``.

    The real CIFAR batches were written so.
    """
    n, d = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + _op_int(0)
        + b"\x85"
        + _op_str(b"b")
        + b"\x87R"
        b"(" + _op_int(1) + _op_int(n) + _op_int(d) + b"\x86"
        b"cnumpy\ndtype\n" + _op_str(b"u1") + _op_int(0) + _op_int(1) + b"\x87R"
        b"(" + _op_int(3) + _op_str(b"|") + b"NNN" + _op_int(-1) + _op_int(-1) + _op_int(0) + b"tb"
        b"\x89" + _op_str(data.tobytes()) + b"tb"
    )
    label_list = b"](" + b"".join(_op_int(v) for v in labels) + b"e"
    return b"\x80\x02}(" + _op_str(b"data") + array + _op_str(b"labels") + label_list + b"u."


def fake_cifar10(
    root: Path, protocol: int | None, n: int = 3
) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Five training batches and a test batch of ``n`` random images each (``protocol=None``: Python 2)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (5 * n, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    train_labels = [int(v) for v in rng.integers(0, 10, 5 * n)]
    test_labels = [int(v) for v in rng.integers(0, 10, n)]
    parts = [
        (f"data_batch_{k + 1}", train[k * n : (k + 1) * n], train_labels[k * n : (k + 1) * n])
        for k in range(5)
    ]
    for file, data, labels in [*parts, ("test_batch", test, test_labels)]:
        if protocol is None:
            (root / file).write_bytes(python2_batch(data, labels))
        else:
            (root / file).write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=protocol))
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return train, test, train_labels, test_labels


@pytest.mark.parametrize("protocol", [None, 2, 4, 5])
def test_cifar10_round_trip(tmp_path: Path, protocol: int | None) -> None:
    train, test, train_labels, test_labels = fake_cifar10(tmp_path / "cifar-10-batches-py", protocol)
    split = load_cifar(tmp_path)  # the parent folder works too
    check_split(split)
    assert split.train.x.shape == (15, 3, 32, 32)
    assert split.test.x.shape == (3, 3, 32, 32)
    assert torch.equal(
        (split.train.x * 255).round().to(torch.uint8).reshape(15, 3072), torch.from_numpy(train)
    )
    assert torch.equal((split.test.x * 255).round().to(torch.uint8).reshape(3, 3072), torch.from_numpy(test))
    # channel c of pixel (i, j) is entry c * 1024 + i * 32 + j of the row
    assert split.test.x[1, 2, 4, 5] * 255 == pytest.approx(float(test[1, 2 * 1024 + 4 * 32 + 5]), abs=1e-3)
    assert split.train.y.tolist() == train_labels
    assert split.test.y.tolist() == test_labels
    assert split.train.class_names is not None
    assert split.train.class_names[0] == "airplane"
    assert torch.equal(load_cifar(tmp_path / "cifar-10-batches-py").test.x, split.test.x)


def test_python2_batch_matches_plain_pickle() -> None:
    """The hand-written Python 2 bytes are what the standard library reads as the intended dict."""
    data = np.arange(6, dtype=np.uint8).reshape(2, 3)
    loaded = pickle.loads(python2_batch(data, [1, 0]), encoding="bytes")  # our own bytes: safe here
    assert np.array_equal(loaded[b"data"], data)
    assert loaded[b"labels"] == [1, 0]


def test_cifar100_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for file, n in (("train", 6), ("test", 2)):
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),  # Python 3 pickles: str keys
            "fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            "coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
        }
        (root / file).write_bytes(pickle.dumps(batch))
    (root / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{k}" for k in range(100)]}))
    split = load_dataset("cifar100", path=tmp_path)
    check_split(split)
    assert split.num_classes == 100
    assert len(split.train) == 6
    assert split.train.class_names == tuple(f"c{k}" for k in range(100))


class _Payload:
    def __init__(self, reduce: tuple[object, ...]) -> None:
        self.reduce = reduce

    def __reduce__(self) -> tuple[object, ...]:
        return self.reduce


@pytest.mark.parametrize(
    "payload",
    [
        lambda marker: (os.system, (f"echo hacked > '{marker}'",)),
        lambda marker: (builtins.eval, (f"open({str(marker)!r}, 'w').write('hacked')",)),
        lambda marker: (Path.write_text, (marker, "hacked")),
    ],
    ids=["os.system", "eval", "Path.write_text"],
)
def test_cifar_rejects_code_in_pickle_without_running_it(tmp_path: Path, payload: object) -> None:
    fake_cifar10(tmp_path, protocol=4)
    marker = tmp_path / "hacked"
    evil = {b"data": _Payload(payload(marker)), b"labels": [0]}  # type: ignore[operator]
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(evil))
    with pytest.raises(ValueError, match=r"data_batch_3 refers to .*refuses to unpickle"):
        load_cifar(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "blob",
    [
        b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.",  # a non-latin-1 codec
        b"\x80\x02cbuiltins\ngetattr\n.",
        b"\x80\x02ccopy_reg\n_reconstructor\n.",
    ],
)
def test_cifar_rejects_other_globals(tmp_path: Path, blob: bytes) -> None:
    fake_cifar10(tmp_path, protocol=2)
    (tmp_path / "test_batch").write_bytes(blob)
    with pytest.raises(ValueError, match="test_batch refers to"):
        load_cifar(tmp_path)


def test_cifar_corrupt_missing_and_malformed(tmp_path: Path) -> None:
    fake_cifar10(tmp_path, protocol=4)
    good = (tmp_path / "data_batch_1").read_bytes()
    (tmp_path / "data_batch_1").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"data_batch_1 is not a readable CIFAR python batch"):
        load_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    )
    with pytest.raises(ValueError, match=r"data_batch_1: b'data' must be a uint8 array of shape \(N, 3072\)"):
        load_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    )
    with pytest.raises(ValueError, match=r"data_batch_1: b'labels' must hold 2 integer labels"):
        load_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]})
    )
    with pytest.raises(ValueError, match=r"data_batch_1: b'labels' holds labels outside \[0, 10\)"):
        load_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"pixels": 0}))
    with pytest.raises(ValueError, match=r"data_batch_1 has no entry b'data'"):
        load_cifar(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="CIFAR-10 batch data_batch_4 in"):
        load_cifar(tmp_path)
    with pytest.raises(ValueError, match="num_classes"):
        load_cifar(tmp_path, num_classes=20)


# ----------------------------------------------------------------------------- image folders


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def image_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    images = {}
    for cls, count in (("dog", 3), ("cat", 2)):
        for k in range(count):
            pixels = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)  # height 6, width 4
            images[f"{cls}/{k}.png"] = pixels
            save_png(tmp_path / "pets" / cls / f"{k}.png", pixels)
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    return tmp_path / "pets", images


def test_image_folder_reads_classes_in_sorted_order(image_root: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, images = image_root
    data = load_image_folder(root)
    assert data.class_names == ("cat", "dog")
    assert data.num_classes == 2
    assert data.name == "pets"
    assert data.x.shape == (5, 3, 6, 4)
    assert data.x.dtype == torch.float32
    assert data.y.tolist() == [0, 0, 1, 1, 1]
    first_dog = (data.x[2] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, C)
    assert np.array_equal(first_dog, images["dog/0.png"])
    gray = load_image_folder(root, grayscale=True, size=(3, 2))
    assert gray.x.shape == (5, 1, 3, 2)


def test_image_folder_mixed_sizes_and_corrupt_files(image_root: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = image_root
    save_png(root / "dog" / "big.png", np.zeros((9, 9, 3), np.uint8))
    with pytest.raises(ValueError, match=r"dog/big\.png is 9×9 .* pass size=\(height, width\)"):
        load_image_folder(root)
    assert load_image_folder(root, size=(5, 5)).x.shape == (6, 3, 5, 5)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(ValueError, match=r"cat/broken\.png is not a readable image"):
        load_image_folder(root, size=(5, 5))


def test_image_folder_structure_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no class folders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no images"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="size"):
        load_image_folder(tmp_path, size=(0, 3))


def test_image_folder_by_name_split_and_test_path(image_root: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = image_root
    split = load_dataset("image_folder", path=root, test_fraction=0.5, seed=0, size=[6, 4])
    check_split(split)
    assert len(split.train) + len(split.test) == 5
    separate = load_dataset("image_folder", path=root, test_path=root)
    assert len(separate.train) == len(separate.test) == 5


# ----------------------------------------------------------------------------- npz


def test_npz_uint8_gets_channel_axis(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    np.savez(tmp_path / "a.npz", x=x, y=np.array([1, 0]))
    data = load_npz(tmp_path / "a.npz")
    assert data.x.shape == (2, 1, 3, 4)
    assert data.num_classes == 2
    assert data.name == "a"
    assert torch.allclose(data.x[:, 0] * 255, torch.from_numpy(x).float(), atol=1e-4)


def test_npz_channels_last_float_and_class_names(tmp_path: Path) -> None:
    x = np.random.default_rng(4).random((3, 5, 6, 3))  # (N, H, W, C) float64
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0, 2, 1]), class_names=np.array(["a", "b", "c", "d"]))
    data = load_npz(tmp_path / "b.npz")
    assert data.x.shape == (3, 3, 5, 6)
    assert data.x.dtype == torch.float32
    assert data.x[1, 2, 4, 5] == pytest.approx(x[1, 4, 5, 2], abs=1e-6)
    assert data.num_classes == 4
    assert data.class_names == ("a", "b", "c", "d")
    kept = np.zeros((3, 3, 5, 6), np.float32)
    np.savez(tmp_path / "c.npz", x=kept, y=np.zeros(3, np.int64))
    assert load_npz(tmp_path / "c.npz").x.shape == (3, 3, 5, 6)
    np.savez(tmp_path / "v.npz", x=np.full((4, 2), -3.0), y=np.arange(4))
    assert load_npz(tmp_path / "v.npz", bounds=(-5, 5)).input_shape == (2,)


def test_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "range.npz", x=np.array([[-0.5, 2.0]]), y=np.array([0]))
    with pytest.raises(ValueError, match=r"range\.npz: x holds floats in \[-0\.5, 2\]"):
        load_npz(tmp_path / "range.npz")
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 3), np.float32), labels=np.zeros(2))
    with pytest.raises(ValueError, match=r"noy\.npz has no array 'y' \(it holds 'x', 'labels'\)"):
        load_npz(tmp_path / "noy.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(ValueError, match=r"obj\.npz"):
        load_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "int.npz", x=np.zeros((2, 3), np.int64), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="dtype int64"):
        load_npz(tmp_path / "int.npz")
    np.savez(tmp_path / "short.npz", x=np.zeros((2, 3), np.float32), y=np.array([0]))
    with pytest.raises(ValueError, match=r"shape \(2,\), one label per input"):
        load_npz(tmp_path / "short.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match=r"junk\.npz is not a readable \.npz archive"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match=r"none\.npz"):
        load_npz(tmp_path / "none.npz")


def test_npz_by_name_with_test_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "train.npz", x=rng.integers(0, 256, (20, 4, 4), dtype=np.uint8), y=np.arange(20) % 4)
    np.savez(tmp_path / "test.npz", x=rng.integers(0, 256, (5, 4, 4), dtype=np.uint8), y=np.arange(5) % 3)
    split = load_dataset("npz", path=tmp_path / "train.npz", test_path=tmp_path / "test.npz")
    check_split(split)
    assert split.num_classes == 4
    assert len(split.test) == 5
    halves = load_dataset("npz", path=tmp_path / "train.npz", test_fraction=0.5)
    assert torch.bincount(halves.test.y).tolist() == [3, 3, 3, 3]  # round(2.5) goes up, per class


# ----------------------------------------------------------------------------- synthetic data


def test_gaussian_pair_moments() -> None:
    n = 20_000
    split = gaussian_pair(n_train=n, n_test=10, seed=0)
    check_split(split)
    x, y = split.train.x.double(), split.train.y
    assert torch.bincount(y).tolist() == [n // 2, n // 2]
    residuals = []
    for label, sign in ((0, -1.0), (1, 1.0)):
        xc = x[y == label]
        # each coordinate of the class mean has standard error sqrt(1 / n_c)
        assert torch.allclose(
            xc.mean(0), torch.full((2,), sign, dtype=torch.float64), atol=Z / math.sqrt(len(xc))
        )
        residuals.append(xc - xc.mean(0))
    r = torch.cat(residuals)
    cov = r.T @ r / (len(r) - 2)
    # standard errors of a sample variance and covariance: sqrt(2 / n) and sqrt((1 + ρ²) / n)
    assert abs(float(cov[0, 0]) - 1) < Z * math.sqrt(2 / n)
    assert abs(float(cov[1, 1]) - 1) < Z * math.sqrt(2 / n)
    assert abs(float(cov[0, 1]) - 0.3) < Z * math.sqrt(1.09 / n)
    assert split.train.bounds == (-21.0, 21.0)


def test_gaussian_pair_seeding() -> None:
    a, b = gaussian_pair(50, 5, seed=1), gaussian_pair(50, 7, seed=1)
    assert torch.equal(a.train.x, b.train.x)  # the training set does not depend on n_test
    assert not torch.equal(a.train.x, gaussian_pair(50, 5, seed=2).train.x)
    assert torch.bincount(a.test.y).tolist() == [2, 3]
    with pytest.raises(ValueError, match="n_train"):
        gaussian_pair(n_train=0)
    with pytest.raises(ValueError, match="seed"):
        gaussian_pair(seed=1.5)  # type: ignore[arg-type]


def test_tsipras_statistics() -> None:
    n, d, p = 20_000, 100, 0.95
    split = tsipras(n_train=n, n_test=10, d=d, p=p, seed=0)
    check_split(split)
    x, y = split.train.x.double(), split.train.y
    assert x.shape == (n, d + 1)
    sign = (2 * y - 1).double()
    assert abs(float(y.double().mean()) - 0.5) < Z * math.sqrt(0.25 / n)  # y uniform on {-1, +1}
    assert set(x[:, 0].unique().tolist()) == {-1.0, 1.0}
    agreement = float((x[:, 0] == sign).double().mean())
    assert abs(agreement - p) < Z * math.sqrt(p * (1 - p) / n)
    eta = 2 / math.sqrt(d)
    aligned = x[:, 1:] * sign.unsqueeze(1)  # (N, d), each entry N(η, 1)
    assert torch.allclose(aligned.mean(0), torch.full((d,), eta, dtype=torch.float64), atol=Z / math.sqrt(n))
    assert abs(float(aligned.std()) - 1) < Z * math.sqrt(1 / (2 * n * d))
    # averaging the weak features is right with probability Φ(η√d) = Φ(2), as the docstring says
    averaged = float(((x[:, 1:].mean(1) > 0).long() == y).double().mean())
    q = float(norm.cdf(eta * math.sqrt(d)))
    assert abs(averaged - q) < Z * math.sqrt(q * (1 - q) / n)


def test_tsipras_options() -> None:
    split = tsipras(n_train=10, n_test=10, d=4, p=1.0, eta=3.0)
    assert bool(
        (split.train.x[:, 0] == 2 * split.train.y - 1).all()
    )  # p = 1: the robust feature is the label
    assert split.train.bounds == (-23.0, 23.0)
    with pytest.raises(ValueError, match=r"p must be a probability in \[0.5, 1\]"):
        tsipras(p=0.3)
    with pytest.raises(ValueError, match="eta"):
        tsipras(eta=-1.0)


# ----------------------------------------------------------------------------- registry


def test_load_dataset_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist6k'; known datasets: .*mnist5k"):
        load_dataset("mnist6k")
    with pytest.raises(
        ValueError, match=r"unknown option 'n_samples' for dataset 'gaussians'; it takes n_train"
    ):
        load_dataset("gaussians", n_samples=3)
    with pytest.raises(ValueError, match=r"unknown option 'seed' for dataset 'mnist5k'; it takes no options"):
        load_dataset("mnist5k", seed=1)
    with pytest.raises(ValueError, match=r"dataset 'cifar10' needs the option path"):
        load_dataset("cifar10")


def _registry_options(name: str, tmp_path: Path) -> dict[str, object]:
    if name in ("mnist5k", "digits", "mnist_m_style"):
        return {}
    if name in ("gaussians", "tsipras"):
        return {"n_train": 20, "n_test": 10}
    if name == "mnist":
        for stem, shape in (("train-images-idx3-ubyte", (6, 4, 4)), ("t10k-images-idx3-ubyte", (3, 4, 4))):
            write_idx(tmp_path / stem, np.full(shape, 7, np.uint8))
            write_idx(
                tmp_path / stem.replace("images-idx3", "labels-idx1"), np.arange(shape[0], dtype=np.uint8)
            )
    elif name == "cifar10":
        fake_cifar10(tmp_path, protocol=4)
    elif name == "cifar100":
        for file in ("train", "test"):
            (tmp_path / file).write_bytes(
                pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 99]})
            )
    elif name == "npz":
        np.savez(tmp_path / "d.npz", x=np.zeros((10, 3, 3), np.uint8), y=np.arange(10) % 2)
        return {"path": tmp_path / "d.npz"}
    elif name == "image_folder":
        for k in range(4):
            save_png(tmp_path / "imgs" / f"c{k % 2}" / f"{k}.png", np.zeros((3, 3, 3), np.uint8))
        return {"path": tmp_path / "imgs", "test_fraction": 0.5}
    return {"path": tmp_path}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registered_dataset_builds_a_valid_split(name: str, tmp_path: Path) -> None:
    split = load_dataset(name, **_registry_options(name, tmp_path))
    assert isinstance(split, DataSplit)
    check_split(split)
    xb, yb = next(iter(split.train.loader(4, shuffle=True)))
    assert xb.shape[0] == yb.shape[0] <= 4
