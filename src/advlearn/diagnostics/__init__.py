"""Honest-measurement checks: the signs that a robustness figure comes from a broken attack.

- :mod:`advlearn.diagnostics.masking`: :func:`diagnose_masking`, the gradient-masking
  checks of Athalye, Carlini & Wagner (2018, §3.1), each pass/fail with its figure;
- :mod:`advlearn.diagnostics.sweep`: :func:`check_sweep`, the checks an ε sweep fails on
  its own (accuracy rising with ε, a sweep weaker than the results table, accuracy
  surviving a ball as wide as the input box).

Both return verdicts with the numbers they rest on; :mod:`advlearn.report` renders them.
"""

from advlearn.diagnostics.masking import (
    AUTOATTACK_CHECKS,
    CHECKS,
    MaskingCheck,
    MaskingDiagnosis,
    autoattack_checks,
    check_eps_and_bounds,
    check_probability_outputs,
    check_randomized_outputs,
    check_square_vs_gradient_members,
    diagnose_masking,
)
from advlearn.diagnostics.masking import _check_iterative as _check_iterative
from advlearn.diagnostics.sweep import SWEEP_CHECKS, SweepFinding, check_sweep

__all__ = [
    "AUTOATTACK_CHECKS",
    "CHECKS",
    "SWEEP_CHECKS",
    "MaskingCheck",
    "MaskingDiagnosis",
    "SweepFinding",
    "autoattack_checks",
    "check_eps_and_bounds",
    "check_probability_outputs",
    "check_randomized_outputs",
    "check_square_vs_gradient_members",
    "check_sweep",
    "diagnose_masking",
]
