"""Generative adversarial networks: the generator/discriminator game with networks as both players.

The game (Goodfellow et al. 2014, eq. 1; eq. 62.3 of the seed chapter)

.. math::

    \\min_G \\max_D \\; V(G, D) = \\mathbb E_{x \\sim p_{data}}[\\log D(x)]
        + \\mathbb E_{z \\sim p_z}[\\log(1 - D(G(z)))]

is played by alternating gradient steps: ``d_steps`` discriminator steps, then one generator
step. Three losses are provided (:data:`GAN_LOSSES`):

- ``"minimax"``: the generator minimizes ``E log(1 − D(G(z)))``, the game as written. Its
  gradient vanishes when ``D`` rejects the samples confidently, early in training.
- ``"nonsaturating"``: the generator minimizes ``−E log D(G(z))`` instead (the paper's
  Section 3 fix): same fixed point, strong gradients early.
- ``"wgan-gp"``: the critic maximizes ``E D(x) − E D(G(z))`` (the Kantorovich-Rubinstein dual
  of the Wasserstein-1 distance) with the gradient penalty ``λ E(‖∇D(x̂)‖₂ − 1)²`` on random
  interpolates ``x̂`` (Gulrajani et al. 2017, Algorithm 1); the generator minimizes ``−E D(G(z))``.

Monitoring (:class:`GANMonitor`): a classifier trained on the real data labels generated
samples; the histogram of its labels gives the **mode coverage** (how many classes the
generator produces) and its penultimate-layer features give a **Fréchet distance** between
real and generated samples (the FID recipe of Heusel et al. 2017, in a small classifier's
feature space instead of Inception's). :func:`train_gan` warns with
:class:`ModeCollapseWarning` when too few classes are covered.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn import functional as F

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn.data import Dataset

__all__ = [
    "GAN_ARCHS",
    "GAN_LOSSES",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GANConfig",
    "GANMonitor",
    "GANResult",
    "MLPDiscriminator",
    "MLPGenerator",
    "ModeCollapseWarning",
    "ModeCoverage",
    "build_gan",
    "discriminator_loss",
    "frechet_distance",
    "generator_loss",
    "gradient_penalty",
    "mode_coverage",
    "train_gan",
]

logger = logging.getLogger(__name__)

GAN_LOSSES: tuple[str, ...] = ("minimax", "nonsaturating", "wgan-gp")
"""The generator/discriminator losses :func:`train_gan` knows."""
GAN_ARCHS: tuple[str, ...] = ("mlp", "dcgan")
"""The generator/discriminator architectures :func:`build_gan` knows."""


class ModeCollapseWarning(UserWarning):
    """The generator covers too few of the real data's classes: it has (partly) collapsed."""


def _check_loss(loss: object) -> str:
    if loss not in GAN_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(GAN_LOSSES)}, got {loss!r}")
    return str(loss)


# ----------------------------------------------------------------------------- losses


def discriminator_loss(real_scores: Tensor, fake_scores: Tensor, loss: str) -> Tensor:
    """The discriminator's (critic's) loss, to be *minimized*, without the gradient penalty.

    ``scores`` are the discriminator's raw outputs: logits ``a`` with ``D = σ(a)`` for the
    minimax and non-saturating games, critic values for WGAN-GP.

    .. math::

        \\text{minimax, nonsaturating:}\\quad -\\mathbb E \\log D(x) - \\mathbb E \\log(1 - D(G(z)))
            = \\mathbb E\\,\\mathrm{softplus}(-a_{real}) + \\mathbb E\\,\\mathrm{softplus}(a_{fake})

        \\text{wgan-gp:}\\quad \\mathbb E\\, D(G(z)) - \\mathbb E\\, D(x)

    Args:
        real_scores: outputs on real data, ``(B,)``.
        fake_scores: outputs on generated data, ``(B',)``.
        loss: one of :data:`GAN_LOSSES`.

    Returns:
        A scalar tensor, ``−V(G, D)`` for the first two (so its minimum is ``log 4`` at ``D ≡ ½``).

    References:
        Goodfellow et al. 2014, eq. (1); Arjovsky et al. 2017, eq. (3); Gulrajani et al. 2017, eq. (3).

    Example:
        >>> zero = torch.zeros(4)
        >>> round(discriminator_loss(zero, zero, "minimax").item(), 6) == round(math.log(4), 6)
        True
    """
    if _check_loss(loss) == "wgan-gp":
        return fake_scores.mean() - real_scores.mean()
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()


