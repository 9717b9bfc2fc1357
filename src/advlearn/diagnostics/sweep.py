"""The checks an ε sweep can fail on its own: signs of an attack that is not finding the worst case.

A larger ball contains a smaller one, so worst-case accuracy cannot rise with
ε; a sweep's point at the evaluation radius cannot beat the results table's
worst case unless its attacks are weaker; and a ball as wide as the input box
that is its own box (ℓ∞) reaches every input, so nothing should survive it
(Carlini et al. 2019, "On Evaluating Adversarial Robustness", §5). Each failure
points at gradient masking or a weak attack.

:func:`check_sweep` returns the failures as :class:`SweepFinding` verdicts with
the numbers they rest on; :mod:`advlearn.report` turns them into sentences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from torch import Tensor

from advlearn.threat import ThreatModel

#: The sweep checks, in the order :func:`check_sweep` reports them.
SWEEP_CHECKS: tuple[str, ...] = ("rises_with_eps", "weaker_than_table", "survives_whole_box")


class Sweep(Protocol):
    """What the checks read of an :class:`~advlearn.evaluation.EpsSweep`."""

    @property
    def threat(self) -> ThreatModel: ...
    @property
    def eps(self) -> Sequence[float]: ...
    @property
    def accuracy(self) -> Sequence[float]: ...
    @property
    def num_examples(self) -> int: ...


class Table(Protocol):
    """What the checks read of the results table's :class:`~advlearn.evaluation.Evaluation`."""

    @property
    def threat(self) -> ThreatModel: ...
    @property
    def robust_accuracy(self) -> Mapping[str, float]: ...
    @property
    def worst_case_accuracy(self) -> float: ...


@dataclass(frozen=True)
class SweepFinding:
    """One failed sweep check and the numbers it rests on.

    Attributes:
        check: one of :data:`SWEEP_CHECKS`.
        threat: the ball of the finding (the sweep's norm and box at the radius ``eps[-1]``).
        eps: the radii involved: two for ``"rises_with_eps"`` (from, to), one otherwise.
        accuracy: the sweep's accuracy at each of ``eps``.
        table_accuracy: for ``"weaker_than_table"``, the results table's worst case; else NaN.
    """

    check: Literal["rises_with_eps", "weaker_than_table", "survives_whole_box"]
    threat: ThreatModel
    eps: tuple[float, ...]
    accuracy: tuple[float, ...]
    table_accuracy: float = math.nan


def check_sweep(sweep: Sweep, table: Table | None = None) -> list[SweepFinding]:
    """The failed checks of one model's ε sweep (none: an empty list).

    - ``"rises_with_eps"``: worst-case accuracy rises between two consecutive radii by more
      than one example's worth (the first such rise only).
    - ``"weaker_than_table"``: with ``table`` (the results table of the same model, with
      attacks, a float ε and the sweep's norm), the sweep's accuracy at the table's radius
      exceeds the table's worst case by more than one example: the sweep's attacks are
      weaker, so its curve is an upper bound.
    - ``"survives_whole_box"``: the norm's ball is its own box (ℓ∞), the largest radius is
      at least the width of the input box, and accuracy there is above 0.

    Args:
        sweep: from :func:`advlearn.evaluation.accuracy_vs_eps`.
        table: the evaluation whose worst case the sweep is compared with.

    Returns:
        :class:`SweepFinding` verdicts, in the order of :data:`SWEEP_CHECKS`.
    """
    if len(sweep.eps) == 0:
        return []
    order = sorted(range(len(sweep.eps)), key=lambda i: sweep.eps[i])
    eps = [sweep.eps[i] for i in order]
    acc = [sweep.accuracy[i] for i in order]
    slack = 1.0 / max(sweep.num_examples, 1)
    found = []
    for i in range(len(eps) - 1):
        if acc[i + 1] > acc[i] + slack:
            found.append(
                SweepFinding(
                    "rises_with_eps",
                    sweep.threat.with_eps(eps[i + 1]),
                    (eps[i], eps[i + 1]),
                    (acc[i], acc[i + 1]),
                )
            )
            break
    if table is not None:
        threat = table.threat
        if table.robust_accuracy and not isinstance(threat.eps, Tensor) and sweep.threat.norm == threat.norm:
            at_eval = [a for e, a in zip(eps, acc, strict=True) if math.isclose(e, threat.eps, abs_tol=1e-9)]
            if at_eval and at_eval[0] > table.worst_case_accuracy + slack:
                found.append(
                    SweepFinding(
                        "weaker_than_table",
                        threat,
                        (threat.eps,),
                        (at_eval[0],),
                        table_accuracy=table.worst_case_accuracy,
                    )
                )
    lo, hi = sweep.threat.box
    if sweep.threat.norm.ball_is_box and eps[-1] >= hi - lo and acc[-1] > 0.0:
        found.append(
            SweepFinding("survives_whole_box", sweep.threat.with_eps(eps[-1]), (eps[-1],), (acc[-1],))
        )
    return found


__all__ = ["SWEEP_CHECKS", "Sweep", "SweepFinding", "Table", "check_sweep"]
