"""Spatial attacks: perturb an image by a geometric transformation instead of by adding noise.

A small rotation leaves a digit a digit to a person, yet it is far from ``x``
in every ℓp norm, so it lies outside the usual ε-balls. advlearn keeps the
threat-model contract anyway: the rotated image is projected onto the ball ∩
box of ``threat``. With a ball that holds the whole box (ℓ∞ with ε ≥ hi − lo)
the projection changes nothing and the attack is a pure rotation; with a
smaller ball it is a rotation "as far as the ball allows".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_logits, check_nonnegative, check_positive_int
from advlearn.attacks._base import (
    DERIVED,
    Attack,
    AttackResult,
    attack_config,
    evaluate,
    is_better,
    is_success,
    register,
)
from advlearn.losses import get_loss
from advlearn.threat import ThreatModel


def rotate(x: Tensor, angles: Tensor, fill: float = 0.0) -> Tensor:
    """Rotate each image of ``x`` about its centre by its angle in degrees (bilinear, differentiable).

    Positive angles turn the image counter-clockwise as displayed (row 0 at the
    top). Pixels that come from outside the image take the value ``fill``.
    Non-square images are rotated in pixel space, not in normalized coordinates,
    so shapes are not sheared. An angle of exactly 0 returns the image unchanged.

    Args:
        x: images ``(B, C, H, W)``.
        angles: ``(B,)`` angles in degrees (differentiable).
        fill: the value outside the original image, e.g. the lower bound of the box.

    Returns:
        The rotated images, shape of ``x``.

    Example:
        >>> x = torch.zeros(1, 1, 3, 3)
        >>> x[0, 0, 1, 2] = 1.0  # a dot right of the centre
        >>> rotate(x, torch.tensor([90.0]))[0, 0].round(decimals=4)
        tensor([[0., 1., 0.],
                [0., 0., 0.],
                [0., 0., 0.]])
    """
    if x.dim() != 4:
        raise ValueError(f"x must be images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    if angles.shape != (x.shape[0],):
        raise ValueError(f"angles must have shape ({x.shape[0]},), got {tuple(angles.shape)}")
    height, width = x.shape[2], x.shape[3]
    theta = angles.to(x.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # affine_grid maps each output pixel to where it samples the input: the inverse rotation.
    # Normalized coordinates are scaled by W/2 and H/2, so the aspect ratio enters the off-diagonal.
    # Row 0 is at the top (v points down): content turned counter-clockwise by θ is sampled at R(θ)·(u, v).
    ratio = height / width
    zero = torch.zeros_like(cos)
    matrix = torch.stack(
        [
            torch.stack([cos, -sin * ratio, zero], dim=1),
            torch.stack([sin / ratio, cos, zero], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    rotated = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    # Bilinear sampling at the pixel centres reproduces x only up to rounding; keep angle 0 exact.
    return torch.where((angles == 0).reshape(-1, 1, 1, 1), x, rotated)


def _angle_grid(max_angle: float, num_angles: int, like: Tensor) -> Tensor:
    if num_angles == 1:
        return torch.zeros(1, dtype=like.dtype, device=like.device)
    return torch.linspace(-max_angle, max_angle, num_angles, dtype=like.dtype, device=like.device)


def _check_rotation(max_angle: float, num_angles: int, angle_steps: int, loss: str) -> None:
    check_nonnegative("max_angle", max_angle)
    if max_angle > 180:
        raise ValueError(f"max_angle must be at most 180 degrees, got {max_angle}")
    check_positive_int("num_angles", num_angles)
    check_positive_int("angle_steps", angle_steps, minimum=0)
    get_loss(loss)


def rotation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    max_angle: float = 30.0,
    num_angles: int = 31,
    angle_steps: int = 0,
    loss: str = "ce",
) -> AttackResult:
    """The worst rotation of each image within ``±max_angle`` degrees, projected onto the threat set.

    For every angle of an evenly spaced grid over ``[−max_angle, max_angle]``
    the candidate is ``Π_S(x)(rotate(x, θ))``; each example keeps the
    candidate that fools the model, or failing that the one with the highest
    loss (Engstrom et al. 2019 find grid search the strongest spatial attack).
    With ``angle_steps > 0`` the best grid angle is then refined by signed
    gradient steps on θ itself, "rotating x by a small angle in the direction
    of the gradient": the step starts at half the grid spacing and halves
    each time, and a step is kept only if it is better.

    The projection onto ball ∩ box makes every output satisfy
    ``threat.contains``; with an ℓ∞ ball of radius ≥ hi − lo it is the identity,
    and the output is exactly ``rotate(x, θ)`` for the chosen θ.

    Args:
        model: maps images ``(B, C, H, W)`` in ``threat.bounds`` to logits ``(B, C')``.
        x: clean images ``(B, C, H, W)``.
        y: labels ``(B,)``.
        threat: the ball ∩ box the rotated image is projected onto.
        max_angle: the largest rotation in degrees, at most 180.
        num_angles: grid points over ``[−max_angle, max_angle]`` (odd counts include 0).
        angle_steps: gradient steps on the angle after the grid search.
        loss: ``"ce"``, ``"cw"`` or ``"dlr"``: the loss the search maximizes and reports.

    Returns:
        An :class:`AttackResult`: ``num_angles`` forward passes and ``angle_steps``
        forward+backward passes per example (plus one forward pass to score a refined angle).

    References:
        Engstrom, Tran, Tsipras, Schmidt & Madry. Exploring the landscape of
        spatial robustness. ICML 2019, §3 (first-order and grid-search attacks on
        rotations and translations).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
        >>> threat = ThreatModel("linf", eps=1.0)
        >>> result = rotation(model, x, y, threat, max_angle=20.0, num_angles=5)
        >>> bool(threat.contains(result.x_adv, x).all())
        True
    """
    check_inputs(x, y, threat)
    _check_rotation(max_angle, num_angles, angle_steps, loss)
    if x.dim() != 4:
        raise ValueError(f"x must be images of shape (B, C, H, W) for a rotation, got shape {tuple(x.shape)}")
    loss_fn = get_loss(loss)
    lo, _ = threat.box
    n = x.shape[0]
    grid = _angle_grid(float(max_angle), num_angles, x)

    def candidate(angles: Tensor) -> Tensor:
        return threat.project(rotate(x, angles, fill=lo), x)

    best_angle = torch.zeros(n, dtype=x.dtype, device=x.device)
    best_loss = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
    best_hit = torch.zeros(n, dtype=torch.bool, device=x.device)
    num_forwards = num_grads = 0

    def offer(angles: Tensor, losses: Tensor, hit: Tensor) -> None:
        better = is_better(hit, losses, best_hit, best_loss)
        best_angle[better], best_loss[better], best_hit[better] = angles[better], losses[better], hit[better]

    for i, angle in enumerate(grid):
        angles = angle.expand(n)
        with torch.no_grad():
            logits = model(candidate(angles))
        if i == 0:
            check_logits(logits, y)
        num_forwards += n
        offer(angles, loss_fn(logits, y), is_success(logits, y, False))

    spacing = 2 * float(max_angle) / max(num_angles - 1, 1)
    step = spacing / 2
    theta = best_angle.clone()
    for _ in range(angle_steps):
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            logits = model(candidate(t))
            losses = loss_fn(logits, y)
            (grad,) = torch.autograd.grad(losses.sum(), t)
        num_grads += n
        offer(theta, losses.detach(), is_success(logits.detach(), y, False))
        theta = (theta + step * grad.sign()).clamp(-max_angle, max_angle)
        step /= 2
    if angle_steps:
        with torch.no_grad():
            logits = model(candidate(theta))
        num_forwards += n
        offer(theta, loss_fn(logits, y), is_success(logits, y, False))

    x_adv = candidate(best_angle).detach()
    losses, success = evaluate(model, x_adv, y, loss_fn, False)
    return AttackResult(
        x_adv=x_adv, success=success, loss=losses, num_grads=num_grads, num_forwards=num_forwards + n
    )


@register("rotation")
@attack_config(rotation, check=_check_rotation)
class Rotation(Attack):
    """Config for :func:`rotation`: ``Rotation(threat, max_angle=30, num_angles=31)(model, x, y)``.

    Works in every norm: the rotated image is projected onto ``threat``'s ball ∩ box.
    """

    threat: ThreatModel
    max_angle: float = DERIVED
    num_angles: int = DERIVED
    angle_steps: int = DERIVED
    loss: str = DERIVED


__all__ = ["Rotation", "rotate", "rotation"]
