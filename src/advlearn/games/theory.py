"""The GAN game's theory as code you can run: the optimal discriminator and the value at it.

For a fixed generator with density ``p_g``, the value of the GAN game (Goodfellow et al. 2014)

.. math::

    V(G, D) = \\mathbb E_{x \\sim p_{data}}[\\log D(x)] + \\mathbb E_{x \\sim p_g}[\\log(1 - D(x))]

is maximized pointwise by (eq. 62.4 of the seed chapter; Proposition 1 of the paper)

.. math::

    D^*(x) = \\frac{p_{data}(x)}{p_{data}(x) + p_g(x)},

and at that discriminator (eq. 62.5; Theorem 1 of the paper)

.. math::

    V(G, D^*) = -\\log 4 + 2\\,\\mathrm{JSD}(p_{data} \\,\\|\\, p_g),

which is ``−log 4`` exactly when ``p_g = p_data`` (and then ``D* ≡ 1/2``).

This module checks both statements on 1-D Gaussians: :func:`fit_discriminator` trains a small
network by gradient ascent on ``V`` with fresh samples at every step, :func:`gan_value` and
:func:`jensen_shannon` integrate numerically, and :func:`check_optimal_discriminator` puts them
together. Integrals are composite Simpson sums on ``[min μ − 12 σ_max, max μ + 12 σ_max]``
(the mass outside is below ``1e-32``) with :data:`GRID_POINTS` points, done in log space so
that tails never produce ``0 · log 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from advlearn._checks import check_positive_int

__all__ = [
    "GRID_POINTS",
    "Gaussian",
    "OptimalDiscriminatorCheck",
    "check_optimal_discriminator",
    "fit_discriminator",
    "gan_value",
    "jensen_shannon",
    "optimal_discriminator",
]

GRID_POINTS = 40_001
"""Points of the Simpson grid used by :func:`gan_value` and :func:`jensen_shannon` (odd)."""

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Gaussian:
    """A 1-D normal distribution ``N(mean, std²)``.

    Args:
        mean: the mean, finite.
        std: the standard deviation, finite and > 0.

    Example:
        >>> p = Gaussian(0.0, 2.0)
        >>> round(float(p.pdf(np.array([0.0]))[0]), 6)
        0.199471
    """

    mean: float
    std: float

    def __post_init__(self) -> None:
        if (
            isinstance(self.mean, bool)
            or not isinstance(self.mean, (int, float))
            or not math.isfinite(self.mean)
        ):
            raise ValueError(f"mean must be a finite number, got {self.mean!r}")
        if (
            isinstance(self.std, bool)
            or not isinstance(self.std, (int, float))
            or not 0 < self.std < math.inf
        ):
            raise ValueError(f"std must be a finite number > 0, got {self.std!r}")
        object.__setattr__(self, "mean", float(self.mean))
        object.__setattr__(self, "std", float(self.std))

    def logpdf(self, x: FloatArray) -> FloatArray:
        """``log N(x; mean, std²)``, elementwise, in float64."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        out: FloatArray = -0.5 * z * z - math.log(self.std) - 0.5 * math.log(2 * math.pi)
        return out

    def pdf(self, x: FloatArray) -> FloatArray:
        """``N(x; mean, std²)``, elementwise, in float64."""
        out: FloatArray = np.exp(self.logpdf(x))
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws as a float32 tensor ``(n, 1)``, from ``generator`` (or the global RNG)."""
        return self.mean + self.std * torch.randn(n, 1, generator=generator)


def _check_pair(p_data: object, p_g: object) -> None:
    for name, value in (("p_data", p_data), ("p_g", p_g)):
        if not isinstance(value, Gaussian):
            raise ValueError(f"{name} must be a Gaussian(mean, std), got {type(value).__name__}")


def _log_optimal(x: FloatArray, p_data: Gaussian, p_g: Gaussian) -> tuple[FloatArray, FloatArray]:
    """``(log D*(x), log(1 − D*(x)))``, computed from log densities so tails stay finite."""
    log_ratio = p_data.logpdf(x) - p_g.logpdf(x)  # D* = σ(log p_data − log p_g)
    return -np.logaddexp(0.0, -log_ratio), -np.logaddexp(0.0, log_ratio)


def optimal_discriminator(x: FloatArray, p_data: Gaussian, p_g: Gaussian) -> FloatArray:
    """``D*(x) = p_data(x) / (p_data(x) + p_g(x))`` (eq. 62.4; Goodfellow et al. 2014, Prop. 1).

    Args:
        x: points, any shape.
        p_data: the data distribution.
        p_g: the generator's distribution.

    Returns:
        ``D*(x)`` in float64, the shape of ``x``.

    Example:
        >>> p = Gaussian(0.0, 1.0)
        >>> optimal_discriminator(np.array([-1.0, 0.0, 3.0]), p, p)
        array([0.5, 0.5, 0.5])
    """
    _check_pair(p_data, p_g)
    from scipy.special import expit

    x = np.asarray(x, dtype=np.float64)
    out: FloatArray = expit(p_data.logpdf(x) - p_g.logpdf(x))
    return out


def _grid(p_data: Gaussian, p_g: Gaussian) -> FloatArray:
    spread = 12.0 * max(p_data.std, p_g.std)
    lo, hi = min(p_data.mean, p_g.mean) - spread, max(p_data.mean, p_g.mean) + spread
    out: FloatArray = np.linspace(lo, hi, GRID_POINTS)
    return out


def _simpson(values: FloatArray, x: FloatArray) -> float:
    """Composite Simpson's rule on an odd number of equally spaced points."""
    h = float(x[1] - x[0])
    return h / 3.0 * float(values[0] + values[-1] + 4.0 * values[1:-1:2].sum() + 2.0 * values[2:-1:2].sum())