def generator_loss(fake_scores: Tensor, loss: str) -> Tensor:
    """The generator's loss, to be *minimized*.

    .. math::

        \\text{minimax:}\\ \\mathbb E \\log(1 - D(G(z))) = -\\mathbb E\\,\\mathrm{softplus}(a), \\quad
        \\text{nonsaturating:}\\ -\\mathbb E \\log D(G(z)) = \\mathbb E\\,\\mathrm{softplus}(-a), \\quad
        \\text{wgan-gp:}\\ -\\mathbb E\\, D(G(z)).

    Args:
        fake_scores: the discriminator's outputs on generated data, ``(B,)``.
        loss: one of :data:`GAN_LOSSES`.

    Returns:
        A scalar tensor.

    References:
        Goodfellow et al. 2014, eq. (1) and Section 3 (the non-saturating loss); Gulrajani et al. 2017.

    Example:
        >>> a = torch.tensor([-8.0])
        >>> generator_loss(a, "nonsaturating").item() > 7.9  # strong signal while D rejects G(z)
        True
        >>> abs(generator_loss(a, "minimax").item()) < 1e-3  # the minimax loss has flattened out
        True
    """
    loss = _check_loss(loss)
    if loss == "wgan-gp":
        return -fake_scores.mean()
    if loss == "minimax":
        return -F.softplus(fake_scores).mean()
    return F.softplus(-fake_scores).mean()


def gradient_penalty(
    critic: nn.Module, real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP's penalty ``E_x̂ (‖∇_x̂ D(x̂)‖₂ − 1)²`` on ``x̂ = u x + (1 − u) x̃``, ``u ~ U[0, 1]``.

    The graph is kept (``create_graph=True``) so the penalty can be differentiated with
    respect to the critic's parameters. ``fake`` should be detached from the generator.

    Args:
        critic: maps a batch to scores ``(B,)``.
        real: real examples ``(B, ...)``.
        fake: generated examples of the same shape.
        generator: the RNG for ``u`` (the global one by default).

    Returns:
        A scalar tensor.

    References:
        Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. Improved training of Wasserstein GANs.
        NeurIPS 2017, eq. (3) and Algorithm 1.

    Example:
        >>> critic = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = critic[1].weight.fill_(0.5)  # ‖∇D‖₂ = ‖w‖₂ = 1 everywhere: no penalty
        >>> float(gradient_penalty(critic, torch.rand(3, 4), torch.rand(3, 4)).detach())
        0.0
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    u = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, device=real.device)
    x_hat = (u * real + (1 - u) * fake.detach()).requires_grad_(True)  # (B, ...)
    with torch.enable_grad():
        scores = critic(x_hat)
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- networks


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {image_shape!r}")
    return shape[0], shape[1], shape[2]


class MLPGenerator(nn.Module):
    """``z ↦`` image: ``latent → hidden… → C·H·W``, ReLU inside, a sigmoid onto ``[0, 1]``.

    Args:
        latent_dim: size of ``z``.
        image_shape: ``(C, H, W)`` of the images.
        hidden: widths of the hidden layers.
    """

    def __init__(
        self, latent_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.image_shape = _check_image_shape(image_shape)
        layers: list[nn.Module] = []
        width = latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.image_shape)  # type: ignore[no-any-return] # (B, C, H, W)


class MLPDiscriminator(nn.Module):
    """Image ``↦`` score: ``C·H·W → hidden… → 1`` with LeakyReLU(0.2), no normalization.

    Args:
        image_shape: ``(C, H, W)`` of the images.
        hidden: widths of the hidden layers.
    """

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.image_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)  # type: ignore[no-any-return] # (B,)


