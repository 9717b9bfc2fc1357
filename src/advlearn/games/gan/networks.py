"""The players: MLP and DCGAN-style generators and discriminators, built by architecture name.

The generator and the discriminator are also registered in :data:`advlearn.models.MODELS`
(``"gan_generator"``, ``"gan_discriminator"``), so the networks a GAN run saves load back with
:func:`advlearn.checkpoint.load_model`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from advlearn._checks import check_positive_int
from advlearn.models import register_model

GAN_ARCHS: tuple[str, ...] = ("mlp", "dcgan")
"""The generator/discriminator architectures :func:`build_gan` knows."""


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {image_shape!r}")
    return shape[0], shape[1], shape[2]


class MLPGenerator(nn.Module):
    """``z ↦`` image: ``latent → hidden… → C·H·W``, ReLU inside, a sigmoid onto ``[0, 1]``.

    Args:
        latent_dim: size of ``z``.
        image_shape: ``(C, H, W)`` of the images.
        hidden: widths of the hidden layers.
    """

    def __init__(
        self, latent_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.image_shape = _check_image_shape(image_shape)
        layers: list[nn.Module] = []
        width = latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.image_shape)  # type: ignore[no-any-return] # (B, C, H, W)


class MLPDiscriminator(nn.Module):
    """Image ``↦`` score: ``C·H·W → hidden… → 1`` with LeakyReLU(0.2), no normalization.

    Args:
        image_shape: ``(C, H, W)`` of the images.
        hidden: widths of the hidden layers.
    """

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.image_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)  # type: ignore[no-any-return] # (B,)


class DCGANGenerator(nn.Module):
    """DCGAN-style generator (Radford et al. 2016): a linear map to ``(2w, H/4, W/4)``, then two
    stride-2 transposed convolutions with BatchNorm and ReLU, and a sigmoid onto ``[0, 1]``.

    Args:
        latent_dim: size of ``z``.
        image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4 (28×28 and 8×8 both are).
        width: channels of the last hidden layer (the first has ``2 · width``).
    """

    def __init__(self, latent_dim: int, image_shape: Sequence[int], width: int = 64) -> None:
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        channels, height, wide = self.image_shape = _check_image_shape(image_shape)
        if height % 4 or wide % 4:
            raise ValueError(f"DCGAN needs image sides divisible by 4, got {height}×{wide}; use arch='mlp'")
        self.base = (2 * width, height // 4, wide // 4)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, math.prod(self.base)), nn.BatchNorm1d(math.prod(self.base)), nn.ReLU()
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(-1, *self.base))  # type: ignore[no-any-return] # (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    """DCGAN-style discriminator: two stride-2 convolutions with LeakyReLU(0.2), then a linear score.

    No batch normalization, so every score depends on its own input only, which the gradient
    penalty of WGAN-GP requires (Gulrajani et al. 2017, Section 4).

    Args:
        image_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by 4.
        width: channels of the first convolution (the second has ``2 · width``).
    """

    def __init__(self, image_shape: Sequence[int], width: int = 64) -> None:
        super().__init__()
        channels, height, wide = self.image_shape = _check_image_shape(image_shape)
        if height % 4 or wide % 4:
            raise ValueError(f"DCGAN needs image sides divisible by 4, got {height}×{wide}; use arch='mlp'")
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * (height // 4) * (wide // 4), 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)  # type: ignore[no-any-return] # (B,)


def build_gan(arch: str, image_shape: Sequence[int], latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """A generator and a discriminator of architecture ``arch`` (one of :data:`GAN_ARCHS`).

    Example:
        >>> g, d = build_gan("dcgan", (1, 8, 8), latent_dim=16)
        >>> g.eval()(torch.randn(2, 16)).shape, d(torch.rand(2, 1, 8, 8)).shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2]))
    """
    if arch == "mlp":
        return MLPGenerator(latent_dim, image_shape), MLPDiscriminator(image_shape)
    if arch == "dcgan":
        return DCGANGenerator(latent_dim, image_shape), DCGANDiscriminator(image_shape)
    raise ValueError(f"arch must be one of {', '.join(GAN_ARCHS)}, got {arch!r}")


@register_model("gan_generator")
def gan_generator(latent_dim: int, image_shape: Sequence[int], *, arch: str = "mlp") -> nn.Module:
    """The generator of :func:`build_gan` (``arch``'s default widths), by name for checkpoints.

    Example:
        >>> gan_generator(16, (1, 8, 8), arch="dcgan").eval()(torch.randn(2, 16)).shape
        torch.Size([2, 1, 8, 8])
    """
    if arch == "mlp":
        return MLPGenerator(latent_dim, image_shape)
    if arch == "dcgan":
        return DCGANGenerator(latent_dim, image_shape)
    raise ValueError(f"arch must be one of {', '.join(GAN_ARCHS)}, got {arch!r}")


@register_model("gan_discriminator")
def gan_discriminator(image_shape: Sequence[int], *, arch: str = "mlp") -> nn.Module:
    """The discriminator of :func:`build_gan` (``arch``'s default widths), by name for checkpoints."""
    if arch == "mlp":
        return MLPDiscriminator(image_shape)
    if arch == "dcgan":
        return DCGANDiscriminator(image_shape)
    raise ValueError(f"arch must be one of {', '.join(GAN_ARCHS)}, got {arch!r}")


__all__ = [
    "GAN_ARCHS",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLPDiscriminator",
    "MLPGenerator",
    "build_gan",
    "gan_discriminator",
    "gan_generator",
]
