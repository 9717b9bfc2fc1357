"""First-order white-box attacks: FGSM and PGD, in every norm the ThreatModel knows."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_nonnegative, check_positive_int
from advlearn._precision import attack_gradients
from advlearn.attacks._base import (
    DERIVED,
    ActiveSet,
    Attack,
    AttackResult,
    attack_config,
    evaluate,
    is_better,
    is_success,
    loss_and_grad,
    register,
)
from advlearn.losses import LossFn, get_loss
from advlearn.threat import ThreatModel, per_example


def _direction(targeted: bool) -> float:
    # An untargeted attack climbs the loss w.r.t. the label; a targeted one descends it w.r.t. the target.
    return -1.0 if targeted else 1.0


def _check_loss(loss: str, targeted: bool) -> None:
    get_loss(loss)
    if targeted and loss == "dlr":
        # Negated DLR w.r.t. the target has zero gradient once the target ranks third or lower, so the
        # attack stalls; the targeted DLR of Croce & Hein needs the true labels as well (APGD-T).
        raise ValueError("loss='dlr' does not work with targeted=True; use loss='ce' or loss='cw'")


# ----------------------------------------------------------------------------- FGSM


def _fgsm_perturb(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, loss_fn: LossFn, targeted: bool
) -> Tensor:
    _, _, grad = loss_and_grad(model, x, y, loss_fn, check=True)
    step = per_example(threat.eps_for(x), x) * threat.steepest_ascent(_direction(targeted) * grad, x)
    return threat.project(x + step, x)


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    loss: str = "ce",
    targeted: bool = False,
) -> AttackResult:
    """The fast gradient method: one step of length ε along the steepest ascent direction.

    .. math::

        x_{adv} = \\Pi_{S(x)}\\big(x + \\varepsilon \\cdot d^*(\\nabla_x L(x, y))\\big)

    with ``d*`` the threat model's steepest ascent direction: ``sign(∇)`` for ℓ∞
    (the fast gradient *sign* method of Goodfellow et al. 2015), ``∇/‖∇‖₂`` for
    ℓ2 and one coordinate for ℓ1. On a linear model the step is exactly the
    worst case, raising the loss's argument by ``ε‖w‖_q``.

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``.
        x: clean inputs, shape ``(B, ...)``, inside ``threat.bounds``.
        y: labels ``(B,)``, or target classes when ``targeted``.
        threat: the ε-ball and box.
        loss: ``"ce"``, ``"cw"`` or ``"dlr"``.
        targeted: step towards the classes in ``y`` instead of away from them.

    Returns:
        An :class:`AttackResult`; it costs one forward+backward pass and one forward pass.

    References:
        Goodfellow, Shlens & Szegedy. Explaining and harnessing adversarial
        examples. ICLR 2015, eq. (3).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.full((1, 3), 0.5), torch.tensor([0])
        >>> result = fgsm(model, x, y, ThreatModel("linf", eps=0.1))
        >>> (result.x_adv - x).abs().max().item() <= 0.1 + 1e-6
        True
    """
    check_inputs(x, y, threat)
    _check_loss(loss, targeted)
    loss_fn = get_loss(loss)
    x_adv = _fgsm_perturb(model, x, y, threat, loss_fn, targeted)
    losses, success = evaluate(model, x_adv, y, loss_fn, targeted)
    n = x.shape[0]
    return AttackResult(x_adv=x_adv, success=success, loss=losses, num_grads=n, num_forwards=n)


@register("fgsm")
@attack_config(fgsm, check=_check_loss)
class FGSM(Attack):
    """Config for :func:`fgsm`: ``FGSM(threat)(model, x, y) -> x_adv``."""

    threat: ThreatModel
    loss: str = DERIVED
    targeted: bool = DERIVED

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        check_inputs(x, y, self.threat)
        return _fgsm_perturb(model, x, y, self.threat, get_loss(self.loss), self.targeted)


# ----------------------------------------------------------------------------- PGD


@dataclass
class _Run:
    """The end of one PGD run on a batch: the iterate kept for each example and what is known of it."""

    x_adv: Tensor
    fooled: Tensor  # (B,) bool: stopped early because this iterate already fools the model
    loss: Tensor  # (B,) loss at x_adv, valid where fooled
    num_grads: int


def _pgd_run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    x_start: Tensor,
    step_size: Tensor,
    steps: int,
    loss_fn: LossFn,
    targeted: bool,
    early_stop: bool,
    check: bool = True,
) -> _Run:
    """``steps`` projected steepest-ascent steps from ``x_start``; the one loop every PGD call runs.

    With ``early_stop``, an example leaves the batch at the first iterate that
    fools the model, and that iterate is what is kept for it; the others run on.
    """
    sign = _direction(targeted)
    x_out = torch.empty_like(x_start)  # every row is written: at its fooling iterate or at the end
    fooled = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    loss_out = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
    active = ActiveSet.all(x0.shape[0], threat, x0.device)
    # The iterate is updated in place (ThreatModel.ascent_step_), so it starts as a copy.
    # The ℓ∞ ball is a box: its feasible part [max(x0 − ε, lo), min(x0 + ε, hi)] is computed once, here.
    x, x0_a, y_a, step_a = x_start.clone(), x0, y, step_size
    box: list[Tensor] = list(threat.enclosing_box(x0)) if threat.norm.ball_is_box else []
    num_grads = 0
    for k in range(steps):
        logits, losses, grad = loss_and_grad(model, x, y_a, loss_fn, check=check and k == 0)
        num_grads += x.shape[0]
        if early_stop:
            hit = is_success(logits, y_a, targeted)
            if bool(hit.any()):
                done = active.index[hit]
                x_out[done], loss_out[done], fooled[done] = x[hit], losses[hit], True
                x, x0_a, y_a, grad, step_a, *box = active.drop(hit, x, x0_a, y_a, grad, step_a, *box)
                if len(active) == 0:
                    break
        direction = grad if sign > 0 else grad.neg_()
        x = active.threat.ascent_step_(x, x0_a, direction, step_a, (box[0], box[1]) if box else None)
    x_out[active.index] = x
    return _Run(x_adv=x_out, fooled=fooled, loss=loss_out, num_grads=num_grads)


def pgd_maximize(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    threat: ThreatModel,
    loss_fn: LossFn,
    *,
    steps: int,
    step_size: float | None = None,
    x_start: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD's loop on any per-example loss ``loss_fn(logits, target)``, for training objectives.

    The inner maximizer of objectives whose loss is not a function of labels,
    such as TRADES's ``KL(f(x) ‖ f(x'))`` where ``target`` holds the clean logits.
    No early exit, no restarts, no checks of ``target``: the caller owns them.

    Args:
        x_start: the first iterate; ``None`` draws a uniform point of the ball.

    Returns:
        The last iterate, inside ``threat``'s set around ``x``.
    """
    start = threat.random_init(x, generator) if x_start is None else threat.project(x_start, x)
    with attack_gradients():  # input gradients only: an fp16 model may scale them (advlearn._precision)
        return _pgd_run(
            model,
            x,
            target,
            threat,
            x_start=start,
            step_size=_step_sizes(x, threat, steps, step_size),
            steps=steps,
            loss_fn=loss_fn,
            targeted=False,
            early_stop=False,
            check=False,
        ).x_adv


