"""Interval bound propagation (Gowal et al. 2018): sound bounds on a network's logits over a box.

Given a box ``l ≤ x ≤ u`` of inputs, every layer maps a box to a box that
contains the layer's image of it. Affine layers use the centre/radius form
(Gowal et al. 2018, eq. 6)

.. math::

    \\mu' = W\\mu + b, \\qquad r' = |W|\\,r, \\qquad \\mu = \\tfrac{u + l}{2},\\; r = \\tfrac{u - l}{2},

and monotone layers (ReLU and the other monotone activations, max- and
average-pooling, :class:`~advlearn.models.Normalize`) map the two corners,
``l' = h(l)``, ``u' = h(u)``. The result holds for every input in the box, so
an example whose true logit's lower bound beats every other logit's upper bound
is *verified*: no perturbation in the threat model changes its label.

The input box is the ℓ∞ ball of radius ε intersected with ``threat.bounds``.
For an ℓ2 or ℓ1 threat model the same box is used: it contains the ball (every
coordinate of a perturbation of norm ≤ ε is at most ε), so the bounds stay sound
but are loose, by a factor up to ``√d`` for ℓ2. The bounds are exact up to
floating-point rounding for a single affine layer, and sound up to rounding
(about 1e-6 relative in float32) for any supported network.

References:
    Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelović, Mann, Kohli.
    On the effectiveness of interval bound propagation for training verifiably
    robust models. arXiv:1810.12715, 2018 (eqs. 6, 8, 11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlearn._checks import check_model_dtype
from advlearn.models import Maxout, Normalize
from advlearn.threat import ThreatModel

Bounds = tuple[Tensor, Tensor]

# Element-wise non-decreasing activations: the box maps to [h(l), h(u)]. Exact types only (a
# subclass may override ``forward``); the parameters each rule assumes are checked in _check_layer.
_MONOTONE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.ELU,
    nn.LeakyReLU,
)
# Maps that act on each corner alone and are non-decreasing: pooling, reshapes, Normalize (std > 0).
_CORNERWISE: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    Normalize,
)
_BATCHNORM: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AFFINE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
_SUPPORTED_TYPES: frozenset[type[nn.Module]] = frozenset(
    (*_AFFINE, *_MONOTONE, *_CORNERWISE, *_BATCHNORM, nn.Dropout, Maxout)
)

SUPPORTED = (
    "Linear, Conv1d, Conv2d, ReLU, ReLU6, LeakyReLU (slope >= 0), ELU (alpha >= 0), Tanh, Sigmoid, "
    "Softplus (beta > 0), Hardtanh, Hardsigmoid, MaxPool, AvgPool (divisor_override None or > 0), "
    "AdaptiveAvgPool2d, AdaptiveMaxPool2d, Flatten, Unflatten, Identity, BatchNorm (eval mode), "
    "Dropout (eval mode), advlearn Normalize (std > 0) and Maxout, nested nn.Sequential; each of exactly "
    "that type (not a subclass) and without forward hooks"
)


def _has_forward_hooks(module: nn.Module, *, recurse: bool = True) -> bool:
    """Whether ``module`` (or, with ``recurse``, one of its submodules, e.g. Maxout's Linear) has hooks."""
    modules = module.modules() if recurse else (module,)
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _global_hooks() -> bool:
    from torch.nn.modules import module as module_mod

    return bool(module_mod._global_forward_hooks or module_mod._global_forward_pre_hooks)


def _leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The layers of ``model`` in order, nested Sequentials flattened, each with its dotted name.

    Every container and layer is checked (:func:`_check_layer`): a module is passed only if its exact
    type has a bound rule, it has no forward hooks and its parameters satisfy what the rule assumes.
    """
    if prefix == "" and _global_hooks():
        raise ValueError(
            "interval bound propagation cannot pass a model while global forward hooks are registered "
            "(torch.nn.modules.module.register_module_forward_hook): they may change any layer's output; "
            "remove them first"
        )
    if type(model) is nn.Sequential:
        if _has_forward_hooks(model, recurse=False):
            raise _unsupported(prefix, model, "has forward hooks or pre-hooks, which may change its output")
        out: list[tuple[str, nn.Module]] = []
        for name, child in model.named_children():
            out += _leaves(child, f"{prefix}.{name}" if prefix else name)
        return out
    _check_layer(prefix, model)
    return [(prefix, model)]


def _unsupported(name: str, layer: nn.Module, why: str = "") -> ValueError:
    where = f"layer {name!r} ({type(layer).__name__})" if name else f"model {type(layer).__name__}"
    reason = why or "has no interval bound rule"
    return ValueError(
        f"interval bound propagation cannot pass {where}: it {reason}. IBP walks an nn.Sequential "
        f"(nested ones too) of these layers: {SUPPORTED}"
    )


def _check_layer(name: str, layer: nn.Module) -> None:
    """Raise unless ``layer``'s exact type has a rule, it has no hooks, and the rule's assumptions hold."""
    kind = type(layer)
    if kind not in _SUPPORTED_TYPES:
        if isinstance(layer, nn.Sequential):
            raise _unsupported(
                name,
                layer,
                "is a subclass of nn.Sequential with its own forward (a residual block?), which IBP "
                "cannot follow; residual connections are not supported",
            )
        supported_base = next((t for t in _SUPPORTED_TYPES if isinstance(layer, t)), None)
        if supported_base is not None:
            raise _unsupported(
                name,
                layer,
                f"is a subclass of {supported_base.__name__}, whose forward may differ from the "
                f"{supported_base.__name__} rule; use {supported_base.__name__} itself",
            )
        raise _unsupported(name, layer)
    if _has_forward_hooks(layer):
        raise _unsupported(name, layer, "has forward hooks or pre-hooks, which may change its output")
    if isinstance(layer, nn.LeakyReLU) and not layer.negative_slope >= 0:
        raise _unsupported(name, layer, f"is not monotone with negative_slope={layer.negative_slope}")
    if isinstance(layer, nn.ELU) and not layer.alpha >= 0:
        raise _unsupported(name, layer, f"is not monotone with alpha={layer.alpha} (needs alpha >= 0)")
    if isinstance(layer, nn.Softplus) and not layer.beta > 0:
        raise _unsupported(name, layer, f"is not monotone with beta={layer.beta} (needs beta > 0)")
    if isinstance(layer, nn.Hardtanh) and not layer.min_val <= layer.max_val:
        raise _unsupported(name, layer, f"has min_val={layer.min_val} > max_val={layer.max_val}")
    if isinstance(layer, (nn.AvgPool1d, nn.AvgPool2d)):
        divisor = getattr(layer, "divisor_override", None)
        if divisor is not None and not divisor > 0:
            raise _unsupported(name, layer, f"divides by divisor_override={divisor} (needs None or > 0)")
    if getattr(layer, "return_indices", False):
        raise _unsupported(name, layer, "returns indices (return_indices=True)")
    if isinstance(layer, Normalize):
        finite = bool(torch.isfinite(layer.mean).all()) and bool(torch.isfinite(layer.std).all())
        if not finite or not bool((layer.std > 0).all()):
            raise _unsupported(name, layer, "has a std entry <= 0 or a non-finite mean or std")
    if isinstance(layer, _BATCHNORM):
        var = getattr(layer, "running_var", None)
        if var is not None and not bool((var + layer.eps > 0).all()):
            raise _unsupported(name, layer, "has running_var + eps <= 0 (the scale is not defined)")


def _affine(
    lower: Tensor,
    upper: Tensor,
    apply: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    weight: Tensor,
    bias: Tensor | None,
) -> Bounds:
    """Centre/radius propagation through ``apply(x, W, b)``, a linear map plus bias (Gowal eq. 6)."""
    mid = apply(torch.add(upper, lower).mul_(0.5), weight, bias)
    rad = apply(torch.sub(upper, lower).mul_(0.5), weight.abs(), None)
    return mid - rad, mid.add_(rad)  # in place: mid is needed by neither backward


def _batchnorm(name: str, layer: nn.modules.batchnorm._BatchNorm, lower: Tensor, upper: Tensor) -> Bounds:
    if layer.training or layer.running_mean is None or layer.running_var is None:
        raise _unsupported(
            name,
            layer,
            "normalizes with batch statistics (training mode or track_running_stats=False); "
            "call model.eval() first",
        )
    scale = torch.rsqrt(layer.running_var + layer.eps)  # (C,)
    if layer.weight is not None:
        scale = scale * layer.weight
    shift = -layer.running_mean * scale
    if layer.bias is not None:
        shift = shift + layer.bias
    shape = (1, -1) + (1,) * (lower.dim() - 2)  # (1, C, 1, ..., 1)
    scale, shift = scale.reshape(shape), shift.reshape(shape)
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    mid, rad = mid * scale + shift, rad * scale.abs()
    return mid - rad, mid + rad


def _layer_bounds(name: str, layer: nn.Module, lower: Tensor, upper: Tensor) -> Bounds:
    """The box that holds ``layer``'s image of ``[lower, upper]`` (``layer`` checked by _leaves)."""
    if isinstance(layer, nn.Linear):
        return _affine(lower, upper, F.linear, layer.weight, layer.bias)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        return _affine(lower, upper, layer._conv_forward, layer.weight, layer.bias)
    if isinstance(layer, (_MONOTONE, _CORNERWISE)):
        return layer(lower), layer(upper)
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return _batchnorm(name, layer, lower, upper)
    if isinstance(layer, nn.Dropout):
        if layer.training and layer.p > 0:
            raise _unsupported(name, layer, "drops units at random in training mode; call model.eval() first")
        return lower, upper
    if isinstance(layer, Maxout):
        lo, up = _affine(lower, upper, F.linear, layer.linear.weight, layer.linear.bias)
        shape = (lower.shape[0], layer.units, layer.pieces)  # (B, units, pieces)
        return lo.reshape(shape).amax(dim=2), up.reshape(shape).amax(dim=2)
    raise _unsupported(name, layer)


def check_ibp_supported(model: nn.Module) -> None:
    """Raise a ValueError naming the first layer of ``model`` that IBP cannot pass (training-mode checks
    happen when bounds are computed).

    A layer passes only if its exact type has a rule (a subclass of ``nn.ReLU`` or ``nn.Sequential``
    with its own ``forward`` is refused), it carries no forward hooks or pre-hooks, and its
    parameters satisfy the rule's assumptions (monotone activations, positive divisors and std).
    """
    _leaves(model)


def input_box(x: Tensor, threat: ThreatModel) -> Bounds:
    """The box ``[max(x − ε, lo), min(x + ε, hi)]``: the ℓ∞ ball ∩ bounds; it contains the ℓ2 and ℓ1 balls."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(
            f"x must be a floating-point batch of shape (B, ...), got "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"x is an empty batch, shape {tuple(x.shape)}; pass at least one example")
    lo, hi = threat.box
    x_min, x_max = (float(v) for v in torch.aminmax(x))  # one pass; NaN fails both comparisons below
    if not (lo <= x_min and x_max <= hi):
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf; clean the data before bounding it")
        raise ValueError(f"x has values in [{x_min:g}, {x_max:g}], outside threat.bounds=({lo:g}, {hi:g})")
    return threat.enclosing_box(x)


def _propagate(layers: list[tuple[str, nn.Module]], lower: Tensor, upper: Tensor) -> Bounds:
    for name, layer in layers:
        lower, upper = _layer_bounds(name, layer, lower, upper)
    return lower, upper


def ibp_bounds(model: nn.Module, x: Tensor, threat: ThreatModel) -> Bounds:
    """Lower and upper bounds on every logit of ``model`` over the threat model's box around each ``x``.

    For every ``x'`` with ``‖x' − x‖_∞ ≤ ε`` inside ``threat.bounds``:
    ``lower ≤ model(x') ≤ upper`` (up to float rounding). For ℓ2 and ℓ1 threat
    models the enclosing ℓ∞ box of radius ε is bounded (sound, looser).

    Args:
        model: an ``nn.Sequential`` (nested allowed) of supported layers, or one such layer;
            evaluated with its parameters as they are (gradients flow through, for IBP training).
        x: ``(B, ...)`` inputs inside ``threat.bounds``.
        threat: the radius (float or per example) and the box.

    Returns:
        ``(lower, upper)``, each ``(B, num_classes)``.

    Raises:
        ValueError: for a layer without a bound rule (named), BatchNorm or Dropout in
            training mode, or inputs outside the bounds.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(5, 3)
        >>> lower, upper = ibp_bounds(model, x, ThreatModel("linf", 0.1))
        >>> bool((lower <= model(x)).all() and (model(x) <= upper).all())
        True

    References:
        Gowal et al. 2018, eq. 6 (affine layers) and §3 (monotone activations).
    """
    layers = _leaves(model)
    lower, upper = input_box(x, threat)
    check_model_dtype(model, x)
    return _propagate(layers, lower, upper)


def ibp_margin_bounds(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
    """Lower bounds on the margins ``z_y − z_j`` over the threat model's box, ``(B, C)``; 0 at ``j = y``.

    When the last layer is ``nn.Linear`` (``z = W h + b``) the margins are bounded
    through it directly, ``(W_y − W_j)·h + b_y − b_j`` over the box of ``h``
    (Gowal et al. 2018, eq. 8: the specification ``c = e_y − e_j`` elided into
    the last layer). That is never looser, and usually much tighter, than
    ``lower_y − upper_j`` from :func:`ibp_bounds`, which is what is used otherwise.

    An example is verified when every entry but its own is positive.
    """
    layers = _leaves(model)
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape (B,) = ({x.shape[0]},), got {tuple(y.shape)}")
    lower, upper = input_box(x, threat)
    last = layers[-1][1]
    if isinstance(last, nn.Linear):
        lower, upper = _propagate(layers[:-1], lower, upper)
        mid, rad = (upper + lower) / 2, (upper - lower) / 2  # (B, H)
        weight = last.weight  # (C, H)
        num_classes = weight.shape[0]
        if y.numel() and int(y.max()) >= num_classes:
            raise ValueError(f"y holds label {int(y.max())} but the model has {num_classes} logits")
        # Centre: (W_y − W_j)·μ + b_y − b_j, from the logits at the centre.
        z_mid = F.linear(mid, weight, last.bias)  # (B, C)
        margin_mid = z_mid.gather(1, y[:, None]) - z_mid
        # Radius: |W_y − W_j|·r. With few classes, one matmul against all C² rows |W_c − W_j|;
        # with many, the (B, C, H) rows of each example's own class.
        if num_classes <= 32:
            pairs = (weight.unsqueeze(1) - weight.unsqueeze(0)).abs()  # (C, C, H): |W_c − W_j|
            all_rad = (rad @ pairs.reshape(num_classes * num_classes, -1).T).reshape(
                -1, num_classes, num_classes
            )
            margin_rad = all_rad.gather(1, y[:, None, None].expand(-1, 1, num_classes)).squeeze(1)  # (B, C)
        else:
            diff = (weight[y].unsqueeze(1) - weight.unsqueeze(0)).abs()  # (B, C, H)
            margin_rad = torch.einsum("bch,bh->bc", diff, rad)
        margin = margin_mid - margin_rad
    else:
        lower, upper = _propagate(layers, lower, upper)
        if y.numel() and int(y.max()) >= lower.shape[1]:
            raise ValueError(f"y holds label {int(y.max())} but the model has {lower.shape[1]} logits")
        margin = lower.gather(1, y[:, None]) - upper  # (B, C)
    return margin.scatter(1, y[:, None].to(margin.device), 0.0)


# ----------------------------------------------------------------------------- verified accuracy


@dataclass(frozen=True)
class Verification:
    """What IBP verifies on a data set under one threat model.

    Attributes:
        threat: the threat model (ℓ2/ℓ1 are bounded through their enclosing ℓ∞ box).
        verified: ``(N,)`` bool on the CPU: no input in the box changes the label (implies correct).
        correct: ``(N,)`` bool on the CPU: classified correctly without perturbation.
    """

    threat: ThreatModel
    verified: Tensor = field(repr=False)
    correct: Tensor = field(repr=False)

    @property
    def num_examples(self) -> int:
        return int(self.verified.numel())

    @property
    def verified_accuracy(self) -> float:
        """The fraction of examples verified: a lower bound on the robust accuracy."""
        return float(self.verified.float().mean())

    @property
    def clean_accuracy(self) -> float:
        return float(self.correct.float().mean())


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def verify(
    model: nn.Module,
    data: Any,
    threat: ThreatModel,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    quiet: bool = False,
) -> Verification:
    """Verify every example of ``data`` with IBP: the true class's margin over every other stays positive.

    Args:
        model: see :func:`ibp_bounds`; put it in ``eval()`` mode first.
        data: a DataLoader (or any iterable of ``(x, y)``), an ``(x, y)`` pair, or a dataset
            with ``.x``/``.y``.
        threat: the threat model (its ε a float).
        batch_size: batch size when ``data`` is tensors.
        device: where to run; default: the model's device.
        quiet: no progress bar.

    Returns:
        A :class:`Verification`.
    """
    from advlearn.data import batches

    if isinstance(threat.eps, Tensor):
        raise ValueError(
            "verify needs threat.eps as one float for the whole data set, not a per-example tensor"
        )
    check_ibp_supported(model)
    device = torch.device(device) if device is not None else _model_device(model)
    verified, correct = [], []
    with torch.no_grad():
        for x, y in tqdm(batches(data, batch_size), desc="IBP", disable=quiet, leave=False):
            x, y = x.to(device), y.to(device)
            margins = ibp_margin_bounds(model, x, y, threat)
            others = torch.ones_like(margins, dtype=torch.bool).scatter(1, y[:, None], False)
            verified.append((margins > 0).logical_or(~others).all(dim=1).cpu())
            correct.append((model(x).argmax(dim=1) == y).cpu())
    if not verified:
        raise ValueError("data yielded no examples")
    return Verification(threat=threat, verified=torch.cat(verified), correct=torch.cat(correct))


def verified_accuracy(
    model: nn.Module, data: Any, threat: ThreatModel, *, batch_size: int = 256, quiet: bool = True
) -> float:
    """The fraction of ``data`` that IBP verifies under ``threat`` (a lower bound on robust accuracy).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> x, y = torch.rand(16, 1, 2, 2), torch.randint(0, 3, (16,))
        >>> clean = float((model(x).argmax(1) == y).float().mean())
        >>> verified_accuracy(model, (x, y), ThreatModel("linf", 0.0)) == clean
        True
    """
    return verify(model, data, threat, batch_size=batch_size, quiet=quiet).verified_accuracy


def ibp_radius(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    eps_max: float | None = None,
    steps: int = 12,
) -> Tensor:
    """The largest ε (in the threat's norm, via its ℓ∞ box) at which IBP verifies each example, by bisection.

    Each returned radius was itself verified, so it is a certified radius; 0 for
    examples not verified at any ε tried (misclassified ones included). IBP
    bounds grow with the box (interval arithmetic is inclusion-monotone), so
    bisection finds the largest verifiable radius to within ``eps_max / 2^steps``.

    Args:
        x, y: a batch and its labels.
        threat: supplies the norm and the box; its ε is ignored.
        eps_max: the top of the search; default: the width of the box ``hi − lo``.
        steps: bisection steps.

    Returns:
        ``(B,)`` radii on ``x``'s device.
    """
    lo_box, hi_box = threat.box
    top = float(hi_box - lo_box) if eps_max is None else float(eps_max)
    low = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    high = torch.full_like(low, top)
    with torch.no_grad():
        for _ in range(steps):
            mid = (low + high) / 2
            margins = ibp_margin_bounds(model, x, y, threat.with_eps(mid))
            ok = (margins > 0).scatter(1, y[:, None], True).all(dim=1)
            low, high = torch.where(ok, mid, low), torch.where(ok, high, mid)
    return low


__all__ = [
    "SUPPORTED",
    "Verification",
    "check_ibp_supported",
    "ibp_bounds",
    "ibp_margin_bounds",
    "ibp_radius",
    "input_box",
    "verified_accuracy",
    "verify",
]
