"""The layers and shared pieces the builders use.

:class:`Normalize` (the first layer of a model), :class:`Maxout`, shape and width checks,
activations by name, the ResNet papers' init and Shi et al.'s IBP init (:func:`ibp_init`).
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

# ----------------------------------------------------------------------------- Normalize


def _as_floats(value: float | Sequence[float], name: str) -> list[float]:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a float or a sequence of floats, got {value!r}")
    if isinstance(value, Tensor):
        values = [float(v) for v in value.detach().reshape(-1).tolist()]
    elif isinstance(value, (int, float)):
        values = [float(value)]
    else:
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a float or a sequence of floats, got {value!r}") from None
    if not values:
        raise ValueError(f"{name} must hold at least one value, got {value!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values}")
    return values


class Normalize(nn.Module):
    """Per-channel standardization ``(x − mean) / std`` as the first layer of a model.

    Keeping it inside the model means attacks, ε-balls and box constraints all
    live in the input space a person sees (pixels in ``[0, 1]``), instead of a
    normalized space in which ε becomes a per-channel vector.

    Args:
        mean: one value per channel, or one float shared by all channels.
        std: one strictly positive value per channel, or one float shared by all.
            A single value broadcasts against a per-channel ``mean`` and vice versa.

    Raises:
        ValueError: if ``std`` has an entry ``<= 0``, an entry is not finite, or
            ``mean`` and ``std`` hold different numbers (> 1) of channels.

    Shape:
        - Input: ``(B, C, ...)`` (images ``(B, C, H, W)``) or ``(B, D)`` vectors, with
          ``C`` (or ``D``) equal to the number of channels given, or any size if one
          value was given.
        - Output: same shape as the input.

    The statistics are buffers shaped ``(1, C, 1, 1)`` (they follow ``.to(device)``
    and are saved in the ``state_dict``); the forward pass reshapes them to
    ``(1, C, 1, ..., 1)`` for inputs of other ranks.

    Example:
        >>> import torch
        >>> norm = Normalize(mean=(0.5, 0.25), std=(0.5, 0.25))
        >>> norm(torch.tensor([[1.0, 0.5]]))
        tensor([[1., 1.]])
        >>> norm(torch.ones(1, 2, 3, 3)).shape
        torch.Size([1, 2, 3, 3])
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        means, stds = _as_floats(mean, "mean"), _as_floats(std, "std")
        if any(s <= 0 for s in stds):
            raise ValueError(
                f"std must be > 0 for every channel, got {stds}; a channel cannot be divided by 0"
            )
        if len(means) != len(stds) and 1 not in (len(means), len(stds)):
            raise ValueError(
                f"mean has {len(means)} channels but std has {len(stds)}; give one value per channel "
                "for both, or a single value for one of them"
            )
        channels = max(len(means), len(stds))
        means, stds = means * (channels // len(means)), stds * (channels // len(stds))
        self.register_buffer("mean", torch.tensor(means).reshape(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(stds).reshape(1, channels, 1, 1))

    @property
    def num_channels(self) -> int:
        """``C``, the number of channels the statistics describe."""
        return int(self.mean.shape[1])

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(f"Normalize expects a batch (B, C, ...), got shape {tuple(x.shape)}")
        channels = self.num_channels
        if channels != 1 and x.shape[1] != channels:
            raise ValueError(
                f"Normalize holds statistics for {channels} channels but the input has {x.shape[1]} "
                f"(shape {tuple(x.shape)}); the channel axis is dimension 1"
            )
        shape = (1, channels) + (1,) * (x.dim() - 2)  # (1, C, 1, ..., 1)
        return (x - self.mean.reshape(shape)) / self.std.reshape(shape)

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.mean.flatten().tolist()]
        std = [round(v, 4) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}"


class Maxout(nn.Module):
    """A maxout layer: ``h_i = max_j (W x + b)_{i, j}`` over ``pieces`` affine pieces per unit.

    Each unit is the maximum of ``pieces`` linear functions of the input, a
    learned convex piecewise-linear activation (Goodfellow et al., 2013, eq. 1).

    Args:
        in_features: the input width.
        units: the number of output units.
        pieces: the number of linear pieces ``k`` each unit maximizes over.

    Shape:
        - Input: ``(B, in_features)``.
        - Output: ``(B, units)``.

    References:
        Goodfellow, Warde-Farley, Mirza, Courville, Bengio. Maxout networks. ICML 2013.
    """

    def __init__(self, in_features: int, units: int, pieces: int) -> None:
        super().__init__()
        if pieces < 1:
            raise ValueError(f"pieces must be >= 1, got {pieces}")
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: Tensor) -> Tensor:
        z: Tensor = self.linear(x).reshape(x.shape[0], self.units, self.pieces)  # (B, units, pieces)
        return z.amax(dim=2)  # (B, units)

    def extra_repr(self) -> str:
        return f"units={self.units}, pieces={self.pieces}"


