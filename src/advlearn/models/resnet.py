"""Residual networks for small images: pre-activation ResNet-18 and wide ResNets."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from advlearn.models.layers import _check_shape, _check_widths, _kaiming_init, _with_normalize
from advlearn.models.registry import register_model

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
        >>> from advlearn.models import count_parameters
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


__all__ = ["PreActBlock", "PreActResNet", "WideBasicBlock", "WideResNet", "preact_resnet18", "wide_resnet"]