class DCGANGenerator(nn.Module):
    """DCGAN-style generator (Radford et al. 2016): a linear map to ``(2w, H/4, W/4)``, then two
    stride-2 transposed convolutions with BatchNorm and ReLU, and a sigmoid onto ``[0, 1]``.

    Args:
        latent_dim: size of ``z``.
        image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4 (28×28 and 8×8 both are).
        width: channels of the last hidden layer (the first has ``2 · width``).
    """

    def __init__(self, latent_dim: int, image_shape: Sequence[int], width: int = 64) -> None:
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        channels, height, wide = self.image_shape = _check_image_shape(image_shape)
        if height % 4 or wide % 4:
            raise ValueError(f"DCGAN needs image sides divisible by 4, got {height}×{wide}; use arch='mlp'")
        self.base = (2 * width, height // 4, wide // 4)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, math.prod(self.base)), nn.BatchNorm1d(math.prod(self.base)), nn.ReLU()
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(-1, *self.base))  # type: ignore[no-any-return] # (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    """DCGAN-style discriminator: two stride-2 convolutions with LeakyReLU(0.2), then a linear score.

    No batch normalization, so every score depends on its own input only, which the gradient
    penalty of WGAN-GP requires (Gulrajani et al. 2017, Section 4).

    Args:
        image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
        width: channels of the first convolution (the second has ``2 · width``).
    """

    def __init__(self, image_shape: Sequence[int], width: int = 64) -> None:
        super().__init__()
        channels, height, wide = self.image_shape = _check_image_shape(image_shape)
        if height % 4 or wide % 4:
            raise ValueError(f"DCGAN needs image sides divisible by 4, got {height}×{wide}; use arch='mlp'")
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * (height // 4) * (wide // 4), 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)  # type: ignore[no-any-return] # (B,)


def build_gan(arch: str, image_shape: Sequence[int], latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """A generator and a discriminator of architecture ``arch`` (one of :data:`GAN_ARCHS`).

    Example:
        >>> g, d = build_gan("dcgan", (1, 8, 8), latent_dim=16)
        >>> g.eval()(torch.randn(2, 16)).shape, d(torch.rand(2, 1, 8, 8)).shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2]))
    """
    if arch == "mlp":
        return MLPGenerator(latent_dim, image_shape), MLPDiscriminator(image_shape)
    if arch == "dcgan":
        return DCGANGenerator(latent_dim, image_shape), DCGANDiscriminator(image_shape)
    raise ValueError(f"arch must be one of {', '.join(GAN_ARCHS)}, got {arch!r}")


# ----------------------------------------------------------------------------- monitoring


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


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class GANConfig:
    """Everything :func:`train_gan` needs besides the data.

    Args:
        loss: one of :data:`GAN_LOSSES`.
        arch: one of :data:`GAN_ARCHS`.
        steps: generator steps.
        d_steps: discriminator steps per generator step (``None``: 5 for ``wgan-gp``, else 1).
        batch_size: real and generated examples per step.
        latent_dim: size of ``z ~ N(0, I)``.
        lr: Adam's learning rate for both players (``None``: 2e-4, or 1e-4 for ``wgan-gp``).
        betas: Adam's betas (``None``: (0.5, 0.999), or (0.5, 0.9) for ``wgan-gp``).
        gp_weight: ``λ`` of the gradient penalty (``wgan-gp`` only).
        eval_every: generator steps between two evaluations (coverage, Fréchet distance,
            sample grid); the last step is always evaluated.
        eval_samples: samples drawn for each evaluation.
        log_every: generator steps between two records of the curves.
        min_share: see :func:`mode_coverage`.
        collapse_classes: warn (:class:`ModeCollapseWarning`) when fewer classes than this are
            covered at the end (``None``: 70% of the classes, rounded up).
        seed: seeds the networks, ``z`` and the batches.
    """

    loss: str = "nonsaturating"
    arch: str = "mlp"
    steps: int = 2000
    d_steps: int | None = None
    batch_size: int = 64
    latent_dim: int = 32
    lr: float | None = None
    betas: tuple[float, float] | None = None
    gp_weight: float = 10.0
    eval_every: int = 500
    eval_samples: int = 1000
    log_every: int = 10
    min_share: float = 0.2
    collapse_classes: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        wgan = _check_loss(self.loss) == "wgan-gp"
        if self.arch not in GAN_ARCHS:
            raise ValueError(f"arch must be one of {', '.join(GAN_ARCHS)}, got {self.arch!r}")
        for name in ("steps", "batch_size", "latent_dim", "eval_every", "log_every"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("eval_samples", self.eval_samples, minimum=2)
        if self.d_steps is None:
            object.__setattr__(self, "d_steps", 5 if wgan else 1)
        check_positive_int("d_steps", self.d_steps)
        if self.lr is None:
            object.__setattr__(self, "lr", 1e-4 if wgan else 2e-4)
        lr = check_nonnegative("lr", self.lr)
        if lr == 0:
            raise ValueError("lr must be > 0")
        if self.betas is None:
            object.__setattr__(self, "betas", (0.5, 0.9) if wgan else (0.5, 0.999))
        betas = tuple(self.betas)  # type: ignore[arg-type]
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        check_nonnegative("gp_weight", self.gp_weight)
        check_nonnegative("min_share", self.min_share)
        if self.collapse_classes is not None:
            check_positive_int("collapse_classes", self.collapse_classes)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class GANResult:
    """What :func:`train_gan` returns.

    Attributes:
        config: the resolved configuration.
        generator: the trained generator, in eval mode.
        discriminator: the trained discriminator (critic), in eval mode.
        history: one record every ``log_every`` steps: ``step``, ``d_loss``, ``g_loss``,
            ``d_real`` and ``d_fake`` (mean ``D(x)`` and ``D(G(z))``: probabilities σ(a) for
            the minimax and non-saturating games, raw critic values for WGAN-GP).
        evaluations: one record per evaluation: ``step``, ``covered``, ``frechet``, ``counts``.
        samples: ``(step, images)`` of a fixed grid of ``z`` at every evaluation.
        coverage: the final :class:`ModeCoverage`.
        frechet: the final Fréchet distance.
        seconds: wall time of the training loop (evaluations included).
    """

    config: GANConfig
    generator: nn.Module
    discriminator: nn.Module
    history: list[dict[str, float]]
    evaluations: list[dict[str, Any]]
    samples: list[tuple[int, Tensor]] = field(repr=False)
    coverage: ModeCoverage
    frechet: float
    seconds: float


def _sample(generator: nn.Module, z: Tensor) -> Tensor:
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        out = torch.cat([generator(chunk) for chunk in z.split(512)])
    generator.train(was_training)
    return out


def train_gan(
    config: GANConfig,
    data: Dataset,
    *,
    monitor: GANMonitor | None = None,
    quiet: bool = False,
    callback: Callable[[int, Tensor], None] | None = None,
) -> GANResult:
    """Play the GAN game on ``data`` by alternating Adam steps: ``d_steps`` for D, then one for G.

    Per generator step (Goodfellow et al. 2014, Algorithm 1; Gulrajani et al. 2017, Algorithm 1):

    1. ``d_steps`` times: draw real ``x`` and ``z ~ N(0, I)``, and step D on
       :func:`discriminator_loss` (``+ gp_weight ·`` :func:`gradient_penalty` for ``wgan-gp``);
    2. draw ``z`` and step G on :func:`generator_loss`.

    Args:
        config: the :class:`GANConfig`.
        data: real images ``(N, C, H, W)`` in ``[0, 1]`` (labels are not used by the game).
        monitor: a :class:`GANMonitor` for mode coverage and Fréchet distance; without one,
            evaluations record ``covered = -1`` and ``frechet = nan``.
        quiet: no progress bar.
        callback: called as ``callback(step, grid_samples)`` after every evaluation (the CLI
            saves the grid as a PNG).

    Returns:
        A :class:`GANResult`.

    Warns:
        ModeCollapseWarning: when the final samples cover fewer than ``collapse_classes`` classes.
    """
    if not isinstance(config, GANConfig):
        raise ValueError(f"config must be a GANConfig, got {type(config).__name__}")
    if not isinstance(data, Dataset) or len(data.input_shape) != 3:
        raise ValueError("data must be a Dataset of images (N, C, H, W)")
    if len(data) < 2:
        raise ValueError("data must hold at least 2 images")
    from tqdm.auto import tqdm

    # Resolved by GANConfig.__post_init__.
    assert config.d_steps is not None
    assert config.lr is not None
    assert config.betas is not None
    wgan = config.loss == "wgan-gp"
    k = data.num_classes
    collapse = config.collapse_classes if config.collapse_classes is not None else math.ceil(0.7 * k)
    rng = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        gen, disc = build_gan(config.arch, data.input_shape, config.latent_dim)
    gen.train()
    disc.train()
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    z_grid = torch.randn(100, config.latent_dim, generator=rng)
    z_eval = torch.randn(config.eval_samples, config.latent_dim, generator=rng)
    x_all = data.x
    history: list[dict[str, float]] = []
    evaluations: list[dict[str, Any]] = []
    grids: list[tuple[int, Tensor]] = []
    coverage = ModeCoverage(tuple([0] * k), -1, k, config.min_share)
    frechet = math.nan

    def evaluate(step: int) -> None:
        nonlocal coverage, frechet
        grid = _sample(gen, z_grid)
        grids.append((step, grid))
        if monitor is not None:
            samples = _sample(gen, z_eval)
            coverage = monitor.coverage(samples, min_share=config.min_share)
            frechet = monitor.distance(samples)
        evaluations.append(
            {"step": step, "covered": coverage.covered, "frechet": frechet, "counts": list(coverage.counts)}
        )
        logger.info(
            "step %d: %d/%d classes covered, Fréchet distance %.3g", step, coverage.covered, k, frechet
        )
        if callback is not None:
            callback(step, grid)

    start = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc=f"GAN ({config.loss})", disable=quiet, leave=False)
    with torch.enable_grad():
        for step in bar:
            for _ in range(config.d_steps):
                real = x_all[torch.randint(0, len(x_all), (config.batch_size,), generator=rng)]
                z = torch.randn(config.batch_size, config.latent_dim, generator=rng)
                with torch.no_grad():
                    fake = gen(z)
                real_scores, fake_scores = disc(real), disc(fake)
                d_loss = discriminator_loss(real_scores, fake_scores, config.loss)
                if wgan and config.gp_weight > 0:
                    d_loss = d_loss + config.gp_weight * gradient_penalty(disc, real, fake, generator=rng)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            z = torch.randn(config.batch_size, config.latent_dim, generator=rng)
            g_loss = generator_loss(disc(gen(z)), config.loss)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            if step % config.log_every == 0 or step == config.steps:
                real_d = real_scores.detach() if wgan else torch.sigmoid(real_scores.detach())
                fake_d = fake_scores.detach() if wgan else torch.sigmoid(fake_scores.detach())
                record = {
                    "step": float(step),
                    "d_loss": float(d_loss.detach()),
                    "g_loss": float(g_loss.detach()),
                    "d_real": float(real_d.mean()),
                    "d_fake": float(fake_d.mean()),
                }
                history.append(record)
                bar.set_postfix(d=f"{record['d_real']:.2f}/{record['d_fake']:.2f}", refresh=False)
            if step % config.eval_every == 0 or step == config.steps:
                evaluate(step)
    bar.close()
    gen.eval()
    disc.eval()
    if monitor is not None and coverage.covered < collapse:
        warnings.warn(
            f"mode collapse: the generator's samples cover {coverage.covered} of {k} classes (a class "
            f"counts when it gets at least {config.min_share:g} of its fair share); try more steps, "
            "the non-saturating or WGAN-GP loss, or a lower learning rate",
            ModeCollapseWarning,
            stacklevel=2,
        )
    return GANResult(
        config=config,
        generator=gen,
        discriminator=disc,
        history=history,
        evaluations=evaluations,
        samples=grids,
        coverage=coverage,
        frechet=frechet,
        seconds=time.perf_counter() - start,
    )


def config_dict(config: GANConfig) -> dict[str, Any]:
    """The resolved config as plain values (``None`` entries dropped), for TOML and JSON."""
    return {
        key: (list(value) if isinstance(value, tuple) else value)
        for key, value in asdict(config).items()
        if value is not None
    }
