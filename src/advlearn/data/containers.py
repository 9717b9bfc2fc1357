"""The dataset types every loader returns, the seeded stratified split, and :func:`batches`.

- :class:`Dataset`: inputs, labels, class count and names, the input box; ``loader``, ``subset``.
- :class:`DataSplit`: a ``train`` and a ``test`` :class:`Dataset` that agree on shape and classes.
- :func:`stratified_split`: a seeded split that keeps each class's share.
- :func:`batches`: ``(x, y)`` batches from a loader, a pair of tensors or a :class:`Dataset`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from advlearn._checks import check_positive_int

PathLike = str | os.PathLike[str]


def _check_bounds(bounds: object) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return seed


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
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> DataLoader[tuple[Tensor, ...]]:
        """Batches ``(x, y)`` of this dataset, in the main process by default (``num_workers=0``).

        Args:
            batch_size: examples per batch.
            shuffle: reshuffle at every pass. The order is drawn from torch's global RNG, so
                ``torch.manual_seed`` (or a Trainer that restores the RNG state) reproduces it.
            drop_last: drop the last batch when it is smaller than ``batch_size``.
            num_workers: worker processes that assemble batches (the order is still drawn in
                this process, so it stays reproducible).
            pin_memory: page-locked batches, for ``non_blocking`` copies to a GPU.

        Returns:
            A :class:`torch.utils.data.DataLoader` over a ``TensorDataset(x, y)``.

        Raises:
            ValueError: if ``batch_size`` is not a positive integer.
        """
        check_positive_int("batch_size", batch_size)
        check_positive_int("num_workers", num_workers, minimum=0)
        return DataLoader(
            TensorDataset(self.x, self.y),
            batch_size=batch_size,
            shuffle=bool(shuffle),
            drop_last=bool(drop_last),
            num_workers=num_workers,
            pin_memory=bool(pin_memory),
            persistent_workers=num_workers > 0,
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
"""What :func:`batches` reads: a DataLoader or iterable of ``(x, y)`` batches (tuples, lists or dicts),
an ``(x, y)`` pair of tensors, or an object with ``.x`` and ``.y`` (a :class:`Dataset`)."""

#: The keys :func:`batches` reads from a dict batch by default (Hugging Face ``datasets`` style).
DEFAULT_KEYS: tuple[str, str] = ("image", "label")


def _as_pair(batch: object, keys: tuple[str, str], index: int) -> tuple[Tensor, Tensor]:
    """One batch of a loader as ``(x, y)`` tensors, or a ValueError saying what the batch was."""
    if isinstance(batch, dict):
        missing = [k for k in keys if k not in batch]
        if missing:
            raise ValueError(
                f"batch {index} is a dict with keys {sorted(map(str, batch))} but not {missing}; "
                "pass keys=(input_key, label_key), e.g. advlearn.data.batches(loader, keys=('img', 'target'))"
            )
        pair: tuple[object, ...] = (batch[keys[0]], batch[keys[1]])
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        pair = (batch[0], batch[1])  # (x, y, extra...) as many datasets yield: the rest is ignored
    else:
        raise ValueError(
            f"batch {index} is a {type(batch).__name__}; a loader must yield (x, y) tuples or lists, "
            f"or dicts holding the keys {keys} (pass keys=... to advlearn.data.batches for others)"
        )
    x, y = pair
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError(
            f"batch {index} holds a {type(x).__name__} and a {type(y).__name__}; inputs and labels must be "
            "tensors (use torchvision.transforms.ToTensor() or torch.as_tensor in the dataset)"
        )
    if y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"batch {index} has inputs of shape {tuple(x.shape)} and labels of shape {tuple(y.shape)}; "
            "labels must be (B,) class indices, one per input"
        )
    return x, y


def batches(
    data: Data, batch_size: int = 256, *, keys: tuple[str, str] = DEFAULT_KEYS
) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate ``(x, y)`` batches from a loader, an ``(x, y)`` pair, or a dataset with ``.x``/``.y``.

    A loader or other iterable may yield ``(x, y)`` tuples or lists (extra items after ``y`` are
    ignored) or dicts, read at ``keys``; each batch is checked as it comes. Tensors are cut into
    consecutive batches of ``batch_size`` (the last one may be smaller), in order.

    Args:
        data: the examples.
        batch_size: batch size when ``data`` is tensors.
        keys: ``(input key, label key)`` of dict batches.

    Raises:
        ValueError: if the inputs and labels hold different numbers of examples, or a batch is
            neither a pair nor a dict with ``keys`` (the message says what it was).

    Example:
        >>> [tuple(x.shape) for x, _ in batches((torch.zeros(5, 2), torch.zeros(5)), batch_size=2)]
        [(2, 2), (2, 2), (1, 2)]
        >>> loader = [{"image": torch.zeros(3, 2), "label": torch.zeros(3, dtype=torch.long)}]
        >>> [tuple(x.shape) for x, _ in batches(loader)]
        [(3, 2)]
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
    elif isinstance(getattr(data, "x", None), Tensor) and isinstance(getattr(data, "y", None), Tensor):
        x, y = data.x, data.y
    else:
        try:
            iterator = iter(data)
        except TypeError:
            raise ValueError(
                f"data is a {type(data).__name__}; pass a DataLoader, an (x, y) pair of tensors or a Dataset"
            ) from None
        for index, batch in enumerate(iterator):
            yield _as_pair(batch, keys, index)
        return
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"data holds {x.shape[0]} inputs but {y.shape[0]} labels")
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


__all__ = ["DEFAULT_KEYS", "Data", "DataSplit", "Dataset", "PathLike", "batches", "stratified_split"]
