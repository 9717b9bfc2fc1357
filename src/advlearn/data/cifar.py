"""CIFAR-10 / CIFAR-100 python batches, read through a restricted unpickler that never runs code.

The batches are pickles; :class:`_RestrictedUnpickler` rebuilds only the few NumPy globals
they need, and refuses any other global by name (without calling it).
"""

from __future__ import annotations

import functools
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from advlearn.data.containers import Dataset, DataSplit, PathLike


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


__all__ = ["load_cifar"]
