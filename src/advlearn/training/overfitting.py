"""The catastrophic-overfitting monitor of single-step adversarial training (Fast-AT's guard).

Within an epoch a model trained on single-step points can learn to defeat that
one step while multi-step PGD accuracy falls to about zero (Wong et al. 2020,
§5). :func:`check_collapse` measures both accuracies on a fixed held-out batch
after each epoch and declares a collapse from them and the earlier epochs'
records only, so a resumed run makes the same decision.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from advlearn.attacks import FGSM, PGD
from advlearn.threat import ThreatModel
from advlearn.training.objectives import Records

COLLAPSE_FLOOR = 0.2  # the least best-so-far PGD accuracy a collapse can be declared from


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def collapse_recorded(records: Records) -> bool:
    """Whether an earlier epoch's record declared a collapse (``co_detected``)."""
    return any(r.get("co_detected", 0.0) > 0 for r in records)


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
    """This epoch's ``co_pgd_acc``, ``co_fgsm_acc`` and ``co_detected`` on the batch ``(x, y)``.

    A collapse is declared (once per run) when PGD-``steps`` accuracy has fallen
    below half its best earlier value, that best was at least 20% (a model that
    never was robust cannot collapse; below that, epoch-to-epoch noise would
    trip it), and FGSM accuracy stays at least ``gap`` above PGD accuracy. It
    then warns, naming the remedy (PGD-``fallback_steps``, or none when 0).

    Args:
        model: the network, in the mode the caller chose (the Trainer: eval).
        x, y: the fixed held-out batch.
        threat: the full ε-ball (not a warm-up's smaller one).
        records: the earlier epochs' records.
        steps: PGD steps of the check.
        gap: how far FGSM accuracy must exceed PGD accuracy at a collapse.
        fallback_steps: PGD steps of the remedy the warning announces.
    """
    pgd_acc = _accuracy(model, PGD(threat, steps=steps)(model, x, y), y)
    fgsm_acc = _accuracy(model, FGSM(threat)(model, x, y), y)
    best = max((r["co_pgd_acc"] for r in records if "co_pgd_acc" in r), default=None)
    collapsed = (
        not collapse_recorded(records)
        and best is not None
        and best >= COLLAPSE_FLOOR
        and pgd_acc < 0.5 * best
        and fgsm_acc - pgd_acc >= gap
    )
    if collapsed:
        remedy = f"switching to PGD-{fallback_steps}" if fallback_steps else "no fallback set"
        warnings.warn(
            f"catastrophic overfitting after epoch {len(records) + 1}: PGD-{steps} accuracy "
            f"{pgd_acc:.1%} (best {best:.1%}) while FGSM accuracy is {fgsm_acc:.1%}; {remedy}",
            RuntimeWarning,
            stacklevel=3,  # the caller of the objective's end_epoch
        )
    return {"co_pgd_acc": pgd_acc, "co_fgsm_acc": fgsm_acc, "co_detected": float(collapsed)}


__all__ = ["COLLAPSE_FLOOR", "check_collapse", "collapse_recorded"]
