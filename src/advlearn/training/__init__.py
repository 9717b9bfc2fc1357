"""Outer minimizers: training objectives and the one Trainer that runs them all.

Example:
    >>> import advlearn as al
    >>> threat = al.ThreatModel("linf", eps=0.3)
    >>> al.training.PGDAT(threat, steps=10)
    PGDAT(threat=ThreatModel(norm='linf', eps=0.3, bounds=(0.0, 1.0)), steps=10, step_size=None, eps_warmup=0)
"""

from advlearn.losses import jensen_shannon, mart_loss, trades_loss
from advlearn.training.augment import random_translate
from advlearn.training.certified import (
    CROWNIBPTraining,
    GaussianAugment,
    IBPTraining,
    certified_loss,
    ibp_loss,
)
from advlearn.training.defenses import (
    AWP,
    MART,
    NFGSM,
    TRADES,
    ConsistencyAT,
    FastAT,
    FGSMBlend,
    FreeAT,
    GradAlign,
    GradNormPenalty,
    NoiseAugment,
)
from advlearn.training.hidden import HiddenAT, hidden_perturbation
from advlearn.training.objectives import (
    OBJECTIVES,
    PGDAT,
    AdversarialObjective,
    Objective,
    RunState,
    Standard,
    build_objective,
    register_objective,
)
from advlearn.training.protocols import RefitResult, SeedSummary, early_stop_then_refit, multi_seed
from advlearn.training.smoothadv import SmoothAdv
from advlearn.training.trainer import History, Trainer, lr_schedule, resolve_device, seed_everything
from advlearn.training.vat import VAT, power_iteration, virtual_adversarial_perturbation
from advlearn.training.weight_perturbation import awp_perturbation

__all__ = [
    "AWP",
    "MART",
    "NFGSM",
    "OBJECTIVES",
    "PGDAT",
    "TRADES",
    "VAT",
    "AdversarialObjective",
    "CROWNIBPTraining",
    "ConsistencyAT",
    "FGSMBlend",
    "FastAT",
    "FreeAT",
    "GaussianAugment",
    "GradAlign",
    "GradNormPenalty",
    "HiddenAT",
    "History",
    "IBPTraining",
    "NoiseAugment",
    "Objective",
    "RefitResult",
    "RunState",
    "SeedSummary",
    "SmoothAdv",
    "Standard",
    "Trainer",
    "awp_perturbation",
    "build_objective",
    "certified_loss",
    "early_stop_then_refit",
    "hidden_perturbation",
    "ibp_loss",
    "jensen_shannon",
    "lr_schedule",
    "mart_loss",
    "multi_seed",
    "power_iteration",
    "random_translate",
    "register_objective",
    "resolve_device",
    "seed_everything",
    "trades_loss",
    "virtual_adversarial_perturbation",
]
