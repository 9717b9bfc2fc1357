"""Per-example losses that attackers maximize and trainers minimize.

Every loss maps logits ``(B, C)`` and labels ``(B,)`` to a ``(B,)`` tensor that
grows as the prediction moves away from the label. An untargeted attacker
maximizes the sum; a targeted attacker passes the target classes as labels and
maximizes the negated sum.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from advlearn._registry import Registry, Wording

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """``−log softmax(logits)_y`` per example.

    Shape:
        logits ``(B, C)``, y ``(B,)`` → ``(B,)``.

    Example:
        >>> cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor([1.3863, 1.3863])
    """
    return F.cross_entropy(logits, y, reduction="none")


def _true_and_best_other(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The label's logit ``z_y`` and the largest other logit ``max_{j≠y} z_j``."""
    true = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, y.unsqueeze(1), float("-inf"))
    return true, others.amax(dim=1)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{j≠y} z_j − z_y`` per example: positive exactly when the prediction is wrong."""
    true, other = _true_and_best_other(logits, y)
    return other - true


def cw_margin(logits: Tensor, y: Tensor, confidence: float = float("inf")) -> Tensor:
    """The Carlini–Wagner margin loss ``min(max_{j≠y} z_j − z_y, κ)`` per example.

    Maximizing it drives the best wrong logit above the true one; the cap ``κ``
    (``confidence``) stops rewarding margins beyond ``κ``. The default, no cap, is
    what PGD with ``loss="cw"`` uses.

    References:
        Carlini & Wagner. Towards evaluating the robustness of neural networks.
        IEEE S&P 2017, eq. (6) with f₆, written as a quantity to maximize.

    Example:
        >>> cw_margin(torch.tensor([[2.0, 0.5, 1.0]]), torch.tensor([0]))
        tensor([-1.])
    """
    return margin(logits, y).clamp_max(confidence)


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """The difference-of-logits-ratio loss of Croce & Hein (2020) per example.

    .. math::

        \\mathrm{DLR}(z, y) = -\\frac{z_y - \\max_{j \\ne y} z_j}{z_{\\pi_1} - z_{\\pi_3}}

    with ``π`` the logits sorted in decreasing order. It is invariant to shifting
    and rescaling the logits, so a model cannot hide behind saturated softmax.

    References:
        Croce & Hein. Reliable evaluation of adversarial robustness with an
        ensemble of diverse parameter-free attacks. ICML 2020, eq. (5).

    Raises:
        ValueError: with fewer than three classes (``z_{π3}`` does not exist).
    """
    if logits.shape[1] < 3:
        raise ValueError(f"loss='dlr' needs at least 3 classes, the model returns {logits.shape[1]}")
    top3 = logits.topk(3, dim=1).values  # (B, 3)
    return margin(logits, y) / (top3[:, 0] - top3[:, 2] + 1e-12)


def kl_divergence(reference_logits: Tensor, logits: Tensor) -> Tensor:
    """``KL(softmax(reference_logits) ‖ softmax(logits))`` per example.

    TRADES and MART push the prediction at ``x'`` towards the one at ``x``
    (the reference, usually detached). Zero exactly when the two distributions agree.

    Shape:
        both ``(B, C)`` → ``(B,)``.

    Example:
        >>> kl_divergence(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
        tensor([0.])
    """
    log_p = F.log_softmax(reference_logits, dim=1)
    return (log_p.exp() * (log_p - F.log_softmax(logits, dim=1))).sum(dim=1)


LOSSES: Registry[Tensor] = Registry(
    "loss", wording=Wording(unknown_name="loss={name!r} is not known; use one of {choices}")
)
"""The per-example losses an attack may be asked for by name; each maps ``(logits, y)`` to ``(B,)``."""
LOSSES.register("ce")(cross_entropy)
LOSSES.register("cw")(cw_margin)
LOSSES.register("dlr")(dlr)


def get_loss(name: str) -> LossFn:
    """The per-example loss registered as ``name`` (``"ce"``, ``"cw"`` or ``"dlr"``)."""
    loss: LossFn = LOSSES.lookup(name)
    return loss


__all__ = ["LOSSES", "LossFn", "cross_entropy", "cw_margin", "dlr", "get_loss", "kl_divergence", "margin"]


# ----------------------------------------------------------------------------- training loss terms
# The robust-training objectives' losses (advlearn.training builds its objectives on them). Mean
# losses here, unlike the per-example losses above: each is what one training step minimizes.


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """``mean[CE(f(x), y) + β·KL(f(x) ‖ f(x'))]``, Zhang et al. (2019), eq. (5)."""
    return (
        F.cross_entropy(logits_clean, y, reduction="none") + beta * kl_divergence(logits_clean, logits_adv)
    ).mean()


def mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, lambda_: float) -> Tensor:
    """MART's loss (Wang et al. 2020, eq. (9)): boosted CE on ``x'`` plus the misclassification-weighted KL.

    .. math::

        \\mathrm{BCE}(p(x'), y) + \\lambda \\,\\mathrm{KL}(p(x) \\,\\|\\, p(x'))\\,(1 - p_y(x)),
        \\qquad \\mathrm{BCE} = -\\log p_y(x') - \\log\\big(1 - \\max_{k \\ne y} p_k(x')\\big)
    """
    probs_adv = logits_adv.softmax(dim=1)
    best_other = probs_adv.scatter(1, y.unsqueeze(1), 0.0).amax(dim=1)
    bce = F.cross_entropy(logits_adv, y, reduction="none") - (1.0 - best_other).clamp_min(1e-12).log()
    p_true = logits_clean.softmax(dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    return (bce + lambda_ * kl_divergence(logits_clean, logits_adv) * (1.0 - p_true)).mean()


def jensen_shannon(logits_a: Tensor, logits_b: Tensor, temperature: float = 1.0) -> Tensor:
    """``½KL(p_a ‖ m) + ½KL(p_b ‖ m)`` per example, with ``p = softmax(logits / T)`` and ``m`` their mean.

    The consistency term of Tack et al. (2022) between two views' predictions.

    Shape:
        both ``(B, C)`` → ``(B,)``.
    """
    p_a, p_b = (logits_a / temperature).softmax(1), (logits_b / temperature).softmax(1)
    log_m = (0.5 * (p_a + p_b)).clamp_min(1e-12).log()
    kl_a = (p_a * (p_a.clamp_min(1e-12).log() - log_m)).sum(1)
    kl_b = (p_b * (p_b.clamp_min(1e-12).log() - log_m)).sum(1)
    return 0.5 * (kl_a + kl_b)


__all__ += ["jensen_shannon", "mart_loss", "trades_loss"]
