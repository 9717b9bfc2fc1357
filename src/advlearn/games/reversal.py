"""The gradient reversal layer of domain-adversarial training (Ganin & Lempitsky, 2015).

In the forward pass it is the identity; in the backward pass it multiplies the incoming
gradient by ``−λ``. Placed between a feature extractor and a domain classifier, it lets one
backward pass train the classifier to *minimize* its loss while the features below it receive
the gradient that *maximizes* that loss: the min-max of eq. (9)-(10) of Ganin et al. (2016)
as plain gradient descent.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GradientReversal", "GradientReversalFunction", "grad_reverse"]


def _check_lambd(lambd: object) -> float:
    if isinstance(lambd, bool) or not isinstance(lambd, (int, float)) or not 0 <= lambd < math.inf:
        raise ValueError(
            f"lambd must be a finite number >= 0 (the weight of the reversed gradient), got {lambd!r}"
        )
    return float(lambd)


class GradientReversalFunction(torch.autograd.Function):
    """``R_λ``: forward ``R_λ(h) = h``, backward ``dR_λ/dh = −λ I`` (Ganin et al. 2016, eq. 12).

    Use :func:`grad_reverse` or the :class:`GradientReversal` layer rather than ``apply``.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, lambd: float) -> Tensor:
        ctx.lambd = lambd
        # A view: the same storage, so the forward pass is the identity bit for bit.
        return h.view_as(h)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        # Plain tensor ops, so the backward pass is itself differentiable (double backward works).
        return grad_output * (-ctx.lambd), None


def grad_reverse(h: Tensor, lambd: float = 1.0) -> Tensor:
    """Identity in the forward pass, ``−λ ×`` the incoming gradient in the backward pass.

    .. math::

        R_\\lambda(h) = h, \\qquad \\frac{\\partial R_\\lambda}{\\partial h} = -\\lambda I.

    Args:
        h: any floating-point tensor, usually features ``(B, D)``.
        lambd: ``λ >= 0``, the weight of the reversed gradient (``λ = 0`` cuts the gradient).

    Returns:
        A view of ``h`` (equal to it bit for bit) whose gradient is reversed and scaled.

    Raises:
        ValueError: if ``h`` is not a floating-point tensor or ``lambd`` is negative or not finite.

    References:
        Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand, Lempitsky.
        Domain-adversarial training of neural networks. JMLR 17(59), 2016, Section 5, eq. (12).

    Example:
        >>> h = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> out = grad_reverse(h, lambd=0.5)
        >>> torch.equal(out, h)
        True
        >>> out.sum().backward()
        >>> h.grad
        tensor([-0.5000, -0.5000])
    """
    if not isinstance(h, Tensor) or not h.is_floating_point():
        kind = h.dtype if isinstance(h, Tensor) else type(h).__name__
        raise ValueError(f"h must be a floating-point tensor, got {kind}")
    out: Tensor = GradientReversalFunction.apply(h, _check_lambd(lambd))
    return out


class GradientReversal(nn.Module):
    """The gradient reversal layer as a module, for ``nn.Sequential`` and DANN.

    ``lambd`` is a plain attribute: a training loop sets it at every step to follow a schedule
    such as :func:`advlearn.games.dann.dann_lambda`.

    Args:
        lambd: ``λ >= 0``, the weight of the reversed gradient.

    Example:
        >>> layer = GradientReversal(lambd=2.0)
        >>> h = torch.ones(3, requires_grad=True)
        >>> layer(h).sum().backward()
        >>> h.grad
        tensor([-2., -2., -2.])
    """

    def __init__(self, lambd: float = 1.0) -> None:
        super().__init__()
        self.lambd = _check_lambd(lambd)

    def forward(self, h: Tensor) -> Tensor:
        return grad_reverse(h, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd:g}"
