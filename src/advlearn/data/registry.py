"""Every dataset by name (:data:`DATASETS`) and :func:`load_dataset`, for configs and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from advlearn._registry import Registry, Wording
from advlearn.data.cifar import load_cifar
from advlearn.data.containers import Dataset, DataSplit, PathLike, _check_bounds, stratified_split
from advlearn.data.embedded import digits, mnist5k, mnist_m_style
from advlearn.data.files import _check_size, load_image_folder, load_mnist_idx, load_npz
from advlearn.data.synthetic import gaussian_pair, tsipras


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


def load_collection(name: str, **options: Any) -> Dataset:
    """Every example of a dataset, in the order its files give them: for ``--split all``.

    ``npz`` and ``image_folder`` without ``test_path`` are read whole from ``path`` (their
    ``test_fraction`` and ``seed`` are not used); any other dataset is its training set followed
    by its test set.

    Raises:
        ValueError: as :func:`load_dataset`.

    Example:
        >>> len(load_collection("gaussians", n_train=8, n_test=4))
        12
    """
    if name in ("npz", "image_folder") and options.get("test_path") is None:
        DATASETS.check(name, options)  # unknown or missing options, named as load_dataset names them
        if name == "npz":
            bounds = _check_bounds(options.get("bounds", (0.0, 1.0)))
            return load_npz(options["path"], num_classes=options.get("num_classes"), bounds=bounds)
        size = _check_size(options.get("size"))
        return load_image_folder(options["path"], size=size, grayscale=bool(options.get("grayscale", False)))
    split = load_dataset(name, **options)
    train, test = split.train, split.test
    return Dataset(
        torch.cat([train.x, test.x]),
        torch.cat([train.y, test.y]),
        num_classes=train.num_classes,
        name=train.name,
        class_names=train.class_names,
        bounds=train.bounds,
    )


#: Short names the command line accepts for registered datasets (``--data folder:DIR``).
DATA_ALIASES = {"folder": "image_folder"}
#: Datasets whose one required option is a path, so ``NAME:PATH`` names them on the command line.
PATH_DATASETS = ("mnist", "cifar10", "cifar100", "npz", "image_folder")


def parse_data_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``--data`` on the command line: ``mnist5k``, ``digits``, or ``NAME:PATH`` for a dataset on disk.

    ``NAME`` is ``cifar10``, ``cifar100``, ``mnist``, ``npz`` or ``folder`` (an image folder,
    :func:`~advlearn.data.load_image_folder`); any other registered name is taken as is
    (its options through ``--data-option``).

    Returns:
        ``(registry name, options)`` for :func:`load_dataset`.

    Raises:
        ValueError: for an unknown name (the known ones listed), a path given to a dataset that
            takes none, or a dataset on disk without its path.

    Example:
        >>> parse_data_spec("cifar10:/data/cifar-10-batches-py")
        ('cifar10', {'path': '/data/cifar-10-batches-py'})
        >>> parse_data_spec("folder:imgs")
        ('image_folder', {'path': 'imgs'})
    """
    name, sep, path = text.partition(":")
    name = DATA_ALIASES.get(name, name)
    forms = "mnist5k, digits, cifar10:DIR, cifar100:DIR, mnist:DIR, npz:PATH, folder:DIR"
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"--data {text!r}: unknown dataset {name!r}; use {forms} (registered: {known})")
    if sep:
        if name not in PATH_DATASETS:
            raise ValueError(f"--data {text!r}: {name} is built in and takes no path; use --data {name}")
        if not path:
            raise ValueError(f"--data {text!r}: the path after ':' is empty")
        return name, {"path": path}
    if name in PATH_DATASETS:
        shown = "folder" if name == "image_folder" else name
        raise ValueError(f"--data {text!r} needs the files' location: --data {shown}:PATH")
    return name, {}


__all__ = ["DATASETS", "DATA_ALIASES", "PATH_DATASETS", "load_collection", "load_dataset", "parse_data_spec"]
