"""Transfer attacks: craft adversarial examples on a surrogate model, use them against the target.

The attacker needs no gradient (not even a query) of the target: Szegedy et
al. (2014) and Goodfellow et al. (2015) found that examples fooling one model
often fool another trained on similar data. Papernot et al. (2017) turned
this into a black-box attack; Athalye et al. (2018) into a check: when
examples transferred from a surrogate beat white-box attacks on the model
itself, the model's gradients are lying (gradient masking).
"""

from __future__ import annotations

from dataclasses import field

import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs
from advlearn.attacks._base import DERIVED, Attack, AttackResult, attack_config, evaluate
from advlearn.losses import get_loss
from advlearn.threat import ThreatModel


def transfer(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    surrogate: nn.Module,
    attack: Attack,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Run ``attack`` on ``surrogate`` and score its adversarial examples on ``model``.

    Args:
        model: the target; only one forward pass of it is made, no gradient.
        x: clean inputs ``(B, ...)`` inside ``threat.bounds``.
        y: labels ``(B,)`` (targets if ``attack`` is targeted: ``success`` then
            means the target model predicts them).
        threat: the threat model; ``attack.threat`` must equal it.
        surrogate: the model the examples are crafted on.
        attack: any attack config, e.g. ``PGD(threat, steps=40)``.
        loss: the loss reported in ``AttackResult.loss``, measured on the target.
        generator: passed to ``attack`` for its random starts.

    Returns:
        An :class:`AttackResult` whose ``success`` and ``loss`` are the **target's**;
        ``num_grads`` and ``num_forwards`` add what the attack spent on the surrogate
        and the target's one forward pass.

    References:
        Papernot, McDaniel, Goodfellow, Jha, Celik & Swami. Practical black-box
        attacks against machine learning. AsiaCCS 2017.
        Goodfellow, Shlens & Szegedy. ICLR 2015, §8 (cross-model generalization).

    Example:
        >>> from advlearn.attacks import FGSM
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> target, surrogate = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
        >>> x, y = torch.rand(5, 4), torch.randint(0, 3, (5,))
        >>> threat = ThreatModel("linf", eps=0.1)
        >>> result = transfer(target, x, y, threat, surrogate=surrogate, attack=FGSM(threat))
        >>> torch.equal(result.success, target(result.x_adv).argmax(1) != y)
        True
    """
    check_inputs(x, y, threat)
    _check_transfer(threat, attack, loss)
    crafted = attack.run(surrogate, x, y, generator=generator)
    targeted = bool(getattr(attack, "targeted", False))
    losses, success = evaluate(model, crafted.x_adv, y, get_loss(loss), targeted, check=True)
    return AttackResult(
        x_adv=crafted.x_adv,
        success=success,
        loss=losses,
        num_grads=crafted.num_grads,
        num_forwards=crafted.num_forwards + x.shape[0],
    )


def _check_transfer(threat: ThreatModel, attack: Attack, loss: str) -> None:
    if not isinstance(attack, Attack):
        raise ValueError(f"attack must be an advlearn Attack config, got {type(attack).__name__}")
    if attack.threat != threat:
        raise ValueError(
            f"attack runs under {attack.threat}, not the transfer attack's threat {threat}; "
            "build both with the same ThreatModel"
        )
    get_loss(loss)


@attack_config(transfer)
class Transfer(Attack):
    """Config for :func:`transfer`: ``Transfer(threat, surrogate, PGD(threat))(target, x, y) -> x_adv``.

    Crafts on ``surrogate`` with ``attack``; ``run`` reports success on the
    model it is called with (the target). Every output is the inner attack's
    output, so it lies in ``threat``'s ball ∩ box; the norms are whatever the
    inner attack supports.

    Transfer is *not* in the attack registry: it holds a model (the surrogate),
    so it cannot be built from a name and a config file, and the registry's
    conformance suite builds every entry from its name alone. It is tested
    directly instead (``tests/test_classic_attacks.py`` runs the same contract
    checks on it: threat set, ``torch.no_grad()``, model mode, determinism).
    :func:`advlearn.evaluation.transfer_matrix` builds the Goodfellow table from it.

    Attributes:
        threat: the threat model, equal to ``attack.threat``.
        surrogate: the model the examples are crafted on.
        attack: the attack run on the surrogate.
        loss: the loss reported in ``AttackResult.loss``, measured on the target.
    """

    threat: ThreatModel
    surrogate: nn.Module = field(repr=False)
    attack: Attack
    loss: str = DERIVED

    def __post_init__(self) -> None:
        if not isinstance(self.surrogate, nn.Module):
            raise ValueError(f"surrogate must be a torch.nn.Module, got {type(self.surrogate).__name__}")
        _check_transfer(self.threat, self.attack, self.loss)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        # The target plays no part in crafting: the surrogate's examples are the output.
        check_inputs(x, y, self.threat)
        return self.attack.perturb(self.surrogate, x, y, generator=generator)


__all__ = ["Transfer", "transfer"]
