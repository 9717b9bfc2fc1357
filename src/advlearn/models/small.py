"""Small networks: logistic regression, MLPs, the maxout network of Goodfellow et al. and the
MNIST CNN of Madry et al."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from advlearn.models.layers import (
    _ACTIVATIONS,
    Maxout,
    _check_shape,
    _check_widths,
    _with_normalize,
    ibp_init,
)
from advlearn.models.registry import register_model

# ----------------------------------------------------------------------------- linear and MLP


@register_model("logreg")
def logreg(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """Multinomial logistic regression: ``logits = W·vec(x) + b``.

    The model on which FGSM is exactly optimal (Goodfellow et al., 2015, §3):
    the L∞-worst perturbation of a linear score is ``ε·sign(w)``.

    Args:
        in_shape: the shape of one input, e.g. ``(1, 28, 28)`` or ``(2,)``.
        num_classes: the number of logits.
        mean, std: if given, a :class:`Normalize` layer is prepended.

    Returns:
        ``Sequential(flatten, linear)``.

    References:
        Goodfellow, Shlens, Szegedy. Explaining and harnessing adversarial
        examples. ICLR 2015.
    """
    shape = _check_shape(in_shape, num_classes, image=False)
    model = nn.Sequential(
        OrderedDict([("flatten", nn.Flatten()), ("linear", nn.Linear(math.prod(shape), num_classes))])
    )
    return _with_normalize(model, mean, std)


@register_model("mlp")
def mlp(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: tuple[int, ...] = (256, 256),
    activation: str = "relu",
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """A fully connected network: ``flatten → (linear → activation) × len(hidden) → linear``.

    Args:
        in_shape: the shape of one input, e.g. ``(1, 28, 28)`` or ``(2,)``.
        num_classes: the number of logits.
        hidden: the width of each hidden layer; ``()`` gives logistic regression.
        activation: one of ``relu``, ``tanh``, ``sigmoid``, ``gelu``, ``elu``,
            ``softplus``, ``leaky_relu``.
        mean, std: if given, a :class:`Normalize` layer is prepended.

    Returns:
        A :class:`torch.nn.Sequential` with layers ``flatten, fc1, act1, ..., logits``.
        Weights use PyTorch's default init (Kaiming-uniform with ``a = √5``).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = mlp((2,), 3, hidden=(8,), activation="tanh")
        >>> [name for name, _ in net.named_children()]
        ['flatten', 'fc1', 'act1', 'logits']
    """
    shape = _check_shape(in_shape, num_classes, image=False)
    widths = _check_widths(hidden, "hidden")
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"activation={activation!r} is not known; use one of {', '.join(map(repr, _ACTIVATIONS))}"
        )
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = math.prod(shape)
    for i, out in enumerate(widths, start=1):
        layers += [(f"fc{i}", nn.Linear(width, out)), (f"act{i}", _ACTIVATIONS[activation]())]
        width = out
    layers.append(("logits", nn.Linear(width, num_classes)))
    return _with_normalize(nn.Sequential(OrderedDict(layers)), mean, std)


@register_model("maxout")
def maxout(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: tuple[int, ...] = (240, 240),
    pieces: int = 5,
    dropout: float = 0.0,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """The permutation-invariant maxout network that Goodfellow et al. (2015) attacked and trained.

    ``flatten → (maxout → dropout) × len(hidden) → linear`` (the softmax is in the loss).
    The defaults are the MNIST setting of Goodfellow et al. (2013, §5.1): two maxout
    layers of 240 units with 5 pieces each. For adversarial training Goodfellow et al.
    (2015, §6) widened the layers to 1600 units (``hidden=(1600, 1600)``).

    The papers also used dropout and a max-norm constraint on the weights; the
    constraint belongs to the optimizer, and dropout defaults to 0 here so that
    the model is deterministic in training mode (attacks and gradient checks see
    one function). Pass ``dropout=0.5`` to follow the papers.

    Args:
        in_shape: the shape of one input, e.g. ``(1, 28, 28)``.
        num_classes: the number of logits.
        hidden: the number of maxout units of each hidden layer.
        pieces: the number of linear pieces per unit.
        dropout: the dropout rate applied to the output of every maxout layer (training mode only).
        mean, std: if given, a :class:`Normalize` layer is prepended.

    Returns:
        A :class:`torch.nn.Sequential` with layers ``flatten, maxout1, (drop1,) ..., logits``.

    References:
        Goodfellow, Warde-Farley, Mirza, Courville, Bengio. Maxout networks. ICML 2013.
        Goodfellow, Shlens, Szegedy. Explaining and harnessing adversarial examples. ICLR 2015.
    """
    shape = _check_shape(in_shape, num_classes, image=False)
    widths = _check_widths(hidden, "hidden")
    if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
        raise ValueError(f"pieces must be a positive int, got {pieces!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = math.prod(shape)
    for i, units in enumerate(widths, start=1):
        layers.append((f"maxout{i}", Maxout(width, units, pieces)))
        if dropout > 0:
            layers.append((f"drop{i}", nn.Dropout(dropout)))
        width = units
    layers.append(("logits", nn.Linear(width, num_classes)))
    return _with_normalize(nn.Sequential(OrderedDict(layers)), mean, std)


# ----------------------------------------------------------------------------- small CNN


@register_model("small_cnn")
def small_cnn(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    channels: tuple[int, ...] = (32, 64),
    hidden: int = 1024,
    kernel_size: int = 5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """The MNIST network of Madry et al. (2018): two conv-ReLU-maxpool blocks and two linear layers.

    ``conv5×5(C→32, pad 2) → ReLU → maxpool2 → conv5×5(32→64, pad 2) → ReLU → maxpool2
    → flatten → linear(hidden) → ReLU → linear(num_classes)``. The flatten size is
    computed from ``in_shape``, so the same builder serves 28×28 MNIST, 8×8 digits
    and 32×32 CIFAR images; ``channels=(16, 32), hidden=100`` gives a small, fast variant.

    Args:
        in_shape: ``(C, H, W)``.
        num_classes: the number of logits.
        channels: the output channels of each conv block (one block per entry).
        hidden: the width of the hidden linear layer.
        kernel_size: the odd side of the square conv kernels ("same" padding).
        mean, std: if given, a :class:`Normalize` layer is prepended.

    Returns:
        A :class:`torch.nn.Sequential` with layers ``conv1, relu1, pool1, ...,
        flatten, fc, relu, logits``, PyTorch's default init.

    Raises:
        ValueError: for an even ``kernel_size`` or an input too small for the
            pooling layers (each halves the side, rounding down).

    References:
        Madry, Makelov, Schmidt, Tsipras, Vladu. Towards deep learning models
        resistant to adversarial attacks. ICLR 2018 (MNIST challenge model).

    Example:
        >>> net = small_cnn((1, 8, 8), 10, channels=(16, 32), hidden=100)
        >>> net(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 10])
    """
    shape = _check_shape(in_shape, num_classes, image=True)
    widths = _check_widths(channels, "channels", allow_empty=False)
    (hidden,) = _check_widths((hidden,), "hidden")
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, int)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise ValueError(f"kernel_size must be a positive odd int (same padding), got {kernel_size!r}")
    in_channels, height, width = shape
    layers: list[tuple[str, nn.Module]] = []
    for i, out in enumerate(widths, start=1):
        if height < 2 or width < 2:
            raise ValueError(
                f"in_shape {shape} is too small for {len(widths)} pooling layers; "
                "use fewer channels entries or larger inputs"
            )
        layers += [
            (f"conv{i}", nn.Conv2d(in_channels, out, kernel_size, padding=kernel_size // 2)),
            (f"relu{i}", nn.ReLU()),
            (f"pool{i}", nn.MaxPool2d(2)),
        ]
        in_channels, height, width = out, height // 2, width // 2
    layers += [
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(in_channels * height * width, hidden)),  # (B, C·H·W) -> (B, hidden)
        ("relu", nn.ReLU()),
        ("logits", nn.Linear(hidden, num_classes)),
    ]
    return _with_normalize(nn.Sequential(OrderedDict(layers)), mean, std)


# ----------------------------------------------------------------------------- the certified-training CNN


@register_model("ibp_cnn")
def ibp_cnn(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    channels: tuple[int, int] = (16, 32),
    hidden: int = 100,
    padding: int = 0,
    init: str = "default",
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """The "small" network of Gowal et al. (2018) for IBP and CROWN-IBP training: strided convs, no pooling.

    ``conv4×4(C→16, stride 2) → ReLU → conv4×4(16→32, stride 1) → ReLU → flatten →
    linear(hidden) → ReLU → linear(num_classes)``, no padding (by default), no BatchNorm, no
    pooling, so IBP and CROWN (:func:`advlearn.certify.crown_bounds`) pass every
    layer. On 28×28 MNIST: 13×13 then 10×10 feature maps, 0.33 M parameters.

    Args:
        in_shape: ``(C, H, W)`` with ``H, W >= 10`` (``>= 6`` with ``padding=1``).
        num_classes: the number of logits.
        channels: the two conv layers' output channels.
        hidden: the width of the hidden linear layer.
        padding: zero padding of both convs (0 as in the bench runs; 1 lets small inputs through).
        init: ``"default"`` (PyTorch's Kaiming-uniform) or ``"ibp"`` (:func:`ibp_init`, Shi et al.'s
            IBP init, drawn from torch's global generator: what ``bench/certified_training.py`` and
            ``advlearn run --certified`` train from). The Normalize layer, if any, is not touched.
        mean, std: if given, a :class:`Normalize` layer is prepended.

    References:
        Gowal et al. On the effectiveness of interval bound propagation for training
        verifiably robust models. arXiv:1810.12715, 2018, Table 1 ("small").

    Example:
        >>> net = ibp_cnn((1, 28, 28), 10)
        >>> net(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    shape = _check_shape(in_shape, num_classes, image=True)
    if len(channels) != 2:
        raise ValueError(f"channels must be two positive ints (the two conv layers), got {channels!r}")
    first, second = _check_widths(channels, "channels", allow_empty=False)
    (hidden,) = _check_widths((hidden,), "hidden")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding not in (0, 1):
        raise ValueError(f"padding must be 0 or 1, got {padding!r}")
    if init not in ("default", "ibp"):
        raise ValueError(f'init must be "default" or "ibp" (Shi et al.\'s IBP init), got {init!r}')
    in_channels, height, width = shape
    height, width = ((side + 2 * padding - 4) // 2 + 1 + 2 * padding - 3 for side in (height, width))
    if height < 1 or width < 1:
        raise ValueError(
            f"in_shape {shape} is too small for ibp_cnn: it needs H, W >= {10 - 4 * padding} "
            f"with padding={padding}"
        )
    layers = [
        ("conv1", nn.Conv2d(in_channels, first, 4, stride=2, padding=padding)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(first, second, 4, stride=1, padding=padding)),
        ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(second * height * width, hidden)),  # (B, 32·10·10) -> (B, hidden) on MNIST
        ("relu", nn.ReLU()),
        ("logits", nn.Linear(hidden, num_classes)),
    ]
    net = nn.Sequential(OrderedDict(layers))
    if init == "ibp":
        ibp_init(net)
    return _with_normalize(net, mean, std)


__all__ = ["ibp_cnn", "logreg", "maxout", "mlp", "small_cnn"]
