"""DeepFool (Moosavi-Dezfooli et al. 2016): walk to the nearest boundary of the linearized model, in ℓ2.

A minimal-perturbation attack held to the threat model's contract: see :mod:`advlearn.attacks._minimal`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_logits, check_nonnegative, check_positive_int
from advlearn.attacks._base import (
    DERIVED,
    Attack,
    AttackResult,
    attack_config,
    register,
)
from advlearn.attacks._minimal import check_loss_name, finish
from advlearn.threat import L2, ThreatModel, per_example


def _check_deepfool(steps: int, overshoot: float, num_candidates: int, loss: str) -> None:
    check_positive_int("steps", steps)
    check_nonnegative("overshoot", overshoot)
    check_positive_int("num_candidates", num_candidates)
    check_loss_name(loss)


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
        steps: the most linearization steps. Each step reads one flag on the host (whether any
            example is still unfooled), to stop and to drop the fooled ones from the batch.
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
    # ℓ2 is its own dual norm: the linearized boundary lies |f| / ‖w‖₂ away.
    norm = threat.norm
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
                dist = f.detach().abs() / norm(w).clamp_min(1e-12)
                closer = dist < best_dist
                best_dist = torch.where(closer, dist, best_dist)
                best_f = torch.where(closer, f.detach(), best_f)
                best_w = torch.where(per_example(closer, w), w, best_w)
            num_grads += cand_a.shape[1] * xg.shape[0]
        # Step onto the nearest linearized boundary (f < 0 on the label's side, so |f| = −f), then overshoot.
        r = per_example(best_f.abs() / (norm(best_w) ** 2).clamp_min(1e-24), best_w) * best_w
        active = active[keep]
        x_i = threat.project_box(x_now[keep] + (1 + overshoot) * r[keep])
    return finish(model, x, y, threat, x_out, loss, False, num_grads, num_forwards)


@register("deepfool")
@attack_config(deepfool, check=_check_deepfool)
class DeepFool(Attack):
    """Config for :func:`deepfool`: ``DeepFool(ThreatModel("l2", eps=1.0))(model, x, y) -> x_adv``.

    Supports the ℓ2 norm (the paper's general ℓp variant is not implemented).
    """

    norms: ClassVar[tuple[str, ...]] = (L2(),)

    threat: ThreatModel
    steps: int = DERIVED
    overshoot: float = DERIVED
    num_candidates: int = DERIVED
    loss: str = DERIVED


__all__ = ["DeepFool", "deepfool"]
