"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020): minimal adversarial points in ℓ∞, ℓ2, ℓ1.

At each step FAB linearizes the model around the current point, picks the
decision boundary nearest in the threat model's norm, and projects onto that
linearized boundary *within the box*, both from the current point and from the
clean input; it moves to a convex combination of the two (biased towards the
clean input, so the perturbation stays small) and, once it has crossed the
boundary, steps back towards the clean input. The projection onto the
box-constrained hyperplane is the norm's :meth:`~advlearn.threat.norms.Norm.hyperplane_step`.

FAB (untargeted) needs the gradient of every class margin at every step; FAB-T
(:func:`fab_t`, the AutoAttack member) attacks the top ``num_targets`` wrong
classes one after the other, with one gradient per step. Both are
minimal-perturbation attacks held to the threat model's contract (see
:mod:`advlearn.attacks._minimal`): the smallest adversarial point found is
returned when it lies in the ε-ball, otherwise the best guess projected onto it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_logits, check_positive_int
from advlearn.attacks import _progress as progress
from advlearn.attacks._base import (
    DERIVED,
    ActiveSet,
    Attack,
    AttackResult,
    attack_config,
    register,
)
from advlearn.attacks._minimal import Smallest, check_loss_name, finish, signed_margin
from advlearn.attacks.apgd import pick_targets
from advlearn.threat import ThreatModel, per_example
from advlearn.threat.norms import flat


