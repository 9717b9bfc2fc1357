"""Minimal-perturbation attacks in ℓ2: Carlini–Wagner, DeepFool and box-constrained L-BFGS.

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
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_logits, check_nonnegative, check_positive_int
from advlearn.attacks._base import (
    DERIVED,
    Attack,
    AttackResult,
    attack_config,
    evaluate,
    is_success,
    register,
)
from advlearn.losses import get_loss, margin
from advlearn.threat import ThreatModel, per_example


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)  # (B, D)


def _l2(delta: Tensor) -> Tensor:
    norms: Tensor = torch.linalg.vector_norm(_flat(delta), dim=1)  # (B,)
    return norms


def _signed_margin(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """How far the prediction is past the decision boundary: ``> 0`` exactly when the attack has succeeded.

    Untargeted: ``max_{j≠y} z_j − z_y``; targeted (``y`` the target): ``z_y − max_{j≠y} z_j``.
    """
    m = margin(logits, y)
    return -m if targeted else m


@dataclass
class _Best:
    """The smallest adversarial point found so far per example, and a fallback for those never fooled."""

    x: Tensor  # smallest adversarial point (valid where found)
    norm: Tensor  # (B,) its ℓ2 distance to x0, +inf where none found
    fallback: Tensor  # the point that came closest to fooling the model
    fallback_score: Tensor  # (B,) its signed margin

    @classmethod
    def start(cls, x0: Tensor) -> _Best:
        inf = torch.full((x0.shape[0],), math.inf, device=x0.device, dtype=x0.dtype)
        return cls(x=x0.clone(), norm=inf, fallback=x0.clone(), fallback_score=-inf)

    @property
    def found(self) -> Tensor:
        return torch.isfinite(self.norm)

    def update(self, idx: Tensor, x_new: Tensor, x0: Tensor, score: Tensor, fooled: Tensor) -> None:
        """Offer the candidates ``x_new`` of the examples ``idx`` (``x0`` their clean inputs)."""
        norms = _l2(x_new - x0)
        smaller = fooled & (norms < self.norm[idx])
        self.x[idx[smaller]], self.norm[idx[smaller]] = x_new[smaller], norms[smaller]
        closer = score > self.fallback_score[idx]
        self.fallback[idx[closer]], self.fallback_score[idx[closer]] = x_new[closer], score[closer]


def _finish(
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


def _check_loss_name(loss: str) -> None:
    get_loss(loss)


# ----------------------------------------------------------------------------- Carlini–Wagner


def _check_cw(
    steps: int, search_steps: int, initial_const: float, lr: float, confidence: float, loss: str
) -> None:
    check_positive_int("steps", steps)
    check_positive_int("search_steps", search_steps)
    if check_nonnegative("initial_const", initial_const) == 0.0:
        raise ValueError("initial_const must be > 0, got 0")
    if check_nonnegative("lr", lr) == 0.0:
        raise ValueError("lr must be > 0, got 0")
    check_nonnegative("confidence", confidence)
    _check_loss_name(loss)


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
        abort_early: stop a run when the objective has not fallen by 0.01 % in ``steps/10`` iterations.
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
    lo, hi = threat.box
    best = _Best.start(x)
    # An example x itself fools (with margin κ) needs no perturbation: δ = 0 is the minimum.
    with torch.no_grad():
        logits = check_logits(model(x), y)
    score = _signed_margin(logits, y, targeted)
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
            (lo, hi),
            confidence=confidence,
            steps=steps,
            search_steps=search_steps,
            initial_const=initial_const,
            lr=lr,
            targeted=targeted,
            abort_early=abort_early,
        )
    x_best = torch.where(per_example(best.found, x), best.x, best.fallback)
    return _finish(model, x, y, threat, x_best, loss, targeted, num_grads, x.shape[0])


def _fooled(logits: Tensor, y: Tensor, targeted: bool, confidence: float) -> Tensor:
    """``(B,)``: the prediction is wrong (hits the target) by a logit margin of at least ``confidence``."""
    return is_success(logits, y, targeted) & (_signed_margin(logits, y, targeted) >= confidence)


def _cw_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    idx: Tensor,
    best: _Best,
    bounds: tuple[float, float],
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
    lo, hi = bounds
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
                score = _signed_margin(logits, y, targeted)  # (B,) > 0: fooled
                objective = _l2(x_new - x) ** 2 + const * (-score).clamp_min(-confidence)
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

    norms: ClassVar[tuple[str, ...]] = ("l2",)

    threat: ThreatModel
    confidence: float = DERIVED
    steps: int = DERIVED
    search_steps: int = DERIVED
    initial_const: float = DERIVED
    lr: float = DERIVED
    targeted: bool = DERIVED
    abort_early: bool = DERIVED
    loss: str = DERIVED


# ----------------------------------------------------------------------------- DeepFool


def _check_deepfool(steps: int, overshoot: float, num_candidates: int, loss: str) -> None:
    check_positive_int("steps", steps)
    check_nonnegative("overshoot", overshoot)
    check_positive_int("num_candidates", num_candidates)
    _check_loss_name(loss)


def deepfool(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 50,
    overshoot: float = 0.02,
    num_candidates: int = 9,
    loss: str = "ce",
) -> AttackResult:
    """DeepFool: walk to the nearest decision boundary of the model's linearization, minimal in ℓ2.

    At the current point ``x_i``, for each candidate class ``k`` (the
    ``num_candidates`` highest-scoring wrong classes at ``x``), with
    ``f_k = Z_k − Z_y`` and ``w_k = ∇ₓ f_k``, the linearized boundary with class
    ``k`` is ``|f_k| / ‖w_k‖₂`` away. DeepFool steps onto the nearest one,

    .. math::

        \\hat l = \\arg\\min_k \\frac{|f_k(x_i)|}{\\|w_k(x_i)\\|_2}, \\qquad
        r_i = \\frac{|f_{\\hat l}(x_i)|}{\\|w_{\\hat l}(x_i)\\|_2^2} \\, w_{\\hat l}(x_i),

    and moves to ``x_{i+1} = clip(x_i + (1 + overshoot)·r_i)`` until the prediction
    leaves ``y``. Inside the box this is the paper's ``x + (1 + overshoot)·Σ r_i``
    exactly. At the box faces, coordinates pinned at a face whose gradient points
    out of the box are left out of ``w_k`` (the boundary is measured along the
    feasible directions), so the clip does not undo the step and the attack does
    not stall on the boundary. On a model that is affine in ``x``, away from the
    faces, it stops after one step, at the exact projection of ``x`` onto the
    nearest boundary pushed ``overshoot`` further: ``‖δ‖₂ = (1 + overshoot)·|f|/‖w‖₂``.

    The minimal point is returned when it lies within ``threat``'s ε-ball;
    otherwise it is projected onto the ball ∩ box (and may stop fooling the
    model). ``success`` is measured at the returned point. An example the model
    already misclassifies is returned unchanged.

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``.
        x: clean inputs ``(B, ...)``.
        y: labels ``(B,)``.
        threat: an ℓ2 threat model.
        steps: the most linearization steps.
        overshoot: how far past the linearized boundary to go (0.02 in the paper);
            with 0, a step lands on the boundary and the attack can stall there.
        num_candidates: how many wrong classes to consider (the top ones at ``x``).
        loss: the per-example loss reported in ``AttackResult.loss``.

    Returns:
        An :class:`AttackResult`. Each step costs one forward pass and one backward
        pass per candidate class; ``num_grads`` counts one per backward pass per example.

    References:
        Moosavi-Dezfooli, Fawzi & Frossard. DeepFool: a simple and accurate method
        to fool deep neural networks. CVPR 2016, Algorithm 2 (multi-class, ℓ2) and eq. (6).

    Example:
        >>> model = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2))
        >>> x, y = torch.tensor([[0.65, 0.35]]), torch.tensor([0])
        >>> result = deepfool(model, x, y, ThreatModel("l2", eps=1.0))
        >>> round(float((result.x_adv - x).norm()), 4)  # 1.02 · |0.65 − 0.35| / √2
        0.2164
    """
    check_inputs(x, y, threat)
    _check_deepfool(steps, overshoot, num_candidates, loss)
    n = x.shape[0]
    lo, hi = threat.box
    x_out = x.clone()
    active = torch.arange(n, device=x.device)
    x_i = x
    candidates: Tensor | None = None  # (B, K) the wrong classes to consider, from the clean logits
    num_grads = num_forwards = 0
    for step in range(steps + 1):
        with torch.enable_grad():
            xg = x_i.detach().requires_grad_(True)
            logits = model(xg)
            if step == 0:
                check_logits(logits, y)
                if logits.shape[1] < 2:
                    raise ValueError(
                        f"model must return at least 2 logits for DeepFool, got {logits.shape[1]}"
                    )
                k = min(num_candidates, logits.shape[1] - 1)
                others = logits.detach().scatter(1, y.unsqueeze(1), -math.inf)
                candidates = others.topk(k, dim=1).indices  # (B, K)
            assert candidates is not None
            y_a, cand_a = y[active], candidates[active]
            fooled = logits.detach().argmax(1) != y_a
            x_out[active[fooled]] = x_i.detach()[fooled]
            keep = ~fooled
            if step == steps or not bool(keep.any()):
                num_forwards += xg.shape[0]
                x_out[active[keep]] = x_i.detach()[keep]
                break
            true = logits.gather(1, y_a.unsqueeze(1)).squeeze(1)  # (Ba,)
            x_now = xg.detach()
            best_dist = torch.full((xg.shape[0],), math.inf, device=x.device, dtype=x.dtype)
            best_f = torch.zeros_like(best_dist)
            best_w = torch.zeros_like(xg)
            for j in range(cand_a.shape[1]):
                f = logits.gather(1, cand_a[:, j : j + 1]).squeeze(1) - true  # (Ba,)
                (w,) = torch.autograd.grad(f.sum(), xg, retain_graph=j + 1 < cand_a.shape[1])
                # Coordinates pinned at a box face whose gradient points out of the box cannot move:
                # the linearized boundary is measured within the feasible directions.
                w = w.masked_fill(((x_now <= lo) & (w < 0)) | ((x_now >= hi) & (w > 0)), 0.0)
                dist = f.detach().abs() / _l2(w).clamp_min(1e-12)
                closer = dist < best_dist
                best_dist = torch.where(closer, dist, best_dist)
                best_f = torch.where(closer, f.detach(), best_f)
                best_w = torch.where(per_example(closer, w), w, best_w)
            num_grads += cand_a.shape[1] * xg.shape[0]
        # Step onto the nearest linearized boundary (f < 0 on the label's side, so |f| = −f), then overshoot.
        r = per_example(best_f.abs() / (_l2(best_w) ** 2).clamp_min(1e-24), best_w) * best_w
        active = active[keep]
        x_i = threat.project_box(x_now[keep] + (1 + overshoot) * r[keep])
    return _finish(model, x, y, threat, x_out, loss, False, num_grads, num_forwards)


@register("deepfool")
@attack_config(deepfool, check=_check_deepfool)
class DeepFool(Attack):
    """Config for :func:`deepfool`: ``DeepFool(ThreatModel("l2", eps=1.0))(model, x, y) -> x_adv``.

    Supports the ℓ2 norm (the paper's general ℓp variant is not implemented).
    """

    norms: ClassVar[tuple[str, ...]] = ("l2",)

    threat: ThreatModel
    steps: int = DERIVED
    overshoot: float = DERIVED
    num_candidates: int = DERIVED
    loss: str = DERIVED


# ----------------------------------------------------------------------------- L-BFGS


def _check_lbfgs(steps: int, search_steps: int, initial_const: float, loss: str, targeted: bool) -> None:
    check_positive_int("steps", steps)
    check_positive_int("search_steps", search_steps)
    if check_nonnegative("initial_const", initial_const) == 0.0:
        raise ValueError("initial_const must be > 0, got 0")
    _check_loss_name(loss)
    if targeted and loss == "dlr":
        raise ValueError("loss='dlr' does not work with targeted=True; use loss='ce' or loss='cw'")


def lbfgs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 50,
    search_steps: int = 5,
    initial_const: float = 1.0,
    loss: str = "ce",
    targeted: bool = False,
) -> AttackResult:
    """The first adversarial-example attack: box-constrained L-BFGS with a line search on c.

    Szegedy et al. find the smallest ``r`` with ``f(x + r) = l`` by solving, for
    a weight ``c > 0`` on the size of the perturbation,

    .. math::

        \\min_{\\delta} \\; c \\, \\|\\delta\\|_2^2 \\; - \\; s \\cdot L(x + \\delta, y)
        \\quad \\text{s.t.} \\quad x + \\delta \\in [lo, hi]^d

    with L-BFGS-B (``s = +1``: raise the loss w.r.t. the label; ``s = −1`` when
    ``targeted``: lower it w.r.t. the target, the paper's ``loss_f(x + r, l)``), and
    searching ``c`` per example for the largest value (the smallest perturbation)
    whose minimizer still fools the model: ×10 while it does, ÷10 while it does not,
    bisection once both are known. The squared norm replaces the paper's ``c|r|``
    because L-BFGS-B needs a differentiable objective, and ``‖δ‖`` has no gradient
    at the starting point δ = 0; as ``c`` varies both trace the same trade-off.

    Every point the optimizer evaluates is a candidate: the smallest-norm one
    that fools the model is kept. It is returned when it lies within
    ``threat``'s ε-ball, otherwise projected onto the ball ∩ box (and may no
    longer fool the model); ``success`` is measured at the returned point.

    scipy's L-BFGS-B runs on NumPy float64 arrays, so every objective evaluation
    makes a round trip from the model's device to NumPy and back: the one
    attack in advlearn that leaves the device, because scipy needs it. The batch
    is optimized as one separable problem (the objective is a sum over examples).

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``.
        x: clean inputs ``(B, ...)``.
        y: labels ``(B,)``, or target classes when ``targeted``.
        threat: an ℓ2 threat model.
        steps: L-BFGS-B iterations per value of ``c``.
        search_steps: values of ``c`` tried.
        initial_const: the first ``c``.
        loss: ``"ce"`` (the paper's), ``"cw"`` or ``"dlr"``: the loss in the
            objective and the one reported in ``AttackResult.loss``. On inputs
            classified with near-certainty the cross-entropy saturates and, for a
            large ``c``, the minimizer stays next to ``x``; the line search then
            lowers ``c``. The uncapped margin ``"cw"`` does not saturate.
        targeted: reach the classes in ``y``.

    Returns:
        An :class:`AttackResult`; ``num_grads`` counts one forward and backward pass
        per example for every objective evaluation.

    References:
        Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow & Fergus. Intriguing
        properties of neural networks. ICLR 2014, §4.1 (box-constrained L-BFGS).
        Byrd, Lu, Nocedal & Zhu. A limited memory algorithm for bound constrained
        optimization. SIAM J. Sci. Comput. 1995 (L-BFGS-B).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 2)
        >>> x, y = torch.full((3, 4), 0.5), torch.tensor([0, 1, 0])
        >>> threat = ThreatModel("l2", eps=10.0)
        >>> result = lbfgs(model, x, y, threat)
        >>> bool(result.success.all()), bool(threat.contains(result.x_adv, x).all())
        (True, True)
    """
    check_inputs(x, y, threat)
    _check_lbfgs(steps, search_steps, initial_const, loss, targeted)
    best = _Best.start(x)
    with torch.no_grad():
        logits = check_logits(model(x), y)
    # An example x itself fools needs no perturbation: δ = 0 is the minimum.
    best.update(
        torch.arange(x.shape[0], device=x.device),
        x,
        x,
        _signed_margin(logits, y, targeted),
        is_success(logits, y, targeted),
    )
    idx = (~best.found).nonzero().squeeze(1)
    counter = {"grads": 0, "forwards": x.shape[0]}
    if idx.numel():
        _lbfgs_search(
            model,
            x[idx],
            y[idx],
            idx,
            best,
            threat,
            counter,
            steps=steps,
            search_steps=search_steps,
            initial_const=initial_const,
            loss=loss,
            targeted=targeted,
        )
    x_best = torch.where(per_example(best.found, x), best.x, best.fallback)
    return _finish(model, x, y, threat, x_best, loss, targeted, counter["grads"], counter["forwards"])


def _lbfgs_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    idx: Tensor,
    best: _Best,
    threat: ThreatModel,
    counter: dict[str, int],
    *,
    steps: int,
    search_steps: int,
    initial_const: float,
    loss: str,
    targeted: bool,
) -> None:
    """The line search on c and its L-BFGS-B runs on the examples ``idx``; counts passes in ``counter``."""
    from scipy.optimize import minimize

    loss_fn = get_loss(loss)
    sign = -1.0 if targeted else 1.0
    lo, hi = threat.box
    n = x.shape[0]
    device, dtype = x.device, x.dtype
    bounds = np.stack(
        [(lo - x).reshape(-1).cpu().double().numpy(), (hi - x).reshape(-1).cpu().double().numpy()], axis=1
    )
    const = torch.full((n,), float(initial_const), device=device, dtype=dtype)
    lower = torch.zeros(n, device=device, dtype=dtype)  # largest c known to succeed
    upper = torch.full((n,), math.inf, device=device, dtype=dtype)  # smallest c known to fail

    def objective(flat: np.ndarray[Any, np.dtype[np.float64]], c: Tensor) -> tuple[float, Any]:
        delta = torch.from_numpy(flat).to(device=device, dtype=dtype).reshape(x.shape)
        with torch.enable_grad():
            delta.requires_grad_(True)
            x_new = x + delta
            logits = model(x_new)
            value = (c * _l2(delta) ** 2 - sign * loss_fn(logits, y)).sum()
            (grad,) = torch.autograd.grad(value, delta)
        counter["grads"] += n
        logits = logits.detach()
        fooled = is_success(logits, y, targeted)
        best.update(idx, x_new.detach(), x, _signed_margin(logits, y, targeted), fooled)
        return float(value.detach()), grad.reshape(-1).double().cpu().numpy()

    for _ in range(search_steps):
        solution = minimize(
            objective,
            np.zeros(x.numel()),
            args=(const,),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            # No tolerances: on a confidently classified input the loss and its gradient are tiny at
            # δ = 0, and scipy's defaults would stop there; the iteration budget ends each run.
            options={"maxiter": steps, "gtol": 0.0, "ftol": 0.0},
        )
        delta = torch.from_numpy(solution.x).to(device=device, dtype=dtype).reshape(x.shape)
        with torch.no_grad():
            succeeded = is_success(model(threat.project_box(x + delta)), y, targeted)
        counter["forwards"] += n
        # Success: the penalty can grow (a smaller δ); failure: it must shrink.
        lower = torch.where(succeeded, torch.maximum(lower, const), lower)
        upper = torch.where(succeeded, upper, torch.minimum(upper, const))
        bisect = (lower > 0) & torch.isfinite(upper)
        const = torch.where(bisect, (lower + upper) / 2, torch.where(succeeded, const * 10, const / 10))


@register("lbfgs")
@attack_config(lbfgs, check=_check_lbfgs)
class LBFGS(Attack):
    """Config for :func:`lbfgs`: ``LBFGS(ThreatModel("l2", eps=1.0))(model, x, y) -> x_adv``.

    Supports the ℓ2 norm, the norm of Szegedy et al.'s penalty.
    """

    norms: ClassVar[tuple[str, ...]] = ("l2",)

    threat: ThreatModel
    steps: int = DERIVED
    search_steps: int = DERIVED
    initial_const: float = DERIVED
    loss: str = DERIVED
    targeted: bool = DERIVED


__all__ = ["CW", "LBFGS", "DeepFool", "cw", "deepfool", "lbfgs"]
