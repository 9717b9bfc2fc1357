"""Auto-PGD (Croce & Hein 2020): PGD with momentum and a step size that halves itself.

APGD needs no step size. It starts at ``η = 2ε``, moves with momentum, and at
checkpoints ``w_j`` halves ``η`` (restarting from the best point found) whenever
the last interval went badly. Its targeted variant, APGD-T, attacks the top
``num_targets`` wrong classes one after the other with the targeted DLR loss.
All geometry (steps, projections, random starts) comes from the
:class:`~advlearn.threat.ThreatModel`, so ℓ∞, ℓ2 and ℓ1 share one loop.

The file is longer than most because it holds the two public attacks (APGD and
APGD-T) that share Algorithm 1's loop (:func:`_apgd_run`); most of its length
is their docstrings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

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
    is_better,
    is_success,
    loss_and_grad,
    register,
)
from advlearn.losses import LossFn, get_loss
from advlearn.threat import L1, Norm, ThreatModel, per_example
from advlearn.threat.norms import flat

# maps (logits, y, target) to the (B,) objective the attack climbs; target is None when untargeted
Objective = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ⌈p_j · steps⌉`` at which APGD may halve its step size.

    ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``
    (Croce & Hein 2020, §3.2): the intervals shrink from 22 % of the budget to 6 %.

    Example:
        >>> apgd_checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    check_positive_int("steps", steps)
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0:
            break
        p.append(nxt)
    # The 1e-9 keeps float sums such as 0.22 + 0.19 from rounding up past the integer they equal.
    return sorted({min(math.ceil(q * steps - 1e-9), steps) for q in p})


def targeted_dlr(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """The targeted DLR loss of Croce & Hein (2020, eq. 6), to be maximized, per example.

    .. math::

        -\\frac{z_y - z_t}{z_{\\pi_1} - (z_{\\pi_3} + z_{\\pi_4})/2}

    with ``π`` the logits sorted in decreasing order. With three classes ``z_{π4}``
    does not exist and ``z_{π3}`` stands in for it (the denominator becomes the
    untargeted DLR's ``z_{π1} − z_{π3}``).

    Raises:
        ValueError: with fewer than three classes.

    Example:
        >>> targeted_dlr(torch.tensor([[4.0, 3.0, 1.0, 0.0]]), torch.tensor([0]), torch.tensor([1]))
        tensor([-0.2857])
    """
    if logits.shape[1] < 3:
        raise ValueError(
            f"the targeted DLR loss needs at least 3 classes, the model returns {logits.shape[1]}"
        )
    k = min(4, logits.shape[1])
    top = logits.topk(k, dim=1).values  # (B, k)
    scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, k - 1])
    z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    z_t = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    return -(z_y - z_t) / (scale + 1e-12)


def target_ranking(logits: Tensor, y: Tensor, also: Tensor | None = None) -> Tensor:
    """The wrong classes of each example, best first: ``(B, C − 1)`` int64.

    By ``logits`` alone, highest first (the reference's order for APGD-T and FAB-T, at the clean
    inputs). With ``also`` (``(B, C)`` logits at a second point), the two rankings interleaved, each
    class where it first appears: ``a₀, b₀, a₁, b₁, …`` for ``a`` the ranking by ``logits`` and ``b``
    by ``also`` (:class:`~advlearn.attacks.AutoAttack` passes the logits at the point its first member
    found; bench/targets.py measured the choice).
    """
    wrong = logits.shape[1] - 1
    ranked = logits.scatter(1, y.unsqueeze(1), float("-inf")).argsort(dim=1, descending=True)[:, :wrong]
    if also is None:
        return ranked
    other = also.scatter(1, y.unsqueeze(1), float("-inf")).argsort(dim=1, descending=True)[:, :wrong]
    # A class's first place in the interleaved sequence: 2·(rank in a) or 2·(rank in b) + 1.
    places = 2 * torch.arange(wrong, device=logits.device).expand_as(ranked)
    first = torch.full_like(logits, 2 * logits.shape[1], dtype=torch.int64)  # the label: last
    first = first.scatter(1, ranked, places)
    first = torch.minimum(first, torch.full_like(first, 2 * logits.shape[1]).scatter(1, other, places + 1))
    return first.argsort(dim=1)[:, :wrong]


def _describe(value: object) -> str:
    return f"{tuple(value.shape)} of {value.dtype}" if isinstance(value, Tensor) else repr(value)


def pick_targets(logits: Tensor, y: Tensor, num_targets: int, targets: Tensor | None) -> list[Tensor]:
    """The ``(B,)`` target classes of each targeted run, in order: the first ``min(num_targets, T)``
    columns of ``targets`` (``(B, T)``, wrong classes) or, when it is ``None``, of
    :func:`target_ranking` at ``logits``.

    Raises:
        ValueError: when ``targets`` is not a ``(B, T)`` integer tensor, ``T ≥ 1``, of classes of the
            model other than the labels.
    """
    if targets is None:
        targets = target_ranking(logits, y)
    elif (
        not isinstance(targets, Tensor)
        or targets.dim() != 2
        or targets.shape[0] != y.shape[0]
        or targets.shape[1] < 1
        or targets.dtype not in (torch.int64, torch.int32)
    ):
        raise ValueError(
            f"targets must be a (B, T) integer tensor of target classes for the {y.shape[0]} examples, "
            f"T >= 1; got {_describe(targets)}"
        )
    else:
        targets = targets.to(device=y.device, dtype=torch.int64)
        if bool(((targets < 0) | (targets >= logits.shape[1]) | (targets == y.unsqueeze(1))).any()):
            raise ValueError(
                f"targets must hold classes in [0, {logits.shape[1]}) other than each example's label"
            )
    return [targets[:, j] for j in range(min(num_targets, targets.shape[1]))]


def _objective(loss: str, targeted: bool, pick_targets: bool) -> Objective:
    """What APGD climbs: the loss w.r.t. ``y``, its negative when ``y`` holds targets, or
    (APGD-T, ``pick_targets``) a loss pulling towards the chosen ``target`` away from the labels ``y``."""
    loss_fn = get_loss(loss)
    if pick_targets:
        if loss == "dlr":
            return lambda logits, y, target: targeted_dlr(logits, y, target)  # type: ignore[arg-type]
        return lambda logits, y, target: -loss_fn(logits, target)  # type: ignore[arg-type]
    if targeted:
        return lambda logits, y, target: -loss_fn(logits, y)
    return lambda logits, y, target: loss_fn(logits, y)


class _Rows:
    """Per-example tensors of a run, one row per example still running; :meth:`drop` compacts them."""

    def drop(self, active: ActiveSet, leave: Tensor) -> None:
        names = [f.name for f in fields(self) if isinstance(getattr(self, f.name), Tensor)]  # type: ignore[arg-type]
        for name, value in zip(names, active.drop(leave, *(getattr(self, n) for n in names)), strict=True):
            setattr(self, name, value)


@dataclass
class _Iterates(_Rows):
    """Algorithm 1's variables, one row per example still running; :meth:`drop` compacts them."""

    x0: Tensor  # the clean inputs
    y: Tensor  # the labels (targets when targeted)
    target: Tensor | None  # APGD-T's target class per example
    x: Tensor  # x^(k)
    x_prev: Tensor  # x^(k-1), for the momentum term
    grad: Tensor  # ∇f(x^(k))
    f: Tensor  # (A,) f(x^(k))
    eta: Tensor  # (A,) the step size η^(k)
    f_max: Tensor  # (A,) the best objective so far, where it was reached and the gradient there
    x_max: Tensor
    grad_max: Tensor
    increases: Tensor  # (A,) steps since the last checkpoint that raised f
    f_max_at_check: Tensor  # (A,) f_max at the last checkpoint
    halved_at_check: Tensor  # (A,) bool: η was halved at the last checkpoint


@dataclass
class _Run:
    x_adv: Tensor
    success: Tensor
    loss: Tensor  # the reported loss w.r.t. y at x_adv
    num_grads: int
    num_forwards: int


class _Kept:
    """The point kept for each example of a run: fooling first, then the highest objective."""

    def __init__(self, x_start: Tensor) -> None:
        n = x_start.shape[0]
        self.x = x_start.clone()
        self.success = torch.zeros(n, dtype=torch.bool, device=x_start.device)
        self.objective = torch.full((n,), float("-inf"), dtype=x_start.dtype, device=x_start.device)
        self.loss = torch.zeros(n, dtype=x_start.dtype, device=x_start.device)

    def offer(
        self, index: Tensor, x: Tensor, hit: Tensor, f: Tensor, loss: Callable[[Tensor], Tensor]
    ) -> None:
        """Offer the iterates ``x`` of the examples ``index``; ``loss(take)`` reports those taken."""
        take = is_better(hit, f, self.success[index], self.objective[index])
        where = index[take]
        self.x[where], self.success[where] = x[take], hit[take]
        self.objective[where], self.loss[where] = f[take], loss(take)


def _apgd_run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    target: Tensor | None,
    threat: ThreatModel,
    *,
    x_start: Tensor,
    steps: int,
    objective: Objective,
    report: LossFn,
    targeted: bool,
    rho: float,
    momentum: float,
    early_stop: bool,
    check: bool,
    warm: bool = False,
) -> _Run:
    """One APGD run from ``x_start``: Algorithm 1 of Croce & Hein (2020).

    ``steps`` forward+backward passes evaluate ``x^(0) … x^(steps−1)`` and one
    forward pass evaluates the last iterate. Each example keeps the best iterate
    it reached, a fooling one first, then the highest objective; with
    ``early_stop`` it leaves at its first fooling iterate.
    """
    del warm  # the ℓ∞/ℓ2 rule carries nothing over from an earlier stage but the point
    n = x0.shape[0]
    checkpoints = {w for w in apgd_checkpoints(steps) if 0 < w < steps}
    kept = _Kept(x_start)
    active = ActiveSet.all(n, threat, x0.device)
    num_grads = num_forwards = 0

    def f_and_grad(x: Tensor, y: Tensor, target: Tensor | None, first: bool) -> tuple[Tensor, Tensor, Tensor]:
        """One forward and backward pass: the logits, ``f(x)`` and ``∇f(x)``."""
        return loss_and_grad(model, x, y, lambda logits, y: objective(logits, y, target), check=first)

    def keep_and_exit(it: _Iterates, logits: Tensor, f: Tensor) -> None:
        hit = is_success(logits, it.y, targeted)
        kept.offer(active.index, it.x, hit, f, lambda take: report(logits[take], it.y[take]))
        if early_stop and bool(hit.any()):
            progress.broken(int(hit.sum()))
            it.drop(active, hit)

    # Lines 1-3: x^(0), f(x^(0)), η^(0) = 2ε; x_max = x^(0).
    logits, f, grad = f_and_grad(x_start, y, target, first=check)
    num_grads += n
    it = _Iterates(
        x0=x0,
        y=y,
        target=target,
        x=x_start,
        x_prev=x_start,
        grad=grad,
        f=f,
        eta=2.0 * threat.eps_for(x0),
        f_max=f.clone(),
        x_max=x_start.clone(),
        grad_max=grad.clone(),
        increases=torch.zeros(n, dtype=torch.int64, device=x0.device),
        f_max_at_check=f.clone(),
        halved_at_check=torch.zeros(n, dtype=torch.bool, device=x0.device),
    )
    keep_and_exit(it, logits, f)
    last_checkpoint = 0

    for k in range(1, steps + 1):
        if len(active) == 0:
            break
        progress.spent((k - 1) / steps)
        # Lines 4-6: a projected steepest-ascent step z, then the momentum step of eq. (2) (α = 1 at k = 1).
        # The direction is the paper's (and the reference's) d*(∇f), blind to the box: not
        # ThreatModel.ascent_step's, which drops coordinates pressed against the box. For ℓ2 with the
        # ball-then-clip projection, dropping them lets the ball's rescale pull them off the box at every
        # step while the unmasked step keeps pushing them out, so the clip holds them there: on held-out
        # digit 188 of at3 (ℓ2, ε = 1.5) APGD-T broke 3 of 20 seeds masked, 12 of 20 unmasked, as the
        # reference did. ℓ∞ does not mask anyway (same bits); ℓ1 runs _sparse_l1_run.
        step = active.threat.steepest_ascent(it.grad)
        z = active.threat.project(torch.addcmul(it.x, step, per_example(it.eta, it.x)), it.x0)
        if k == 1:
            x_new = z
        else:
            x_new = active.threat.project(
                it.x + momentum * (z - it.x) + (1.0 - momentum) * (it.x - it.x_prev), it.x0
            )
        it.x_prev, it.x = it.x, x_new
        if k == steps:
            # The last iterate is only scored: its gradient would never be used.
            with torch.no_grad():
                logits = model(it.x)
                f = objective(logits, it.y, it.target)
            num_forwards += len(active)
            keep_and_exit(it, logits, f)
            break
        logits, f, grad = f_and_grad(it.x, it.y, it.target, first=False)
        num_grads += len(active)
        # Lines 7-8: count the steps that raised f; keep the best point and its gradient.
        it.increases += (f > it.f).to(torch.int64)
        it.f, it.grad = f, grad
        better = f > it.f_max
        it.f_max = torch.where(better, f, it.f_max)
        it.x_max[better], it.grad_max[better] = it.x[better], grad[better]
        keep_and_exit(it, logits, f)

        if k in checkpoints and len(active):
            # Lines 9-12 (§3.2): halve η and restart from x_max if (1) fewer than a fraction ρ of the steps
            # since the last checkpoint raised f, or (2) η was not halved last time and f_max has not moved.
            stalled = it.increases < rho * (k - last_checkpoint)
            unchanged = ~it.halved_at_check & (it.f_max <= it.f_max_at_check)
            halve = stalled | unchanged
            it.eta = torch.where(halve, 0.5 * it.eta, it.eta)
            it.x = torch.where(per_example(halve, it.x), it.x_max, it.x)
            it.grad = torch.where(per_example(halve, it.grad), it.grad_max, it.grad)
            it.f = torch.where(halve, it.f_max, it.f)
            it.halved_at_check, it.f_max_at_check = halve, it.f_max.clone()
            it.increases = torch.zeros_like(it.increases)
            last_checkpoint = k

    return _Run(
        x_adv=kept.x, success=kept.success, loss=kept.loss, num_grads=num_grads, num_forwards=num_forwards
    )