def gan_value(
    p_data: Gaussian,
    p_g: Gaussian,
    log_discriminator: Callable[[FloatArray], tuple[FloatArray, FloatArray]] | None = None,
) -> float:
    """``V(G, D) = E_{p_data}[log D] + E_{p_g}[log(1 − D)]`` by numerical integration.

    Args:
        p_data: the data distribution.
        p_g: the generator's distribution.
        log_discriminator: maps points ``x`` to ``(log D(x), log(1 − D(x)))``; ``None`` for the
            optimal ``D*`` of eq. 62.4. :func:`fit_discriminator`'s networks give logits ``a``,
            for which ``log D = −softplus(−a)`` and ``log(1 − D) = −softplus(a)``.

    Returns:
        ``V(G, D)`` in nats. For ``D = D*`` it equals ``−log 4 + 2 JSD(p_data ‖ p_g)`` (eq. 62.5).

    References:
        Goodfellow et al. Generative adversarial nets. NeurIPS 2014, eq. (1) and Theorem 1.

    Example:
        >>> p = Gaussian(0.0, 1.0)
        >>> round(gan_value(p, p), 10) == round(-math.log(4), 10)
        True
    """
    _check_pair(p_data, p_g)
    x = _grid(p_data, p_g)
    if log_discriminator is None:
        log_d, log_not_d = _log_optimal(x, p_data, p_g)
    else:
        log_d, log_not_d = (np.asarray(v, dtype=np.float64) for v in log_discriminator(x))
    return _simpson(p_data.pdf(x) * log_d + p_g.pdf(x) * log_not_d, x)


def jensen_shannon(p: Gaussian, q: Gaussian) -> float:
    """``JSD(p ‖ q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)`` with ``m = (p + q)/2``, in nats, numerically.

    Args:
        p: one distribution.
        q: the other.

    Returns:
        A value in ``[0, log 2]``: ``0`` iff ``p = q``.

    Example:
        >>> round(jensen_shannon(Gaussian(0.0, 1.0), Gaussian(0.0, 1.0)), 12)
        0.0
        >>> round(jensen_shannon(Gaussian(0.0, 1.0), Gaussian(100.0, 1.0)) / math.log(2), 6)
        1.0
    """
    _check_pair(p, q)
    x = _grid(p, q)
    log_p, log_q = p.logpdf(x), q.logpdf(x)
    log_m = np.logaddexp(log_p, log_q) - math.log(2.0)
    integrand = 0.5 * (np.exp(log_p) * (log_p - log_m) + np.exp(log_q) * (log_q - log_m))
    return max(0.0, _simpson(integrand, x))


def fit_discriminator(
    p_data: Gaussian,
    p_g: Gaussian,
    *,
    steps: int = 3000,
    batch_size: int = 1024,
    hidden: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
) -> nn.Module:
    """Train a discriminator to convergence on ``p_data`` vs ``p_g`` by ascending ``V(G, D)``.

    A ``1 → hidden → hidden → 1`` tanh network outputs the logit ``a(x)`` of ``D(x) = σ(a(x))``.
    Each Adam step draws fresh samples of both distributions, so the network maximizes the
    population value ``V`` (minimizes binary cross-entropy, real = 1), whose maximizer is ``D*``.
    The input is standardized by the pooled mean and scale inside the network. The learning
    rate decays linearly to zero, so the last steps settle instead of jittering.

    Args:
        p_data: the data distribution (label 1).
        p_g: the generator's distribution (label 0).
        steps: Adam steps.
        batch_size: samples of each distribution per step.
        hidden: width of both hidden layers.
        lr: Adam's initial learning rate.
        seed: seeds the initialization and the samples; the global RNG is left as it was.

    Returns:
        The network in eval mode, ``(B, 1) → (B, 1)`` logits, with gradients switched off.

    Raises:
        ValueError: for non-positive ``steps``, ``batch_size`` or ``hidden``, or a non-positive ``lr``.
    """
    _check_pair(p_data, p_g)
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_positive_int("hidden", hidden)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    center = 0.5 * (p_data.mean + p_g.mean)
    scale = max(p_data.std, p_g.std) + 0.5 * abs(p_data.mean - p_g.mean)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            _Standardize(center, scale),
            nn.Linear(1, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        )
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 - t / steps)
    labels = torch.cat([torch.ones(batch_size, 1), torch.zeros(batch_size, 1)])  # (2B, 1)
    with torch.enable_grad():
        for _ in range(steps):
            x = torch.cat(
                [p_data.sample(batch_size, generator), p_g.sample(batch_size, generator)]
            )  # (2B, 1)
            loss = nn.functional.binary_cross_entropy_with_logits(net(x), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval().requires_grad_(False)


class _Standardize(nn.Module):
    def __init__(self, center: float, scale: float) -> None:
        super().__init__()
        self.center, self.scale = center, scale

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.center) / self.scale


