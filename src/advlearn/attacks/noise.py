"""Noise baselines: random perturbations of the same size as an attack's.

Goodfellow et al. (2015, §5) contrast adversarial examples with noise: a model
that FGSM fools at ε = 0.25 barely notices ±ε sign noise. These baselines make
that comparison one line.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs
from advlearn.attacks._base import DERIVED, Attack, AttackResult, attack_config, evaluate, register
from advlearn.losses import get_loss
from advlearn.threat import ThreatModel, per_example


def _sign_noise(x: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
    signs = torch.randint(0, 2, x.shape, device=x.device, generator=generator).to(x.dtype) * 2 - 1
    # Projecting ε·s onto the ball spreads it evenly: ±ε per coordinate (ℓ∞),
    # ±ε/√D (ℓ2) or ±ε/D (ℓ1): a random vertex direction on the sphere.
    radius = per_example(threat.eps_for(x), x)
    return threat.project(x + threat.project_ball(radius * signs), x)


def _score(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, loss: str) -> AttackResult:
    losses, success = evaluate(model, x_adv, y, get_loss(loss), targeted=False, check=True)
    return AttackResult(x_adv=x_adv, success=success, loss=losses, num_forwards=x.shape[0])


def random_sign_noise(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Random sign noise on the sphere of radius ε: ``x ± ε`` per coordinate for ℓ∞.

    For ℓ2 and ℓ1 the ±1 pattern is scaled onto the sphere (±ε/√D, ±ε/D), then
    clipped to the box. No gradient is used; one forward pass scores it.

    References:
        Goodfellow, Shlens & Szegedy. ICLR 2015, §5 (the ±ε noise baseline).
    """
    check_inputs(x, y, threat)
    return _score(model, x, _sign_noise(x, threat, generator), y, loss)


def uniform_noise(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Noise drawn uniformly from the ε-ball (``U[−ε, ε]`` per coordinate for ℓ∞), clipped to the box.

    References:
        Goodfellow, Shlens & Szegedy. ICLR 2015, §5 (the U[−ε, ε] noise baseline).
    """
    check_inputs(x, y, threat)
    return _score(model, x, _uniform_noise(x, threat, generator), y, loss)


def _uniform_noise(x: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
    return threat.random_init(x, generator)


def _check_noise(loss: str) -> None:
    get_loss(loss)


class _Noise(Attack):
    """A noise baseline: ``sample(x, threat, generator)`` draws the point, one forward pass scores it."""

    @staticmethod
    def sample(x: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        # No forward pass: the labels are checked against the logits only by run().
        check_inputs(x, y, self.threat)
        return self.sample(x, self.threat, generator)


@register("sign_noise")
@attack_config(random_sign_noise, check=_check_noise)
class SignNoise(_Noise):
    """Config for :func:`random_sign_noise`."""

    threat: ThreatModel
    loss: str = DERIVED
    sample = staticmethod(_sign_noise)


@register("uniform_noise")
@attack_config(uniform_noise, check=_check_noise)
class UniformNoise(_Noise):
    """Config for :func:`uniform_noise`."""

    threat: ThreatModel
    loss: str = DERIVED
    sample = staticmethod(_uniform_noise)
