"""advlearn: adversarial learning on PyTorch.

One minimax design, ``min_θ E[max_{‖δ‖≤ε} L(θ, x + δ, y)]``: attacks solve the
inner max (:mod:`advlearn.attacks`), defenses the outer min
(:mod:`advlearn.training`), and :mod:`advlearn.evaluation` measures the result
honestly. Everything starts from a :class:`ThreatModel`.
"""

from advlearn import attacks, certify, evaluation, games, linear, losses, threat, training
from advlearn._version import __version__
from advlearn.threat import ThreatModel

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