# ----------------------------------------------------------------------------- shared pieces


def _check_shape(in_shape: Sequence[int], num_classes: int, *, image: bool) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in in_shape)
    except (TypeError, ValueError):
        raise ValueError(f"in_shape must be a tuple of ints such as (1, 28, 28), got {in_shape!r}") from None
    if not shape or any(d < 1 for d in shape) or any(int(d) != d for d in in_shape):
        raise ValueError(f"in_shape must be a non-empty tuple of positive ints, got {in_shape!r}")
    if image and len(shape) != 3:
        raise ValueError(
            f"in_shape must be (C, H, W) for a convolutional model, got {in_shape!r}; "
            "use 'mlp' or 'logreg' for vector inputs"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return shape


def _check_widths(values: Sequence[int], name: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    """``values`` as a tuple of positive ints; strings, floats and booleans are refused by name.

    A string would otherwise be read digit by digit (``"128"`` as widths 1, 2, 8), a float
    truncated and ``true`` taken as 1: each a different network than the one asked for.
    """
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        values = (int(values),)
    kind = "non-empty " if not allow_empty else ""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(
            f"{name} must be a {kind}tuple of positive ints, got {values!r} ({type(values).__name__})"
        )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ValueError(
                f"{name} must be a {kind}tuple of positive ints, got {values!r}: "
                f"{v!r} is a {type(v).__name__}, not an int"
            )
    widths = tuple(int(v) for v in values)
    if any(w < 1 for w in widths) or (not widths and not allow_empty):
        raise ValueError(f"{name} must be a {kind}tuple of positive ints, got {values!r}")
    return widths


def _with_normalize(
    model: nn.Module, mean: float | Sequence[float] | None, std: float | Sequence[float] | None
) -> nn.Module:
    """Prepend :class:`Normalize` when ``mean`` or ``std`` is given (the other defaults to 0 or 1).

    A :class:`torch.nn.Sequential` gets it as its first layer, named ``normalize``,
    so the model stays one flat chain of layers (what layer-wise tools such as
    interval bound propagation walk); any other module is wrapped as
    ``Sequential(normalize=..., net=model)``.
    """
    if mean is None and std is None:
        return model
    normalize = Normalize(0.0 if mean is None else mean, 1.0 if std is None else std)
    children = list(model.named_children()) if isinstance(model, nn.Sequential) else [("net", model)]
    return nn.Sequential(OrderedDict([("normalize", normalize), *children]))


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


def _kaiming_init(model: nn.Module) -> None:
    """He et al. (2015) normal init (fan-out, ReLU gain) for convolutions, as in the ResNet papers'
    code; BatchNorm starts as the identity; linear biases start at zero."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def ibp_init(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Shi et al.'s (2021) IBP initialization, in place: ``W ~ N(0, σ²)`` with ``σ = √(2π) / fan_in``, b = 0.

    With it the expected IBP radius neither grows nor shrinks from one Linear/Conv
    + ReLU layer to the next (``E|w| = σ√(2/π)``, summed over ``fan_in`` inputs, halved
    by the ReLU), where the default (Kaiming-uniform) init lets the bounds explode with
    depth, which is what makes short ε ramps diverge. Returns ``model``.

    References:
        Shi, Wang, Zhang, Yi, Hsieh. Fast certified robust training with short
        warmup. NeurIPS 2021, §3.2.

    Example:
        >>> net = ibp_init(torch.nn.Sequential(torch.nn.Linear(400, 10)), torch.Generator().manual_seed(0))
        >>> round(float(net[0].weight.std()) * 400 / (2 * math.pi) ** 0.5, 1)
        1.0
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                noise = torch.randn(module.weight.shape, generator=generator, dtype=module.weight.dtype)
                module.weight.copy_(noise * (math.sqrt(2 * math.pi) / fan_in))
                if module.bias is not None:
                    module.bias.zero_()
    return model


__all__ = ["Maxout", "Normalize", "ibp_init"]