@dataclass
class _SparseIterates(_Rows):
    """Sparse APGD-ℓ1's variables, one row per example still running."""

    x0: Tensor
    y: Tensor
    target: Tensor | None
    x: Tensor
    grad: Tensor
    f: Tensor
    eta: Tensor  # (A,) the step size
    fraction: Tensor  # (A,) the fraction of coordinates a step moves
    nonzero_at_check: Tensor  # (A,) ‖x_max − x0‖₀ at the last checkpoint
    f_max: Tensor
    x_max: Tensor
    grad_max: Tensor


def _sparse_l1_run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    target: Tensor | None,
    threat: ThreatModel,
    *,
    x_start: Tensor,
    steps: int,
    objective: Objective,
    report: LossFn,
    targeted: bool,
    rho: float,
    momentum: float,
    early_stop: bool,
    check: bool,
    warm: bool = False,
) -> _Run:
    """One sparse APGD-ℓ1 run (Croce & Hein 2021, "Mind the box", §3-4) from ``x_start``.

    Each step moves the top fraction ``k`` of coordinates by the largest ``|∇|`` by ``η/‖·‖₀``
    each (:meth:`~advlearn.threat.norms.L1.sparse_ascent`), then projects exactly onto ball ∩ box
    (:meth:`~advlearn.threat.norms.L1.project_in_box`).
    ``η`` starts at ``ε`` and ``k`` at 20 % of the coordinates (``warm``: ``‖x_start − x0‖₀ / 1.5``);
    every ``max(⌊0.04·steps⌋, 1)`` steps the sparsity of the best point so far sets ``k =
    ‖x_max − x0‖₀ / (1.5 D)``; if it fell below 95 % of the last checkpoint's, ``η`` resets to
    ``ε`` and the run restarts from ``x_max``, otherwise ``η`` shrinks by 1.5 (never below ``ε/10``).
    The run has no momentum (``rho`` and ``momentum`` belong to the ℓ∞/ℓ2 rule and are unused).
    Its random ``x_start`` is sparse, on the sphere (:func:`_random_start`).
    The accounting is :func:`_apgd_run`'s: ``steps`` gradients and one forward pass.
    """
    del rho, momentum
    n = x0.shape[0]
    dims = flat(x0).shape[1]
    norm = threat.norm
    assert isinstance(norm, L1)
    lo, hi = threat.bounds if threat.bounds is not None else (-math.inf, math.inf)
    interval = max(int(0.04 * steps), 1)
    kept = _Kept(x_start)
    active = ActiveSet.all(n, threat, x0.device)
    num_grads = num_forwards = 0

    def nonzero(x: Tensor, x0: Tensor) -> Tensor:
        return (flat(x - x0).abs() > 0).sum(dim=1).to(x0.dtype)

    def f_and_grad(x: Tensor, y: Tensor, target: Tensor | None, first: bool) -> tuple[Tensor, Tensor, Tensor]:
        return loss_and_grad(model, x, y, lambda logits, y: objective(logits, y, target), check=first)

    def keep_and_exit(it: _SparseIterates, logits: Tensor, f: Tensor) -> None:
        hit = is_success(logits, it.y, targeted)
        kept.offer(active.index, it.x, hit, f, lambda take: report(logits[take], it.y[take]))
        if early_stop and bool(hit.any()):
            progress.broken(int(hit.sum()))
            it.drop(active, hit)

    eps = threat.eps_for(x0)
    logits, f, grad = f_and_grad(x_start, y, target, first=check)
    num_grads += n
    start_nonzero = nonzero(x_start, x0)
    it = _SparseIterates(
        x0=x0,
        y=y,
        target=target,
        x=x_start,
        grad=grad,
        f=f,
        eta=eps.clone(),
        fraction=start_nonzero / dims / 1.5 if warm else torch.full_like(eps, 0.2),
        nonzero_at_check=start_nonzero if warm else torch.full_like(eps, float(dims)),
        f_max=f.clone(),
        x_max=x_start.clone(),
        grad_max=grad.clone(),
    )
    keep_and_exit(it, logits, f)

    for k in range(1, steps + 1):
        if len(active) == 0:
            break
        progress.spent((k - 1) / steps)
        eps_a = active.threat.eps_for(it.x0)
        # As in the reference, coordinates pressed against the box are not left out of the top k (measured:
        # leaving them out made the attack weaker at small ε); the exact projection removes what they lose.
        moved = it.x + per_example(it.eta, it.x) * norm.sparse_ascent(it.grad, it.fraction)
        it.x = it.x0 + norm.project_in_box(moved - it.x0, eps_a, lo - it.x0, hi - it.x0)
        if k == steps:
            with torch.no_grad():
                logits = model(it.x)
                f = objective(logits, it.y, it.target)
            num_forwards += len(active)
            keep_and_exit(it, logits, f)
            break
        logits, f, grad = f_and_grad(it.x, it.y, it.target, first=False)
        num_grads += len(active)
        it.f, it.grad = f, grad
        better = f > it.f_max
        it.f_max = torch.where(better, f, it.f_max)
        it.x_max[better], it.grad_max[better] = it.x[better], grad[better]
        keep_and_exit(it, logits, f)
        if k % interval == 0 and len(active):
            eps_a = active.threat.eps_for(it.x0)
            now = nonzero(it.x_max, it.x0)
            sparser = now / it.nonzero_at_check.clamp_min(1.0) < 0.95
            it.fraction = now / dims / 1.5
            it.eta = torch.where(sparser, eps_a, it.eta / 1.5)
            it.eta = torch.minimum(torch.maximum(it.eta, eps_a / 10), eps_a)
            it.nonzero_at_check = now
            it.x = torch.where(per_example(sparser, it.x), it.x_max, it.x)
            it.grad = torch.where(per_example(sparser, it.grad), it.grad_max, it.grad)

    return _Run(
        x_adv=kept.x, success=kept.success, loss=kept.loss, num_grads=num_grads, num_forwards=num_forwards
    )


