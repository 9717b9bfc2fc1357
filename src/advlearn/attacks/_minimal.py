"""What the minimal-perturbation attacks (CW, DeepFool, L-BFGS) share.

These attacks do not ask "what is the worst input in the ball?" but "what is
the smallest perturbation that fools the model?". advlearn still holds them to
the threat model's contract: each one searches for its smallest adversarial
point, returns it when it lies inside the ε-ball, and otherwise returns its
best guess *projected onto the ball ∩ box* (which may no longer fool the
model; ``AttackResult.success`` is always measured at the returned point). So
``threat.contains(x_adv, x)`` holds for every output, and the robust accuracy
they give is an honest upper bound like any other attack's. With a large ε
(say ``ThreatModel("l2", eps=1e3)``) the projection never binds and the
output is the attack's minimal-norm adversarial example itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn.attacks._base import AttackResult, evaluate
from advlearn.losses import get_loss, margin
from advlearn.threat import Norm, ThreatModel, per_example


def signed_margin(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """How far the prediction is past the decision boundary: ``> 0`` exactly when the attack has succeeded.

    Untargeted: ``max_{j≠y} z_j − z_y``; targeted (``y`` the target): ``z_y − max_{j≠y} z_j``.
    """
    m = margin(logits, y)
    return -m if targeted else m


@dataclass
class Smallest:
    """The smallest adversarial point found so far per example, and a fallback for those never fooled."""

    measure: Norm  # the threat model's norm, in which "smallest" is meant
    x: Tensor  # smallest adversarial point (valid where found)
    norm: Tensor  # (B,) its distance to x0, +inf where none found
    fallback: Tensor  # the point that came closest to fooling the model
    fallback_score: Tensor  # (B,) its signed margin

    @classmethod
    def start(cls, x0: Tensor, measure: Norm) -> Smallest:
        inf = torch.full((x0.shape[0],), math.inf, device=x0.device, dtype=x0.dtype)
        return cls(measure=measure, x=x0.clone(), norm=inf, fallback=x0.clone(), fallback_score=-inf)

    @property
    def found(self) -> Tensor:
        return torch.isfinite(self.norm)

    @property
    def chosen(self) -> Tensor:
        """Per example the smallest adversarial point where one was found, else the fallback."""
        return torch.where(per_example(self.found, self.x), self.x, self.fallback)

    def update(self, idx: Tensor, x_new: Tensor, x0: Tensor, score: Tensor, fooled: Tensor) -> None:
        """Offer the candidates ``x_new`` of the examples ``idx`` (``x0`` their clean inputs)."""
        norms = self.measure(x_new - x0)
        smaller = fooled & (norms < self.norm[idx])
        self.x[idx[smaller]], self.norm[idx[smaller]] = x_new[smaller], norms[smaller]
        closer = score > self.fallback_score[idx]
        self.fallback[idx[closer]], self.fallback_score[idx[closer]] = x_new[closer], score[closer]


def finish(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    x_best: Tensor,
    loss: str,
    targeted: bool,
    num_grads: int,
    num_forwards: int,
) -> AttackResult:
    """Project the attack's point onto ball ∩ box and score it there with one forward pass."""
    x_adv = threat.project(x_best, x)
    losses, success = evaluate(model, x_adv, y, get_loss(loss), targeted)
    return AttackResult(
        x_adv=x_adv,
        success=success,
        loss=losses,
        num_grads=num_grads,
        num_forwards=num_forwards + x.shape[0],
    )


def check_loss_name(loss: str) -> None:
    get_loss(loss)


def check_search(steps: int, search_steps: int, initial_const: float) -> None:
    """The options of a search on the penalty weight c (CW, L-BFGS): positive counts, ``c > 0``."""
    check_positive_int("steps", steps)
    check_positive_int("search_steps", search_steps)
    if check_nonnegative("initial_const", initial_const) == 0.0:
        raise ValueError("initial_const must be > 0, got 0")
