"""What the report shows about one model: :class:`ModelReport`, the input every renderer reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from advlearn.certify.smoothing import SmoothingCertificates
from advlearn.diagnostics import MaskingCheck
from advlearn.evaluation import EpsSweep, Evaluation, Examples, MaskingDiagnosis

#: how many adversarial examples a figure shows per model at most
MAX_EXAMPLES = 8


@dataclass(frozen=True)
class ModelReport:
    """Everything the report shows about one model.

    Attributes:
        label: the model's name in tables, legends and file names, e.g. ``"standard"`` or ``"pgd-at"``.
        evaluation: its clean and robust accuracy (:func:`advlearn.evaluation.evaluate`).
        history: per-epoch records (``History.records``: ``epoch``, ``train_loss``,
            ``val_clean_acc``, optionally ``val_robust_acc``); empty for a model that was loaded, not trained.
        sweep: accuracy against ε (:func:`advlearn.evaluation.accuracy_vs_eps`), if measured.
        examples: clean and adversarial inputs with predictions
            (:func:`advlearn.evaluation.adversarial_examples`), if recorded.
        diagnosis: the gradient-masking checks (:func:`advlearn.evaluation.diagnose_masking`), if run.
        certified_sweep: ``(ε, verified accuracy)`` pairs, the IBP-verified accuracy
            (:func:`advlearn.certify.verified_accuracy`) at the sweep's radii; drawn beside the
            empirical curves (``verified_vs_eps.png``) when some model certifies anything.
        smoothing: randomized-smoothing certificates (:func:`advlearn.certify.certify_dataset`), if run:
            the report then draws certified accuracy against the ℓ2 radius, with a table.
        autoattack_checks: per AutoAttack row of the table, its own checks on its result
            (:func:`advlearn.diagnostics.autoattack_checks`), shown beside the figure.
    """

    label: str
    evaluation: Evaluation
    history: Sequence[Mapping[str, float]] = ()
    sweep: EpsSweep | None = None
    examples: Examples | None = None
    diagnosis: MaskingDiagnosis | None = None
    certified_sweep: Sequence[tuple[float, float]] = ()
    smoothing: SmoothingCertificates | None = None
    autoattack_checks: Mapping[str, Sequence[MaskingCheck]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")


__all__ = ["MAX_EXAMPLES", "ModelReport"]
