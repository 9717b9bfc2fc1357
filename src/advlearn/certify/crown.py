"""CROWN (Zhang et al. 2018): linear bounds propagated backward, and CROWN-IBP's mix with IBP.

For a specification ``C`` (rows of linear functions of the logits, the identity
or the margins ``e_y − e_j``), CROWN walks the network backward from ``C`` and
keeps, at every layer, a linear function of that layer's input that lower-bounds
``C·z``:

- an affine layer ``h' = W h + b`` maps ``Λ h' + c`` to ``(ΛW) h + (c + Λb)``;
- a ReLU with pre-activation bounds ``[l, u]`` is relaxed linearly,
  ``α h ≤ relu(h) ≤ u/(u − l)·(h − l)`` on unstable neurons (``l < 0 < u``;
  ``α = 1`` if ``u > −l`` else 0, CROWN's adaptive lower line), exactly on
  stable ones; positive coefficients take the lower line, negative the upper.

At the input the linear function is minimized over the box in closed form,
``Λ·μ − |Λ|·r + c``. The pre-activation bounds come from CROWN itself, layer by
layer (``intermediate="crown"``, the verifier's default) or from IBP
(``intermediate="ibp"``: CROWN-IBP, Zhang et al. 2020, cheap enough to train with).
Every bound is intersected with IBP's, so CROWN is never looser than
:func:`~advlearn.certify.ibp_bounds` and, each of the two being sound, stays sound.

Supported layers: ``Linear``, ``Conv2d`` (zero padding), ``ReLU``, ``Flatten``,
``AvgPool2d``, :class:`~advlearn.models.Normalize`, ``Identity``, ``Dropout`` and
``BatchNorm`` in eval mode; each of exactly that type and without hooks, in an
``nn.Sequential`` (nested allowed), as for IBP.

Cost: with ``intermediate="crown"`` one backward pass per ReLU layer with as many
rows as that layer has neurons (``B·n·d`` floats for ``n`` neurons and ``d``
inputs; batches of 32–128 MNIST images fit), so it is for verification. With
``"ibp"`` one backward pass with ``C`` rows: about the cost of two forward passes.

References:
    Zhang, Weng, Chen, Hsieh, Daniel. Efficient neural network robustness
    certification with general activation functions. NeurIPS 2018 (CROWN).
    Zhang, Chen, Xiao, Gowal, Stanforth, Li, Boning, Hsieh. Towards stable and
    efficient training of verifiably robust neural networks. ICLR 2020 (CROWN-IBP).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn.certify.ibp import (
    Bounds,
    _layer_bounds,
    _leaves,
    _propagate,
    _unsupported,
    ibp_margin_bounds,
    input_box,
)
from advlearn.models import Normalize
from advlearn.threat import ThreatModel

Intermediate = Literal["crown", "ibp"]

_CROWN_AFFINE: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv2d,
    nn.Flatten,
    nn.AvgPool2d,
    Normalize,
    nn.Identity,
    nn.Dropout,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
)
_ROWS = 256  # specification rows per backward pass of the intermediate bounds
_MIXING: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.AvgPool2d)
CROWN_SUPPORTED = (
    "Linear, Conv2d (zero padding), ReLU, Flatten, AvgPool2d, advlearn Normalize, Identity, Dropout and "
    "BatchNorm (eval mode)"
)


def _crown_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = _leaves(model)  # exact types, no hooks, parameters checked (as for IBP)
    for name, layer in layers:
        if type(layer) is nn.ReLU or type(layer) in _CROWN_AFFINE:
            if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
                raise _unsupported(name, layer, f"pads with {layer.padding_mode!r} (CROWN needs zeros)")
            continue
        raise ValueError(
            f"CROWN cannot pass layer {name!r} ({type(layer).__name__}): it has no linear relaxation here. "
            f"CROWN walks an nn.Sequential of {CROWN_SUPPORTED}; use ibp_bounds for the other layers"
        )
    return layers


def _backward_affine(layer: nn.Module, lam: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``Λ`` at ``layer``'s output ``(B, S, *out)`` → (``Λ`` at its input, the constant ``Λ·f(0)``)."""
    batch, rows = lam.shape[:2]
    if isinstance(layer, nn.Linear):
        const = lam @ layer.bias if layer.bias is not None else lam.new_zeros(batch, rows)
        return lam @ layer.weight, const
    if isinstance(layer, nn.Conv2d) and not isinstance(layer.padding, str):  # "same": the generic path
        return _backward_conv2d(layer, lam, in_shape)
    if isinstance(layer, (nn.Identity, nn.Dropout)):
        return lam, lam.new_zeros(batch, rows)
    if isinstance(layer, nn.Flatten):
        return lam.reshape(batch, rows, *in_shape), lam.new_zeros(batch, rows)
    # Any other affine map f: the constant is Λ·f(0) and Λ's pullback the vector-Jacobian product,
    # linear in Λ and in the layer's parameters (so it trains).
    zero = lam.new_zeros(1, *in_shape)
    offset = layer(zero)  # (1, *out): f(0)
    const = (lam * offset.unsqueeze(1)).flatten(2).sum(-1)
    flat = lam.reshape(batch * rows, *lam.shape[2:])
    with torch.enable_grad():
        probe = lam.new_zeros(batch * rows, *in_shape, requires_grad=True)
        out = layer(probe)
        (pulled,) = torch.autograd.grad(
            out, probe, flat, create_graph=torch.is_grad_enabled() or lam.requires_grad
        )
    if not torch.is_grad_enabled():
        pulled = pulled.detach()
    return pulled.reshape(batch, rows, *in_shape), const


