"""Local files in the usual formats: MNIST IDX, image folders and ``.npz`` archives.

- :func:`load_mnist_idx`: MNIST, Fashion-MNIST or KMNIST IDX files, raw or ``.gz``.
- :func:`load_image_folder`: one sub-folder of images per class.
- :func:`load_npz`: an ``.npz`` archive holding arrays ``x`` and ``y``.

CIFAR's python batches, which need a restricted unpickler, are in :mod:`advlearn.data.cifar`.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from advlearn._checks import check_positive_int
from advlearn.data.containers import Dataset, DataSplit, PathLike, _check_bounds

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


__all__ = ["load_image_folder", "load_mnist_idx", "load_npz"]
