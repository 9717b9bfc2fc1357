"""advlearn: adversarial learning on PyTorch.

One minimax design, ``min_θ E[max_{‖δ‖≤ε} L(θ, x + δ, y)]``: attacks solve the
inner max (:mod:`advlearn.attacks`), defenses the outer min
(:mod:`advlearn.training`), and :mod:`advlearn.evaluation` measures the result
honestly. Everything starts from a :class:`ThreatModel`.

The subpackages load on first use (``al.attacks`` imports :mod:`advlearn.attacks` then), so
``import advlearn`` and ``advlearn --help`` cost little beyond ``import torch``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from advlearn._version import __version__
from advlearn.threat import ThreatModel

if TYPE_CHECKING:  # the names type checkers and IDEs see; at run time they load on first access
    from advlearn import attacks, certify, evaluation, games, linear, losses, threat, training

_LAZY = ("attacks", "certify", "evaluation", "games", "linear", "losses", "threat", "training")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"advlearn.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'advlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ThreatModel",
    "__version__",
    "attacks",
    "certify",
    "evaluation",
    "games",
    "linear",
    "losses",
    "threat",
    "training",
]