# The run each norm uses: Algorithm 1 for ℓ∞ and ℓ2, sparse APGD for ℓ1.
_RUNS: dict[type[Norm], Callable[..., _Run]] = {L1: _sparse_l1_run}


def _check_apgd(steps: int, restarts: int, loss: str, rho: float, momentum: float) -> None:
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    get_loss(loss)
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be a number in [0, 1], got {rho!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 < momentum <= 1.0:
        raise ValueError(f"momentum must be a number in (0, 1], got {momentum!r}")


def _check_apgd_plain(
    steps: int, restarts: int, loss: str, targeted: bool, rho: float, momentum: float
) -> None:
    _check_apgd(steps, restarts, loss, rho, momentum)
    if targeted and loss == "dlr":
        # Negated DLR w.r.t. the target stalls once the target ranks third; APGD-T's targeted DLR needs
        # the true labels as well, so it is apgd_t's loss.
        raise ValueError("loss='dlr' does not work with targeted=True; use loss='ce' or 'cw', or apgd_t")


def _check_apgd_t(
    steps: int, restarts: int, loss: str, num_targets: int, rho: float, momentum: float
) -> None:
    _check_apgd(steps, restarts, loss, rho, momentum)
    check_positive_int("num_targets", num_targets)


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    targeted: bool = False,
    rho: float = 0.75,
    momentum: float = 0.75,
    random_start: bool = True,
    early_stop: bool = False,
    eps_schedule: bool = False,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Auto-PGD: projected steepest ascent with momentum and an adaptive step size.

    From ``x^(0)`` (a random point of the ball) and ``η = 2ε``:

    .. math::

        z^{(k+1)} &= \\Pi_S\\big(x^{(k)} + \\eta\\, d^*(\\nabla f(x^{(k)}))\\big) \\\\
        x^{(k+1)} &= \\Pi_S\\big(x^{(k)} + \\alpha (z^{(k+1)} - x^{(k)})
                     + (1 - \\alpha)(x^{(k)} - x^{(k-1)})\\big)

    with ``α = momentum`` (``α = 1`` for the first step), ``d*`` the threat
    model's steepest ascent direction and ``f`` the loss (its negative when
    targeted). At each checkpoint ``w_j`` of :func:`apgd_checkpoints`, ``η`` is
    halved and the iterate reset to the best point so far if (1) fewer than
    ``ρ·(w_j − w_{j−1})`` of the steps since ``w_{j−1}`` raised ``f``, or (2) ``η``
    was not halved at ``w_{j−1}`` and the best objective has not changed since.

    ``targeted`` means what it means for every advlearn attack: ``y`` holds the
    target classes and success is predicting them. APGD-T, which takes the true
    labels and picks its own targets, is :func:`apgd_t`.

    For ℓ1 the run is the sparse APGD-ℓ1 of Croce & Hein (2021, "Mind the box"):
    each step moves the top fraction of coordinates by ``|∇|`` (a fraction that adapts
    to the sparsity of the best point found), projects exactly onto ball ∩ box, and
    resets or shrinks ``η`` every 4 % of the budget (see :func:`_sparse_l1_run`);
    ``rho`` and ``momentum`` are not used there.

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``.
        x: clean inputs ``(B, ...)`` inside ``threat.bounds``.
        y: the labels ``(B,)``, or the target classes when ``targeted``.
        threat: the ε-ball and box (``eps`` may be a ``(B,)`` tensor).
        steps: forward+backward passes per run (``N_iter``); each run also costs one forward pass.
        restarts: runs from fresh random starts; each example keeps its best.
        loss: ``"ce"``, ``"dlr"`` or ``"cw"`` (``"ce"`` or ``"cw"`` when targeted).
        targeted: descend the loss towards the classes in ``y``.
        rho: ``ρ``, the fraction of successful steps below which ``η`` halves.
        momentum: ``α``, the weight of the new step against the previous move.
        random_start: start at a random point of the ball instead of at ``x``: uniform, but for ℓ1 a
            Gaussian draw projected onto ball ∩ box (:meth:`~advlearn.threat.L1.sparse_random_delta`).
        early_stop: for evaluation: an example leaves at its first fooling
            iterate, later runs attack only the examples still standing, and
            inputs the model already gets "wrong" clean are not attacked.
        eps_schedule: the reference's ℓ1 schedule (AutoAttack's ``use_largereps``): 30 % of
            the steps at 3ε, 30 % at 2ε, 40 % at ε, each stage starting from the last
            stage's point projected onto the smaller ball; only the last stage's points
            count. Same cost; meant for ℓ1, where it finds sparser, stronger points.
        generator: random source for the starts; ``None`` uses torch's global RNG.

    Returns:
        An :class:`AttackResult`; ``loss`` is ``loss`` w.r.t. ``y`` at ``x_adv``.
        Without early stop it costs ``steps·restarts`` forward+backward passes and
        ``restarts`` forward passes per example.

    References:
        Croce & Hein. Reliable evaluation of adversarial robustness with an
        ensemble of diverse parameter-free attacks. ICML 2020, Algorithm 1,
        eqs. (2)-(3), §3.2.

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
        >>> threat = ThreatModel("linf", eps=0.1)
        >>> result = apgd(model, x, y, threat, steps=10)
        >>> bool(threat.contains(result.x_adv, x).all()), result.num_grads
        (True, 80)
    """
    check_inputs(x, y, threat)
    _check_apgd_plain(steps, restarts, loss, targeted, rho, momentum)
    return _apgd(
        model,
        x,
        y,
        threat,
        steps=steps,
        restarts=restarts,
        loss=loss,
        targeted=targeted,
        num_targets=None,
        rho=rho,
        momentum=momentum,
        random_start=random_start,
        early_stop=early_stop,
        eps_schedule=eps_schedule,
        generator=generator,
    )


def apgd_t(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    restarts: int = 1,
    loss: str = "dlr",
    num_targets: int = 9,
    targets: Tensor | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
    random_start: bool = True,
    early_stop: bool = False,
    eps_schedule: bool = False,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """APGD-T: :func:`apgd` run once per target class it picks, to misclassify ``x``.

    ``y`` holds the **true labels** and success means misclassification, as for an
    untargeted attack; the targets are the attack's own choice: the
    ``num_targets`` highest-scoring wrong classes at ``x`` (at most ``C − 1``), or the
    first ``num_targets`` of a ranking given as ``targets``,
    attacked one after the other. For each, APGD maximizes the targeted DLR loss
    (:func:`targeted_dlr`, which needs both ``y`` and the target), or ``−CE`` /
    ``−CW`` towards the target for ``loss="ce"``/``"cw"``. It takes no ``targeted``
    flag: that would mean "``y`` holds targets" (:func:`apgd`, :func:`pgd`).

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``; ``C ≥ 3`` for ``loss="dlr"``.
        x: clean inputs ``(B, ...)`` inside ``threat.bounds``.
        y: the true labels ``(B,)``.
        threat: the ε-ball and box (``eps`` may be a ``(B,)`` tensor).
        steps, restarts, rho, momentum, random_start, eps_schedule, generator: as for :func:`apgd`
            (``restarts`` runs per target).
        loss: ``"dlr"`` (the targeted DLR of Croce & Hein), ``"ce"`` or ``"cw"``.
        num_targets: how many target classes to attack.
        targets: ``(B, T)`` wrong classes per example, best first, to attack instead of the ranking
            at ``x`` (:func:`target_ranking`); the first ``min(num_targets, T)`` columns are run.
            :class:`~advlearn.attacks.AutoAttack` passes the ranking at its first member's point.
        early_stop: as for :func:`apgd`; an example fooled for one target is not attacked for the next.

    Returns:
        An :class:`AttackResult`; ``loss`` is ``loss`` w.r.t. the true labels at
        ``x_adv``, so the runs for different targets compare. Without early stop it
        costs ``steps·restarts·T`` forward+backward passes and ``1 + restarts·T`` forward passes
        per example, ``T = min(num_targets, C − 1)`` (or the columns of ``targets`` run).

    References:
        Croce & Hein (2020), eq. (6) and §4 (APGD-T in AutoAttack).
    """
    check_inputs(x, y, threat)
    _check_apgd_t(steps, restarts, loss, num_targets, rho, momentum)
    return _apgd(
        model,
        x,
        y,
        threat,
        steps=steps,
        restarts=restarts,
        loss=loss,
        targeted=False,
        num_targets=num_targets,
        rho=rho,
        momentum=momentum,
        random_start=random_start,
        early_stop=early_stop,
        eps_schedule=eps_schedule,
        generator=generator,
        ranking=targets,
    )


def _eps_stages(steps: int) -> list[tuple[float, int]]:
    """The reference's ℓ1 schedule: 30 % of the steps at 3ε, 30 % at 2ε, the rest at ε (each ≥ 1 step)."""
    first = max(math.ceil(0.3 * steps), 1)
    stages = [(3.0, first), (2.0, first), (1.0, steps - 2 * first)]
    return [(scale, k) for scale, k in stages if k > 0] if steps >= 3 else [(1.0, steps)]


