"""Input validation shared by attacks, training and evaluation.

Every check raises a ``ValueError`` that names the argument and says how to
fix it; nothing is clipped or cast silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

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
    if x.shape[0] == 0:
        raise ValueError(f"x is an empty batch, shape {tuple(x.shape)}; pass at least one example")
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        kind = y.dtype if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be an integer tensor of class indices, got {kind}; convert with y.long()")
    if y.dtype != torch.int64:
        raise ValueError(
            f"y must hold int64 class indices here, got {y.dtype}; convert with y.long() "
            "(attack configs such as PGD(threat)(model, x, y) and evaluate convert any integer dtype)"
        )
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
    eps = threat.eps
    largest = (float(eps.max()) if eps.numel() else 0.0) if isinstance(eps, Tensor) else eps
    if largest > torch.finfo(x.dtype).max:
        raise ValueError(
            f"threat.eps={largest:g} overflows x's dtype {str(x.dtype).removeprefix('torch.')} "
            f"(largest {torch.finfo(x.dtype).max:g}); a radius as wide as the box already allows every input"
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


#: the input dtypes an attack computes its perturbation, projection and ε-ball test for in float32
LOW_PRECISION = (torch.float16, torch.bfloat16)


def as_labels(y: Tensor) -> Tensor:
    """``y`` as int64 class indices: any integer dtype (uint8, int16, int32, …) is converted exactly.

    Call it after :func:`check_inputs`, which refuses float, bool and complex labels by name.
    """
    return y if y.dtype == torch.int64 else y.to(torch.int64)


def check_model_dtype(model: nn.Module, x: Tensor, what: str = "x") -> None:
    """Refuse inputs whose float dtype differs from every float parameter's dtype of ``model``.

    A float64 batch given to a float32 network (or a float16 one to a float32 network) fails
    deep inside the first layer; this names both dtypes instead. A model without float
    parameters (a wrapper, a function of ``x`` only) is not checked.
    """
    dtypes = (
        {p.dtype for p in model.parameters() if p.is_floating_point()}
        if isinstance(model, nn.Module)
        else set()
    )
    if dtypes and x.dtype not in dtypes:
        have = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        want = str(next(iter(dtypes)))
        raise ValueError(
            f"{what} is {str(x.dtype).removeprefix('torch.')} but the model's parameters are {have}; "
            f"convert one to the other ({what}.to({want}) or model.to({x.dtype!s}))"
        )


def check_batch(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> tuple[Tensor, Tensor]:
    """:func:`check_inputs`, then the model's dtype; returns ``(x, y)`` with integer ``y`` as int64."""
    if isinstance(y, Tensor) and not (
        y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool
    ):
        y = as_labels(y)
    check_inputs(x, y, threat)
    check_model_dtype(model, x)
    return x, y


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training


@contextmanager
def untouched_batchnorm(model: nn.Module, who: str) -> Iterator[None]:
    """Run the block with every train-mode BatchNorm's running statistics left exactly as they were.

    A BatchNorm layer in training mode normalizes with the statistics of the batch it sees
    and moves its running mean and variance towards them. Inside this block it still uses the
    batch's statistics (so an attack inside a training step sees the function training sees),
    but the running mean, variance and batch count are copied first and written back after,
    bit for bit. A forward pass on a single example (which torch refuses in training mode)
    raises a ValueError naming ``who`` and the fix instead. Eval-mode layers are not touched,
    and a model without train-mode BatchNorm costs nothing.
    """
    layers = [m for m in model.modules() if _is_batchnorm(m)] if isinstance(model, nn.Module) else []
    if not layers:
        yield
        return
    saved = [
        [(name, buf.detach().clone()) for name, buf in m.named_buffers(recurse=False) if buf is not None]
        for m in layers
    ]

    def refuse_one(module: nn.Module, inputs: tuple[object, ...]) -> None:
        (z, *_) = inputs
        if isinstance(z, Tensor) and z.dim() >= 2 and z.numel() // max(z.shape[1], 1) <= 1:
            raise ValueError(
                f"{who}: the model has BatchNorm layers in training mode, which cannot normalize "
                f"a batch of one example (here shape {tuple(z.shape)}, e.g. after early exit); "
                "call model.eval() before attacking or evaluating it"
            )

    hooks = [m.register_forward_pre_hook(refuse_one) for m in layers]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for m, buffers in zip(layers, saved, strict=True):
                for name, value in buffers:
                    getattr(m, name).copy_(value)
