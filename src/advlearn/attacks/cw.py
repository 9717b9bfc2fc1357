"""The Carlini–Wagner ℓ2 attack (Carlini & Wagner 2017): the smallest perturbation that fools by a margin κ.

A minimal-perturbation attack held to the threat model's contract: see :mod:`advlearn.attacks._minimal`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_logits, check_nonnegative
from advlearn.attacks._base import (
    DERIVED,
    Attack,
    AttackResult,
    attack_config,
    is_success,
    register,
)
from advlearn.attacks._minimal import Smallest, check_loss_name, check_search, finish, signed_margin
from advlearn.threat import L2, ThreatModel


def _check_cw(
    steps: int, search_steps: int, initial_const: float, lr: float, confidence: float, loss: str
) -> None:
    check_search(steps, search_steps, initial_const)
    if check_nonnegative("lr", lr) == 0.0:
        raise ValueError("lr must be > 0, got 0")
    check_nonnegative("confidence", confidence)
    check_loss_name(loss)


def cw(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    confidence: float = 0.0,
    steps: int = 100,
    search_steps: int = 5,
    initial_const: float = 1.0,
    lr: float = 0.01,
    targeted: bool = False,
    abort_early: bool = True,
    loss: str = "cw",
) -> AttackResult:
    """The Carlini–Wagner ℓ2 attack: the smallest perturbation that fools the model by a margin κ.

    For each example, with the change of variables ``x' = lo + (hi − lo)(tanh(w) + 1)/2``
    that keeps ``x'`` inside the box without clipping, Adam minimizes

    .. math::

        \\|x'(w) - x\\|_2^2 + c \\cdot f_6(x'(w)),
        \\qquad f_6(x') = \\max\\big(Z(x')_y - \\max_{j \\ne y} Z(x')_j, \\; -\\kappa\\big)

    (for a targeted attack, ``y`` the target: ``max(max_{j≠y} Z_j − Z_y, −κ)``), and a
    binary search over ``c`` per example looks for the smallest ``c`` whose run
    succeeds: ×10 while every run fails, bisection once one has. Every iterate
    is a candidate; the smallest-norm one that fools the model with margin
    ``≥ κ`` is kept.

    CW is a minimal-norm attack, not a ball-constrained one. The returned
    point is that smallest adversarial example when it lies within ``threat``'s
    ε-ball; otherwise (or when none was found) the best point is projected onto
    the ball ∩ box, which may no longer fool the model. ``success`` and ``loss``
    are measured at the returned point, so the result is honest either way.

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``.
        x: clean inputs ``(B, ...)``.
        y: labels ``(B,)``, or target classes when ``targeted``.
        threat: an ℓ2 threat model.
        confidence: κ, the logit margin the adversarial example must reach.
        steps: Adam iterations per value of ``c`` (each one forward and one backward pass).
        search_steps: values of ``c`` tried (binary search steps).
        initial_const: the first ``c``.
        lr: Adam's learning rate on ``w``.
        targeted: reach the classes in ``y`` instead of leaving them.
        abort_early: stop a run when the objective has not fallen by 0.01 % in ``steps/10`` iterations
            (that test reads one number on the host every ``steps/10`` iterations; nothing else does).
        loss: the per-example loss reported in ``AttackResult.loss`` (``"cw"`` is the uncapped margin).

    Returns:
        An :class:`AttackResult`; ``num_grads`` counts every Adam iteration per example.

    References:
        Carlini & Wagner. Towards evaluating the robustness of neural networks.
        IEEE S&P 2017, §V (eq. (7) with f₆, the tanh box constraint of §V.A, and the
        binary search on c of §VI).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 2)
        >>> x, y = torch.full((3, 4), 0.5), torch.tensor([0, 1, 0])
        >>> threat = ThreatModel("l2", eps=10.0)
        >>> result = cw(model, x, y, threat, steps=200, lr=0.05)
        >>> bool(result.success.all()), bool(threat.contains(result.x_adv, x).all())
        (True, True)
    """
    check_inputs(x, y, threat)
    _check_cw(steps, search_steps, initial_const, lr, confidence, loss)
    _ = threat.box  # CW needs a box: its tanh change of variables maps into it
    best = Smallest.start(x, threat.norm)
    # An example x itself fools (with margin κ) needs no perturbation: δ = 0 is the minimum.
    with torch.no_grad():
        logits = check_logits(model(x), y)
    score = signed_margin(logits, y, targeted)
    best.update(
        torch.arange(x.shape[0], device=x.device), x, x, score, _fooled(logits, y, targeted, confidence)
    )
    idx = (~best.found).nonzero().squeeze(1)
    num_grads = 0
    if idx.numel():
        num_grads = _cw_search(
            model,
            x[idx],
            y[idx],
            idx,
            best,
            threat,
            confidence=confidence,
            steps=steps,
            search_steps=search_steps,
            initial_const=initial_const,
            lr=lr,
            targeted=targeted,
            abort_early=abort_early,
        )
    return finish(model, x, y, threat, best.chosen, loss, targeted, num_grads, x.shape[0])


def _fooled(logits: Tensor, y: Tensor, targeted: bool, confidence: float) -> Tensor:
    """``(B,)``: the prediction is wrong (hits the target) by a logit margin of at least ``confidence``."""
    return is_success(logits, y, targeted) & (signed_margin(logits, y, targeted) >= confidence)


def _cw_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    idx: Tensor,
    best: Smallest,
    threat: ThreatModel,
    *,
    confidence: float,
    steps: int,
    search_steps: int,
    initial_const: float,
    lr: float,
    targeted: bool,
    abort_early: bool,
) -> int:
    """CW's binary search over c and its Adam runs on the examples ``idx``; returns the gradients spent."""
    lo, hi = threat.box
    norm = threat.norm  # ℓ2: the distance CW minimizes
    n = x.shape[0]
    dtype, device = x.dtype, x.device
    # Map x into tanh space; inputs on the box faces get a finite w a hair inside.
    w0 = torch.atanh(((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    const = torch.full((n,), float(initial_const), device=device, dtype=dtype)
    lower = torch.zeros(n, device=device, dtype=dtype)
    upper = torch.full((n,), math.inf, device=device, dtype=dtype)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    num_grads = 0
    check_every = max(steps // 10, 1)
    for _ in range(search_steps):
        w = w0.clone()
        m = torch.zeros_like(w)
        v = torch.zeros_like(w)
        succeeded = torch.zeros(n, dtype=torch.bool, device=device)
        previous = math.inf
        for t in range(1, steps + 1):
            with torch.enable_grad():
                w_ = w.detach().requires_grad_(True)
                x_new = lo + (hi - lo) * (torch.tanh(w_) + 1) / 2
                logits = model(x_new)
                score = signed_margin(logits, y, targeted)  # (B,) > 0: fooled
                objective = norm(x_new - x) ** 2 + const * (-score).clamp_min(-confidence)
                (grad,) = torch.autograd.grad(objective.sum(), w_)
            num_grads += n
            x_new, logits = x_new.detach(), logits.detach()
            fooled = _fooled(logits, y, targeted, confidence)
            succeeded |= fooled
            best.update(idx, x_new, x, score.detach(), fooled)
            # Adam on w, written out so that only the input's gradient is ever taken.
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            w = w - lr * (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + adam_eps)
            if abort_early and t % check_every == 0:
                total = float(objective.detach().sum())
                if total > previous * 0.9999:
                    break
                previous = total
        # Binary search on c: success → try a smaller c, failure → a larger one.
        upper = torch.where(succeeded, torch.minimum(upper, const), upper)
        lower = torch.where(succeeded, lower, torch.maximum(lower, const))
        const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
    return num_grads


@register("cw")
@attack_config(cw, check=_check_cw)
class CW(Attack):
    """Config for :func:`cw`: ``CW(ThreatModel("l2", eps=1.0))(model, x, y) -> x_adv``.

    Supports the ℓ2 norm only (Carlini & Wagner's ℓ∞ and ℓ0 variants are different algorithms).
    """

    norms: ClassVar[tuple[str, ...]] = (L2(),)

    threat: ThreatModel
    confidence: float = DERIVED
    steps: int = DERIVED
    search_steps: int = DERIVED
    initial_const: float = DERIVED
    lr: float = DERIVED
    targeted: bool = DERIVED
    abort_early: bool = DERIVED
    loss: str = DERIVED


__all__ = ["CW", "cw"]
