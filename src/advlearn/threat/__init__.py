"""The geometry of the threat model: one class per norm, and the ε-ball ∩ box they make.

:class:`ThreatModel` composes a :class:`Norm` (:class:`Linf`, :class:`L2`,
:class:`L1`, in :mod:`advlearn.threat.norms`) with a radius and a box. It is
the only code in advlearn that knows which norm it is using; every other module
asks it (or ``threat.norm``) for projections, ascent directions, random starts,
norms, dual norms and symbols.

Example:
    >>> threat = ThreatModel("l1", eps=1.0, bounds=(-10.0, 10.0))
    >>> threat.norm == "l1", threat.norm.symbol, threat.norm.dual_symbol
    (True, 'ℓ1', 'ℓ∞')
"""

from advlearn.threat.model import ThreatModel
from advlearn.threat.norms import L1, L2, NORMS, Linf, Norm, get_norm, per_example

__all__ = ["L1", "L2", "NORMS", "Linf", "Norm", "ThreatModel", "get_norm", "per_example"]
