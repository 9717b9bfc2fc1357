"""The model zoo: the architectures the adversarial-learning papers evaluate, built by name.

Every builder takes the input shape (without the batch dimension) and the
number of classes, so one config line builds any model for any data set::

    model = build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10)

Input normalization lives inside the model (:class:`Normalize`, prepended when
a builder gets ``mean``/``std``), so a model maps inputs in the box a person
sees, e.g. ``[0, 1]``, to logits and ε is measured in that pixel space, one
number for every channel.

Models are plain :class:`torch.nn.Module` s; :func:`build_model` validates the
options against the builder's signature, and :mod:`advlearn.checkpoint` stores
the name and options next to the weights to rebuild the model later.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from advlearn._registry import Registry, Wording

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


# ----------------------------------------------------------------------------- registry

MODELS: Registry[nn.Module] = Registry(
    "model",
    wording=Wording(
        unknown_name="{kind} {name!r} is not registered; known models: {known}",
        unknown_option="unknown option {option!r} for {kind} {name!r}; accepted options: {accepted}",
        missing_option="{kind} {name!r} needs the option(s) {missing}",
    ),
)
"""Every model builder by name; see :func:`register_model` and :func:`build_model`."""
_B = TypeVar("_B", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[_B], _B]:
    """Function decorator: make a model builder buildable by ``name`` from configs, checkpoints and the CLI.

    A builder takes ``in_shape`` and ``num_classes`` plus keyword options with
    defaults, and returns a fresh :class:`torch.nn.Module` mapping ``(B, *in_shape)``
    inputs to ``(B, num_classes)`` logits. Options must be JSON-representable
    (numbers, strings, booleans, ``None`` and tuples of them) so checkpoints can
    record them.

    Raises:
        ValueError: if a builder is already registered under ``name``.
    """
    return MODELS.register(name)


def build_model(name: str, **options: Any) -> nn.Module:
    """Build the registered model ``name`` with ``options``, rejecting unknown or missing keys.

    Args:
        name: a key of :data:`MODELS`.
        **options: the builder's arguments; ``in_shape`` and ``num_classes`` are always needed.

    Returns:
        A freshly initialized model (in training mode, as ``nn.Module`` s start);
        the same ``torch.manual_seed`` gives the same weights.

    Raises:
        ValueError: for an unknown name (the message lists the known ones), an
            unknown option (the message lists the accepted ones), a missing
            required option, or an option value the builder rejects.

    Example:
        >>> model = build_model("mlp", in_shape=(1, 28, 28), num_classes=10, hidden=(64,))
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return MODELS.build(name, options)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """The number of scalar parameters of ``model`` (buffers such as BatchNorm statistics excluded).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.

    Example:
        >>> count_parameters(build_model("logreg", in_shape=(1, 28, 28), num_classes=10))
        7850
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


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
    if isinstance(values, int):
        values = (values,)
    try:
        widths = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a tuple of positive ints, got {values!r}") from None
    if any(w < 1 for w in widths) or (not widths and not allow_empty):
        raise ValueError(
            f"{name} must be a {'' if allow_empty else 'non-empty '}tuple of positive ints, got {values!r}"
        )
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


# ----------------------------------------------------------------------------- maxout


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


# ----------------------------------------------------------------------------- pre-activation ResNet-18


class PreActBlock(nn.Module):
    """A pre-activation basic block: ``x + conv(relu(bn(conv(relu(bn(x))))))`` (He et al., 2016b, Fig. 4e).

    When the block changes the width or the resolution, the shortcut is a 1×1
    convolution of the pre-activated input, as in He et al.'s code.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        residual: Tensor = out + shortcut
        return residual