def _check_pgd(steps: int, step_size: float | None, restarts: int, loss: str, targeted: bool) -> None:
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    if step_size is not None:
        check_nonnegative("step_size", step_size)
    _check_loss(loss, targeted)


def _step_sizes(x: Tensor, threat: ThreatModel, steps: int, step_size: float | None) -> Tensor:
    """Per-example step sizes, ``(B,)``: the given one, or 2.5·ε/steps (Madry et al. 2018)."""
    if step_size is None:
        return 2.5 * threat.eps_for(x) / steps
    return torch.full((x.shape[0],), float(step_size), device=x.device, dtype=x.dtype)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    targeted: bool = False,
    loss: str = "ce",
    early_stop: bool = False,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Projected gradient descent on the negative loss: the inner maximizer of Madry et al. (2018).

    .. math::

        x^{t+1} = \\Pi_{S(x)}\\big(x^t + \\eta \\cdot d^*(\\nabla_x L(x^t, y))\\big),
        \\qquad x^0 \\sim U(S(x)) \\text{ or } x^0 = x

    with ``d*`` the threat model's steepest feasible ascent direction and ``Π``
    its projection. Each restart starts from a fresh random point and each
    example keeps its best iterate over the restarts: a fooling one first, then
    the highest loss.

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``.
        x: clean inputs ``(B, ...)`` inside ``threat.bounds``.
        y: labels ``(B,)``, or target classes when ``targeted``.
        threat: the ε-ball and box.
        steps: gradient steps per restart (each one forward and one backward pass).
        step_size: ``η``; ``None`` means ``2.5·ε/steps``, per example.
        restarts: independent runs; each example keeps its best.
        random_start: start at a uniform point of the ball instead of at ``x``.
        targeted: descend the loss towards the classes in ``y``.
        loss: ``"ce"``, ``"cw"`` (margin) or ``"dlr"``.
        early_stop: for evaluation. An example leaves the batch at its first
            fooling iterate, later restarts attack only the examples still
            standing, and a clean input that is already misclassified is not
            attacked at all (it costs one forward pass to learn which). Off for
            training, where the worst-case loss is wanted, not just a wrong label.
            Early exit reads one ``(B,)`` flag on the host per step (whether any example
            was fooled) to compact the batch; without it, the ℓ∞ loop never leaves the
            device, and ℓ2/ℓ1 read one flag per step (:meth:`ThreatModel.ascent_step_`).
        generator: random source for the starts; ``None`` uses torch's global RNG.

    Returns:
        An :class:`AttackResult`. ``loss`` is the loss at ``x_adv``; examples that
        stopped early keep the loss of their fooling iterate.

    References:
        Madry, Makelov, Schmidt, Tsipras & Vladu. Towards deep learning models
        resistant to adversarial attacks. ICLR 2018, eq. (2.1) and §2.1.

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
        >>> threat = ThreatModel("l2", eps=0.5)
        >>> result = pgd(model, x, y, threat, steps=5, restarts=2)
        >>> bool(threat.contains(result.x_adv, x).all())
        True
    """
    check_inputs(x, y, threat)
    _check_pgd(steps, step_size, restarts, loss, targeted)
    loss_fn = get_loss(loss)
    sign = _direction(targeted)
    n = x.shape[0]
    step = _step_sizes(x, threat, steps, step_size)

    x_best = x.clone()
    loss_best = torch.zeros(n, dtype=x.dtype, device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    num_grads = num_forwards = 0
    if early_stop:
        # x itself lies in the ball: an example it already fools needs no attack.
        loss_best, success = evaluate(model, x, y, loss_fn, targeted, check=True)
        num_forwards += n
    # What "better" means per example: success first, then the higher objective sign·loss.
    objective_best = sign * loss_best if early_stop else torch.full_like(loss_best, float("-inf"))

    for _ in range(restarts):
        active = ActiveSet.where(~success, threat) if early_stop else ActiveSet.all(n, threat, x.device)
        if len(active) == 0:
            break
        idx = active.index
        x0, y0 = active.gather(x), active.gather(y)
        start = active.threat.random_init(x0, active.draws(generator)) if random_start else x0
        run = _pgd_run(
            model,
            x0,
            y0,
            active.threat,
            x_start=start,
            step_size=active.gather(step),
            steps=steps,
            loss_fn=loss_fn,
            targeted=targeted,
            early_stop=early_stop,
        )
        num_grads += run.num_grads
        losses, hit = run.loss, run.fooled.clone()
        pending = ~run.fooled
        if bool(pending.any()):
            losses[pending], hit[pending] = evaluate(
                model, run.x_adv[pending], y0[pending], loss_fn, targeted
            )
            num_forwards += int(pending.sum())
        better = is_better(hit, sign * losses, success[idx], objective_best[idx])
        keep = idx[better]
        x_best[keep], loss_best[keep], success[keep] = run.x_adv[better], losses[better], hit[better]
        objective_best[keep] = sign * losses[better]

    return AttackResult(
        x_adv=x_best, success=success, loss=loss_best, num_grads=num_grads, num_forwards=num_forwards
    )


@register("pgd")
@attack_config(pgd, check=_check_pgd)
class PGD(Attack):
    """Config for :func:`pgd`: ``PGD(threat, steps=40)(model, x, y) -> x_adv``."""

    threat: ThreatModel
    steps: int = DERIVED
    step_size: float | None = DERIVED
    restarts: int = DERIVED
    random_start: bool = DERIVED
    targeted: bool = DERIVED
    loss: str = DERIVED
    early_stop: bool = DERIVED

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        if self.restarts > 1 or self.early_stop:
            return self.run(model, x, y, generator=generator).x_adv
        # One plain run needs no bookkeeping: exactly `steps` forward+backward passes.
        check_inputs(x, y, self.threat)
        start = self.threat.random_init(x, generator) if self.random_start else x
        return _pgd_run(
            model,
            x,
            y,
            self.threat,
            x_start=start,
            step_size=_step_sizes(x, self.threat, self.steps, self.step_size),
            steps=self.steps,
            loss_fn=get_loss(self.loss),
            targeted=self.targeted,
            early_stop=False,
        ).x_adv
