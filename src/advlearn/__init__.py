"""advlearn: adversarial learning on PyTorch.

One minimax design, ``min_θ E[max_{‖δ‖≤ε} L(θ, x + δ, y)]``: attacks solve the
inner max, defenses the outer min. Start with :class:`ThreatModel` and
:mod:`advlearn.attacks`.
"""

from advlearn import attacks, losses, threat
from advlearn.threat import ThreatModel

__version__ = "0.1.0"

__all__ = ["ThreatModel", "__version__", "attacks", "losses", "threat"]
