"""The defenses of the field as :class:`~advlearn.training.Objective`\\ s, each a few lines on one Trainer.

Only the objectives live here; what they are built from lives by concern: the
loss terms (:func:`~advlearn.losses.trades_loss`, :func:`~advlearn.losses.mart_loss`,
:func:`~advlearn.losses.jensen_shannon`) in :mod:`advlearn.losses`, the views in
:mod:`advlearn.training.augment`, AWP's weight step in
:mod:`advlearn.training.weight_perturbation`, Fast-AT's guard in
:mod:`advlearn.training.overfitting`.

Every objective here is a frozen dataclass registered by name (usable from a
TOML config and ``advlearn train``) whose docstring gives its paper and
equation; those docstrings are why the file is long, the code of each is about
twenty lines. The inner maximization is always one of the library's attacks (or
:func:`~advlearn.attacks.pgd_maximize` for losses that are not functions of a
label), so the threat model's geometry lives in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn.attacks import FGSM, PGD, Attack, SignNoise, UniformNoise, pgd_maximize
from advlearn.losses import jensen_shannon, kl_divergence, mart_loss, trades_loss
from advlearn.threat import ThreatModel
from advlearn.training.augment import random_hflip, random_translate
from advlearn.training.modes import eval_mode, frozen_batchnorm_stats
from advlearn.training.objectives import (
    AdversarialObjective,
    InnerPGDObjective,
    Objective,
    Records,
    RunState,
    register_objective,
)
from advlearn.training.overfitting import check_collapse, collapse_recorded
from advlearn.training.weight_perturbation import awp_perturbation, perturbed_weights


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_step_size(step_size: float | None) -> None:
    if step_size is not None:
        check_nonnegative("step_size", step_size)


def _float_eps(threat: ThreatModel, objective: str) -> float:
    if isinstance(threat.eps, Tensor):
        raise ValueError(
            f"{objective} needs a float eps (its step is a multiple of eps), not a per-example tensor"
        )
    return float(threat.eps)


# ----------------------------------------------------------------------------- Goodfellow et al. 2015


class _Blend(AdversarialObjective):
    """``α·J(x, y) + (1 − α)·J(x̃, y)`` with ``x̃`` from :meth:`perturbation`, regenerated every batch."""

    alpha: float

    def perturbation(self) -> Attack:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x_tilde = self.perturbation()(model, x, y)  # from the current weights, treated as a constant
        loss = (1.0 - self.alpha) * F.cross_entropy(model(x_tilde), y)
        if self.alpha > 0:
            loss = loss + self.alpha * F.cross_entropy(model(x), y)
        return loss


@register_objective("fgsm_blend")
@dataclass(frozen=True)
class FGSMBlend(_Blend):
    """Goodfellow et al.'s adversarial objective: a blend of the clean and the FGSM loss.

    .. math::

        \\tilde J(\\theta, x, y) = \\alpha J(\\theta, x, y)
            + (1 - \\alpha) J(\\theta, x + \\varepsilon\\,\\mathrm{sign}(\\nabla_x J(\\theta, x, y)), y)

    The adversarial example is regenerated from the current model every batch
    (in other norms, the FGSM step of the threat's geometry).

    Args:
        threat: the ε-ball.
        alpha: weight of the clean loss (0.5 in the paper).
        eps_warmup: epochs of linear ε ramp.

    References:
        Goodfellow, Shlens & Szegedy. Explaining and harnessing adversarial
        examples. ICLR 2015, §6, eq. (2)'s successor.
    """

    threat: ThreatModel
    alpha: float = 0.5
    eps_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction("alpha", self.alpha)

    def perturbation(self) -> Attack:
        return FGSM(self.threat)


@register_objective("noise_augment")
@dataclass(frozen=True)
class NoiseAugment(_Blend):
    """The noise baselines of Goodfellow et al. (2015): :class:`FGSMBlend` with random ``x̃``.

    ``kind="sign"`` adds ``±ε`` per coordinate (a random corner of the ℓ∞ ball),
    ``kind="uniform"`` draws ``U[−ε, ε]``; both are clipped to the box. Goodfellow
    et al. report that such noise barely helps against FGSM (86.2% error with
    ±ε noise vs 17.9% with adversarial training): the baseline that shows the
    *worst case* matters, not mere perturbation.

    Args:
        threat: the ε-ball the noise lives in.
        kind: ``"sign"`` or ``"uniform"``.
        alpha: weight of the clean loss.
        eps_warmup: epochs of linear ε ramp.

    References:
        Goodfellow, Shlens & Szegedy. ICLR 2015, §6.
    """

    threat: ThreatModel
    kind: Literal["sign", "uniform"] = "sign"
    alpha: float = 0.5
    eps_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction("alpha", self.alpha)
        if self.kind not in ("sign", "uniform"):
            raise ValueError(f"kind must be 'sign' or 'uniform', got {self.kind!r}")

    def perturbation(self) -> Attack:
        return SignNoise(self.threat) if self.kind == "sign" else UniformNoise(self.threat)


# ----------------------------------------------------------------------------- Fast-AT and its guard


@dataclass(frozen=True)
class _GuardedSingleStep(AdversarialObjective):
    """Base of the single-step objectives (Fast-AT, N-FGSM, GradAlign): the catastrophic-overfitting guard.

    It holds the guard's options and ``eps_warmup`` (see :class:`FastAT`) as keyword-only
    fields, so that they come after each subclass's own options and the subclass's ``threat``
    (no default) can still come first. Subclasses are frozen dataclasses that declare
    ``threat`` and their own options, call ``super().__post_init__()``, and implement
    :meth:`single_step`, the loss of their own method; after a recorded collapse (with
    ``fallback_steps > 0``) the loss is PGD-``fallback_steps``'s instead.
    """

    guard: bool = field(default=True, kw_only=True)
    guard_steps: int = field(default=10, kw_only=True)
    collapse_gap: float = field(default=0.3, kw_only=True)
    fallback_steps: int = field(default=5, kw_only=True)
    fallback: bool = field(default=False, kw_only=True)
    eps_warmup: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        _float_eps(self.threat, type(self).__name__)
        check_positive_int("guard_steps", self.guard_steps)
        check_positive_int("fallback_steps", self.fallback_steps, minimum=0)
        _check_fraction("collapse_gap", self.collapse_gap)

    def single_step(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.fallback:
            return F.cross_entropy(model(PGD(self.threat, steps=self.fallback_steps)(model, x, y)), y)
        return self.single_step(model, x, y)

    def _full_threat(self) -> ThreatModel:
        """The ε-ball the guard measures in: the full one, also on an ε warm-up's copies of the objective.

        :meth:`at_epoch` hands out copies whose ``threat`` is the ramped one; each carries the
        radius the user gave, so the guard compares every epoch at the same ε (before, its
        warm-up epochs were measured at the ramped ε, whose higher accuracies then set the
        "best" a full-ε epoch was compared with).
        """
        full: ThreatModel = getattr(self, "_guard_threat", self.threat)
        return full

    def at_epoch(self, epoch: int, epochs: int, records: Records = ()) -> Objective:
        objective = super().at_epoch(epoch, epochs, records)
        if (
            collapse_recorded(records)
            and self.fallback_steps > 0
            and isinstance(objective, _GuardedSingleStep)
        ):
            objective = dataclasses.replace(objective, fallback=True)  # type: ignore[type-var]
        if objective is not self:  # a copy (ramped ε, fallback): it keeps the full ε for the guard
            object.__setattr__(objective, "_guard_threat", self._full_threat())
        return objective

    def end_epoch(self, model: nn.Module, x: Tensor, y: Tensor, records: Records = ()) -> dict[str, float]:
        if not self.guard:
            return {}
        threat = self._full_threat()
        return check_collapse(
            model,
            x,
            y,
            threat,
            records,
            steps=self.guard_steps,
            gap=self.collapse_gap,
            fallback_steps=self.fallback_steps,
        )


def _input_grad(model: nn.Module, x: Tensor, y: Tensor, *, create_graph: bool = False) -> Tensor:
    """``∇ₓ CE(model(x), y)`` summed over the batch (so per example), leaving parameter gradients alone."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return grad


@register_objective("fast_at")
@dataclass(frozen=True)
class FastAT(_GuardedSingleStep):
    """Fast adversarial training (Wong et al. 2020): FGSM from a random start, step 1.25ε.

    .. math::

        \\delta_0 \\sim U(S), \\quad
        x' = \\Pi_{S(x)}\\big(x + \\delta_0 + 1.25\\,\\varepsilon\\, d^*(\\nabla_x J(x + \\delta_0, y))\\big)

    One gradient per batch, but prone to *catastrophic overfitting*: within an
    epoch the model learns to defeat the single step while multi-step PGD
    accuracy drops to about zero. The **guard** watches for it: after every
    epoch it measures FGSM and PGD-``guard_steps`` accuracy on a fixed held-out
    batch (the Trainer's first validation batch), always at the full ε (also
    during an ε warm-up). A collapse is declared when FGSM accuracy is at least
    ``collapse_gap`` above PGD accuracy and PGD accuracy has either fallen below
    half its best earlier value (that best at least 20%) or is below both 20% and
    half of FGSM accuracy (:func:`~advlearn.training.overfitting.collapse_declared` gives the
    reasons). Then it warns, records
    ``co_detected = 1`` in that epoch's metrics, and (with ``fallback_steps > 0``)
    trains with PGD-``fallback_steps`` for the rest of the run, the remedy of
    the seed chapter's §62.7. The decision is a function of the recorded
    metrics, so a resumed run makes the same one. :class:`NFGSM` and
    :class:`GradAlign` are the later remedies that avoid the collapse instead.

    Args:
        threat: the ε-ball (a float ε).
        step_ratio: the FGSM step as a multiple of ε (1.25 in the paper; 2 and
            above overfit catastrophically more often).
        random_start: start from a uniform point of the ball (Wong et al.);
            without it this is plain FGSM training.
        guard: measure and react to catastrophic overfitting.
        guard_steps: PGD steps of the guard's check.
        collapse_gap: how far FGSM accuracy must exceed PGD accuracy at a collapse (a share, 0.3: 30 points).
        fallback_steps: PGD steps after a collapse; 0 only warns.
        fallback: train with PGD-``fallback_steps`` now (the guard sets it).
        eps_warmup: epochs of linear ε ramp.

    References:
        Wong, Rice & Kolter. Fast is better than free: revisiting adversarial
        training. ICLR 2020, Algorithm 3 and §5.
    """

    threat: ThreatModel
    step_ratio: float = 1.25
    random_start: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("step_ratio", self.step_ratio)

    def single_step(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        step = self.step_ratio * float(self.threat.eps)
        attack = PGD(self.threat, steps=1, step_size=step, random_start=self.random_start)
        return F.cross_entropy(model(attack(model, x, y)), y)


@register_objective("n_fgsm")
@dataclass(frozen=True)
class NFGSM(_GuardedSingleStep):
    """N-FGSM (de Jorge et al. 2022): FGSM from strong noise, step ε, no projection onto the ε-ball.

    .. math::

        \\eta \\sim U(k\\varepsilon\\text{-ball}), \\quad
        x' = \\Pi_{[0,1]}\\big(x + \\eta + \\alpha\\, d^*(\\nabla_x J(x + \\eta, y))\\big)

    with ``k = noise_ratio`` (2) and ``α = step_ratio·ε`` (ε). The training point is only
    clipped to the box, never back to the ε-ball, so ``‖x' − x‖ ≤ (k + step_ratio)·ε``
    (3ε in ℓ∞). The paper's finding is that the large noise, not a larger step, is what
    keeps single-step training away from catastrophic overfitting, at FGSM's cost: one
    input gradient per batch, the same as :class:`FastAT`. The guard of :class:`FastAT`
    still watches (it should stay quiet).

    Args:
        threat: the ε-ball (a float ε); its norm is the noise's ball and the step's geometry.
        noise_ratio: ``k``, the noise ball's radius as a multiple of ε (2 in the paper).
        step_ratio: the step as a multiple of ε (1 in the paper).
        guard, guard_steps, collapse_gap, fallback_steps, fallback: as in :class:`FastAT`.
        eps_warmup: epochs of linear ε ramp (noise and step scale with it).

    References:
        de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez & Dokania. Make some noise: reliable and
        efficient single-step adversarial training. NeurIPS 2022, Algorithm 1.
    """

    threat: ThreatModel
    noise_ratio: float = 2.0
    step_ratio: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("noise_ratio", self.noise_ratio)
        check_nonnegative("step_ratio", self.step_ratio)

    def single_step(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        eps = float(self.threat.eps)
        x = x.detach()
        x_noisy = self.threat.with_eps(self.noise_ratio * eps).random_init(x)  # uniform in the kε-ball, boxed
        grad = _input_grad(model, x_noisy, y)
        ascent = self.threat.steepest_ascent(grad, x_noisy)
        x_adv = self.threat.project_box(x_noisy + self.step_ratio * eps * ascent).detach()
        return F.cross_entropy(model(x_adv), y)


@register_objective("grad_align")
@dataclass(frozen=True)
class GradAlign(_GuardedSingleStep):
    """GradAlign (Andriushchenko & Flammarion 2020): FGSM training plus a gradient-alignment penalty.

    .. math::

        J(x + \\varepsilon\\, d^*(\\nabla_x J(x, y)), y)
            + \\lambda \\Big(1 - \\cos\\big(\\nabla_x J(x, y),\\; \\nabla_x J(x + \\eta, y)\\big)\\Big),
        \\quad \\eta \\sim U(S)

    Catastrophic overfitting comes with the loss turning non-linear inside the ball, so
    that the FGSM direction stops being a good one; the penalty keeps the input gradients
    at ``x`` and at a random point of the ball aligned. The FGSM step is from ``x`` itself
    (no random start, step ``step_ratio·ε``, projected onto the ball as usual), so its
    gradient is also the penalty's first one (held constant, as in the reference code);
    the second is differentiated through (double backpropagation). Cost: about three
    times an FGSM step's (one input gradient, one with its graph kept, and the outer
    backward through it).

    Args:
        threat: the ε-ball (a float ε).
        align_weight: ``λ`` (0.2 for CIFAR-10 at ε = 8/255 in the paper; larger ε needs more).
        step_ratio: the FGSM step as a multiple of ε (1 in the paper).
        guard, guard_steps, collapse_gap, fallback_steps, fallback: as in :class:`FastAT`.
        eps_warmup: epochs of linear ε ramp.

    References:
        Andriushchenko & Flammarion. Understanding and improving fast adversarial training.
        NeurIPS 2020, §4, eq. (7).
    """

    threat: ThreatModel
    align_weight: float = 0.2
    step_ratio: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("align_weight", self.align_weight)
        check_nonnegative("step_ratio", self.step_ratio)

    def single_step(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        eps = float(self.threat.eps)
        x = x.detach()
        grad = _input_grad(model, x, y)  # (B, ...): FGSM's gradient and the penalty's first one
        x_adv = self.threat.ascent_step(x, x, grad, self.threat.eps_for(x) * self.step_ratio).detach()
        loss = F.cross_entropy(model(x_adv), y)
        if self.align_weight == 0 or eps == 0:
            return loss
        grad_noisy = _input_grad(model, self.threat.random_init(x), y, create_graph=True)
        cos = F.cosine_similarity(grad.flatten(1), grad_noisy.flatten(1), dim=1)  # (B,)
        return loss + self.align_weight * (1.0 - cos.mean())


# ----------------------------------------------------------------------------- Free-AT


@register_objective("free_at")
@dataclass(frozen=True)
class FreeAT(AdversarialObjective):
    """Free adversarial training (Shafahi et al. 2019): minibatch replay with a persistent perturbation.

    Each batch is replayed ``replays`` times; every replay takes one backward
    pass that yields both the parameter gradient (one optimizer step) and the
    input gradient (one FGSM step on ``δ``), so the attack comes for free:

    .. math::

        \\theta \\leftarrow \\theta - \\eta \\nabla_\\theta J(x + \\delta, y), \\qquad
        \\delta \\leftarrow \\Pi_S\\big(\\delta + \\varepsilon\\, d^*(\\nabla_\\delta J(x + \\delta, y))\\big)

    ``δ`` carries over to the next batch (and epoch, the ε warm-up included), as
    in the paper. It is per-run state: it lives in the :data:`RunState` the
    Trainer passes to :meth:`train_step` and checkpoints, so a resumed run
    continues with the same ``δ``. To keep the number of gradient computations
    equal to standard training, train for ``epochs / replays`` epochs.

    Args:
        threat: the ε-ball.
        replays: ``m``, optimizer steps per batch.
        step_size: the step on ``δ``; ``None`` means ε (the paper's choice).
        eps_warmup: epochs of linear ε ramp.

    References:
        Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer, Davis, Taylor &
        Goldstein. Adversarial training for free! NeurIPS 2019, Algorithm 1.
    """

    threat: ThreatModel
    replays: int = 4
    step_size: float | None = None
    eps_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("replays", self.replays)
        _check_step_size(self.step_size)

    def _delta(self, x: Tensor, state: RunState) -> Tensor:
        """The carried perturbation, made feasible for this batch (zero when the shape changes)."""
        delta = state.get("delta")
        if delta is None or delta.shape != x.shape or delta.device != x.device:
            return torch.zeros_like(x)
        return self.threat.project(x + delta, x) - x

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The first replay's loss in a fresh run (``δ = 0``); the carried ``δ`` is run state."""
        return F.cross_entropy(model(x + self._delta(x, {})), y)

    def train_step(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        unlabeled: Tensor | None = None,
        state: RunState | None = None,
    ) -> float:
        state = {} if state is None else state
        eps = self.threat.eps_for(x)  # (B,)
        step_size = eps if self.step_size is None else torch.full_like(eps, self.step_size)
        delta = self._delta(x, state)
        total = 0.0
        for _ in range(self.replays):
            optimizer.zero_grad(set_to_none=True)
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y)
            loss.backward()  # one pass: parameter gradients and the gradient w.r.t. delta
            optimizer.step()
            with torch.no_grad():
                delta = self.threat.ascent_step(x + delta, x, delta.grad, step_size) - x  # type: ignore[arg-type]
            total += float(loss.detach())
        state["delta"] = delta.detach()
        return total / self.replays


# ----------------------------------------------------------------------------- TRADES and MART


def _trades_point(
    model: nn.Module, x: Tensor, threat: ThreatModel, steps: int, step_size: float | None
) -> Tensor:
    """TRADES's inner max: PGD on ``KL(f(x) ‖ f(x'))`` from ``x + 0.001·N(0, I)`` (Zhang et al.),
    with the model in eval mode as in the reference code (the mode it had is restored)."""
    with eval_mode(model):
        with torch.no_grad():
            reference = model(x)
        start = x + 0.001 * torch.randn_like(x)
        return pgd_maximize(
            model,
            x,
            reference,
            threat,
            lambda logits, ref: kl_divergence(ref, logits),
            steps=steps,
            step_size=step_size,
            x_start=start,
        )


@register_objective("trades")
@dataclass(frozen=True)
class TRADES(InnerPGDObjective):
    """TRADES (Zhang et al. 2019): clean cross-entropy plus β times the KL to the worst-case neighbour.

    .. math::

        \\min_\\theta \\; \\mathbb{E}\\Big[\\mathrm{CE}(f(x), y)
            + \\beta \\max_{x' \\in S(x)} \\mathrm{KL}\\big(f(x) \\,\\|\\, f(x')\\big)\\Big]

    ``x'`` comes from ``steps`` of PGD on the KL term, starting at
    ``x + 0.001·N(0, I)``; the outer gradient flows through both ``f(x)`` and
    ``f(x')``. ``β`` trades clean accuracy for robustness (6 in the paper).

    As in the reference code, the inner maximization (and the clean prediction it
    starts from) runs in eval mode and the outer loss in the mode the model had
    (train mode under the Trainer): BatchNorm's running statistics are updated by
    the two outer forward passes only, on ``x`` and ``x'``, never by the attack's
    iterates. Cost: ``steps + 1`` forward and ``steps`` backward passes for the
    attack, plus two forward passes and one backward pass for the loss.

    Args:
        threat: the ε-ball.
        beta: weight of the robust (KL) term.
        steps: PGD steps on the KL.
        step_size: ``None`` means ``2.5·ε/steps``.
        eps_warmup: epochs of linear ε ramp.

    References:
        Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan. Theoretically principled
        trade-off between robustness and accuracy. ICML 2019, eq. (5) and Algorithm 1;
        code: github.com/yaodongyu/TRADES, ``trades.py`` (``model.eval()`` / ``model.train()``).
    """

    threat: ThreatModel
    beta: float = 6.0
    steps: int = 10
    step_size: float | None = None
    eps_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("beta", self.beta)
        self._check_pgd()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x_adv = _trades_point(model, x, self.threat, self.steps, self.step_size)
        return trades_loss(model(x), model(x_adv), y, self.beta)


@register_objective("mart")
@dataclass(frozen=True)
class MART(InnerPGDObjective):
    """MART (Wang et al. 2020): misclassification-aware adversarial training.

    ``x'`` from PGD on the cross-entropy; the loss is :func:`mart_loss`: a
    boosted cross-entropy on ``x'`` that also pushes down the strongest wrong
    class, plus ``λ·KL(p(x) ‖ p(x'))`` weighted by ``1 − p_y(x)`` so that the
    examples the model misclassifies count more.

    As in the reference code, the PGD attack runs in eval mode and the loss in
    the mode the model had (train mode under the Trainer), so BatchNorm's running
    statistics see the two outer forward passes (``x`` and ``x'``) only.

    Args:
        threat: the ε-ball.
        lambda_: weight of the KL term (6 in the paper; ``lambda`` is a Python keyword).
        steps: PGD steps.
        step_size: ``None`` means ``2.5·ε/steps``.
        eps_warmup: epochs of linear ε ramp.

    References:
        Wang, Zou, Yi, Bailey, Ma & Gu. Improving adversarial robustness requires
        revisiting misclassified examples. ICLR 2020, eq. (9); code:
        github.com/YisenWang/MART, ``mart.py`` (``model.eval()`` for the attack).
    """

    threat: ThreatModel
    lambda_: float = 6.0
    steps: int = 10
    step_size: float | None = None
    eps_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("lambda_", self.lambda_)
        self._check_pgd()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with eval_mode(model):
            x_adv = self._pgd()(model, x, y)
        return mart_loss(model(x), model(x_adv), y, self.lambda_)


# ----------------------------------------------------------------------------- AWP


@register_objective("awp")
@dataclass(frozen=True)
class AWP(InnerPGDObjective):
    """Adversarial weight perturbation (Wu et al. 2020) around PGD-AT or TRADES.

    .. math::

        \\min_w \\max_{\\|v_l\\| \\le \\gamma \\|w_l\\|} \\; \\rho(w + v),
        \\qquad \\rho = \\text{the PGD-AT or TRADES loss at } x'

    Each step: find ``x'`` (as the wrapped method does), take one normalized
    ascent step on the weights (:func:`awp_perturbation`), compute the gradient
    of ``ρ`` at ``w + v``, restore ``w`` exactly (a copy, bit for bit, not a
    subtraction) and let the optimizer apply that gradient to ``w``.

    Modes follow Wu et al.'s code: ``x'`` is found in eval mode (for both inner
    methods); the weight step's forward pass runs in the model's own mode but
    leaves BatchNorm's running statistics untouched (the reference computes it on
    a proxy copy of the model), so only the outer forward pass(es) at ``w + v``
    update them: one per step for ``pgd_at``, two (``x`` and ``x'``) for
    ``trades``. For the first ``awp_warmup`` epochs the weights are not perturbed
    (plain PGD-AT or TRADES), as the reference's ``--awp-warmup``. Cost per step:
    the attack, then two forward and two backward passes of ``ρ`` (one for ``v``,
    one for the update).

    Args:
        threat: the ε-ball.
        gamma: relative size of the weight perturbation (5e-3 in the paper).
        inner: ``"pgd_at"`` or ``"trades"``.
        steps: PGD steps for ``x'``.
        step_size: ``None`` means ``2.5·ε/steps``.
        beta: TRADES's β when ``inner="trades"``.
        eps_warmup: epochs of linear ε ramp.
        awp_warmup: epochs of training without the weight perturbation first (0: from the start).

    References:
        Wu, Xia & Wang. Adversarial weight perturbation helps robust
        generalization. NeurIPS 2020, eq. (6)-(11) and Algorithm 1; code:
        github.com/csdongxian/AWP (``utils_awp.py``: the proxy; ``--awp-warmup``).
    """

    threat: ThreatModel
    gamma: float = 5e-3
    inner: Literal["pgd_at", "trades"] = "pgd_at"
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    eps_warmup: int = 0
    awp_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("gamma", self.gamma)
        check_positive_int("awp_warmup", self.awp_warmup, minimum=0)
        self._check_pgd()
        check_nonnegative("beta", self.beta)
        if self.inner not in ("pgd_at", "trades"):
            raise ValueError(f"inner must be 'pgd_at' or 'trades', got {self.inner!r}")

    def _loss_fn(self, model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
        """``ρ`` at the current weights, for a fixed ``x'``."""
        if self.inner == "trades":
            x_adv = _trades_point(model, x, self.threat, self.steps, self.step_size)
            return lambda: trades_loss(model(x), model(x_adv), y, self.beta)
        with eval_mode(model):
            x_adv = self._pgd()(model, x, y)
        return lambda: F.cross_entropy(model(x_adv), y)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """``ρ`` at ``x'`` and the unperturbed weights (what :meth:`train_step` reports)."""
        return self._loss_fn(model, x, y)()

    def train_step(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        unlabeled: Tensor | None = None,
        state: RunState | None = None,
    ) -> float:
        loss_fn = self._loss_fn(model, x, y)
        if self.gamma == 0:  # the AWP warm-up (or no perturbation at all): the inner method's own step
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            optimizer.step()
            return float(loss.detach())
        with frozen_batchnorm_stats(model):  # the reference's proxy: BN statistics stay as they were
            v = awp_perturbation(model, loss_fn(), self.gamma)
        optimizer.zero_grad(set_to_none=True)
        with perturbed_weights(model, v):
            loss = loss_fn()
            loss.backward()  # the gradient at w + v, applied to w
        optimizer.step()
        return float(loss.detach())

    def at_epoch(self, epoch: int, epochs: int, records: Records = ()) -> Objective:
        objective = super().at_epoch(epoch, epochs, records)
        if epoch < self.awp_warmup and isinstance(objective, AWP):
            return dataclasses.replace(objective, gamma=0.0)
        return objective


# ----------------------------------------------------------------------------- consistency


@register_objective("consistency_at")
@dataclass(frozen=True)
class ConsistencyAT(InnerPGDObjective):
    """Consistency adversarial training (Tack et al. 2022): agree across augmented adversarial views.

    .. math::

        \\tfrac12 \\sum_{i=1,2} \\mathrm{CE}_{\\text{smooth}}(f(x_i'), y)
            + \\lambda\\, \\mathrm{JS}\\big(f(x_1')/T \\,\\|\\, f(x_2')/T\\big)

    with ``x_1, x_2`` two random translations of ``x`` (plus a horizontal flip
    with ``flip=True``; leave it off for digits), ``x_i'`` their PGD adversarial
    examples, label smoothing in the cross-entropy and a temperature-sharpened
    Jensen–Shannon consistency term between the two views' predictions. The
    defaults are ours for small inputs; the paper tunes λ and T per dataset.

    Args:
        threat: the ε-ball (around each augmented view).
        lambda_: weight of the consistency term.
        temperature: ``T`` of the consistency term.
        label_smoothing: of the cross-entropy.
        shift: maximal translation in pixels (0 for non-image inputs).
        flip: also flip horizontally at random.
        steps: PGD steps per view.
        step_size: ``None`` means ``2.5·ε/steps``.
        eps_warmup: epochs of linear ε ramp.

    References:
        Tack, Yu, Jeong, Kim, Hwang & Shin. Consistency regularization for
        adversarial robustness. AAAI 2022, eq. (4).
    """

    threat: ThreatModel
    lambda_: float = 1.0
    temperature: float = 0.5
    label_smoothing: float = 0.1
    shift: int = 2
    flip: bool = False
    steps: int = 10
    step_size: float | None = None
    eps_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("lambda_", self.lambda_)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        _check_fraction("label_smoothing", self.label_smoothing)
        check_positive_int("shift", self.shift, minimum=0)
        self._check_pgd()

    def _view(self, x: Tensor) -> Tensor:
        view = random_translate(x, self.shift, self.threat.box[0])
        return random_hflip(view) if self.flip else view

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        attack = self._pgd()
        views = [self._view(x), self._view(x)]
        adv = torch.cat([attack(model, v, y) for v in views])  # (2B, ...)
        logits = model(adv)
        ce = F.cross_entropy(logits, torch.cat([y, y]), label_smoothing=self.label_smoothing)
        first, second = logits.chunk(2)
        return ce + self.lambda_ * jensen_shannon(first, second, self.temperature).mean()


# ----------------------------------------------------------------------------- gradient-norm penalty


@register_objective("grad_norm")
@dataclass(frozen=True)
class GradNormPenalty(AdversarialObjective):
    """The first-order robust loss: ``L(x) + ε‖∇ₓL(x)‖_q`` by double backpropagation.

    .. math::

        \\max_{\\|\\delta\\|_p \\le \\varepsilon} L(x + \\delta)
            \\approx L(x) + \\varepsilon \\|\\nabla_x L(x)\\|_q, \\qquad \\tfrac1p + \\tfrac1q = 1

    the linearization of the inner max (the seed chapter's eq. 62.2; Simon-Gabriel
    et al. 2019). On a model linear in ``x`` it equals the FGSM loss to first order.
    The penalty is per example (with BatchNorm in train mode the examples of a
    batch are coupled and the gradient mixes them).

    Args:
        threat: the ε-ball; its norm's dual measures the gradient.
        eps_warmup: epochs of linear ε ramp.

    References:
        Simon-Gabriel, Ollivier, Bottou, Schölkopf & Lopez-Paz. First-order
        adversarial vulnerability of neural networks and input dimension. ICML 2019.
        Drucker & LeCun. Improving generalization performance using double
        backpropagation. IEEE TNN 1992.
    """

    threat: ThreatModel
    eps_warmup: int = 0

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        losses = F.cross_entropy(model(x), y, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), x, create_graph=True)
        return (losses + self.threat.eps_for(x) * self.threat.dual_norm(grad)).mean()


__all__ = [
    "AWP",
    "MART",
    "NFGSM",
    "TRADES",
    "ConsistencyAT",
    "FGSMBlend",
    "FastAT",
    "FreeAT",
    "GradAlign",
    "GradNormPenalty",
    "NoiseAugment",
]
