"""Outer minimizers: what one training step minimizes.

An :class:`Objective` is a callable ``(model, x, y) -> scalar loss``. The one
:class:`~advlearn.training.Trainer` calls :meth:`Objective.train_step`, which by
default backpropagates that loss and takes one optimizer step; a method that
needs several optimizer steps per batch (Free-AT) overrides ``train_step``
instead of needing a Trainer of its own.

Objectives hold hyper-parameters only. What a method carries from one batch to
the next (Free-AT's perturbation δ) is per-run state, a :data:`RunState` the
Trainer owns, passes to every ``train_step`` and checkpoints with the rest of
the training state, so a resumed run continues it exactly.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn._registry import Registry
from advlearn.attacks import PGD
from advlearn.threat import ThreatModel

Records = Sequence[Mapping[str, float]]

#: Per-run state an objective carries across batches and epochs (Free-AT's ``"delta"``): tensors by
#: name. The Trainer owns it (a fresh one per run), passes it to every :meth:`Objective.train_step`,
#: which reads and updates it in place, and saves it with the training state; so it holds tensors
#: only, which the weights-only loader reads back on resume.
RunState = dict[str, Tensor]


class Objective:
    """Base of the training objectives (frozen dataclasses holding hyper-parameters only).

    Hooks the :class:`~advlearn.training.Trainer` calls, each with a default:

    - :meth:`__call__` ``(model, x, y) -> loss``: what one step minimizes (every objective).
    - :meth:`train_step`: the optimizer step(s) on one batch (override for Free-AT, AWP);
      it gets the run's :data:`RunState`, the one place where something may outlive a batch.
    - :meth:`semi_supervised`: the loss when an unlabeled batch comes along (VAT).
    - :meth:`at_epoch`: the objective for the coming epoch, given the metrics of the
      epochs before (ε ramps, the catastrophic-overfitting fallback). Because it is a
      function of the recorded metrics only, a resumed run rebuilds it exactly.
    - :meth:`end_epoch`: extra metrics measured on a fixed held-out batch after each epoch.
    """

    name: ClassVar[str] = ""
    #: whether :meth:`semi_supervised` is implemented (the Trainer refuses an unlabeled loader otherwise).
    uses_unlabeled: ClassVar[bool] = False

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def semi_supervised(self, model: nn.Module, x: Tensor, y: Tensor, unlabeled: Tensor) -> Tensor:
        """The loss on a labeled batch plus an unlabeled one; only objectives with ``uses_unlabeled``."""
        raise NotImplementedError(f"{type(self).__name__} does not train on unlabeled data")

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
        """One optimizer step on the batch; returns the loss before the step.

        ``state`` is this run's :data:`RunState` (the Trainer passes its own); ``None``
        gives a fresh one that lives for this call only. The default step keeps nothing.
        """
        optimizer.zero_grad(set_to_none=True)
        loss = self(model, x, y) if unlabeled is None else self.semi_supervised(model, x, y, unlabeled)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def at_epoch(self, epoch: int, epochs: int, records: Records = ()) -> Objective:
        """The objective for ``epoch`` (0-based) of ``epochs``, given the earlier epochs' ``records``."""
        return self

    def end_epoch(self, model: nn.Module, x: Tensor, y: Tensor, records: Records = ()) -> dict[str, float]:
        """Metrics for this epoch's record, measured on the fixed batch ``(x, y)`` in eval mode.

        ``records`` are the earlier epochs' records. The default measures nothing.
        """
        return {}


OBJECTIVES: Registry[Objective] = Registry("objective")
register_objective = OBJECTIVES.register


def build_objective(name: str, threat: ThreatModel | None = None, **options: Any) -> Objective:
    """Build the registered objective ``name``, passing ``threat`` to those that take one.

    Raises:
        ValueError: for an unknown name or option, naming it, or a missing threat model.
    """
    takes_threat = name in OBJECTIVES and "threat" in OBJECTIVES.fields(name)
    if takes_threat and threat is None:
        raise ValueError(f"objective {name!r} needs a threat model")
    return OBJECTIVES.build(name, options, **({"threat": threat} if takes_threat else {}))


