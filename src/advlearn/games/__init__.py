"""Minimax between networks: GANs, the gradient reversal layer and domain-adversarial training.

The same skeleton as adversarial training, ``min_θ max_φ V(θ, φ)``, with a network as each player:

- :mod:`advlearn.games.reversal`: :func:`grad_reverse` / :class:`GradientReversal`, identity
  forward and ``−λ ×`` gradient backward (Ganin et al. 2016).
- :mod:`advlearn.games.dann`: the DANN network, the λ schedule and its training loop.
- :mod:`advlearn.games.gan`: minimax, non-saturating and WGAN-GP losses, MLP and DCGAN-style
  players, alternating updates, mode coverage and Fréchet distance monitoring.
- :mod:`advlearn.games.theory`: the optimal discriminator (eq. 62.4) and the value of the game
  at it (eq. 62.5), checked numerically on 1-D Gaussians.
- The runs behind ``advlearn gan`` and ``advlearn dann`` are entry points: :mod:`advlearn.experiments.games`.
"""

from advlearn.games import dann, gan, theory
from advlearn.games.dann import DANN, dann_lambda, train_dann
from advlearn.games.gan import (
    GANConfig,
    GANMonitor,
    ModeCollapseWarning,
    discriminator_loss,
    frechet_distance,
    generator_loss,
    gradient_penalty,
    mode_coverage,
    train_gan,
)
from advlearn.games.reversal import GradientReversal, GradientReversalFunction, grad_reverse

__all__ = [
    "DANN",
    "GANConfig",
    "GANMonitor",
    "GradientReversal",
    "GradientReversalFunction",
    "ModeCollapseWarning",
    "dann",
    "dann_lambda",
    "discriminator_loss",
    "frechet_distance",
    "gan",
    "generator_loss",
    "grad_reverse",
    "gradient_penalty",
    "mode_coverage",
    "theory",
    "train_dann",
    "train_gan",
]
