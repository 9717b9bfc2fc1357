"""SmoothAdv (Salman et al. 2019): adversarial training of the smoothed classifier.

Gaussian augmentation (:class:`~advlearn.training.GaussianAugment`) trains the base
classifier on noisy inputs; SmoothAdv trains it on noisy copies of an *adversarial*
input, found by attacking the smoothed classifier itself. The smoothed classifier's
hard decision has no useful gradient, so the attack maximizes the cross-entropy of
the *soft* smoothed classifier ``G(x)_c = E_η[softmax(f(x + η))_c]``, estimated on
``m`` noise draws that stay fixed during the attack (Salman et al., eq. 5 and §3.2,
"SmoothAdv_PGD" with ``m`` noise samples):

.. math::

    \\hat x = \\arg\\max_{\\|x' - x\\|_2 \\le \\epsilon}
        -\\log\\Big(\\frac{1}{m}\\sum_{i=1}^m \\mathrm{softmax}(f(x' + \\eta_i))_y\\Big),
    \\qquad
    \\min_\\theta \\frac{1}{m}\\sum_{i=1}^m L(\\theta, \\hat x + \\eta_i, y).

As in the reference code (github.com/Hadisalman/smoothing-adversarial,
``train_pgd.py``): the same ``m`` draws are reused for the outer loss, the attack
runs in eval mode (the outer loss in the model's mode), it is ℓ2 PGD from the clean
input (no random start) with step ``2ε/steps``, and its iterates stay in the input
box while the noise is added unclipped, as for :class:`advlearn.certify.Smooth`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn.attacks import PGD
from advlearn.threat import L2, ThreatModel
from advlearn.training.modes import eval_mode
from advlearn.training.objectives import Objective, Records, register_objective


class SoftSmoothed(nn.Module):
    """The soft smoothed classifier on fixed noise: ``log((1/m) Σ_i softmax(f(x + η_i)))``, ``(B, C)``.

    Its cross-entropy at label ``y`` is ``−log G(x)_y``, the loss SmoothAdv's attack
    maximizes. It only takes the batch its noise was drawn for.

    Args:
        model: the base classifier ``f``.
        noise: ``(m, B, *shape)`` noise draws, fixed for the attack.
    """

    def __init__(self, model: nn.Module, noise: Tensor) -> None:
        super().__init__()
        self.model = model
        self.noise = noise

    def forward(self, x: Tensor) -> Tensor:
        m, b = self.noise.shape[:2]
        if x.shape != self.noise.shape[1:]:
            raise ValueError(
                f"SoftSmoothed holds noise for inputs {tuple(self.noise.shape[1:])}, got {tuple(x.shape)}"
            )
        logits = self.model((x.unsqueeze(0) + self.noise).flatten(0, 1))  # (m·B, C)
        log_probs = F.log_softmax(logits, dim=1).unflatten(0, (m, b))  # (m, B, C)
        return torch.logsumexp(log_probs, dim=0) - math.log(m)


@register_objective("smooth_adv")
@dataclass(frozen=True)
class SmoothAdv(Objective):
    """SmoothAdv-PGD (Salman et al. 2019): train on noisy copies of the smoothed classifier's attack.

    Each step draws ``num_noise`` Gaussian noises per example, runs ``steps`` of ℓ2
    PGD (radius ``eps``, iterates kept in ``bounds``, step ``2·eps/steps`` unless
    ``step_size``, from the clean input) on the soft smoothed classifier's
    cross-entropy over those draws, in eval mode, then descends the mean
    cross-entropy of the model on the adversarial input plus each of the same draws.

    The attack's ball is its own ℓ2 ball, not the experiment's threat model (the
    certificates it trains for are ℓ2 radii), so ``build_objective`` does not hand
    it the threat: a config names ``eps``, e.g.
    ``objective = { name = "smooth_adv", eps = 0.5, sigma = 0.25 }``.

    Cost per batch: ``(steps + 1)·num_noise`` forward and backward passes of the
    batch, i.e. 6× :class:`~advlearn.training.GaussianAugment` at the defaults
    (``steps = 2``, ``num_noise = 2``). Salman et al. train CIFAR-10 with
    ``steps ∈ {1, 2, 4, 8, 10}``, ``m ∈ {1, 2, 4, 8}``, ``ε ∈ {0.25, …, 2}`` and ε ramped
    over the first 10 epochs (``eps_warmup = 10``); ``num_noise = 1`` is their
    cheapest setting.

    Args:
        eps: the ℓ2 radius of the attack, ≥ 0 (0 is Gaussian augmentation on ``num_noise`` draws).
        sigma: the noise level, > 0; train at the σ you will certify with.
        steps: PGD steps per batch.
        num_noise: noise draws ``m`` per example.
        step_size: the PGD step; ``None`` is Salman et al.'s ``2·eps/steps``.
        eps_warmup: epochs over which ``eps`` ramps up linearly (0: the full radius from the start).
        bounds: the input box ``(lo, hi)`` the attack's iterates stay in (``None``: no box).

    Raises:
        ValueError: naming the option, for a negative ``eps``, ``sigma <= 0``, counts < 1, or bad bounds.

    References:
        Salman, Li, Razenshteyn, Zhang, Zhang, Bubeck, Yang. Provably robust deep learning
        via adversarially trained smoothed classifiers. NeurIPS 2019 (eq. 5, §3.2, Appendix B).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> objective = SmoothAdv(eps=0.5, sigma=0.25)
        >>> loss = objective(model, torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,)))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """

    eps: float
    sigma: float = 0.25
    steps: int = 2
    num_noise: int = 2
    step_size: float | None = None
    eps_warmup: int = 0
    bounds: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_nonnegative("eps", self.eps)
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)):
            raise ValueError(f"sigma must be a finite noise level > 0, e.g. 0.25, got {self.sigma!r}")
        if not 0 < self.sigma < math.inf:
            raise ValueError(f"sigma must be a finite noise level > 0, e.g. 0.25, got {self.sigma!r}")
        check_positive_int("steps", self.steps)
        check_positive_int("num_noise", self.num_noise)
        check_positive_int("eps_warmup", self.eps_warmup, minimum=0)
        if self.step_size is not None and check_nonnegative("step_size", self.step_size) == 0:
            raise ValueError("step_size must be > 0, or None for 2·eps/steps")
        if self.bounds is not None:
            if not isinstance(self.bounds, (tuple, list)) or len(self.bounds) != 2:
                raise ValueError(f"bounds must be a pair (lo, hi) or None, got {self.bounds!r}")
            object.__setattr__(self, "bounds", (float(self.bounds[0]), float(self.bounds[1])))
        self.ball  # noqa: B018 (checks eps and bounds the way every threat model does)

    @property
    def ball(self) -> ThreatModel:
        """The attack's ℓ2 ball of radius ``eps`` in ``bounds``."""
        return ThreatModel(L2(), float(self.eps), bounds=self.bounds)

    def at_epoch(self, epoch: int, epochs: int, records: Records = ()) -> Objective:
        if self.eps_warmup == 0 or epoch >= self.eps_warmup:
            return self
        return dataclasses.replace(self, eps=float(self.eps) * (epoch + 1) / self.eps_warmup)

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, noise: Tensor) -> Tensor:
        """The inner maximization on the fixed ``noise`` ``(m, B, *shape)``: ``x̂`` in the ball and box."""
        if self.eps == 0:
            return x.detach()
        step = self.step_size if self.step_size is not None else 2.0 * float(self.eps) / self.steps
        pgd = PGD(self.ball, steps=self.steps, step_size=step, random_start=False)
        with eval_mode(model):
            return pgd(SoftSmoothed(model, noise), x, y).detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        noise = self.sigma * torch.randn((self.num_noise, *x.shape), device=x.device, dtype=x.dtype)
        x_adv = self.attack(model, x, y, noise)
        logits = model((x_adv.unsqueeze(0) + noise).flatten(0, 1))  # (m·B, C)
        return F.cross_entropy(logits, y.repeat(self.num_noise))


__all__ = ["SmoothAdv", "SoftSmoothed"]
