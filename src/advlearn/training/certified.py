"""Training objectives for certification: Gaussian noise augmentation and IBP training.

They train the models :mod:`advlearn.certify` certifies; training stands on
certify's bound functions (never the other way round). Both are registered in
:data:`advlearn.training.OBJECTIVES` (``"gaussian_noise"`` and ``"ibp"``), so
``advlearn train`` configs can name them::

    [[train]]
    label = "noise-0.25"
    objective = { name = "gaussian_noise", sigma = 0.25 }

    [[train]]
    label = "ibp"
    objective = { name = "ibp", kappa = 0.5, warmup_epochs = 2, ramp_epochs = 10 }
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_positive_int
from advlearn.certify.ibp import ibp_margin_bounds
from advlearn.threat import ThreatModel
from advlearn.training.objectives import Objective, register_objective


@register_objective("gaussian_noise")
@dataclass(frozen=True)
class GaussianAugment(Objective):
    """Train the base classifier of randomized smoothing on Gaussian-noised inputs.

    .. math::

        \\min_\\theta \\; \\mathbb{E}_{(x, y)}\\, \\mathbb{E}_{\\eta \\sim N(0, \\sigma^2 I)}
        \\big[ L(\\theta, x + \\eta, y) \\big],

    one noise draw per example per step. A classifier trained this way is
    accurate under the noise that :class:`advlearn.certify.Smooth` adds, which is
    what makes its smoothed version certifiable (Cohen et al. 2019, §3.3). The
    noisy inputs are not clipped to the input box, matching the smoothed classifier.

    Args:
        sigma: the noise level; train at the σ you will certify with.

    References:
        Cohen, Rosenfeld, Kolter. Certified adversarial robustness via randomized smoothing. ICML 2019.
        Lecuyer et al. Certified robustness to adversarial examples with differential privacy. S&P 2019.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 3)
        >>> loss = GaussianAugment(sigma=0.25)(model, torch.rand(8, 4), torch.randint(0, 3, (8,)))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """

    sigma: float = 0.25

    def __post_init__(self) -> None:
        if (
            isinstance(self.sigma, bool)
            or not isinstance(self.sigma, (int, float))
            or not (0 <= self.sigma < math.inf)
        ):
            raise ValueError(f"sigma must be a finite noise level >= 0, e.g. 0.25, got {self.sigma!r}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        noisy = x + self.sigma * torch.randn_like(x)
        return F.cross_entropy(model(noisy), y)


def ibp_loss(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, kappa: float = 0.5) -> Tensor:
    """Gowal et al.'s mixed loss ``κ·L(z(x), y) + (1 − κ)·L(ẑ(x, ε), y)``.

    ``ẑ`` are the worst-case logits IBP allows: ``ẑ_y = 0`` and ``ẑ_j`` the upper bound
    of ``z_j − z_y`` over the box (eq. 11 with the specification elided into the
    last layer), so the verified cross-entropy upper-bounds the cross-entropy of
    every input in the box.

    Args:
        model: a network :func:`advlearn.certify.ibp_bounds` can pass.
        x, y: the batch.
        threat: the ε (ramped by :class:`IBPTraining`) and the box.
        kappa: the weight of the nominal loss, in [0, 1].

    References:
        Gowal et al. 2018, eq. 12.
    """
    terms: list[Tensor] = []
    if kappa > 0:
        terms.append(kappa * F.cross_entropy(model(x), y))
    if kappa < 1:
        worst = -ibp_margin_bounds(model, x, y, threat)  # (B, C): upper bounds on z_j − z_y, 0 at y
        terms.append((1 - kappa) * F.cross_entropy(worst, y))
    return torch.stack(terms).sum()


@register_objective("ibp")
@dataclass(frozen=True)
class IBPTraining(Objective):
    """Interval bound propagation training (Gowal et al. 2018) with its ε ramp and κ schedule.

    Each step minimizes :func:`ibp_loss` at the current ``(ε, κ)``. For the first
    ``warmup_epochs`` epochs training is nominal (ε = 0, κ = 1); then over
    ``ramp_epochs`` epochs ε grows linearly to the threat model's ε and κ falls
    linearly from 1 to ``kappa``; after that both stay put. Gowal et al. ramp per
    step; here the ramp advances per epoch (at the end of epoch ``k`` of the
    ramp, ε = k/ramp_epochs · ε). Train at a somewhat larger ε than you test
    (Gowal et al. use 1.1×ε_test on MNIST) by setting the threat model's ε.
    The model must be one :func:`advlearn.certify.ibp_bounds` can pass in training
    mode: BatchNorm (batch statistics) and Dropout are refused there, so use
    ``mlp``, ``small_cnn``, ``logreg`` or ``maxout`` without dropout.

    Args:
        threat: the ε-ball to verify (ℓ2/ℓ1 are bounded through their ℓ∞ box).
        kappa: the final weight of the nominal loss (Gowal et al.: 0.5).
        warmup_epochs: nominal epochs before the ramp starts.
        ramp_epochs: epochs over which ε and κ move to their final values (0: at once).

    Example:
        >>> obj = IBPTraining(ThreatModel("linf", 0.4), kappa=0.5, warmup_epochs=1, ramp_epochs=2)
        >>> [(round(float(o.threat.eps), 3), o.kappa) for o in (obj.at_epoch(e, 5) for e in range(4))]
        [(0.0, 1.0), (0.2, 0.75), (0.4, 0.5), (0.4, 0.5)]

    References:
        Gowal et al. On the effectiveness of interval bound propagation for
        training verifiably robust models. arXiv:1810.12715, 2018, §4 and eq. 12.
    """

    threat: ThreatModel
    kappa: float = 0.5
    warmup_epochs: int = 0
    ramp_epochs: int = 0

    def __post_init__(self) -> None:
        if (
            isinstance(self.kappa, bool)
            or not isinstance(self.kappa, (int, float))
            or not (0.0 <= self.kappa <= 1.0)
        ):
            raise ValueError(f"kappa must be a weight in [0, 1] (Gowal et al. use 0.5), got {self.kappa!r}")
        check_positive_int("warmup_epochs", self.warmup_epochs, minimum=0)
        check_positive_int("ramp_epochs", self.ramp_epochs, minimum=0)
        if isinstance(self.threat.eps, Tensor):
            raise ValueError("IBPTraining needs threat.eps as one float, not a per-example tensor")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return ibp_loss(model, x, y, self.threat, self.kappa)

    def at_epoch(self, epoch: int, epochs: int, records: Sequence[Mapping[str, float]] = ()) -> Objective:
        """The objective of epoch ``epoch`` (0-based): ε and κ at their point of the ramp."""
        if self.ramp_epochs == 0 and self.warmup_epochs == 0:
            return self
        if epoch < self.warmup_epochs:
            progress = 0.0
        elif self.ramp_epochs == 0:
            progress = 1.0
        else:
            progress = min(1.0, (epoch - self.warmup_epochs + 1) / self.ramp_epochs)
        eps = float(self.threat.eps) * progress
        kappa = 1.0 - progress * (1.0 - self.kappa)
        return dataclasses.replace(
            self, threat=self.threat.with_eps(eps), kappa=kappa, warmup_epochs=0, ramp_epochs=0
        )


__all__ = ["GaussianAugment", "IBPTraining", "ibp_loss"]