def _backward_conv2d(layer: nn.Conv2d, lam: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Conv2d's transpose (zero padding): ``Λ·W`` by ``conv_transpose2d``, the constant ``Σ Λ·b``."""
    batch, rows = lam.shape[:2]
    out_shape = lam.shape[2:]
    stride, padding, dilation = layer.stride, tuple(int(p) for p in layer.padding), layer.dilation
    kernel = layer.weight.shape[2:]
    output_padding = tuple(
        in_shape[1 + d]
        - ((out_shape[1 + d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (kernel[d] - 1) + 1)
        for d in range(2)
    )
    pulled = F.conv_transpose2d(
        lam.reshape(batch * rows, *out_shape),
        layer.weight,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=layer.groups,
        dilation=dilation,
    )
    if layer.bias is not None:
        const = (lam.sum(dim=(3, 4)) * layer.bias).sum(-1)  # (B, S): Σ_c b_c Σ_hw Λ_chw
    else:
        const = lam.new_zeros(batch, rows)
    return pulled.reshape(batch, rows, *in_shape), const


def _relu_slopes(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CROWN's lines for ReLU over ``[l, u]``: lower slope, upper slope, upper intercept, each (B, ...)."""
    active, dead = lower >= 0, upper <= 0
    unstable = ~(active | dead)
    width = (upper - lower).clamp_min(1e-12)
    up_slope = torch.where(unstable, upper / width, active.to(lower.dtype))
    up_bias = torch.where(unstable, -up_slope * lower, torch.zeros_like(lower))
    low_slope = torch.where(unstable, (upper > -lower).to(lower.dtype), active.to(lower.dtype))
    return low_slope, up_slope, up_bias


def _backward(
    layers: list[tuple[str, nn.Module]],
    shapes: list[tuple[int, ...]],
    relu_bounds: dict[int, Bounds],
    lam: Tensor,
    box: Bounds,
) -> Tensor:
    """The lower bound of ``Λ·(layers applied to x)`` over the input ``box``, ``(B, S)``.

    ``shapes[i]`` is the input shape (without batch) of ``layers[i]``; ``relu_bounds[i]`` the
    pre-activation bounds of the ReLU at position ``i``.
    """
    const = lam.new_zeros(lam.shape[:2])
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i][1]
        if type(layer) is nn.ReLU:
            low_slope, up_slope, up_bias = (t.unsqueeze(1) for t in _relu_slopes(*relu_bounds[i]))
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            const = const + (neg * up_bias).flatten(2).sum(-1)
            lam = pos * low_slope + neg * up_slope
        else:
            lam, offset = _backward_affine(layer, lam, shapes[i])
            const = const + offset
    lower, upper = box
    mid, rad = ((upper + lower) / 2).unsqueeze(1), ((upper - lower) / 2).unsqueeze(1)
    return (lam * mid).flatten(2).sum(-1) - (lam.abs() * rad).flatten(2).sum(-1) + const


def _shapes(layers: list[tuple[str, nn.Module]], x: Tensor) -> list[tuple[int, ...]]:
    shapes = []
    with torch.no_grad():
        h = x[:1]
        for _, layer in layers:
            shapes.append(tuple(h.shape[1:]))
            h = layer(h)
    return shapes


def _identity_spec(batch: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    n = math.prod(shape)
    eye = torch.eye(n, dtype=like.dtype, device=like.device).reshape(1, n, *shape)
    return eye.expand(batch, n, *shape)


def _intermediate_bounds(
    layers: list[tuple[str, nn.Module]], x: Tensor, threat: ThreatModel, intermediate: Intermediate
) -> tuple[dict[int, Bounds], Bounds, list[tuple[int, ...]], Bounds]:
    """Pre-activation bounds of every ReLU, the IBP bounds of the output, the layer input shapes, the box."""
    if intermediate not in ("crown", "ibp"):
        raise ValueError(f"intermediate must be 'crown' or 'ibp', got {intermediate!r}")
    box = input_box(x, threat)
    shapes = _shapes(layers, x)
    relu_bounds: dict[int, Bounds] = {}
    lower, upper = box
    mixing, seen_relu = 0, False
    for i, (name, layer) in enumerate(layers):
        if type(layer) is nn.ReLU:
            # Before the first ReLU with at most one mixing layer, IBP is already exact.
            if intermediate == "crown" and (seen_relu or mixing > 1):
                spec = _identity_spec(x.shape[0], shapes[i], x)
                # Lower bounds of h and of −h, in chunks of rows so that memory stays at
                # B·ROWS·d floats however wide the layer is.
                parts = [
                    _backward(layers[:i], shapes, relu_bounds, torch.cat([rows, -rows], dim=1), box)
                    for rows in spec.split(_ROWS, dim=1)
                ]
                c_lower = torch.cat([p[:, : p.shape[1] // 2] for p in parts], dim=1).reshape(lower.shape)
                c_upper = torch.cat([-p[:, p.shape[1] // 2 :] for p in parts], dim=1).reshape(upper.shape)
                lower, upper = torch.maximum(lower, c_lower), torch.minimum(upper, c_upper)
            relu_bounds[i] = (lower, upper)
            seen_relu = True
        elif isinstance(layer, _MIXING):
            mixing += 1
        lower, upper = _layer_bounds(name, layer, lower, upper)
    return relu_bounds, (lower, upper), shapes, box


def crown_bounds(
    model: nn.Module, x: Tensor, threat: ThreatModel, *, intermediate: Intermediate = "crown"
) -> Bounds:
    """Lower and upper bounds on every logit over the threat model's box, never looser than IBP's.

    Sound for every ``x'`` in the ℓ∞ ball of radius ε around ``x`` inside
    ``threat.bounds`` (ℓ2/ℓ1 threat models are bounded through that enclosing box,
    as in :func:`~advlearn.certify.ibp_bounds`), up to float rounding.

    Args:
        model: an ``nn.Sequential`` of the supported layers (see the module docstring).
        x: ``(B, ...)`` inputs inside ``threat.bounds``.
        threat: the radius and the box.
        intermediate: ``"crown"`` (tightest; one backward pass per ReLU layer) or ``"ibp"``
            (CROWN-IBP: IBP pre-activation bounds, one backward pass in all).

    Returns:
        ``(lower, upper)``, each ``(B, num_classes)``, inside IBP's interval.

    Raises:
        ValueError: for a layer CROWN cannot pass (named), BatchNorm/Dropout in training mode,
            inputs outside the bounds.

    Example:
        >>> from advlearn.certify import ibp_bounds
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> x, threat = torch.rand(4, 3), ThreatModel("linf", 0.2)
        >>> (lo, up), (ilo, iup) = crown_bounds(net, x, threat), ibp_bounds(net, x, threat)
        >>> bool((lo >= ilo).all() and (up <= iup).all() and (lo <= net(x)).all() and (net(x) <= up).all())
        True
    """
    layers = _crown_layers(model)
    relu_bounds, (lower, upper), shapes, box = _intermediate_bounds(layers, x, threat, intermediate)
    # IBP through the original boxes too: in exact arithmetic the tightened boxes give bounds inside
    # these, in floating point only up to rounding, and "never looser than IBP" should hold exactly.
    ibp_lower, ibp_upper = _propagate(layers, *box)
    spec = _identity_spec(x.shape[0], (lower.shape[1],), x)
    bound = _backward(layers, shapes, relu_bounds, torch.cat([spec, -spec], dim=1), box)
    n = spec.shape[1]
    lower = torch.maximum(torch.maximum(lower, ibp_lower), bound[:, :n])
    upper = torch.minimum(torch.minimum(upper, ibp_upper), -bound[:, n:])
    return lower, upper


def margin_spec(y: Tensor, num_classes: int, like: Tensor) -> Tensor:
    """The specification rows ``e_y − e_j`` for every class ``j``, ``(B, C, C)`` (row ``y`` is zero)."""
    eye = torch.eye(num_classes, dtype=like.dtype, device=like.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def crown_margin_bounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    intermediate: Intermediate = "crown",
    mix: float = 1.0,
) -> Tensor:
    """Lower bounds on the margins ``z_y − z_j`` over the box, ``(B, C)``, 0 at ``j = y``.

    The specification ``e_y − e_j`` starts the backward pass (it is folded into the
    last linear layer, Gowal et al.'s elision). With ``mix = 1`` the result is
    the elementwise maximum with :func:`~advlearn.certify.ibp_margin_bounds` (never
    looser than IBP; what verification uses). With ``mix = β < 1`` it is CROWN-IBP's
    training bound ``β·CROWN + (1 − β)·IBP`` (Zhang et al. 2020, eq. 7), whose
    gradient reaches both.
    """
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape (B,) = ({x.shape[0]},), got {tuple(y.shape)}")
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be a weight in [0, 1], got {mix!r}")
    layers = _crown_layers(model)
    ibp = ibp_margin_bounds(model, x, y, threat)  # checks y against the logits
    if mix == 0:
        return ibp
    relu_bounds, _, shapes, box = _intermediate_bounds(layers, x, threat, intermediate)
    spec = margin_spec(y, ibp.shape[1], x)
    crown = _backward(layers, shapes, relu_bounds, spec, box)
    crown = crown.scatter(1, y[:, None], 0.0)
    if mix == 1:
        return torch.maximum(crown, ibp)
    return mix * crown + (1.0 - mix) * ibp


def crown_verified(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
    """``(B,)`` bool: CROWN proves that no input in the box changes the label of each example."""
    with torch.no_grad():
        margins = crown_margin_bounds(model, x, y, threat)
    return (margins > 0).scatter(1, y[:, None], True).all(dim=1)


__all__ = ["CROWN_SUPPORTED", "crown_bounds", "crown_margin_bounds", "crown_verified", "margin_spec"]
