"""The adaptive-attack kit of Athalye, Carlini & Wagner (2018): EOT and BPDA, as model wrappers.

A defense that randomizes its input or passes it through a non-differentiable
step can make gradient attacks fail without being robust ("obfuscated
gradients"). Both tools here wrap the model, so that *every* gradient attack
(FGSM, PGD, APGD, FAB, CW, the AutoAttack members) attacks the defense as it
should, without an option of its own:

- :class:`EOT` (Expectation over Transformation) averages ``samples`` forward
  passes of a randomized model; its gradient is the average of theirs.
- :class:`BPDA` (Backward Pass Differentiable Approximation) runs a
  non-differentiable preprocessing step forward and a differentiable
  approximation of it (the identity by default) backward.

Example:
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> quantize = BPDA(lambda x: torch.round(x * 4) / 4)  # straight-through: identity backward
    >>> noisy = EOT(torch.nn.Sequential(quantize, torch.nn.Linear(3, 2)), samples=4)
    >>> x = torch.rand(2, 3, requires_grad=True)
    >>> noisy(x).sum().backward()
    >>> x.grad.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from advlearn._checks import check_positive_int

Transform = Callable[[Tensor], Tensor]


class EOT(nn.Module):
    """Expectation over Transformation: the mean of ``samples`` forward passes of a randomized ``model``.

    ``EOT(model, samples)(x) = (1/n) Σ_s model(x)`` with fresh randomness in every
    pass, so the gradient of anything linear in the logits (a margin, a logit
    difference: what the CW and DLR losses compare) is the average of the ``n``
    per-sample gradients, the Monte-Carlo estimate of ``∇ E[model(x)]``; for a
    nonlinear loss such as the cross-entropy it is the gradient of the loss at the
    averaged logits (for APGD-CE with EOT this differs slightly from the reference,
    which averages per-sample loss gradients). Predictions are those of the
    averaged logits. Costs ``samples`` forward (and backward) passes per call.

    Args:
        model: the randomized model (dropout at test time, random input noise or resizing, ...).
        samples: forward passes averaged per call (20 in AutoAttack's ``version="rand"``).

    Raises:
        ValueError: for ``samples < 1``.
    """

    def __init__(self, model: nn.Module, samples: int = 20) -> None:
        super().__init__()
        self.model = model
        self.samples = check_positive_int("samples", samples)

    def forward(self, x: Tensor) -> Tensor:
        total: Tensor = self.model(x)
        for _ in range(self.samples - 1):
            total = total + self.model(x)
        return total / self.samples

    def extra_repr(self) -> str:
        return f"samples={self.samples}"


class _Approximated(torch.autograd.Function):
    """``forward(x)`` forward, the vector-Jacobian product of ``backward`` at ``x`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, forward: Transform, backward: Transform | None) -> Tensor:
        ctx.backward_fn = backward
        ctx.save_for_backward(x)
        with torch.no_grad():
            out = forward(x)
        if out.shape != x.shape and backward is None:
            raise ValueError(
                f"BPDA with the identity backward needs forward to keep the shape {tuple(x.shape)}, "
                f"got {tuple(out.shape)}; give backward=... of the same output shape"
            )
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        if ctx.backward_fn is None:
            return grad_out, None, None
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(ctx.backward_fn(xg), xg, grad_out)
        return grad, None, None


class BPDA(nn.Module):
    """Backward Pass Differentiable Approximation of a non-differentiable preprocessing step.

    The forward pass is ``forward(x)`` exactly (quantization, JPEG, a denoiser run
    without gradient...); the backward pass is that of ``backward(x)``, a smooth
    approximation of it, or the identity ("straight-through") when ``backward`` is
    ``None``, which fits any step with ``forward(x) ≈ x``. Put it in front of the
    classifier: ``nn.Sequential(BPDA(quantize), classifier)``. Costs one call of
    ``forward`` per pass, plus one forward and backward of ``backward`` when given.

    Args:
        forward: the preprocessing step, ``(B, ...) -> (B, ...)``; a module is registered as a submodule.
        backward: its differentiable approximation (same output shape), or ``None`` for the identity.

    References:
        Athalye, Carlini & Wagner. Obfuscated gradients give a false sense of
        security: circumventing defenses to adversarial examples. ICML 2018, §4.1.
    """

    def __init__(self, forward: Transform, backward: Transform | None = None) -> None:
        super().__init__()
        if not callable(forward) or (backward is not None and not callable(backward)):
            raise ValueError("BPDA needs callables: forward(x) and, if given, backward(x)")
        self.forward_fn = forward
        self.backward_fn = backward

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = _Approximated.apply(x, self.forward_fn, self.backward_fn)
        return out


class RandomizedOutputsWarning(UserWarning):
    """The model gave two different outputs for one input: a randomized defense (or train mode)."""


def outputs_differ(first: Tensor, second: Tensor) -> Tensor:
    """``(N,)`` bool: two passes' logits differ beyond float rounding (``1e-5·(1 + max|z|)`` per row).

    Example:
        >>> z = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> outputs_differ(z, z + torch.tensor([[0.0, 0.0], [0.1, 0.0]])).tolist()
        [False, True]
    """
    scale = 1.0 + first.abs().amax(dim=1)
    out: Tensor = (first - second).abs().amax(dim=1) > 1e-5 * scale
    return out


__all__ = ["BPDA", "EOT", "RandomizedOutputsWarning", "outputs_differ"]
