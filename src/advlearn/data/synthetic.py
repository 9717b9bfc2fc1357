"""Synthetic setups with known answers: two Gaussians, and the robust/non-robust feature model.

- :func:`gaussian_pair`: two Gaussian classes in 2-D with a shared covariance.
- :func:`tsipras`: the robust/non-robust feature model of Tsipras et al. (2019).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from advlearn._checks import check_positive_int
from advlearn.data.containers import Dataset, DataSplit, _check_seed

# Synthetic vectors get the box [-h, h] with h = (largest |mean| rounded up) + 20: every coordinate
# has unit variance, so a sample leaves it with probability below 1e-88 per coordinate.
_SYNTHETIC_MARGIN = 20.0


def _synthetic_bounds(largest_mean: float) -> tuple[float, float]:
    half = math.ceil(largest_mean) + _SYNTHETIC_MARGIN
    return -half, half


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


__all__ = ["gaussian_pair", "tsipras"]