def _log_discriminator(net: nn.Module) -> Callable[[FloatArray], tuple[FloatArray, FloatArray]]:
    def log_d(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        with torch.no_grad():
            logits = net(torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1)).double().reshape(x.shape)
        softplus = nn.functional.softplus
        return (-softplus(-logits)).numpy(), (-softplus(logits)).numpy()

    return log_d


@dataclass(frozen=True)
class OptimalDiscriminatorCheck:
    """A trained discriminator compared with eq. 62.4, and the game's value compared with eq. 62.5.

    Attributes:
        x: the evaluation points, where the mixture ``(p_data + p_g)/2`` has at least
            ``density_floor`` times its peak density (``(n,)``).
        d_fitted: ``D(x)`` of the trained network.
        d_optimal: ``D*(x)`` from eq. 62.4.
        max_abs_error: ``max |D(x) − D*(x)|`` over ``x``.
        value_fitted: ``V(G, D)`` for the trained network (at most ``value_optimal``).
        value_optimal: ``V(G, D*)``, integrated numerically.
        value_from_jsd: ``−log 4 + 2 JSD(p_data ‖ p_g)``, which eq. 62.5 says equals ``value_optimal``.
        jsd: ``JSD(p_data ‖ p_g)`` in nats.
    """

    x: FloatArray
    d_fitted: FloatArray
    d_optimal: FloatArray
    max_abs_error: float
    value_fitted: float
    value_optimal: float
    value_from_jsd: float
    jsd: float


def check_optimal_discriminator(
    p_data: Gaussian,
    p_g: Gaussian,
    *,
    num_points: int = 401,
    density_floor: float = 0.01,
    steps: int = 3000,
    seed: int = 0,
) -> OptimalDiscriminatorCheck:
    """Train a discriminator with :func:`fit_discriminator` and compare it with the theory.

    Where the data is so rare that no sample lands (the far tails), no training procedure can
    pin ``D`` down, so ``D`` is compared with ``D*`` only where the mixture density is at least
    ``density_floor`` times its peak.

    Args:
        p_data: the data distribution.
        p_g: the generator's distribution.
        num_points: evaluation points.
        density_floor: the share of the mixture's peak density below which points are skipped.
        steps: training steps of the discriminator.
        seed: its seed.

    Returns:
        An :class:`OptimalDiscriminatorCheck`.

    Example:
        >>> check = check_optimal_discriminator(Gaussian(0.0, 1.0), Gaussian(2.0, 1.0), steps=300)
        >>> abs(check.value_optimal - check.value_from_jsd) < 1e-9
        True
    """
    _check_pair(p_data, p_g)
    check_positive_int("num_points", num_points, minimum=2)
    if isinstance(density_floor, bool) or not isinstance(density_floor, (int, float)):
        raise ValueError(f"density_floor must be a number in [0, 1), got {density_floor!r}")
    if not 0 <= density_floor < 1:
        raise ValueError(f"density_floor must lie in [0, 1), got {density_floor}")
    support = _grid(p_data, p_g)
    grid = np.linspace(float(support[0]), float(support[-1]), 20 * num_points)
    mixture = 0.5 * (p_data.pdf(grid) + p_g.pdf(grid))
    inside = grid[mixture >= density_floor * mixture.max()]
    x = np.linspace(inside.min(), inside.max(), num_points)
    net = fit_discriminator(p_data, p_g, steps=steps, seed=seed)
    log_d = _log_discriminator(net)
    d_fitted = np.exp(log_d(x)[0])
    d_optimal = optimal_discriminator(x, p_data, p_g)
    jsd = jensen_shannon(p_data, p_g)
    return OptimalDiscriminatorCheck(
        x=x,
        d_fitted=d_fitted,
        d_optimal=d_optimal,
        max_abs_error=float(np.abs(d_fitted - d_optimal).max()),
        value_fitted=gan_value(p_data, p_g, log_d),
        value_optimal=gan_value(p_data, p_g),
        value_from_jsd=-math.log(4.0) + 2.0 * jsd,
        jsd=jsd,
    )
