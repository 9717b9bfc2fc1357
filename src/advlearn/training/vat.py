"""Virtual adversarial training (Miyato et al. 2018): smoothness of the model's own predictions.

The local distributional smoothness (LDS) of a model at ``x`` is the largest
change of its predictive distribution in an ε-ball,

.. math::

    \\mathrm{LDS}(x, \\theta) = \\mathrm{KL}\\big(p(y \\mid x, \\hat\\theta) \\,\\|\\,
        p(y \\mid x + r_{vadv}, \\theta)\\big), \\qquad
    r_{vadv} = \\arg\\max_{\\|r\\|_2 \\le \\varepsilon}
        \\mathrm{KL}\\big(p(y \\mid x, \\hat\\theta) \\,\\|\\, p(y \\mid x + r, \\hat\\theta)\\big),

with ``θ̂`` the current parameters held constant. No label enters, so unlabeled
inputs count as much as labeled ones. Around ``r = 0`` the divergence
``D(r)`` is 0 with a zero gradient, so ``D(r) ≈ ½ rᵀ H r`` and the maximizer is
``ε`` times the top eigenvector of the Hessian ``H``. Power iteration finds it
without forming ``H``: ``∇D(ξ d) ≈ ξ H d`` for a small ``ξ``, one
forward and one backward pass per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_nonnegative, check_positive_int, check_unbounded_ball
from advlearn.losses import kl_divergence
from advlearn.threat import L2, ThreatModel
from advlearn.training.modes import frozen_batchnorm_stats
from advlearn.training.objectives import Objective, register_objective


def _unit_l2(d: Tensor) -> Tensor:
    """``d/‖d‖₂`` per example: ℓ2's steepest ascent, which rescales before squaring, so tiny
    finite-difference gradients do not underflow in float32."""
    return L2().steepest_ascent(d)


def paper_ball() -> ThreatModel:
    """The ball of Miyato et al.: ℓ2, ε = 2, no box (VAT's default)."""
    return ThreatModel(L2(), 2.0, bounds=None)


def _check_ball(ball: ThreatModel) -> float:
    return check_unbounded_ball(
        ball, "ball", no_box="VAT's x + r is not clipped to any box; give it", needs="VAT needs"
    )


def power_iteration(
    divergence: Callable[[Tensor], Tensor], d: Tensor, *, xi: float, iterations: int
) -> Tensor:
    """The top eigenvector of each example's Hessian of ``divergence`` at 0, by power iteration.

    ``divergence(r)`` maps perturbations ``(B, ...)`` to ``(B,)`` values, each depending on its
    own example only, with value and gradient 0 at ``r = 0``, so that
    ``divergence(r) ≈ ½ rᵀ H r``. Each iteration replaces ``d`` by
    ``∇ divergence(ξ d/‖d‖₂) ≈ ξ H d/‖d‖₂``: one step of power iteration by a finite difference
    of gradients (Miyato et al. 2018, §3.3). It is exact for a quadratic ``divergence``.

    Args:
        divergence: the function whose curvature is probed; differentiated with
            ``torch.autograd.grad`` w.r.t. its argument only.
        d: the starting directions ``(B, ...)`` (random in VAT).
        xi: the finite-difference radius ``ξ > 0``.
        iterations: power iterations ``K ≥ 0`` (0 returns ``d`` normalized).

    Returns:
        Unit-ℓ2 directions shaped like ``d``, detached.

    Example:
        >>> h = torch.diag(torch.tensor([1.0, 5.0, 2.0]))
        >>> quadratic = lambda r: 0.5 * ((r @ h) * r).sum(1)
        >>> power_iteration(quadratic, torch.ones(1, 3), xi=1e-3, iterations=30).round(decimals=4)
        tensor([[0., 1., 0.]])
    """
    check_nonnegative("xi", xi)
    check_positive_int("iterations", iterations, minimum=0)
    d = d.detach()
    for _ in range(iterations):
        with torch.enable_grad():
            r = (xi * _unit_l2(d)).requires_grad_(True)
            (grad,) = torch.autograd.grad(divergence(r).sum(), r)
        d = grad.detach()
    return _unit_l2(d)


def virtual_adversarial_perturbation(
    model: nn.Module,
    x: Tensor,
    ball: ThreatModel,
    *,
    xi: float = 1e-3,
    power_iterations: int = 1,
    logits: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The virtual adversarial perturbation ``r_vadv`` of each input (Miyato et al. 2018, §3.3).

    .. math::

        r_{vadv} = \\varepsilon \\, \\frac{g}{\\|g\\|_2}, \\qquad
        g = \\nabla_r \\mathrm{KL}\\big(p(y \\mid x) \\,\\|\\, p(y \\mid x + r)\\big)\\Big|_{r = \\xi d}

    with ``d`` a random Gaussian direction refined by ``power_iterations`` steps of
    :func:`power_iteration`. Only the input perturbation is differentiated
    (``torch.autograd.grad``); the parameters' ``.grad``, the model's mode and BatchNorm's
    running statistics are left alone: the forward passes at ``x + ξd`` normalize with batch
    statistics in train mode but do not update the running averages (Miyato et al.'s code calls
    them with ``update_batch_stats=False``; :func:`~advlearn.training.modes.frozen_batchnorm_stats`).
    ``x + r`` is not clipped to any box (the paper does not), so it is a regularizer, not an
    attack.

    Args:
        model: maps ``x`` to logits ``(B, C)``.
        x: inputs ``(B, ...)``.
        ball: the ball of ``r``, with ``bounds=None`` and a float ``eps``: ``ℓ2`` in the paper
            (:func:`paper_ball`); for ℓ∞ or ℓ1 the final direction is the steepest ascent of
            that norm along ``g``.
        xi: the finite-difference radius ``ξ``, in input units. Miyato et al. used 1e-6;
            in float32 with inputs of order 1 the entries of ``ξ·d`` are then about one
            rounding unit of ``x`` (``x + ξd`` loses the perturbation), and the direction
            found is mostly noise. 1e-3 agrees with the float64 direction to a cosine above
            0.9999 on a small network (see ``tests/test_vat.py``).
        power_iterations: ``K`` (the paper finds 1 enough; 0 gives a random direction, the
            paper's random perturbation training baseline).
        logits: the model's logits at ``x`` if already computed (detached inside).
        generator: for the random start ``d``; default torch's global generator.

    Returns:
        ``r_vadv``, shaped like ``x``, detached, with ``‖r‖ = ε`` per example in ``ball.norm``.

    Raises:
        ValueError: for a ball with a box or per-example radii, or bad options.
    """
    eps = _check_ball(ball)
    with frozen_batchnorm_stats(model):  # update_batch_stats=False, as Miyato et al.
        with torch.no_grad():
            clean = (model(x) if logits is None else logits).detach()  # (B, C)

        def divergence(r: Tensor) -> Tensor:
            return kl_divergence(clean, model(x + r))

        d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = power_iteration(divergence, d, xi=xi, iterations=power_iterations)
    return eps * ball.norm.steepest_ascent(direction)


@register_objective("vat")
@dataclass(frozen=True)
class VAT(Objective):
    """Virtual adversarial training: cross-entropy plus α times the mean LDS (Miyato et al. 2018).

    .. math::

        \\ell(D_l, \\theta) + \\alpha \\cdot \\frac{1}{|D|} \\sum_{x \\in D}
            \\mathrm{KL}\\big(p(y \\mid x, \\hat\\theta) \\,\\|\\, p(y \\mid x + r_{vadv}, \\theta)\\big)

    where ``D`` is the labeled batch (:meth:`__call__`) or the labeled and the unlabeled batch
    together (:meth:`semi_supervised`, used by ``Trainer.fit(..., unlabeled_loader=...)``).
    The clean prediction ``p(y | x, θ̂)`` is a constant (detached) and ``r_vadv`` is treated as
    a constant of ``θ`` (:func:`virtual_adversarial_perturbation`). Cost per batch: the clean
    forward (shared with the cross-entropy), ``power_iterations`` forward+backward passes and
    one forward pass at ``x + r_vadv``. Only the clean forward of the labeled batch updates
    BatchNorm's running statistics: the power iteration, the forward at ``x + r_vadv`` and the
    unlabeled batch's clean forward run with the statistics frozen, as Miyato et al.'s code
    (``update_batch_stats=False``), so the perturbed inputs do not leak into the running averages.

    VAT's ball is its own, not the attack's threat model (the paper's is ℓ2 with ε tuned per
    data set), so ``build_objective`` does not hand it the experiment's threat: a config gives
    ``eps`` (the radius of the default ℓ2 ball) or ``ball = { norm = "l1", eps = 1.0 }``, which
    :mod:`advlearn.config` turns into a ``ThreatModel`` with ``bounds=None``.

    Args:
        ball: the ball of ``r_vadv``, a :class:`~advlearn.threat.ThreatModel` with
            ``bounds=None`` (default :func:`paper_ball`: ℓ2, ε = 2).
        xi: the finite-difference radius ``ξ`` of the power iteration. The default 1e-3 is
            larger than the paper's 1e-6, which float32 inputs of order 1 cannot resolve
            (see :func:`virtual_adversarial_perturbation`).
        power_iterations: ``K ≥ 0``.
        alpha: the weight ``α ≥ 0`` of the smoothness term.
        eps: a radius for ``ball`` (the config's short form): ``VAT(eps=1.0)`` is
            ``VAT(ball.with_eps(1.0))``. It is folded into ``ball`` at construction and
            reads ``None`` afterwards.

    References:
        Miyato, Maeda, Koyama & Ishii. Virtual adversarial training: a regularization method
        for supervised and semi-supervised learning. IEEE TPAMI 41(8), 2019 (arXiv 2017/2018),
        §3.1 (LDS and the objective), §3.3 (power iteration and finite difference).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 3)
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> loss = VAT(eps=1.0)(model, x, y)
        >>> bool(loss >= torch.nn.functional.cross_entropy(model(x), y))
        True
    """

    ball: ThreatModel = field(default_factory=paper_ball)
    xi: float = 1e-3
    power_iterations: int = 1
    alpha: float = 1.0
    eps: float | None = None

    uses_unlabeled: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.eps is not None:
            _check_ball(self.ball)
            object.__setattr__(self, "ball", self.ball.with_eps(check_nonnegative("eps", self.eps)))
            object.__setattr__(self, "eps", None)
        _check_ball(self.ball)
        check_nonnegative("alpha", self.alpha)
        if check_nonnegative("xi", self.xi) == 0.0:
            raise ValueError("xi must be > 0: the power iteration differentiates at r = xi·d")
        check_positive_int("power_iterations", self.power_iterations, minimum=0)

    def lds(self, model: nn.Module, x: Tensor, logits: Tensor) -> Tensor:
        """The local distributional smoothness term per example, ``(B,)``, differentiable in θ."""
        r_adv = virtual_adversarial_perturbation(
            model, x, self.ball, xi=self.xi, power_iterations=self.power_iterations,
            logits=logits,
        )  # fmt: skip
        with frozen_batchnorm_stats(model):  # Miyato et al.: update_batch_stats=False at x + r_vadv
            perturbed = model(x + r_adv)
        return kl_divergence(logits.detach(), perturbed)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        logits = model(x)
        return F.cross_entropy(logits, y) + self.alpha * self.lds(model, x, logits).mean()

    def semi_supervised(self, model: nn.Module, x: Tensor, y: Tensor, unlabeled: Tensor) -> Tensor:
        """Cross-entropy on ``(x, y)`` plus α times the mean LDS over ``x`` and ``unlabeled`` together.

        Raises:
            ValueError: if the unlabeled inputs are not shaped like the labeled ones.
        """
        if unlabeled.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"unlabeled inputs have shape {tuple(unlabeled.shape[1:])} per example but the labeled "
                f"ones {tuple(x.shape[1:])}; the unlabeled loader must yield inputs of the same kind"
            )
        logits = model(x)
        with torch.no_grad(), frozen_batchnorm_stats(model):
            unlabeled_logits = model(unlabeled)  # only the detached prediction is needed
        both = torch.cat([x, unlabeled.to(dtype=x.dtype)])  # (B + U, ...)
        smoothness = self.lds(model, both, torch.cat([logits.detach(), unlabeled_logits])).mean()
        return F.cross_entropy(logits, y) + self.alpha * smoothness


__all__ = ["VAT", "kl_divergence", "paper_ball", "power_iteration", "virtual_adversarial_perturbation"]