@register_objective("standard")
@dataclass(frozen=True)
class Standard(Objective):
    """Empirical risk minimization: the mean cross-entropy on clean inputs."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(model(x), y)


class AdversarialObjective(Objective):
    """Base of the objectives that hold a threat model: an optional linear ε warm-up.

    Subclasses are frozen dataclasses with fields ``threat`` and ``eps_warmup``.
    ``eps_warmup`` epochs ramp ε linearly from ``eps/eps_warmup`` up to ``eps``,
    which helps large radii such as ε = 0.3 on MNIST get off the ground.
    """

    threat: ThreatModel
    eps_warmup: int

    def __post_init__(self) -> None:
        check_positive_int("eps_warmup", self.eps_warmup, minimum=0)

    def at_epoch(self, epoch: int, epochs: int, records: Records = ()) -> Objective:
        if self.eps_warmup == 0 or epoch >= self.eps_warmup or isinstance(self.threat.eps, Tensor):
            return self
        scale = (epoch + 1) / self.eps_warmup
        with warnings.catch_warnings():  # the step-size check is for the radius the user gave, not the ramp
            warnings.simplefilter("ignore", StepSizeWarning)
            return dataclasses.replace(self, threat=self.threat.with_eps(float(self.threat.eps) * scale))  # type: ignore[type-var]


class StepSizeWarning(UserWarning):
    """An inner-PGD step larger than the radius: each step overshoots the ball (issue 16)."""


class InnerPGDObjective(AdversarialObjective):
    """Base of the objectives whose inner max is ``steps`` of PGD (PGD-AT, TRADES, MART, AWP, consistency).

    Subclasses are frozen dataclasses that also declare ``steps`` and ``step_size``
    (``None`` means PGD's ``2.5·ε/steps``); they call :meth:`_check_pgd` in their
    ``__post_init__`` and take the attack from :meth:`_pgd`.
    """

    steps: int
    step_size: float | None

    def _check_pgd(self) -> None:
        check_positive_int("steps", self.steps)
        if self.step_size is not None:
            check_nonnegative("step_size", self.step_size)
            eps = self.threat.eps
            if not isinstance(eps, Tensor) and self.step_size > eps:
                warnings.warn(
                    f"{type(self).__name__}: step_size={self.step_size:g} is larger than eps={eps:g}, so "
                    "every PGD step overshoots the ball and is projected back (the inner max degrades "
                    "towards FGSM from a random start); use step_size=None "
                    f"(2.5*eps/steps = {2.5 * eps / self.steps:.3g})",
                    StepSizeWarning,
                    stacklevel=4,
                )

    def _pgd(self) -> PGD:
        """The inner maximizer: ``steps`` of PGD in the (possibly warmed-up) threat model."""
        return PGD(self.threat, steps=self.steps, step_size=self.step_size)


@register_objective("pgd_at")
@dataclass(frozen=True)
class PGDAT(InnerPGDObjective):
    """PGD adversarial training (Madry et al. 2018): minimize the loss at PGD's worst case.

    .. math::

        \\min_\\theta \\; \\mathbb{E}_{(x,y)} \\Big[ \\max_{x' \\in S(x)} L(\\theta, x', y) \\Big]

    The inner max is approximated by ``steps`` of PGD from a random start, with
    the model in whatever mode the Trainer put it (train mode), and the outer
    step descends the cross-entropy at the point found.

    Args:
        threat: the ε-ball to be robust in.
        steps: PGD steps per batch (each one forward and one backward pass).
        step_size: PGD step; ``None`` means ``2.5·ε/steps``.
        eps_warmup: epochs over which ε ramps up linearly (0: full ε from the start).

    References:
        Madry, Makelov, Schmidt, Tsipras & Vladu. Towards deep learning models
        resistant to adversarial attacks. ICLR 2018, eq. (2.1).
    """

    threat: ThreatModel
    steps: int = 10
    step_size: float | None = None
    eps_warmup: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_pgd()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x_adv = self._pgd()(model, x, y)
        return F.cross_entropy(model(x_adv), y)