def _random_start(threat: ThreatModel, x0: Tensor, generator: torch.Generator | None) -> Tensor:
    """A run's random start: a uniform point of the ball (:meth:`~advlearn.threat.ThreatModel.random_init`),
    but for ℓ1 a Gaussian draw projected onto ball ∩ box (:meth:`~advlearn.threat.L1.sparse_random_delta`).
    """
    if not isinstance(threat.norm, L1):
        return threat.random_init(x0, generator)
    # Not in the papers; the reference implementation (fra31/auto-attack) starts so. A uniform point of the
    # ℓ1 ball spreads about ε/D over every coordinate (on MNIST the box clips about half of it away), which
    # the first sparse step and its projection erase: all restarts then followed nearly one path, and on
    # digit 163 of bench's at3 model no run of 40 broke it at ε = 10, against 18 of 40 from this start.
    lo, hi = threat.bounds if threat.bounds is not None else (-math.inf, math.inf)
    return x0 + threat.norm.sparse_random_delta(threat.eps_for(x0), lo - x0, hi - x0, generator)


def _apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    restarts: int,
    loss: str,
    targeted: bool,
    num_targets: int | None,
    rho: float,
    momentum: float,
    random_start: bool,
    early_stop: bool,
    eps_schedule: bool,
    generator: torch.Generator | None,
    ranking: Tensor | None = None,
) -> AttackResult:
    """APGD's restarts (and, with ``num_targets``, APGD-T's targets, from ``ranking`` when given:
    :func:`pick_targets`), each example keeping its best point."""
    report = get_loss(loss)
    objective = _objective(loss, targeted, num_targets is not None)
    n = x.shape[0]
    x_best = x.clone()
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    loss_best = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
    num_grads = num_forwards = 0
    checked = False
    targets: list[Tensor | None] = [None]
    if early_stop or num_targets is not None:
        with torch.no_grad():
            logits = check_logits(model(x), y)
        num_forwards += n
        checked = True
        if early_stop:
            # x itself lies in the ball: an example it already fools needs no attack.
            success, loss_best = is_success(logits, y, targeted), report(logits, y)
        if num_targets is not None:
            if logits.shape[1] < 3 and loss == "dlr":
                raise ValueError(
                    f"targeted APGD with loss='dlr' needs at least 3 classes, the model returns "
                    f"{logits.shape[1]}"
                )
            targets = [*pick_targets(logits, y, num_targets, ranking)]
    # "Better" across runs: fooling first, then the higher objective (the lower loss towards a target).
    objective_best = -loss_best if targeted else loss_best.clone()

    run_fn = _RUNS.get(type(threat.norm), _apgd_run)
    stages = _eps_stages(steps) if eps_schedule else [(1.0, steps)]
    passes = len(targets) * restarts
    for t, target in enumerate(targets):
        for r in range(restarts):
            passed = (t * restarts + r) / passes  # of this call's budget, for a progress bar
            active = ActiveSet.where(~success, threat) if early_stop else ActiveSet.all(n, threat, x.device)
            if len(active) == 0:
                break
            idx, x0 = active.index, active.gather(x)
            lo, hi = threat.bounds if threat.bounds is not None else (-math.inf, math.inf)
            x_start = x0
            for j, (scale, stage_steps) in enumerate(stages):
                # ε-schedule: each stage starts from the last one's point, projected onto its smaller ball.
                stage = active.threat if scale == 1.0 else active.threat.with_eps(active.threat.eps * scale)
                if j == 0:
                    x_start = _random_start(stage, x0, active.draws(generator)) if random_start else x0
                else:
                    x_start = x0 + stage.norm.project_in_box(
                        x_start - x0, stage.eps_for(x0), lo - x0, hi - x0
                    )
                first = sum(k for _, k in stages[:j])
                with progress.share(
                    passed + first / steps / passes, passed + (first + stage_steps) / steps / passes
                ):
                    run = run_fn(
                        model,
                        x0,
                        active.gather(y),
                        None if target is None else active.gather(target),
                        stage,
                        x_start=x_start,
                        steps=stage_steps,
                        objective=objective,
                        report=report,
                        targeted=targeted,
                        rho=rho,
                        momentum=momentum,
                        early_stop=early_stop and j == len(stages) - 1,
                        check=not checked,
                        warm=j > 0,
                    )
                checked = True
                num_grads += run.num_grads
                num_forwards += run.num_forwards
                x_start = run.x_adv
            run_objective = -run.loss if targeted else run.loss
            better = is_better(run.success, run_objective, success[idx], objective_best[idx])
            keep = idx[better]
            x_best[keep], success[keep], loss_best[keep] = (
                run.x_adv[better],
                run.success[better],
                run.loss[better],
            )
            objective_best[keep] = run_objective[better]

    return AttackResult(
        x_adv=x_best, success=success, loss=loss_best, num_grads=num_grads, num_forwards=num_forwards
    )


