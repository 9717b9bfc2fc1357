"""Adversarial training on a hidden layer: perturb a named layer's activations instead of the input.

Goodfellow et al. (2015, §6) also trained maxout networks against perturbations of
hidden units and found perturbing the input works best; :class:`HiddenAT` makes that
comparison one option away. The perturbation ``δ`` is added to the output of
``model.get_submodule(layer)`` by a forward hook, and is the worst case of the
cross-entropy in the ball ``{δ : ‖δ‖_p ≤ ε}``:

.. math::

    \\tilde J(\\theta) = \\alpha\\, J(\\theta, x, y) + (1 - \\alpha)\\,
        J\\big(\\theta, x, y;\\, h_\\ell \\leftarrow h_\\ell + \\delta^*\\big), \\qquad
    \\delta^* \\approx \\arg\\max_{\\|\\delta\\|_p \\le \\varepsilon} J(\\theta, x, y;\\, h_\\ell + \\delta).

Activations have no box, so unlike input attacks the ball is not intersected with one.
``steps = 1`` without a random start is FGSM on ``δ`` (``ε·sign(∇_h J)`` for ℓ∞); more steps
run PGD. With an identity layer in front of the network it is input adversarial training
without the box (the tests check this).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn._checks import check_nonnegative, check_positive_int, check_unbounded_ball
from advlearn.threat import ThreatModel
from advlearn.training.objectives import Objective, register_objective


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """``model.get_submodule(layer)``, or a ValueError listing the layer names ``model`` has.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> resolve_layer(model, "1")
        ReLU()
    """
    names = [name for name, _ in model.named_modules() if name]
    if not isinstance(layer, str) or layer not in names:
        listed = ", ".join(map(repr, names)) or "none (the model has no submodules)"
        raise ValueError(
            f"layer={layer!r} is not a submodule of {type(model).__name__}; valid names: {listed}"
        )
    return model.get_submodule(layer)


class _AddPerturbation:
    """Forward hook adding ``delta`` to a layer's output; ``delta`` is made on the first call if unset."""

    def __init__(self, layer: str, delta: Tensor | None, init: Any) -> None:
        self.layer, self.delta, self.init, self.calls = layer, delta, init, 0

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise ValueError(
                f"layer {self.layer!r} returns {type(output).__name__}, not a tensor; pick a layer whose "
                "output is one activation tensor"
            )
        self.calls += 1
        if self.calls > 1:
            raise ValueError(
                f"layer {self.layer!r} runs more than once per forward pass (a shared module); "
                "pick a layer that runs once"
            )
        if self.delta is None:
            self.delta = self.init(output)
        if self.delta.shape != output.shape:
            raise ValueError(
                f"the perturbation has shape {tuple(self.delta.shape)} but layer {self.layer!r} "
                f"returned {tuple(output.shape)}"
            )
        return output + self.delta


@contextmanager
def _hooked(model: nn.Module, layer: str, hook: _AddPerturbation) -> Iterator[_AddPerturbation]:
    handle = resolve_layer(model, layer).register_forward_hook(hook)
    try:
        yield hook
    finally:  # the hook must never outlive the call, exceptions included
        handle.remove()


def forward_with_perturbation(model: nn.Module, x: Tensor, layer: str, delta: Tensor) -> Tensor:
    """``model(x)`` with ``delta`` added to the output of ``layer``; the hook is removed afterwards.

    Raises:
        ValueError: for an unknown layer (listing the valid names), a layer whose output is not
            a tensor or does not match ``delta``'s shape, or one that runs twice per forward.
    """
    hook = _AddPerturbation(layer, delta, None)
    with _hooked(model, layer, hook):
        logits: Tensor = model(x)
    if hook.calls == 0:
        raise ValueError(f"layer {layer!r} did not run in the forward pass; pick a layer the model uses")
    return logits


