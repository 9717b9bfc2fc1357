"""The players' losses: minimax, non-saturating and WGAN-GP (with its gradient penalty)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

GAN_LOSSES: tuple[str, ...] = ("minimax", "nonsaturating", "wgan-gp")
"""The generator/discriminator losses :func:`train_gan` knows."""


def _check_loss(loss: object) -> str:
    if loss not in GAN_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(GAN_LOSSES)}, got {loss!r}")
    return str(loss)


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
        >>> import math
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


__all__ = ["GAN_LOSSES", "discriminator_loss", "generator_loss", "gradient_penalty"]