@register("apgd")
@attack_config(apgd, check=_check_apgd_plain)
class APGD(Attack):
    """Config for :func:`apgd`: ``APGD(threat, loss="dlr")(model, x, y) -> x_adv``.

    ``APGD(threat)`` is APGD-CE of the AutoAttack ensemble (100 steps, one run).
    ``targeted=True``: ``y`` holds the target classes.
    """

    threat: ThreatModel
    steps: int = DERIVED
    restarts: int = DERIVED
    loss: str = DERIVED
    targeted: bool = DERIVED
    rho: float = DERIVED
    momentum: float = DERIVED
    random_start: bool = DERIVED
    early_stop: bool = DERIVED
    eps_schedule: bool = DERIVED


@register("apgd_t")
@attack_config(apgd_t, check=_check_apgd_t)
class APGDT(Attack):
    """Config for :func:`apgd_t`: APGD-T, the targeted DLR loss over the top 9 wrong classes by default.

    ``y`` holds the true labels and success means misclassification, as for :class:`APGD`;
    the attack picks its own targets (so it has no ``targeted`` field).
    """

    threat: ThreatModel
    steps: int = DERIVED
    restarts: int = DERIVED
    loss: str = DERIVED
    num_targets: int = DERIVED
    targets: Tensor | None = DERIVED
    rho: float = DERIVED
    momentum: float = DERIVED
    random_start: bool = DERIVED
    early_stop: bool = DERIVED
    eps_schedule: bool = DERIVED
