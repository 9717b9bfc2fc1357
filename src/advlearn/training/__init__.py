"""Outer minimizers: training objectives and the one Trainer that runs them all.

Example:
    >>> import advlearn as al
    >>> threat = al.ThreatModel("linf", eps=0.3)
    >>> al.training.PGDAT(threat, steps=10)
    PGDAT(threat=ThreatModel(norm='linf', eps=0.3, bounds=(0.0, 1.0)), steps=10, step_size=None, eps_warmup=0)
"""

from advlearn.training.objectives import (
    OBJECTIVES,
    PGDAT,
    Objective,
    Standard,
    build_objective,
    register_objective,
)
from advlearn.training.trainer import History, Trainer, lr_schedule, resolve_device, seed_everything

__all__ = [
    "OBJECTIVES",
    "PGDAT",
    "History",
    "Objective",
    "Standard",
    "Trainer",
    "build_objective",
    "lr_schedule",
    "register_objective",
    "resolve_device",
    "seed_everything",
]
