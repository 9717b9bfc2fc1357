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

The package: :mod:`~advlearn.games.gan.losses`, :mod:`~advlearn.games.gan.networks`,
:mod:`~advlearn.games.gan.metrics` (monitoring) and :mod:`~advlearn.games.gan.training`.
"""

from advlearn.games.gan.losses import GAN_LOSSES, discriminator_loss, generator_loss, gradient_penalty
from advlearn.games.gan.metrics import (
    GANMonitor,
    ModeCollapseWarning,
    ModeCoverage,
    frechet_distance,
    mode_coverage,
)
from advlearn.games.gan.networks import (
    GAN_ARCHS,
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    build_gan,
    gan_discriminator,
    gan_generator,
)
from advlearn.games.gan.training import GANConfig, GANResult, config_dict, train_gan

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
    "config_dict",
    "discriminator_loss",
    "frechet_distance",
    "gan_discriminator",
    "gan_generator",
    "generator_loss",
    "gradient_penalty",
    "mode_coverage",
    "train_gan",
]
