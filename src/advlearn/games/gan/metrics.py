"""Watching the game: Fréchet distance, mode coverage, and the classifier that measures both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn import functional as F

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn.data import Dataset
from advlearn.games.gan.networks import _check_image_shape


class ModeCollapseWarning(UserWarning):
    """The generator covers too few of the real data's classes: it has (partly) collapsed."""


def frechet_distance(features_a: Tensor | NDArray[Any], features_b: Tensor | NDArray[Any]) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (the FID formula).

    .. math::

        d^2 = \\lVert \\mu_a - \\mu_b \\rVert_2^2
            + \\operatorname{tr}\\big(\\Sigma_a + \\Sigma_b - 2 (\\Sigma_a \\Sigma_b)^{1/2}\\big)

    ``tr (Σ_a Σ_b)^{1/2}`` is computed as the sum of the square roots of the eigenvalues of the
    symmetric matrix ``Σ_a^{1/2} Σ_b Σ_a^{1/2}`` (same spectrum as ``Σ_a Σ_b``), in float64.

    Args:
        features_a: ``(N, D)``, ``N >= 2``.
        features_b: ``(M, D)``, ``M >= 2``.

    Returns:
        ``d²`` (≥ 0; what FID reports).

    References:
        Dowson, Landau. The Fréchet distance between multivariate normal distributions. J.
        Multivariate Anal. 1982. Heusel et al. GANs trained by a two time-scale update rule
        converge to a local Nash equilibrium. NeurIPS 2017 (FID), eq. (6).

    Example:
        >>> a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
        >>> round(frechet_distance(a, a + 3.0), 9)  # a shift by (3, 3): ‖Δμ‖² = 18
        18.0
    """
    arrays = []
    for name, feats in (("features_a", features_a), ("features_b", features_b)):
        array = (
            feats.detach().cpu().double().numpy()
            if isinstance(feats, Tensor)
            else np.asarray(feats, np.float64)
        )
        if array.ndim != 2 or array.shape[0] < 2:
            raise ValueError(f"{name} must have shape (N, D) with N >= 2, got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or Inf")
        arrays.append(array)
    a, b = arrays
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a has {a.shape[1]} features but features_b has {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = (
        np.cov(a, rowvar=False).reshape(a.shape[1], -1),
        np.cov(b, rowvar=False).reshape(b.shape[1], -1),
    )
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (middle + middle.T)), 0.0, None)).sum()
    d2 = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)
    return max(d2, 0.0)


@dataclass(frozen=True)
class ModeCoverage:
    """Which classes a set of generated samples falls into, by a classifier's labels.

    Attributes:
        counts: samples per class.
        covered: classes holding at least ``min_share`` of their fair share ``n / K``.
        num_classes: ``K``.
        min_share: the fraction of ``n / K`` a class needs to count as covered.
    """

    counts: tuple[int, ...]
    covered: int
    num_classes: int
    min_share: float

    @property
    def fractions(self) -> tuple[float, ...]:
        """The share of the samples in each class."""
        total = max(1, sum(self.counts))
        return tuple(c / total for c in self.counts)


def mode_coverage(labels: Tensor, num_classes: int, *, min_share: float = 0.2) -> ModeCoverage:
    """The class histogram of ``labels`` and how many classes it covers.

    A class is covered when it holds at least ``min_share · n / K`` of the ``n`` samples, so a
    handful of stray samples does not hide a collapse.

    Args:
        labels: predicted classes of generated samples, ``(n,)`` integers in ``[0, K)``.
        num_classes: ``K``.
        min_share: in ``[0, 1]``; ``0`` counts every class with one sample or more.

    Returns:
        A :class:`ModeCoverage`.

    Example:
        >>> labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 3])  # a fair share is 8 / 4 = 2 samples
        >>> mode_coverage(labels, 4, min_share=1.0).covered, mode_coverage(labels, 4, min_share=0.5).covered
        (2, 4)
    """
    check_positive_int("num_classes", num_classes)
    share = check_nonnegative("min_share", min_share)
    if share > 1:
        raise ValueError(f"min_share must lie in [0, 1], got {min_share}")
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(
            f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    counts = torch.bincount(labels.cpu(), minlength=num_classes).tolist()
    need = share * labels.numel() / num_classes
    covered = sum(1 for c in counts if c > 0 and c >= need)
    return ModeCoverage(tuple(counts), covered, num_classes, share)


class _MonitorNet(nn.Module):
    """A small CNN: two conv-ReLU-pool blocks, a 128-unit feature layer, a linear classifier."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), 128),
            nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))  # type: ignore[no-any-return] # (B, K)


class GANMonitor:
    """Judge generated images with a classifier trained on the real data.

    Trains a small CNN on ``train`` (cross-entropy, Adam) and keeps the real test images'
    features; then :meth:`coverage` labels samples and :meth:`distance` measures the Fréchet
    distance between samples and the real test images in the 128-d penultimate layer.

    Args:
        train: the real training images (``(N, C, H, W)``, sides divisible by 4).
        test: real held-out images: the classifier's accuracy and the reference features.
        epochs: classifier training epochs.
        seed: seed of its initialization and batch order (the global RNG is left as it was).

    Attributes:
        accuracy: the classifier's accuracy on ``test``.
        num_classes: the number of classes.
    """

    def __init__(self, train: Dataset, test: Dataset, *, epochs: int = 8, seed: int = 0) -> None:
        check_positive_int("epochs", epochs)
        shape = _check_image_shape(train.input_shape)
        if shape[1] % 4 or shape[2] % 4:
            raise ValueError(f"GANMonitor needs image sides divisible by 4, got {shape[1]}×{shape[2]}")
        self.num_classes = train.num_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _MonitorNet(shape, train.num_classes)
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
            with torch.enable_grad():
                for _ in range(epochs):
                    for x, y in train.loader(batch_size=64, shuffle=True):
                        loss = F.cross_entropy(net(x), y)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
        self.net = net.eval().requires_grad_(False)
        with torch.no_grad():
            self.accuracy = float((self.predict(test.x) == test.y).float().mean())
            self.real_features = self.features(test.x)

    def features(self, x: Tensor) -> Tensor:
        """The 128-d penultimate-layer features, ``(N, 128)``."""
        with torch.no_grad():
            return torch.cat([self.net.body(chunk) for chunk in x.split(512)])

    def predict(self, x: Tensor) -> Tensor:
        """Predicted classes ``(N,)``."""
        with torch.no_grad():
            return torch.cat([self.net(chunk).argmax(1) for chunk in x.split(512)])

    def coverage(self, samples: Tensor, *, min_share: float = 0.2) -> ModeCoverage:
        """:func:`mode_coverage` of the classifier's labels for ``samples``."""
        return mode_coverage(self.predict(samples), self.num_classes, min_share=min_share)

    def distance(self, samples: Tensor) -> float:
        """:func:`frechet_distance` between the real test images and ``samples`` in feature space."""
        return frechet_distance(self.real_features, self.features(samples))


__all__ = ["GANMonitor", "ModeCollapseWarning", "ModeCoverage", "frechet_distance", "mode_coverage"]
