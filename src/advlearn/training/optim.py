"""How the weights step: optimizers and learning-rate schedules by name, for configs and the CLI.

- :data:`SCHEDULES` and :func:`lr_schedule`: a learning-rate multiplier as a
  function of training progress ``p ∈ [0, 1)``.
- :data:`OPTIMIZERS` and :func:`build_optimizer`: a :class:`torch.optim.Optimizer`
  over given parameters.

Both are :class:`advlearn._registry.Registry` s of functions: the keyword
parameters are the options, unknown ones are refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from advlearn._registry import Registry, Wording

Schedule = Callable[[float], float]

# ----------------------------------------------------------------------------- schedules

SCHEDULES: Registry[Schedule] = Registry(
    "schedule", wording=Wording(unknown_name="{kind} {name!r} is not known; use one of {choices}")
)
"""Learning-rate schedules by name; each entry maps its options to a :data:`Schedule`."""


@SCHEDULES.register("constant")
def constant() -> Schedule:
    """1 throughout."""
    return lambda p: 1.0


@SCHEDULES.register("piecewise")
def piecewise(milestones: Iterable[float] = (0.5, 0.75), gamma: float = 0.1) -> Schedule:
    """``gamma`` to the number of ``milestones`` (fractions of training) already passed."""
    steps = tuple(float(m) for m in milestones)
    factor = float(gamma)
    return lambda p: factor ** sum(p >= m for m in steps)


@SCHEDULES.register("cosine")
def cosine() -> Schedule:
    """``(1 + cos πp) / 2``."""
    return lambda p: 0.5 * (1.0 + math.cos(math.pi * p))


@SCHEDULES.register("onecycle")
def onecycle(peak: float = 0.4) -> Schedule:
    """Linear from 0 up to 1 at ``peak``, then linear down to 0 (the cyclic schedule of Wong et al. 2020).

    Raises:
        ValueError: unless ``0 < peak < 1``.
    """
    top = float(peak)
    if not 0.0 < top < 1.0:
        raise ValueError(f"onecycle peak must lie in (0, 1), got {top}")
    return lambda p: p / top if p < top else (1.0 - p) / (1.0 - top)


def lr_schedule(name: str, **options: Any) -> Schedule:
    """A learning-rate multiplier as a function of training progress ``p ∈ [0, 1)``.

    - ``"constant"``: 1.
    - ``"piecewise"``: ``gamma`` to the number of ``milestones`` (fractions of
      training, default ``(0.5, 0.75)``) already passed; ``gamma`` defaults to 0.1.
    - ``"cosine"``: ``(1 + cos πp) / 2``.
    - ``"onecycle"``: linear from 0 up to 1 at ``peak`` (default 0.4), then linear
      down to 0 (the cyclic schedule of Wong et al. 2020).

    Raises:
        ValueError: for an unknown name or option.

    Example:
        >>> f = lr_schedule("piecewise", milestones=(0.5,), gamma=0.1)
        >>> f(0.2), f(0.7)
        (1.0, 0.1)
    """
    return SCHEDULES.build(name, options)


# ----------------------------------------------------------------------------- optimizers

Params = Iterable[Tensor] | Iterable[dict[str, Any]]

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer")
"""Optimizers by name; each entry takes the parameters (supplied by the library) and its options."""


@OPTIMIZERS.register("sgd")
def sgd(params: Params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """:class:`torch.optim.SGD` with heavy-ball ``momentum`` and L2 ``weight_decay``."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def adam(params: Params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """:class:`torch.optim.Adam` with its default betas and L2 ``weight_decay``."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def build_optimizer(name: str, params: Params, **options: Any) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` over ``params``.

    Raises:
        ValueError: for an unknown name, an option the optimizer does not take, or a missing ``lr``.

    Example:
        >>> opt = build_optimizer("sgd", torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
        >>> type(opt).__name__, opt.param_groups[0]["momentum"]
        ('SGD', 0.9)
    """
    return OPTIMIZERS.build(name, options, params=params)


__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Schedule",
    "adam",
    "build_optimizer",
    "constant",
    "cosine",
    "lr_schedule",
    "onecycle",
    "piecewise",
    "sgd",
]
