"""Provable lower bounds on robustness: randomized smoothing and interval bound propagation.

An attack that fails proves nothing; a certificate can be loose but never wrong.
:class:`Smooth` certifies an ℓ2 radius for a Gaussian-smoothed classifier with
probability ``1 − α`` (Cohen et al. 2019); :func:`ibp_bounds` bounds a network's
logits over an ℓ∞ box deterministically (Gowal et al. 2018), :func:`crown_bounds`
bounds them more tightly with CROWN's backward linear bounds (never looser than IBP),
and :func:`verified_accuracy` counts the examples whose label no perturbation can change.
The objectives that train for certification (``GaussianAugment``, ``IBPTraining``,
``CROWNIBPTraining``, ``ibp_loss``) live in :mod:`advlearn.training`, which builds on these bounds;
certify imports nothing from training.

Example:
    >>> import advlearn as al
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    >>> lower, upper = al.certify.ibp_bounds(model, torch.rand(2, 1, 2, 2), al.ThreatModel("linf", 0.1))
    >>> bool((lower <= upper).all())
    True
"""

from advlearn.certify.crown import crown_bounds, crown_margin_bounds
from advlearn.certify.gap import certified_accuracies
from advlearn.certify.ibp import (
    Verification,
    check_ibp_supported,
    ibp_bounds,
    ibp_margin_bounds,
    ibp_radius,
    input_box,
    verified_accuracy,
    verify,
)
from advlearn.certify.smoothing import (
    ABSTAIN,
    Smooth,
    SmoothingCertificates,
    certified_accuracy,
    certify_dataset,
    lower_confidence_bound,
)

__all__ = [
    "ABSTAIN",
    "Smooth",
    "SmoothingCertificates",
    "Verification",
    "certified_accuracies",
    "certified_accuracy",
    "certify_dataset",
    "check_ibp_supported",
    "crown_bounds",
    "crown_margin_bounds",
    "ibp_bounds",
    "ibp_margin_bounds",
    "ibp_radius",
    "input_box",
    "lower_confidence_bound",
    "verified_accuracy",
    "verify",
]
