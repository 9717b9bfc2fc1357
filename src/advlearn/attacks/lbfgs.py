"""Box-constrained L-BFGS (Szegedy et al. 2014), the first adversarial-example attack, with a search on c.

A minimal-perturbation attack held to the threat model's contract: see :mod:`advlearn.attacks._minimal`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_logits
from advlearn.attacks._base import (
    DERIVED,
    Attack,
    AttackResult,
    attack_config,
    is_success,
    register,
)
from advlearn.attacks._minimal import Smallest, check_loss_name, check_search, finish, signed_margin
from advlearn.losses import get_loss
from advlearn.threat import L2, ThreatModel


def _check_lbfgs(steps: int, search_steps: int, initial_const: float, loss: str, targeted: bool) -> None:
    check_search(steps, search_steps, initial_const)
    check_loss_name(loss)
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
    best = Smallest.start(x, threat.norm)
    with torch.no_grad():
        logits = check_logits(model(x), y)
    # An example x itself fools needs no perturbation: δ = 0 is the minimum.
    best.update(
        torch.arange(x.shape[0], device=x.device),
        x,
        x,
        signed_margin(logits, y, targeted),
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
    return finish(model, x, y, threat, best.chosen, loss, targeted, counter["grads"], counter["forwards"])


def _lbfgs_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    idx: Tensor,
    best: Smallest,
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
    norm = threat.norm  # ℓ2, the penalty's norm
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
            value = (c * norm(delta) ** 2 - sign * loss_fn(logits, y)).sum()
            (grad,) = torch.autograd.grad(value, delta)
        counter["grads"] += n
        logits = logits.detach()
        fooled = is_success(logits, y, targeted)
        best.update(idx, x_new.detach(), x, signed_margin(logits, y, targeted), fooled)
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

    norms: ClassVar[tuple[str, ...]] = (L2(),)

    threat: ThreatModel
    steps: int = DERIVED
    search_steps: int = DERIVED
    initial_const: float = DERIVED
    loss: str = DERIVED
    targeted: bool = DERIVED


__all__ = ["LBFGS", "lbfgs"]
