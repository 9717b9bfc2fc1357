"""Input validation shared by attacks, training and evaluation.

Every check raises a ``ValueError`` that names the argument and says how to
fix it; nothing is clipped or cast silently.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from advlearn.threat import ThreatModel


def check_unbounded_ball(ball: ThreatModel, name: str, *, no_box: str, needs: str) -> float:
    """``ball.eps``, after checking that ``ball`` (the argument ``name``) has no box and one float radius.

    For the balls around things that have no box (activations, VAT's ``x + r``):
    ``no_box`` finishes the sentence "…, but {no_box} as ThreatModel(norm, eps,
    bounds=None)", ``needs`` starts "{needs} one float eps, …".
    """
    if not isinstance(ball, ThreatModel):
        raise ValueError(f"{name} must be a ThreatModel, got {type(ball).__name__}")
    if ball.bounds is not None:
        raise ValueError(
            f"{name} has bounds={ball.bounds}, but {no_box} as ThreatModel(norm, eps, bounds=None)"
        )
    if not isinstance(ball.eps, float):
        raise ValueError(f"{needs} one float eps, not per-example radii")
    return ball.eps


def check_inputs(x: Tensor, y: Tensor, threat: ThreatModel) -> None:
    """Validate a batch ``(x, y)`` against a threat model before attacking it."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point tensor, got {kind}; convert with x.float()")
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension, shape (B, ...), got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        kind = y.dtype if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be an integer tensor of class indices, got {kind}; convert with y.long()")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must have shape (B,) matching x's batch size {x.shape[0]}, got shape {tuple(y.shape)}"
        )
    if y.device != x.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}; move both to the model's device")
    if bool((y < 0).any()):
        raise ValueError(f"y holds negative labels (min {int(y.min())}); labels must lie in [0, num_classes)")
    if not bool(x.isfinite().all()):
        raise ValueError("x contains NaN or Inf; clean the data before attacking it")
    lo, hi = threat.bounds if threat.bounds is not None else (-math.inf, math.inf)
    x_min, x_max = float(x.min()), float(x.max())
    if x_min < lo or x_max > hi:
        raise ValueError(
            f"x has values in [{x_min:g}, {x_max:g}], outside threat.bounds=({lo:g}, {hi:g}); "
            "scale the data into the bounds (put normalization inside the model with "
            "advlearn.models.Normalize) or set ThreatModel(bounds=...) to the data's range"
        )
    if isinstance(threat.eps, Tensor) and threat.eps.shape[0] != x.shape[0]:
        raise ValueError(
            f"threat.eps holds {threat.eps.shape[0]} radii but x has {x.shape[0]} examples; "
            "give one radius per example or a float"
        )


def check_logits(logits: object, y: Tensor) -> Tensor:
    """Check that a model's output is ``(B, C)`` logits covering every label of ``y``."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"model must return a logits tensor of shape (B, C), got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(
            f"model must return logits of shape (B, C) = ({y.shape[0]}, C), got shape {tuple(logits.shape)}"
        )
    top = int(y.max()) if y.numel() else -1
    if top >= logits.shape[1]:
        raise ValueError(
            f"y holds label {top} but the model returns only {logits.shape[1]} logits; "
            f"labels must lie in [0, {logits.shape[1]})"
        )
    return logits


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_nonnegative(name: str, value: object) -> float:
    """``value`` as a finite float >= 0, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
