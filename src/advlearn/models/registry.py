"""Every model builder by name (:data:`MODELS`), :func:`register_model`, :func:`build_model` and
:func:`count_parameters`. The builders register themselves when :mod:`advlearn.models` is imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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


__all__ = ["MODELS", "build_model", "count_parameters", "register_model"]
