"""What every attack shares: the result type, the config base class, the registry,
and the two model calls an attack makes (a loss gradient w.r.t. the input, and a
plain evaluation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from advlearn._checks import check_logits
from advlearn._registry import Registry
from advlearn.losses import LossFn
from advlearn.threat import NORMS, ThreatModel


@dataclass(frozen=True)
class AttackResult:
    """The outcome of one attack on a batch.

    Attributes:
        x_adv: the adversarial inputs, shape of ``x``; each inside the threat model's set.
        success: ``(B,)`` bool; untargeted: the model misclassifies ``x_adv``;
            targeted: the model predicts the target class at ``x_adv``.
        loss: ``(B,)`` the attack loss at ``x_adv`` w.r.t. the labels (targets, if targeted).
        num_grads: forward+backward passes spent, counted per example (a batch
            of 256 attacked for 10 steps costs 2,560).
        num_forwards: forward-only passes spent, counted per example.
    """

    x_adv: Tensor
    success: Tensor
    loss: Tensor
    num_grads: int = 0
    num_forwards: int = 0

    @property
    def success_rate(self) -> float:
        """The fraction of examples on which the attack succeeded."""
        return float(self.success.float().mean()) if self.success.numel() else 0.0


class Attack:
    """Base of the frozen-dataclass attack configs.

    A config holds hyper-parameters and the threat model, never a model or a
    device. Call it as ``attack(model, x, y) -> x_adv`` (the cheapest path, no
    bookkeeping beyond what the attack needs) or ``attack.run(model, x, y) ->
    AttackResult``. Attacks never change ``model.training`` or the parameters
    and work under ``torch.no_grad()``; they are deterministic given
    ``torch.manual_seed`` or an explicit ``generator``.
    """

    name: ClassVar[str] = ""
    #: the norms the attack supports; constructing it with another norm raises a ValueError.
    norms: ClassVar[tuple[str, ...]] = NORMS
    threat: ThreatModel

    def _check_norm(self) -> None:
        """Raise a ValueError unless ``threat.norm`` is in :attr:`norms`; call it in ``__post_init__``."""
        if self.threat.norm not in self.norms:
            supported = ", ".join(map(repr, self.norms))
            raise ValueError(
                f"{type(self).__name__} supports norm {supported}, not threat.norm={str(self.threat.norm)!r}"
            )

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> AttackResult:
        raise NotImplementedError

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """The adversarial inputs only; subclasses override it when that is cheaper than :meth:`run`."""
        return self.run(model, x, y, generator=generator).x_adv

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.perturb(model, x, y, generator=generator)


# ----------------------------------------------------------------------------- registry

ATTACKS: Registry[Attack] = Registry("attack")
register = ATTACKS.register


def build_attack(name: str, threat: ThreatModel, **options: Any) -> Attack:
    """Build the registered attack ``name`` with ``options``, rejecting unknown keys.

    Example:
        >>> threat = ThreatModel("linf", eps=0.1)
        >>> build_attack("pgd", threat, steps=20)
        PGD(threat=ThreatModel(norm='linf', eps=0.1, bounds=(0.0, 1.0)), steps=20, ...)
    """
    return ATTACKS.build(name, options, threat=threat)


# ----------------------------------------------------------------------------- model calls


def is_success(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """``(B,)`` bool: the prediction hits the target (targeted) or misses the label (untargeted)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def loss_and_grad(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, *, check: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and one backward pass: ``(logits, per-example loss, ∇ₓ Σ loss)``.

    Only the gradient w.r.t. ``x`` is computed (``torch.autograd.grad``), so no
    parameter's ``.grad`` is touched, and it works inside ``torch.no_grad()``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        if check:
            check_logits(logits, y)
        losses = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return logits.detach(), losses.detach(), grad


def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, targeted: bool, *, check: bool = False
) -> tuple[Tensor, Tensor]:
    """One forward pass without a graph: ``(per-example loss, success)``."""
    with torch.no_grad():
        logits = model(x)
        if check:
            check_logits(logits, y)
        return loss_fn(logits, y), is_success(logits, y, targeted)
