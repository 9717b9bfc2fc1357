"""Random input augmentations the training objectives draw views with (translation, horizontal flip).

Noise augmentation proper is an attack-shaped perturbation (:class:`~advlearn.attacks.SignNoise`,
:class:`~advlearn.attacks.UniformNoise`) that :class:`~advlearn.training.NoiseAugment` trains on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_translate(x: Tensor, shift: int, fill: float, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image by up to ``shift`` pixels in each direction (pad with ``fill``, crop back).

    Shape:
        ``(B, C, H, W)`` → ``(B, C, H, W)``.
    """
    if shift == 0:
        return x
    if x.dim() != 4:
        raise ValueError(f"translation needs images (B, C, H, W), got shape {tuple(x.shape)}; set shift=0")
    b, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), value=fill)  # (B, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * shift + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (b,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_hflip(x: Tensor) -> Tensor:
    """Flip each example along its last axis with probability ½ (one draw per example).

    Shape:
        ``(B, ...)`` → ``(B, ...)``.
    """
    flipped = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flipped.reshape((-1,) + (1,) * (x.dim() - 1)), x.flip(-1), x)


__all__ = ["random_hflip", "random_translate"]
