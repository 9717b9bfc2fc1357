"""Adversarial logistic regression in closed form (Goodfellow et al. 2015, §5).

For a linear score ``z = wᵀx + b``, labels ``y ∈ {−1, +1}`` and the logistic loss
``ζ(−y z)`` with ``ζ(t) = log(1 + eᵗ)`` (softplus), the inner maximization over the
ε-ball of any norm ``p`` has an exact solution. The loss grows as ``y z`` shrinks,
and by Hölder's inequality

.. math::

    \\min_{\\|\\delta\\|_p \\le \\varepsilon} y\\, w^\\top (x + \\delta)
        = y\\, w^\\top x - \\varepsilon \\|w\\|_q, \\qquad \\tfrac1p + \\tfrac1q = 1,

attained at ``δ* = −y·ε·d(w)`` with ``d`` the steepest ascent direction of the
norm (``sign(w)`` for ℓ∞, ``w/‖w‖₂`` for ℓ2). Adversarial training of logistic
regression therefore minimizes the closed form

.. math::

    \\mathbb{E}_{(x, y)}\\, \\zeta\\big(-y (w^\\top x + b) + \\varepsilon \\|w\\|_q\\big),

``‖w‖₁`` for the ℓ∞ ball (Goodfellow et al.'s equation), ``‖w‖₂`` for ℓ2 and
``‖w‖_∞`` for ℓ1. The penalty sits *inside* ζ, so unlike weight decay it fades on
examples classified with a wide margin and dominates on the ones near the boundary.

The closed form ignores the box ``threat.bounds``: when the box cuts the ball
(``x`` near a face), the true worst case inside ball ∩ box is milder and the closed
form is an upper bound on it. Every function here says whether it clips.

Labels may be given as ``{0, 1}`` (the class indices the rest of the library uses)
or as ``{−1, +1}``; ``0`` is read as ``−1``.

References:
    Goodfellow, Shlens & Szegedy. Explaining and harnessing adversarial examples.
    ICLR 2015, §5 ("Adversarial training of linear models versus weight decay").
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn.threat import ThreatModel, per_example

Solver = Literal["auto", "lbfgs", "gd", "lbfgsb"]


# ----------------------------------------------------------------------------- checks


def _check_x(x: object) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point tensor, got {kind}; convert with x.float()")
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension, shape (B, D) or (B, ...), got {tuple(x.shape)}")
    if not bool(x.isfinite().all()):
        raise ValueError("x contains NaN or Inf; clean the data first")
    return x


def signed_labels(y: Tensor, n: int | None = None) -> Tensor:
    """Labels as ``±1`` floats: ``{0, 1}`` and ``{−1, +1}`` are both accepted, ``0`` read as ``−1``.

    Args:
        y: ``(B,)`` labels, integer or float, every value in ``{−1, 0, 1}`` and not
            mixing ``0`` with ``−1``.
        n: the batch size ``y`` must have, if given.

    Returns:
        A ``(B,)`` float tensor of ``±1``.

    Raises:
        ValueError: for another shape, another value, or labels mixing ``0`` and ``−1``.

    Example:
        >>> signed_labels(torch.tensor([0, 1, 1])).tolist()
        [-1.0, 1.0, 1.0]
    """
    if not isinstance(y, Tensor) or y.dim() != 1 or (n is not None and y.shape[0] != n):
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a (B,) tensor of labels matching x's batch size {n}, got {shape}")
    values = set(torch.unique(y).tolist())
    if not values <= {-1, 0, 1} or {-1, 0} <= values:
        raise ValueError(
            f"y must hold binary labels, either {{0, 1}} or {{-1, +1}}, got values {sorted(values)}"
        )
    return torch.where(y > 0, 1.0, -1.0)


def _dual_norm(w: Tensor, threat: ThreatModel) -> Tensor:
    """``‖w‖_q`` with ``q`` the dual exponent of the threat norm (Hölder)."""
    norm: Tensor = torch.linalg.vector_norm(w, ord=threat.dual_ord)
    return norm


def _flat(x: Tensor, w: Tensor) -> Tensor:
    flat = x.reshape(x.shape[0], -1)  # (B, D)
    if w.dim() != 1 or w.shape[0] != flat.shape[1]:
        raise ValueError(
            f"w must have shape (D,) = ({flat.shape[1]},), one weight per input feature, got {tuple(w.shape)}"
        )
    return flat


# ----------------------------------------------------------------------------- closed forms


def adversarial_logistic_loss(
    w: Tensor,
    b: Tensor | float,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """The worst-case logistic loss over the ε-ball, in closed form (no box).

    .. math::

        \\max_{\\|\\delta\\|_p \\le \\varepsilon} \\zeta\\big(-y(w^\\top (x + \\delta) + b)\\big)
            = \\zeta\\big(-y(w^\\top x + b) + \\varepsilon \\|w\\|_q\\big)

    It is differentiable in ``w`` and ``b`` wherever ``‖w‖_q`` is, so gradient
    methods fit it directly (:class:`AdversarialLogisticRegression`).

    Args:
        w: weights ``(D,)``.
        b: the bias, a float or a 0-d tensor.
        x: inputs ``(B, D)`` (or ``(B, ...)``, flattened to ``D`` features).
        y: labels ``(B,)`` in ``{0, 1}`` or ``{−1, +1}``.
        threat: the ball (norm and ε, a float or one radius per example); its box is ignored.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per example, ``(B,)``).

    Returns:
        The loss, a scalar or ``(B,)``.

    References:
        Goodfellow, Shlens & Szegedy, ICLR 2015, §5.

    Example:
        >>> threat = ThreatModel("linf", eps=0.5, bounds=(-5.0, 5.0))
        >>> w, x, y = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.0]]), torch.tensor([1])
        >>> loss = adversarial_logistic_loss(w, 0.0, x, y, threat, reduction="none")
        >>> torch.allclose(loss, torch.nn.functional.softplus(torch.tensor([-1.0 + 0.5 * 3.0])))
        True
    """
    x = _check_x(x)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    flat = _flat(x, w)
    sign = signed_labels(y, x.shape[0]).to(device=x.device, dtype=w.dtype)
    margin = sign * (flat.to(w.dtype) @ w + b)  # (B,)
    losses = F.softplus(-margin + threat.eps_for(margin.unsqueeze(1)) * _dual_norm(w, threat))
    if reduction == "none":
        return losses
    return losses.mean() if reduction == "mean" else losses.sum()


def linear_fgsm(w: Tensor, x: Tensor, y: Tensor, threat: ThreatModel, *, clip: bool = False) -> Tensor:
    """The exact worst case of the logistic loss of ``wᵀx + b`` in the ε-ball: one FGSM step.

    .. math::

        x_{adv} = x + \\varepsilon \\cdot d(-y\\, w)

    with ``d`` the threat's steepest ascent direction: ``x − ε·y·sign(w)`` for ℓ∞,
    ``x − ε·y·w/‖w‖₂`` for ℓ2, one coordinate of largest ``|w|`` for ℓ1. The input
    gradient of the loss is ``−y·ζ'(·)·w``, a positive multiple of ``−y·w``, so this is
    exactly what FGSM computes on the linear model, and the bias plays no part.
    Without the box the loss at ``x_adv`` equals :func:`adversarial_logistic_loss`.

    Args:
        w: weights ``(D,)``.
        x: inputs ``(B, D)`` (or ``(B, ...)``).
        y: labels ``(B,)`` in ``{0, 1}`` or ``{−1, +1}``.
        threat: the ball (and the box, used only with ``clip``).
        clip: clip the result into ``threat.bounds``. Then the point is feasible but the
            closed-form loss is only an upper bound on the loss there.

    Returns:
        ``x_adv``, shaped and typed like ``x``.

    Example:
        >>> threat = ThreatModel("linf", eps=0.1, bounds=(-1.0, 1.0))
        >>> linear_fgsm(torch.tensor([2.0, -1.0]), torch.zeros(1, 2), torch.tensor([1]), threat)
        tensor([[-0.1000,  0.1000]])
    """
    x = _check_x(x)
    flat = _flat(x, w)
    sign = signed_labels(y, x.shape[0]).to(device=x.device, dtype=x.dtype)
    grad = -sign.unsqueeze(1) * w.to(device=x.device, dtype=x.dtype).unsqueeze(0)  # (B, D)
    step = per_example(threat.eps_for(x), flat) * threat.steepest_ascent(grad)
    x_adv = (flat + step).reshape(x.shape)
    return threat.project_box(x_adv) if clip else x_adv


# ----------------------------------------------------------------------------- estimator


class AdversarialLogisticRegression:
    """Logistic regression trained on the closed-form worst case of the ε-ball.

    Minimizes

    .. math::

        \\frac1N \\sum_i \\zeta\\big(-y_i (w^\\top x_i + b) + \\varepsilon \\|w\\|_q\\big)
        + \\frac{\\lambda}{2} \\|w\\|_2^2

    (:func:`adversarial_logistic_loss` plus optional weight decay ``λ``), full batch, in
    ``dtype`` (float64 by default), by L-BFGS with a strong-Wolfe line search or by plain
    gradient descent. With ``eps = 0`` it is ordinary logistic regression. The objective
    is convex (softplus of a convex function of ``(w, b)``, plus a convex penalty); for
    ℓ∞ it has kinks where a weight is 0 (``‖w‖₁``), and for ℓ1 where the largest weights
    tie (``‖w‖_∞``); past ``ε = ‖mean(y·x)‖_p`` the optimum is ``w = 0`` exactly. At a kink
    the gradient does not vanish and L-BFGS stops on lack of progress at a near-optimal
    point: for the ℓ1 threat on :func:`advlearn.data.gaussian_pair` its loss is within
    about 3e-6 of the optimum but the weights only within about 1e-2 (the ℓ∞ and ℓ2 threats
    away from ``w = 0`` are smooth there and solved to the gradient tolerance).

    Args:
        threat: the ball trained against (its box is ignored, see the module docs).
        weight_decay: ``λ ≥ 0``, an extra ℓ2 penalty on ``w`` (not on ``b``).
        fit_intercept: learn ``b``; otherwise ``b = 0``.
        solver: ``"auto"`` (the default: ``"lbfgsb"`` for an ℓ∞ threat with ε > 0, where it is
            exact, else ``"lbfgs"``), ``"lbfgs"``, ``"gd"`` (full-batch gradient descent with step
            ``lr``) or
            ``"lbfgsb"`` (ℓ∞ threats only: SciPy's L-BFGS-B on ``w = u − v``, ``u, v ≥ 0``, where
            ``ε‖w‖₁ = ε·Σ(u + v)`` at the optimum, so the objective is smooth and the kinks of
            ``‖w‖₁`` are bounds; exact where ``"lbfgs"`` stalls. ``"lbfgs"`` starts at ``w = 0``,
            every coordinate on a kink, and when ε exceeds most coordinates' data gradient its
            line search fails at once and it returns ``w = 0``, which need not be optimal.)
        max_iter: iterations at most.
        lr: the gradient-descent step (``solver="gd"`` only).
        tol: stop once the largest gradient entry falls below it; L-BFGS also stops when
            an iteration changes the loss or the weights by less than ``tol·1e-5`` (at a
            kink of the norm, where the gradient does not vanish).
        dtype: the floating type the weights are fitted and kept in.

    Attributes (after :meth:`fit`):
        coef_: ``w``, shape ``(D,)``.
        intercept_: ``b``, a 0-d tensor.
        n_iter_: iterations run.
        converged_: whether a tolerance stopped the solver before ``max_iter``.
        loss_: the training objective at the solution.

    References:
        Goodfellow, Shlens & Szegedy, ICLR 2015, §5.

    Example:
        >>> from advlearn.data import gaussian_pair
        >>> data = gaussian_pair(n_train=400, n_test=10, seed=0).train
        >>> plain = AdversarialLogisticRegression(ThreatModel("linf", 0.0, data.bounds)).fit(data.x, data.y)
        >>> robust = AdversarialLogisticRegression(ThreatModel("linf", 0.5, data.bounds)).fit(data.x, data.y)
        >>> bool(robust.coef_.abs().sum() < plain.coef_.abs().sum())
        True
    """

    def __init__(
        self,
        threat: ThreatModel,
        *,
        weight_decay: float = 0.0,
        fit_intercept: bool = True,
        solver: Solver = "auto",
        max_iter: int = 500,
        lr: float = 0.5,
        tol: float = 1e-9,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if not isinstance(threat, ThreatModel):
            raise ValueError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        if solver not in ("auto", "lbfgs", "gd", "lbfgsb"):
            raise ValueError(f"solver must be 'auto', 'lbfgs', 'gd' or 'lbfgsb', got {solver!r}")
        if solver == "auto":
            solver = "lbfgsb" if threat.dual_ord == 1.0 and threat.eps > 0 else "lbfgs"
        if solver == "lbfgsb" and threat.dual_ord != 1.0:
            raise ValueError(
                f"solver='lbfgsb' needs an l-inf threat (its penalty is ||w||_1), got {threat.norm}"
            )
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype!r}")
        self.threat = threat
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.fit_intercept = bool(fit_intercept)
        self.solver: Solver = solver
        self.max_iter = check_positive_int("max_iter", max_iter)
        self.lr = check_nonnegative("lr", lr)
        self.tol = check_nonnegative("tol", tol)
        self.dtype = dtype
        self.coef_: Tensor | None = None
        self.intercept_: Tensor | None = None
        self.n_iter_ = 0
        self.converged_ = False
        self.loss_ = math.nan
        self._signed_output = False

    def objective(self, w: Tensor, b: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The training objective: the mean closed-form robust loss plus ``λ/2·‖w‖₂²``."""
        loss = adversarial_logistic_loss(w, b, x, y, self.threat)
        if self.weight_decay > 0:
            loss = loss + 0.5 * self.weight_decay * w.pow(2).sum()
        return loss

    def fit(self, x: Tensor, y: Tensor) -> AdversarialLogisticRegression:
        """Fit ``w`` and ``b`` on ``(x, y)`` from ``w = 0, b = 0``; returns ``self``.

        Raises:
            ValueError: for non-floating or non-finite ``x``, labels that are not binary,
                or a batch-size mismatch.
        """
        x = _check_x(x)
        sign = signed_labels(y, x.shape[0])
        self._signed_output = bool((y < 0).any())
        flat = x.reshape(x.shape[0], -1).to(self.dtype)  # (N, D)
        w = torch.zeros(flat.shape[1], dtype=self.dtype, device=x.device, requires_grad=True)
        b = torch.zeros((), dtype=self.dtype, device=x.device, requires_grad=self.fit_intercept)
        params = [w, b] if self.fit_intercept else [w]

        def closure() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = self.objective(w, b, flat, sign)
            loss.backward()
            return loss

        with torch.enable_grad():
            if self.solver == "lbfgsb":
                w_fit, b_fit = self._fit_lbfgsb(flat, sign)
                with torch.no_grad():
                    w.copy_(w_fit)
                    b.copy_(b_fit)
            elif self.solver == "lbfgs":
                optimizer: torch.optim.Optimizer = torch.optim.LBFGS(
                    params,
                    lr=1.0,
                    max_iter=self.max_iter,
                    tolerance_grad=self.tol,
                    tolerance_change=self.tol * 1e-5,
                    history_size=20,
                    line_search_fn="strong_wolfe",
                )
                optimizer.step(closure)  # type: ignore[arg-type,no-untyped-call]  # LBFGS takes the loss tensor
                self.n_iter_ = int(optimizer.state[w].get("n_iter", 0))
            else:
                optimizer = torch.optim.SGD(params, lr=self.lr)
                self.n_iter_ = self.max_iter
                for step in range(self.max_iter):
                    closure()
                    largest = max(float(p.grad.abs().max()) for p in params if p.grad is not None)
                    if largest <= self.tol:
                        self.n_iter_ = step
                        break
                    optimizer.step()
        self.converged_ = self.n_iter_ < self.max_iter
        if not self.converged_:
            warnings.warn(
                f"AdversarialLogisticRegression ({self.solver}) stopped at max_iter={self.max_iter} "
                "before reaching tol; raise max_iter (or lr for solver='gd')",
                RuntimeWarning,
                stacklevel=2,
            )
        self.coef_, self.intercept_ = w.detach(), b.detach()
        with torch.no_grad():
            self.loss_ = float(self.objective(self.coef_, self.intercept_, flat, sign))
        return self

    def _fit_lbfgsb(self, flat: Tensor, sign: Tensor) -> tuple[Tensor, Tensor]:
        """``min_{u, v ≥ 0, b} mean ζ(−y((u − v)ᵀx + b) + ε·Σ(u + v)) + λ/2‖u − v‖²`` by L-BFGS-B.

        At the optimum ``min(uᵢ, vᵢ) = 0`` (lowering both by the same amount lowers the
        penalty and leaves ``w`` alone), so ``Σ(u + v) = ‖w‖₁`` and this is the closed-form
        objective exactly, now smooth with bound constraints.
        """
        import numpy as np
        from scipy.optimize import minimize

        d = flat.shape[1]

        def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
            t = torch.tensor(z, dtype=self.dtype, device=flat.device, requires_grad=True)
            u, v = t[:d], t[d : 2 * d]
            b = t[2 * d] if self.fit_intercept else torch.zeros((), dtype=self.dtype)
            w = u - v
            margin = sign.to(self.dtype) * (flat @ w + b)  # (N,)
            penalty = self.threat.eps_for(margin.unsqueeze(1)) * (u + v).sum()
            loss = F.softplus(-margin + penalty).mean()
            if self.weight_decay > 0:
                loss = loss + 0.5 * self.weight_decay * w.pow(2).sum()
            (grad,) = torch.autograd.grad(loss, t)
            return float(loss.detach()), grad.cpu().double().numpy()

        size = 2 * d + int(self.fit_intercept)
        bounds = [(0.0, None)] * (2 * d) + [(None, None)] * int(self.fit_intercept)
        result = minimize(
            fun,
            np.zeros(size),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-15},
        )
        self.n_iter_ = int(result.nit)
        z = torch.tensor(result.x, dtype=self.dtype, device=flat.device)
        b = z[2 * d] if self.fit_intercept else torch.zeros((), dtype=self.dtype, device=flat.device)
        return z[:d] - z[d : 2 * d], b

    def _weights(self) -> tuple[Tensor, Tensor]:
        if self.coef_ is None or self.intercept_ is None:
            raise ValueError("this AdversarialLogisticRegression is not fitted yet; call fit(x, y) first")
        return self.coef_, self.intercept_

    def decision_function(self, x: Tensor) -> Tensor:
        """The scores ``wᵀx + b``, shape ``(B,)``, in ``x``'s dtype; positive means class 1."""
        w, b = self._weights()
        flat = _flat(_check_x(x), w)
        return (flat.to(w.dtype) @ w + b).to(x.dtype)

    def predict_proba(self, x: Tensor) -> Tensor:
        """``[P(class 0), P(class 1)]`` per example, shape ``(B, 2)``."""
        p = torch.sigmoid(self.decision_function(x))
        return torch.stack([1 - p, p], dim=1)

    def predict(self, x: Tensor) -> Tensor:
        """Labels ``(B,)`` in the convention of the labels seen by :meth:`fit` (``{0, 1}`` or ``±1``)."""
        positive = self.decision_function(x) > 0
        negative = -1 if self._signed_output else 0
        return torch.where(positive, 1, negative).to(torch.int64)

    def robust_loss(self, x: Tensor, y: Tensor) -> float:
        """The mean closed-form worst-case loss on ``(x, y)`` (no box, no weight decay)."""
        w, b = self._weights()
        return float(adversarial_logistic_loss(w, b, x, y, self.threat))

    def to_module(self) -> nn.Module:
        """The fitted model as a two-logit ``nn.Module`` for the rest of the library.

        Its logits are ``(0, wᵀx + b)``, so its cross-entropy on labels ``{0, 1}`` is
        exactly the logistic loss and :mod:`advlearn.attacks` and
        :mod:`advlearn.evaluation` apply unchanged. The module holds the weights in
        ``dtype`` and expects inputs of that dtype.
        """
        w, b = self._weights()
        linear = nn.Linear(w.shape[0], 2, dtype=w.dtype, device=w.device)
        with torch.no_grad():
            linear.weight.zero_()
            linear.weight[1] = w
            linear.bias.zero_()
            linear.bias[1] = b
        return nn.Sequential(nn.Flatten(), linear)

    def __repr__(self) -> str:
        return (
            f"AdversarialLogisticRegression(threat={self.threat!r}, weight_decay={self.weight_decay:g}, "
            f"solver={self.solver!r})"
        )


__all__ = [
    "AdversarialLogisticRegression",
    "adversarial_logistic_loss",
    "linear_fgsm",
    "signed_labels",
]
