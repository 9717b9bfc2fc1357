"""The catastrophic-overfitting monitor of single-step adversarial training (Fast-AT's guard).

Within an epoch a model trained on single-step points can learn to defeat that
one step while multi-step PGD accuracy falls to about zero (Wong et al. 2020,
§5). :func:`check_collapse` measures both accuracies on a fixed held-out batch
after each epoch and :func:`collapse_declared` declares a collapse from them and
the earlier epochs' records only, so a resumed run makes the same decision.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from advlearn.attacks import FGSM, PGD
from advlearn.threat import ThreatModel
from advlearn.training.objectives import Records

COLLAPSE_FLOOR = 0.2  # fell: the least best earlier PGD accuracy; outpaced: PGD accuracy must be below it


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def collapse_recorded(records: Records) -> bool:
    """Whether an earlier epoch's record declared a collapse (``co_detected``)."""
    return any(r.get("co_detected", 0.0) > 0 for r in records)


def _best_pgd_acc(records: Records) -> float | None:
    """The best ``co_pgd_acc`` of the earlier epochs, or None before the first guard measurement."""
    return max((r["co_pgd_acc"] for r in records if "co_pgd_acc" in r), default=None)


def collapse_declared(pgd_acc: float, fgsm_acc: float, records: Records, *, gap: float) -> bool:
    """Whether this epoch's guard figures declare a collapse, given the earlier epochs' ``records``.

    A collapse is declared once per run, when FGSM accuracy exceeds PGD accuracy by at least
    ``gap`` and PGD accuracy has either

    - **fallen** below half its best earlier value, that best being at least
      :data:`COLLAPSE_FLOOR` (a model that never was robust cannot fall; below that,
      epoch-to-epoch noise would trip it), or
    - been **outpaced**: it is below half of FGSM accuracy, i.e. the single step misses most
      of the adversarial examples that PGD finds, and below :data:`COLLAPSE_FLOOR` (the same
      20% read the other way: a model that is robust on a fifth of the batch has not lost its
      robustness, however far ahead FGSM accuracy runs).

    The second arm catches the collapse in which PGD accuracy never rises at the full ε (so
    it cannot fall) while FGSM accuracy climbs, the shape Fast-AT took at ℓ∞ ε = 0.3 on
    MNIST-5k (``bench/defenses.py``: PGD-10 accuracy flat at 12-17% from the first full-ε
    epoch while FGSM accuracy rose from 34% to 64%). Its floor keeps it quiet on healthy
    Fast-AT, whose PGD accuracy grows more slowly than FGSM's: claim-overfitting's full run
    (ε = 0.2) had PGD-10 at 40% against FGSM's 81% on a seed that ended the best of three;
    every recorded collapse fires at 6-19% (FGSM at ε = 0.2; Fast-AT and GradAlign at 0.3),
    every healthy Fast-AT epoch with FGSM the gap ahead is at 26% or more, and 20% is the fell
    arm's floor already (``tests/test_single_step_guard.py`` replays them all). Both arms need
    the ``gap``: when FGSM and PGD accuracy fall together (a model that diverges to a constant
    prediction) it is not the single step being fooled, and PGD training is no remedy for that.

    A pure function of the recorded figures, so a resumed run decides the same, and a recorded
    trajectory can be replayed.
    """
    if collapse_recorded(records) or fgsm_acc - pgd_acc < gap:
        return False
    best = _best_pgd_acc(records)
    fell = best is not None and best >= COLLAPSE_FLOOR and pgd_acc < 0.5 * best
    outpaced = pgd_acc < COLLAPSE_FLOOR and pgd_acc < 0.5 * fgsm_acc
    return fell or outpaced


def check_collapse(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    records: Records,
    *,
    steps: int,
    gap: float,
    fallback_steps: int,
) -> dict[str, float]:
    """This epoch's ``co_clean_acc``, ``co_pgd_acc``, ``co_fgsm_acc`` and ``co_detected`` on ``(x, y)``.

    The decision is :func:`collapse_declared`'s (once per run); on a collapse it warns,
    naming the remedy (PGD-``fallback_steps``, or none when 0).

    Args:
        model: the network, in the mode the caller chose (the Trainer: eval).
        x, y: the fixed held-out batch.
        threat: the full ε-ball (not a warm-up's smaller one).
        records: the earlier epochs' records.
        steps: PGD steps of the check.
        gap: passed to :func:`collapse_declared`.
        fallback_steps: PGD steps of the remedy the warning announces.
    """
    clean_acc = _accuracy(model, x, y)
    pgd_acc = _accuracy(model, PGD(threat, steps=steps)(model, x, y), y)
    fgsm_acc = _accuracy(model, FGSM(threat)(model, x, y), y)
    collapsed = collapse_declared(pgd_acc, fgsm_acc, records, gap=gap)
    if collapsed:
        best = _best_pgd_acc(records)
        remedy = f"switching to PGD-{fallback_steps}" if fallback_steps else "no fallback set"
        earlier = f"best earlier {best:.1%}" if best is not None else "no earlier epoch"
        warnings.warn(
            f"catastrophic overfitting after epoch {len(records) + 1}: PGD-{steps} accuracy "
            f"{pgd_acc:.1%} ({earlier}) while FGSM accuracy is {fgsm_acc:.1%}; {remedy}",
            RuntimeWarning,
            stacklevel=3,  # the caller of the objective's end_epoch
        )
    return {
        "co_clean_acc": clean_acc,
        "co_pgd_acc": pgd_acc,
        "co_fgsm_acc": fgsm_acc,
        "co_detected": float(collapsed),
    }


__all__ = ["COLLAPSE_FLOOR", "check_collapse", "collapse_declared", "collapse_recorded"]