class PreActResNet(nn.Module):
    """A pre-activation ResNet for small images: 3×3 stem, four stages, BN-ReLU, global average pool, linear.

    The stem keeps the resolution (CIFAR-style, no 7×7 conv or max pool);
    stages 2-4 halve it. Global *adaptive* average pooling replaces the fixed
    4×4 pool of the CIFAR code, so 28×28 and smaller inputs work as well.

    Args:
        in_channels: ``C`` of the input.
        num_classes: the number of logits.
        num_blocks: the number of :class:`PreActBlock` s per stage.
        width: the channels of the first stage; stage ``s`` has ``width·2^s``.
    """

    def __init__(
        self, in_channels: int, num_classes: int, num_blocks: Sequence[int] = (2, 2, 2, 2), width: int = 64
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_planes = width
        for s, blocks in enumerate(num_blocks):
            planes = width * 2**s
            strides = [1 if s == 0 else 2] + [1] * (blocks - 1)
            layer = []
            for stride in strides:
                layer.append(PreActBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)  # (B, w, H, W)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (B, 8w, H/8, W/8)
        out = self.pool(self.relu(self.bn(out)))  # (B, 8w, 1, 1)
        logits: Tensor = self.linear(self.flatten(out))  # (B, num_classes)
        return logits


@register_model("preact_resnet18")
def preact_resnet18(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 64,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """PreAct ResNet-18, the CIFAR-10 workhorse of fast adversarial training (Wong et al., 2020).

    Four stages of two :class:`PreActBlock` s with ``width, 2·width, 4·width,
    8·width`` channels (11.2M parameters at ``width=64``, 10 classes). Kaiming-normal
    (fan-out) init for convolutions, BatchNorm as the identity.

    Args:
        in_shape: ``(C, H, W)``; 32×32 as in the papers, 28×28 and 8×8 work too.
        num_classes: the number of logits.
        width: the channels of the first stage; ``width=8`` gives a tiny test model.
        mean, std: if given, a :class:`Normalize` layer is prepended.

    References:
        He, Zhang, Ren, Sun. Identity mappings in deep residual networks. ECCV 2016.
        Wong, Rice, Kolter. Fast is better than free: revisiting adversarial training. ICLR 2020.
    """
    shape = _check_shape(in_shape, num_classes, image=True)
    (width,) = _check_widths((width,), "width")
    model = PreActResNet(shape[0], num_classes, (2, 2, 2, 2), width)
    _kaiming_init(model)
    return _with_normalize(model, mean, std)


# ----------------------------------------------------------------------------- wide ResNet


class WideBasicBlock(nn.Module):
    """The wide-ResNet block ``BN-ReLU-conv3×3-BN-ReLU-(dropout)-conv3×3`` plus a shortcut.

    Zagoruyko & Komodakis (2016, Fig. 1c; 1d with dropout). When the block changes
    the width or the resolution, the shortcut is a 1×1 convolution of the
    pre-activated input, as in the authors' code.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.dropout(self.relu2(self.bn2(self.conv1(out))))
        residual: Tensor = self.conv2(out) + shortcut
        return residual


class WideResNet(nn.Module):
    """WRN-``depth``-``width``: a 3×3 stem with 16 channels and three stages of
    ``(depth − 4) / 6`` :class:`WideBasicBlock` s with ``16k, 32k, 64k`` channels
    (``k = width``), the last two halving the resolution; BN-ReLU, global average pool, linear.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int, width: int, dropout: float) -> None:
        super().__init__()
        blocks = (depth - 4) // 6
        planes = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        stages: list[nn.Module] = []
        for s in range(3):
            layer = [
                WideBasicBlock(planes[s] if b == 0 else planes[s + 1], planes[s + 1], stride, dropout)
                for b, stride in enumerate([1 if s == 0 else 2] + [1] * (blocks - 1))
            ]
            stages.append(nn.Sequential(*layer))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(planes[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(planes[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)  # (B, 16, H, W)
        out = self.block3(self.block2(self.block1(out)))  # (B, 64k, H/4, W/4)
        out = self.pool(self.relu(self.bn(out)))  # (B, 64k, 1, 1)
        logits: Tensor = self.linear(self.flatten(out))  # (B, num_classes)
        return logits


@register_model("wide_resnet")
def wide_resnet(
    in_shape: tuple[int, ...],
    num_classes: int,
    *,
    depth: int = 28,
    width: int = 10,
    dropout: float = 0.0,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> nn.Module:
    """Wide residual network WRN-``depth``-``width`` (Zagoruyko & Komodakis, 2016).

    WRN-28-10 (36.5M parameters) and WRN-34-10 (46.2M, Madry et al. 2018;
    Zhang et al. 2019, TRADES) are the standard CIFAR-10 models of robust
    training. ``depth=10, width=1`` gives a tiny test model. Kaiming-normal
    (fan-out) init for convolutions, BatchNorm as the identity, zero linear bias,
    as in the authors' code.

    Args:
        in_shape: ``(C, H, W)``; 32×32 in the papers, 28×28 and 8×8 work too.
        num_classes: the number of logits.
        depth: the number of layers, ``6n + 4`` for ``n`` blocks per stage (10, 16, 22, 28, 34, 40, ...).
        width: the widening factor ``k``.
        dropout: the dropout rate between the two convolutions of a block (0.3 in
            the paper's dropout runs; 0 by default, as robust-training code uses).
        mean, std: if given, a :class:`Normalize` layer is prepended.

    Raises:
        ValueError: if ``(depth − 4) % 6 != 0`` or ``depth < 10``.

    References:
        Zagoruyko, Komodakis. Wide residual networks. BMVC 2016.

    Example:
        >>> count_parameters(wide_resnet((3, 32, 32), 10, depth=16, width=4))  # WRN-16-4
        2748890
    """
    shape = _check_shape(in_shape, num_classes, image=True)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(
            f"depth must be 6n + 4 with n >= 1 blocks per stage (10, 16, 22, 28, 34, ...), got {depth!r}"
        )
    (width,) = _check_widths((width,), "width")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    model = WideResNet(shape[0], num_classes, depth, width, dropout)
    _kaiming_init(model)
    return _with_normalize(model, mean, std)


__all__ = [
    "MODELS",
    "Maxout",
    "Normalize",
    "PreActBlock",
    "PreActResNet",
    "WideBasicBlock",
    "WideResNet",
    "build_model",
    "count_parameters",
    "logreg",
    "maxout",
    "mlp",
    "preact_resnet18",
    "register_model",
    "small_cnn",
    "wide_resnet",
]
