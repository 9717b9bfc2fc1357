"""Every model builder by name (:data:`MODELS`), :func:`register_model`, :func:`build_model` and
:func:`count_parameters`. The builders register themselves when :mod:`advlearn.models` is imported."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from advlearn._registry import Registry, Wording

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


#: the largest model :func:`build_model` builds by default, in parameters plus buffers (2 GB in float32);
#: set the environment variable ``ADVLEARN_MAX_PARAMETERS`` to lift it
MAX_PARAMETERS = 500_000_000


def max_parameters() -> int:
    """The size bound in force: ``ADVLEARN_MAX_PARAMETERS`` if set, else :data:`MAX_PARAMETERS`."""
    text = os.environ.get("ADVLEARN_MAX_PARAMETERS")
    if text is None:
        return MAX_PARAMETERS
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"ADVLEARN_MAX_PARAMETERS must be an integer, got {text!r}") from None


def planned_size(name: str, options: dict[str, Any]) -> int | None:
    """Parameters plus buffers of ``build_model(name, **options)``, counted on the meta device
    (no memory is allocated, no random number drawn); ``None`` when the builder cannot build there."""
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                model = MODELS.build(name, options)
        except (NotImplementedError, RuntimeError):
            return None
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


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
            required option, an option value the builder rejects, or a model larger than
            :func:`max_parameters` (checked on the meta device before anything is allocated).

    Example:
        >>> model = build_model("mlp", in_shape=(1, 28, 28), num_classes=10, hidden=(64,))
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    size = planned_size(name, options)
    limit = max_parameters()
    if size is not None and size > limit:
        raise ValueError(
            f"model {name!r} with these options would hold {size:,} parameters, over the bound of {limit:,}; "
            "set the environment variable ADVLEARN_MAX_PARAMETERS to a larger number to build it anyway"
        )
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


__all__ = [
    "MAX_PARAMETERS",
    "MODELS",
    "build_model",
    "count_parameters",
    "max_parameters",
    "planned_size",
    "register_model",
]
