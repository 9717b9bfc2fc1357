"""Adversarial weight perturbation (Wu et al. 2020): the ascent step on the weights and its exact undo.

:class:`~advlearn.training.AWP` takes the gradient of its loss at ``w + v`` and applies it to
``w``; these two pieces find ``v`` and put it on (and off) the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from advlearn import _distributed as dist


def awp_perturbation(model: nn.Module, loss: Tensor, gamma: float) -> dict[str, Tensor]:
    """One normalized ascent step on the weights: ``v_l = γ‖W_l‖·∇_l/‖∇_l‖`` for every weight matrix.

    "Layers" are the parameters with two or more dimensions (the weights of
    linear and convolutional layers); biases and normalization parameters are
    not perturbed. The step is relative to each layer's norm, so ``γ`` is
    scale-free (Wu et al. 2020, eq. (11)). Under torchrun the gradient is averaged over the
    ranks first, so ``v`` is that of the global batch on every rank.

    Returns:
        ``{parameter name: v_l}``, each ``‖v_l‖ = γ‖W_l‖`` (0 where the gradient is 0).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    # Taken outside DDP's hooks: average over the ranks, so every rank steps to the same w + v (the
    # perturbation of the global batch, as in one process).
    dist.average_([g for g in grads if g is not None])
    out = {}
    for (name, weight), grad in zip(named, grads, strict=True):
        if grad is None:
            continue
        scale = gamma * weight.detach().norm() / grad.norm().clamp_min(1e-20)
        out[name] = scale * grad
    return out


@contextmanager
def perturbed_weights(model: nn.Module, v: Mapping[str, Tensor]) -> Iterator[None]:
    """Inside the block the parameters named in ``v`` are ``w + v``; on leaving (also on an error)
    they are ``w`` again, restored from a copy bit for bit (not by subtracting ``v``)."""
    params = dict(model.named_parameters())
    saved = {name: params[name].detach().clone() for name in v}
    try:
        with torch.no_grad():
            for name, step in v.items():
                params[name].add_(step)
        yield
    finally:
        with torch.no_grad():
            for name, weight in saved.items():
                params[name].copy_(weight)


__all__ = ["awp_perturbation", "perturbed_weights"]