def hidden_perturbation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    layer: str,
    threat: ThreatModel,
    *,
    steps: int = 1,
    step_size: float | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The worst-case perturbation ``δ`` of ``layer``'s activations for the cross-entropy, by FGSM/PGD.

    .. math::

        \\delta_{k+1} = \\Pi_{\\|\\delta\\|_p \\le \\varepsilon}
            \\big(\\delta_k + \\eta \\cdot d^*(\\nabla_\\delta J)\\big), \\qquad \\delta_0 = 0

    with ``d*`` the steepest ascent direction of the norm. Only ``δ`` is differentiated
    (``torch.autograd.grad``); the parameters' ``.grad`` and the modules' modes are untouched.

    Args:
        model: maps ``x`` to logits ``(B, C)``.
        x: inputs ``(B, ...)``.
        y: labels ``(B,)``.
        layer: the name of a submodule (``dict(model.named_modules())``) run once per forward
            pass, whose output is a tensor with a batch dimension.
        threat: the ball ``‖δ‖_p ≤ ε`` in activation units, with ``bounds=None`` (activations
            have no box) and a float ``eps``; norms are per example over all non-batch
            dimensions of the activations.
        steps: 1 is FGSM on ``δ``; more is PGD.
        step_size: ``η``; ``None`` means ``ε`` for one step and ``2.5·ε/steps`` otherwise.
        random_start: start from a uniform point of the ball instead of 0.
        generator: for the random start.

    Returns:
        ``δ``, detached, shaped like the layer's output, with ``‖δ‖_p ≤ ε`` per example.

    Raises:
        ValueError: for a threat model with a box or per-example radii, bad options, or a layer
            that does not run once with one tensor output.
    """
    eps = check_unbounded_ball(
        threat,
        "threat",
        no_box="activations have no box; give the ball",
        needs="hidden-layer perturbations need",
    )
    check_positive_int("steps", steps)
    if step_size is None:
        step_size = eps if steps == 1 else 2.5 * eps / steps
    eta = check_nonnegative("step_size", step_size)

    def start(output: Tensor) -> Tensor:
        zero = torch.zeros_like(output.detach())
        delta0 = threat.random_init(zero, generator=generator) if random_start else zero
        return delta0.requires_grad_(True)

    delta: Tensor | None = None  # made by the hook on the first pass, from the layer's output shape
    for _ in range(steps):
        hook = _AddPerturbation(layer, None if delta is None else delta.requires_grad_(True), start)
        with torch.enable_grad(), _hooked(model, layer, hook):
            loss = F.cross_entropy(model(x), y, reduction="sum")
            if hook.delta is None:
                raise ValueError(
                    f"layer {layer!r} did not run in the forward pass; pick a layer the model uses"
                )
            (grad,) = torch.autograd.grad(loss, hook.delta)
        current = hook.delta.detach()
        # The ball is centred at δ = 0, PGD's step in it, as on inputs.
        step_size_b = torch.full((current.shape[0],), eta, device=current.device, dtype=current.dtype)
        delta = threat.ascent_step(current, torch.zeros_like(current), grad, step_size_b)
    assert delta is not None
    return delta


@register_objective("hidden_at")
@dataclass(frozen=True)
class HiddenAT(Objective):
    """Adversarial training against a worst-case perturbation of a hidden layer's activations.

    ``α·J(x) + (1 − α)·J(x; h_layer + δ*)`` with ``δ*`` from :func:`hidden_perturbation`
    (FGSM for ``steps=1``, PGD otherwise) in the ε-ball of ``threat.norm``, regenerated from the
    current model at every batch, in whatever mode the Trainer put the model. The perturbed
    forward pass goes through a hook that is removed even when the forward pass raises.

    The ball is a :class:`~advlearn.threat.ThreatModel` with no box: the objective keeps
    ``threat``'s norm, takes its radius from ``eps`` and drops its bounds, so after
    construction ``objective.threat`` is exactly the ball δ lives in. From a config,
    ``build_objective`` supplies the experiment's threat model (so the hidden ball has the
    experiment's norm) and ``eps`` is the required option giving the radius in activation
    units, which an input-space ε does not measure.

    Args:
        threat: the threat model whose norm the ball takes (its ``eps`` and ``bounds`` are
            replaced: ``ThreatModel(threat.norm, eps, bounds=None)``).
        layer: the submodule's name (``dict(model.named_modules())``); an unknown name raises a
            ValueError listing the valid ones when the objective is first called.
        eps: the radius in activation units (activations have no box).
        steps: attack steps on ``δ`` per batch.
        step_size: ``None``: ``ε`` for one step, ``2.5·ε/steps`` otherwise.
        random_start: start the attack from a uniform point of the ball.
        alpha: the weight of the clean loss (Goodfellow et al.'s α; 0 trains on the
            perturbed loss alone).

    References:
        Goodfellow, Shlens & Szegedy. Explaining and harnessing adversarial examples.
        ICLR 2015, eq. (6) (the α-blend) and §6 (perturbing hidden layers).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.rand(5, 4), torch.randint(0, 3, (5,))
        >>> objective = HiddenAT(ThreatModel("linf", 0.1, bounds=None), "1", eps=0.1, alpha=0.0)
        >>> bool(objective(model, x, y) >= torch.nn.functional.cross_entropy(model(x), y))
        True
    """

    threat: ThreatModel
    layer: str
    eps: float
    steps: int = 1
    step_size: float | None = None
    random_start: bool = False
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError(f"layer must name a submodule, e.g. layer='features.2', got {self.layer!r}")
        if not isinstance(self.threat, ThreatModel):
            raise ValueError(f"threat must be a ThreatModel, got {type(self.threat).__name__}")
        ball = ThreatModel(self.threat.norm, check_nonnegative("eps", self.eps), bounds=None)
        object.__setattr__(self, "threat", ball)
        check_positive_int("steps", self.steps)
        if self.step_size is not None:
            check_nonnegative("step_size", self.step_size)
        if not 0.0 <= check_nonnegative("alpha", self.alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        delta = hidden_perturbation(
            model, x, y, self.layer, self.threat, steps=self.steps,
            step_size=self.step_size, random_start=self.random_start,
        )  # fmt: skip
        adversarial = F.cross_entropy(forward_with_perturbation(model, x, self.layer, delta), y)
        if self.alpha == 0.0:
            return adversarial
        return self.alpha * F.cross_entropy(model(x), y) + (1.0 - self.alpha) * adversarial


__all__ = ["HiddenAT", "forward_with_perturbation", "hidden_perturbation", "resolve_layer"]