def _check_fab(steps: int, restarts: int, alpha_max: float, eta: float, beta: float, loss: str) -> None:
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    for name, value, lo, hi in (("alpha_max", alpha_max, 0.0, 1.0), ("beta", beta, 0.0, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 1.0:
        raise ValueError(f"eta (the overshoot) must be a number >= 1, got {eta!r}")
    check_loss_name(loss)


def _check_fab_t(
    steps: int, restarts: int, num_targets: int, alpha_max: float, eta: float, beta: float, loss: str
) -> None:
    _check_fab(steps, restarts, alpha_max, eta, beta, loss)
    check_positive_int("num_targets", num_targets)


def _margins_and_grads(
    model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, int]:
    """``(logits, f, g, passes)``: the class margins ``f_k = z_k − z_y`` ``(A, K)`` at ``x``, their
    gradients ``(A, K, D)``, and the backward passes spent per example.

    Untargeted, ``K = C`` (the label's own margin is set to ``+∞`` so it is never the nearest);
    targeted, ``K = 1``, the margin of the target.
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        rows = torch.arange(x.shape[0], device=x.device)
        true = logits[rows, y]
        if target is not None:
            f = (logits[rows, target] - true).unsqueeze(1)
            (g,) = torch.autograd.grad(f.sum(), xg)
            return logits.detach(), f.detach(), flat(g).unsqueeze(1), 1
        classes = logits.shape[1]
        grads = []
        for k in range(classes):
            (gk,) = torch.autograd.grad(logits[:, k].sum(), xg, retain_graph=k + 1 < classes)
            grads.append(flat(gk))
    jac = torch.stack(grads, dim=1)  # (A, C, D)
    f = (logits - true.unsqueeze(1)).detach()
    g = jac - jac[rows, y].unsqueeze(1)
    f[rows, y] = float("inf")
    return logits.detach(), f, g, classes


def _fab_run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    target: Tensor | None,
    threat: ThreatModel,
    *,
    x_start: Tensor,
    steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
    best: Smallest,
    index: Tensor,
    early_stop: bool,
) -> tuple[int, int]:
    """One FAB run from ``x_start`` on the examples ``index`` of ``best``: ``(num_grads, num_forwards)``.

    Algorithm 1 of Croce & Hein (2020): ``steps`` linearize-project-combine steps,
    each one gradient evaluation (``C`` backward passes untargeted) and one forward pass.
    """
    norm = threat.norm
    lo, hi = threat.box
    active = ActiveSet(index, threat)
    xs, x0s, ys = x_start, x0, y
    ts = target
    eps = threat.eps_for(x0)
    num_grads = num_forwards = 0
    for step in range(steps):
        if len(active) == 0:
            break
        progress.spent(step / steps)
        _, f, g, passes = _margins_and_grads(model, xs, ys, ts)
        num_grads += passes * len(active)
        a, k, d = g.shape
        if k == 1:  # targeted: the target's boundary is the only one
            w, fk = g[:, 0], f[:, 0]  # (A, D), (A,)
        else:
            # The nearest linearized boundary: |f_k| / ‖∇f_k‖_q (q the dual exponent).
            dist = f.abs() / norm.dual(g.reshape(a * k, d)).reshape(a, k).clamp_min(1e-12)
            nearest = dist.argmin(dim=1)
            rows = torch.arange(a, device=x0.device)
            w, fk = g[rows, nearest], f[rows, nearest]
        x_flat, x0_flat = flat(xs), flat(x0s)
        # The linearization f_k + ⟨w, z − x⟩ = 0, projected onto within the box from x and from x0
        # (two calls: one on 2A stacked rows sorts slower from about 20 rows up).
        d1 = norm.hyperplane_step(w, -fk, lo - x_flat, hi - x_flat)
        d2 = norm.hyperplane_step(w, -fk - (w * (x0_flat - x_flat)).sum(dim=1), lo - x0_flat, hi - x0_flat)
        n1, n2 = norm(d1).clamp_min(1e-8), norm(d2).clamp_min(1e-8)
        alpha = per_example((n1 / (n1 + n2)).clamp(0.0, alpha_max), x_flat)
        x_new = ((1 - alpha) * (x_flat + eta * d1) + alpha * (x0_flat + eta * d2)).clamp(lo, hi)
        xs = x_new.reshape(xs.shape)
        with torch.no_grad():
            logits = model(xs)
        num_forwards += len(active)
        fooled = logits.argmax(dim=1) != ys
        best.update(active.index, xs, x0s, signed_margin(logits, ys, False), fooled)
        # Past the boundary: step back towards x0 (the paper's β).
        xs = torch.where(per_example(fooled, xs), x0s + beta * (xs - x0s), xs)
        if early_stop:
            done = best.norm[active.index] <= eps
            if bool(done.any()):
                progress.broken(int(done.sum()))
                parts = (xs, x0s, ys, eps) if ts is None else (xs, x0s, ys, eps, ts)
                kept = active.drop(done, *parts)
                xs, x0s, ys, eps = kept[:4]
                ts = kept[4] if ts is not None else None
    return num_grads, num_forwards


def _fab(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    restarts: int,
    num_targets: int | None,
    alpha_max: float,
    eta: float,
    beta: float,
    early_stop: bool,
    loss: str,
    generator: torch.Generator | None,
    ranking: Tensor | None = None,
) -> AttackResult:
    """FAB's restarts (and FAB-T's targets, from ``ranking`` when given: :func:`pick_targets`), each
    example keeping the smallest adversarial point found."""
    check_inputs(x, y, threat)
    _ = threat.box  # FAB's projections need the box: a clear ValueError without one
    with torch.no_grad():
        logits = check_logits(model(x), y)
    num_forwards, num_grads = x.shape[0], 0
    best = Smallest.start(x, threat.norm)
    clean_wrong = logits.argmax(dim=1) != y
    # x itself fools the model where it is misclassified: distance 0, nothing to attack.
    best.update(torch.arange(x.shape[0], device=x.device), x, x, signed_margin(logits, y, False), clean_wrong)
    targets: list[Tensor | None] = [None]
    if num_targets is not None:
        targets = [*pick_targets(logits, y, num_targets, ranking)]
    eps_all = threat.eps_for(x)
    for t, target in enumerate(targets):
        for restart in range(restarts):
            passed = (t * restarts + restart) / (len(targets) * restarts)  # for a progress bar
            todo = ~clean_wrong & (best.norm > eps_all) if early_stop else ~clean_wrong
            active = ActiveSet.where(todo, threat)
            if len(active) == 0:
                break
            x0 = active.gather(x)
            x_start = x0
            if restart > 0:
                # Later restarts start at a random point of the ball of radius min(best so far, ε)/2.
                radius = torch.minimum(best.norm[active.index], active.threat.eps_for(x0)) / 2
                b, d = flat(x0).shape
                # keyed by the examples restarted, not their places (whatever the batch or the early exits)
                delta = threat.norm.random_delta(b, d, radius.unsqueeze(1), x0, active.draws(generator))
                x_start = threat.project_box(x0 + delta.reshape(x0.shape))
            with progress.share(passed, passed + 1 / (len(targets) * restarts)):
                grads, forwards = _fab_run(
                    model,
                    x0,
                    active.gather(y),
                    None if target is None else active.gather(target),
                    active.threat,
                    x_start=x_start,
                    steps=steps,
                    alpha_max=alpha_max,
                    eta=eta,
                    beta=beta,
                    best=best,
                    index=active.index,
                    early_stop=early_stop,
                )
            num_grads += grads
            num_forwards += forwards
    return finish(model, x, y, threat, best.chosen, loss, False, num_grads, num_forwards)


def fab(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    early_stop: bool = False,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> AttackResult:
    """FAB (untargeted): the smallest perturbation in ``threat``'s norm that changes the prediction.

    At the current point ``x⁽ⁱ⁾`` the boundary with class ``k`` is linearized,
    ``π_k = {z : f_k(x⁽ⁱ⁾) + ⟨∇f_k(x⁽ⁱ⁾), z − x⁽ⁱ⁾⟩ = 0}`` with ``f_k = z_k − z_y``;
    FAB picks the nearest one, ``k̂ = argmin_k |f_k| / ‖∇f_k‖_q``, computes the
    minimal-norm steps ``δ⁽ⁱ⁾`` and ``δ₀`` onto ``π_k̂`` ∩ box from ``x⁽ⁱ⁾`` and from
    ``x``, and moves to

    .. math::

        x^{(i+1)} = \\mathrm{clip}\\big((1-\\alpha)(x^{(i)} + \\eta\\,\\delta^{(i)})
                    + \\alpha(x + \\eta\\,\\delta_0)\\big), \\qquad
        \\alpha = \\min\\Big(\\frac{\\|\\delta^{(i)}\\|}{\\|\\delta^{(i)}\\| + \\|\\delta_0\\|},
                    \\alpha_{max}\\Big).

    When ``x⁽ⁱ⁺¹⁾`` fools the model it is recorded (if smaller than the best so
    far) and pulled back, ``x⁽ⁱ⁺¹⁾ ← x + β(x⁽ⁱ⁺¹⁾ − x)``. On an affine binary model
    the first step lands on the exact minimal-norm adversarial point ``|wᵀx + b| / ‖w‖_q``
    (times ``η``), and later steps close in on it.

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``.
        x: clean inputs ``(B, ...)``.
        y: labels ``(B,)``.
        threat: the norm to minimize and the ε-ball the result must lie in; ``bounds`` required.
        steps: iterations per run (each ``C`` backward passes and one forward pass per example).
        restarts: runs; the first starts at ``x``, later ones at a random point of the ball
            of radius ``min(best norm, ε)/2``.
        alpha_max: the most weight the step from ``x`` gets (0.1 in the paper).
        eta: the overshoot past the linearized boundary (1.05).
        beta: how far back towards ``x`` after crossing the boundary (0.9).
        early_stop: leave an example once a point in the ε-ball fools the model
            (for evaluation; the figure is unchanged, the norm is no longer minimized).
        loss: the per-example loss reported in ``AttackResult.loss``.
        generator: random source for the restarts; a :class:`~advlearn._keyed_random.KeyedGenerator`
            draws each example's starts from its own key, so they do not depend on the batching.

    Returns:
        An :class:`AttackResult`. Without early stop it costs ``steps·restarts·C``
        backward passes (``num_grads``) and ``2 + steps·restarts`` forward passes per
        correctly classified example.

    References:
        Croce & Hein. Minimally distorted adversarial examples with a fast adaptive
        boundary attack. ICML 2020, Algorithm 1 and §3.1 (the projections).

    Example:
        >>> model = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]])), model.bias.zero_()
        >>> x, y = torch.tensor([[0.6, 0.4]]), torch.tensor([0])
        >>> out = fab(model, x, y, ThreatModel("linf", eps=1.0), steps=20)
        >>> bool(out.success), round(float((out.x_adv - x).abs().max()), 2)  # |0.6 − 0.4| / ‖w‖₁
        (True, 0.1)
    """
    _check_fab(steps, restarts, alpha_max, eta, beta, loss)
    return _fab(
        model,
        x,
        y,
        threat,
        steps=steps,
        restarts=restarts,
        num_targets=None,
        alpha_max=alpha_max,
        eta=eta,
        beta=beta,
        early_stop=early_stop,
        loss=loss,
        generator=generator,
    )


def fab_t(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    restarts: int = 1,
    num_targets: int = 9,
    targets: Tensor | None = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    early_stop: bool = False,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> AttackResult:
    """FAB-T: :func:`fab` towards each of the ``num_targets`` highest-scoring wrong classes in turn.

    ``y`` holds the true labels and success means misclassification, as for
    APGD-T: only the boundary with the target is linearized, so a step costs one
    gradient instead of ``C``. This is the FAB of the AutoAttack ensemble
    (``num_targets=9``, one restart).

    Args:
        num_targets: how many target classes to attack (at most ``C − 1``).
        targets: ``(B, T)`` wrong classes per example, best first, to attack instead of the ranking
            at ``x``; the first ``min(num_targets, T)`` columns are run (as for
            :func:`~advlearn.attacks.apgd.apgd_t`).
        steps, restarts, alpha_max, eta, beta, early_stop, loss, generator: as for :func:`fab`
            (``restarts`` runs per target).

    Returns:
        An :class:`AttackResult`. Without early stop it costs ``steps·restarts·T``
        forward+backward passes and ``2 + steps·restarts·T`` forward passes per correctly
        classified example, ``T = min(num_targets, C − 1)`` (or the columns of ``targets`` run).

    References:
        Croce & Hein (2020), FAB; its targeted version in AutoAttack (Croce & Hein, ICML 2020, §4).
    """
    _check_fab_t(steps, restarts, num_targets, alpha_max, eta, beta, loss)
    return _fab(
        model,
        x,
        y,
        threat,
        steps=steps,
        restarts=restarts,
        num_targets=num_targets,
        alpha_max=alpha_max,
        eta=eta,
        beta=beta,
        early_stop=early_stop,
        loss=loss,
        generator=generator,
        ranking=targets,
    )


@register("fab")
@attack_config(fab, check=_check_fab)
class FAB(Attack):
    """Config for :func:`fab`: ``FAB(ThreatModel("l1", eps=10.0))(model, x, y) -> x_adv``."""

    threat: ThreatModel
    steps: int = DERIVED
    restarts: int = DERIVED
    alpha_max: float = DERIVED
    eta: float = DERIVED
    beta: float = DERIVED
    early_stop: bool = DERIVED
    loss: str = DERIVED


@register("fab_t")
@attack_config(fab_t, check=_check_fab_t)
class FABT(Attack):
    """Config for :func:`fab_t`: FAB-T over the top 9 wrong classes by default, as in AutoAttack."""

    threat: ThreatModel
    steps: int = DERIVED
    restarts: int = DERIVED
    num_targets: int = DERIVED
    targets: Tensor | None = DERIVED
    alpha_max: float = DERIVED
    eta: float = DERIVED
    beta: float = DERIVED
    early_stop: bool = DERIVED
    loss: str = DERIVED


__all__ = ["FAB", "FABT", "fab", "fab_t"]
