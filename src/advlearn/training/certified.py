"""Training objectives for certification: Gaussian noise augmentation, IBP and CROWN-IBP training.

They train the models :mod:`advlearn.certify` certifies; training stands on
certify's bound functions (never the other way round). They are registered in
:data:`advlearn.training.OBJECTIVES` (``"gaussian_noise"``, ``"ibp"``, ``"crown_ibp"``), so
``advlearn train`` configs can name them::

    [[train]]
    label = "noise-0.25"
    objective = { name = "gaussian_noise", sigma = 0.25 }

    [[train]]
    label = "ibp"
    objective = { name = "ibp", kappa = 0.5, warmup_steps = 200, ramp_steps = 2000 }

    [[train]]
    label = "crown-ibp"
    objective = { name = "crown_ibp", kappa = 0.5, warmup_steps = 200, ramp_steps = 2000 }
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_positive_int
from advlearn.certify.ibp import ibp_margin_bounds
from advlearn.models.layers import ibp_init  # with the model zoo (ibp_cnn(init="ibp")); kept importable here
from advlearn.threat import ThreatModel
from advlearn.training.objectives import Objective, RunState, register_objective


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
    return certified_loss(model, x, y, threat, kappa=kappa, beta=0.0)


def certified_loss(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, kappa: float = 0.5, beta: float = 0.0
) -> Tensor:
    """``κ·CE(z(x), y) + (1 − κ)·CE(−m, y)`` with ``m`` lower bounds on the margins ``z_y − z_j``.

    ``m = β·m_CROWN-IBP + (1 − β)·m_IBP`` (Zhang et al. 2020, eq. 7): ``β = 0`` is IBP
    training (Gowal et al.), ``β > 0`` adds CROWN's backward bound with IBP's
    pre-activation bounds (one backward pass with ``C`` rows, about two forward passes more).
    The specification ``e_y − e_j`` is folded into the last layer in both.
    """
    terms: list[Tensor] = []
    if kappa > 0:
        terms.append(kappa * F.cross_entropy(model(x), y))
    if kappa < 1:
        if beta > 0:
            from advlearn.certify.crown import crown_margin_bounds

            margins = crown_margin_bounds(model, x, y, threat, intermediate="ibp", mix=beta)
        else:
            margins = ibp_margin_bounds(model, x, y, threat)
        terms.append((1 - kappa) * F.cross_entropy(-margins, y))  # (B, C): upper bounds on z_j − z_y
    return torch.stack(terms).sum()


def _check_weight(name: str, value: object, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a weight in [0, 1] ({hint}), got {value!r}")


#: the per-step schedule of :class:`IBPTraining` and :class:`CROWNIBPTraining` when none is given:
#: nominal steps, then the ε/κ(/β) ramp (measured on MNIST-5k, bench/certified_training.py)
DEFAULT_WARMUP_STEPS = 400
DEFAULT_RAMP_STEPS = 3000


@register_objective("ibp")
@dataclass(frozen=True)
class IBPTraining(Objective):
    """Interval bound propagation training (Gowal et al. 2018) with its ε ramp and κ schedule.

    Each step minimizes :func:`ibp_loss` at the current ``(ε, κ)``: nominal training
    (ε = 0, κ = 1) during a warm-up, then ε grows linearly to the threat model's ε
    while κ falls linearly from 1 to ``kappa``; after that both stay put.

    Gowal et al. ramp **per step** over a long schedule (MNIST: 2k warm-up steps,
    then a 10k-step ramp, of 60k steps of batch 100): give ``warmup_steps`` and
    ``ramp_steps``. Given no schedule at all, the objective ramps per step with
    :data:`DEFAULT_WARMUP_STEPS` = 400 nominal steps and a :data:`DEFAULT_RAMP_STEPS` = 3000-step
    ramp (the schedule of the bench run on MNIST-5k, ~5 and ~40 epochs of 3,800 digits at batch 50;
    train well past the ramp, e.g. 7,600 steps in all: about 4 CPU-minutes for ``ibp_cnn`` on one
    idle core); an objective with no ramp (``ramp_steps=0``) trains at the full ε from the first
    step, which does not train at ε = 0.3 on MNIST. Giving either step count sets the other to 0
    unless given; an epoch schedule turns the step defaults off. The step counter is per-run
    state (the Trainer checkpoints it, so a resumed run continues the ramp where it stopped).
    The older per-epoch ramp (``warmup_epochs``, ``ramp_epochs``; at the end of epoch ``k`` of
    the ramp ε = k/ramp_epochs · ε) is kept; the two cannot be mixed.

    Train at a somewhat larger ε than you test (Gowal et al.: ε_train = 0.4 for
    ε_test = 0.3 and 0.2 for 0.1 on MNIST) by setting the threat model's ε. The
    margins are bounded with the specification ``e_y − e_j`` elided into the last
    linear layer (eq. 8). The model must be one :func:`advlearn.certify.ibp_bounds`
    can pass in training mode: BatchNorm (batch statistics) and Dropout are refused
    there, so use a model without them (``ibp_cnn``, ``mlp``, ``small_cnn``,
    ``logreg``, ``maxout`` without dropout). Cost per step: about three forward
    passes and three backward passes (the nominal pass plus the two corners).

    Args:
        threat: the ε-ball to verify at the end of the ramp (ℓ2/ℓ1 via their ℓ∞ box).
        kappa: the final weight of the nominal loss (Gowal et al.: 0.5).
        warmup_epochs: nominal epochs before the per-epoch ramp starts.
        ramp_epochs: epochs over which ε and κ move to their final values (0: at once).
        warmup_steps: nominal steps before the per-step ramp starts (Gowal et al.); ``None``: 400
            if no schedule is given at all, else 0.
        ramp_steps: steps of the per-step ramp; ``None``: 3000 if no schedule is given, else 0.
        train_eps: train towards this ε instead of the threat model's (a config that evaluates at
            ``threat.eps = 0.3`` trains with ``train_eps = 0.4``, as Gowal et al.); ``None``: the threat's.

    Example:
        >>> obj = IBPTraining(ThreatModel("linf", 0.4), kappa=0.5, warmup_epochs=1, ramp_epochs=2)
        >>> [(round(float(o.threat.eps), 3), o.kappa) for o in (obj.at_epoch(e, 5) for e in range(4))]
        [(0.0, 1.0), (0.2, 0.75), (0.4, 0.5), (0.4, 0.5)]
        >>> default = IBPTraining(ThreatModel("linf", 0.4))
        >>> default.warmup_steps, default.ramp_steps
        (400, 3000)
        >>> per_step = IBPTraining(ThreatModel("linf", 0.4), warmup_steps=10, ramp_steps=100)
        >>> [(round(float(o.threat.eps), 3), o.kappa) for o in map(per_step.at_step, (0, 10, 60, 500))]
        [(0.0, 1.0), (0.0, 1.0), (0.2, 0.75), (0.4, 0.5)]

    References:
        Gowal et al. On the effectiveness of interval bound propagation for
        training verifiably robust models. arXiv:1810.12715, 2018, §4 and eq. 12.
    """

    threat: ThreatModel
    kappa: float = 0.5
    warmup_epochs: int = 0
    ramp_epochs: int = 0
    warmup_steps: int | None = None
    ramp_steps: int | None = None
    train_eps: float | None = None

    #: the RunState key of the step counter of the per-step ramp
    STEP_KEY: ClassVar[str] = "certified_step"

    def __post_init__(self) -> None:
        _check_weight("kappa", self.kappa, "Gowal et al. use 0.5")
        if (
            self.warmup_steps is None
            and self.ramp_steps is None
            and not (self.warmup_epochs or self.ramp_epochs)
        ):
            # No schedule given: the per-step ramp measured best (bench/certified_training.py).
            object.__setattr__(self, "warmup_steps", DEFAULT_WARMUP_STEPS)
            object.__setattr__(self, "ramp_steps", DEFAULT_RAMP_STEPS)
        for name in ("warmup_steps", "ramp_steps"):  # one of them given (or an epoch ramp): the other is 0
            if getattr(self, name) is None:
                object.__setattr__(self, name, 0)
        for name in ("warmup_epochs", "ramp_epochs", "warmup_steps", "ramp_steps"):
            check_positive_int(name, getattr(self, name), minimum=0)
        if (self.warmup_epochs or self.ramp_epochs) and (self.warmup_steps or self.ramp_steps):
            raise ValueError(
                "give the ramp either in epochs (warmup_epochs, ramp_epochs) or in steps "
                "(warmup_steps, ramp_steps), not both"
            )
        if isinstance(self.threat.eps, Tensor):
            raise ValueError(f"{type(self).__name__} needs threat.eps as one float, not a per-example tensor")
        if self.train_eps is not None:
            if isinstance(self.train_eps, bool) or not isinstance(self.train_eps, (int, float)):
                raise ValueError(f"train_eps must be a number or None, got {self.train_eps!r}")
            if not 0 <= self.train_eps < math.inf:
                raise ValueError(f"train_eps must be a finite eps >= 0, e.g. 0.4, got {self.train_eps!r}")

    @property
    def beta(self) -> float:
        """The weight of CROWN-IBP's bound in the mix (0: IBP training)."""
        return 0.0

    @property
    def target(self) -> ThreatModel:
        """The threat model at the end of the ramp: the threat's, with ``train_eps`` if given."""
        return self.threat if self.train_eps is None else self.threat.with_eps(float(self.train_eps))

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return certified_loss(model, x, y, self.target, kappa=self.kappa, beta=self.beta)

    def _at_progress(self, progress: float) -> IBPTraining:
        """The fixed objective at ``progress`` ∈ [0, 1] of the ramp (schedules cleared)."""
        return dataclasses.replace(
            self,
            threat=self.target.with_eps(float(self.target.eps) * progress),
            train_eps=None,
            kappa=1.0 - progress * (1.0 - self.kappa),
            warmup_epochs=0,
            ramp_epochs=0,
            warmup_steps=0,
            ramp_steps=0,
            **self._extra_at(progress),
        )

    def _extra_at(self, progress: float) -> dict[str, float]:
        return {}

    def at_epoch(self, epoch: int, epochs: int, records: Sequence[Mapping[str, float]] = ()) -> Objective:
        """The objective of epoch ``epoch`` (0-based): ε and κ at their point of the per-epoch ramp."""
        if self.ramp_epochs == 0 and self.warmup_epochs == 0:
            return self
        if epoch < self.warmup_epochs:
            progress = 0.0
        elif self.ramp_epochs == 0:
            progress = 1.0
        else:
            progress = min(1.0, (epoch - self.warmup_epochs + 1) / self.ramp_epochs)
        return self._at_progress(progress)

    def at_step(self, step: int) -> IBPTraining:
        """The objective of step ``step`` (0-based): progress ``(step − warmup_steps) / ramp_steps``."""
        warmup, ramp = int(self.warmup_steps or 0), int(self.ramp_steps or 0)  # ints after __post_init__
        if step < warmup:
            progress = 0.0
        elif ramp == 0:
            progress = 1.0
        else:
            progress = min(1.0, (step - warmup) / ramp)
        return self._at_progress(progress)

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
        if not (self.warmup_steps or self.ramp_steps):
            return super().train_step(model, x, y, optimizer, unlabeled=unlabeled, state=state)
        state = {} if state is None else state
        step = int(state.get(self.STEP_KEY, torch.zeros((), dtype=torch.long)))
        loss = self.at_step(step).train_step(model, x, y, optimizer, unlabeled=unlabeled)
        state[self.STEP_KEY] = torch.tensor(step + 1, dtype=torch.long)
        return loss


@register_objective("crown_ibp")
@dataclass(frozen=True)
class CROWNIBPTraining(IBPTraining):
    """CROWN-IBP training (Zhang et al. 2020): IBP's loss with the margins' bound mixed with CROWN's.

    The margins' lower bound is ``β·m_CROWN-IBP + (1 − β)·m_IBP``
    (:func:`advlearn.certify.crown_margin_bounds` with ``intermediate="ibp"``):
    IBP's pre-activation bounds, then one CROWN backward pass from the
    specification ``e_y − e_j``. ``β`` moves linearly from ``beta_start`` to
    ``beta_end`` along the same ramp as ε and κ (Zhang et al.: 1 → 0 on MNIST,
    so early training, when IBP's bounds are loose, sees the tighter linear
    bounds, and the end is plain IBP). Everything else is :class:`IBPTraining`.
    Supported layers are CROWN's (Linear, Conv2d, ReLU, Flatten, AvgPool2d,
    Normalize). Cost per step while β > 0: one backward pass with ``C`` rows more
    than IBP training, about 6× its time on ``ibp_cnn`` at batch 50 on a CPU (0.19 s vs
    0.031 s a step); with β ramped to 0 the steps after the ramp cost what IBP's do. The default
    schedule is IBP's (:data:`DEFAULT_WARMUP_STEPS`, :data:`DEFAULT_RAMP_STEPS`).

    Args:
        threat, kappa, warmup_epochs, ramp_epochs, warmup_steps, ramp_steps: as :class:`IBPTraining`.
        beta_start: β at the start of the ramp.
        beta_end: β at its end.

    Example:
        >>> obj = CROWNIBPTraining(ThreatModel("linf", 0.4), warmup_steps=0, ramp_steps=4)
        >>> [o.beta for o in map(obj.at_step, range(5))]
        [1.0, 0.75, 0.5, 0.25, 0.0]

    References:
        Zhang, Chen, Xiao, Gowal, Stanforth, Li, Boning, Hsieh. Towards stable and
        efficient training of verifiably robust neural networks. ICLR 2020, eq. 7 and §4.
    """

    beta_start: float = 1.0
    beta_end: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_weight("beta_start", self.beta_start, "Zhang et al. use 1")
        _check_weight("beta_end", self.beta_end, "Zhang et al. use 0")

    @property
    def beta(self) -> float:
        """β now: called directly (no schedule resolved) the objective is at the end of its ramp."""
        return self.beta_end

    def _extra_at(self, progress: float) -> dict[str, float]:
        beta = self.beta_start + progress * (self.beta_end - self.beta_start)
        return {"beta_start": beta, "beta_end": beta}


__all__ = [
    "DEFAULT_RAMP_STEPS",
    "DEFAULT_WARMUP_STEPS",
    "CROWNIBPTraining",
    "GaussianAugment",
    "IBPTraining",
    "certified_loss",
    "ibp_init",
    "ibp_loss",
]
