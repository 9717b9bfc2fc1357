"""What every reproduction shares: its context, the published-vs-ours rows, the checks, the run folder.

A reproduction returns an :class:`Outcome`. Its main table has one :class:`Comparison` per
published figure (columns **published | ours | interval over seeds | verdict**) and its checks
table one :class:`Check` per identity verified against an independent computation. The verdict
is mechanical:

- ``matches``: the published figure lies in our interval;
- ``same direction``: it does not, but the qualitative claim the figure supports holds here;
- ``differs``: neither;
- for a row the source lacks: ``no published figure``, or ``no published figure; our check fails``
  when its own claim does not hold in our runs (the row's sentence says which).

Intervals are Student-t intervals over seeds, never one lucky run. A published figure that is
one run (one sample, one trained model) is compared with the *prediction* interval of one run,
``mean ± t·s·√(1 + 1/n)``; a published average or expectation with the confidence interval of
the mean, ``mean ± t·s/√n``. With one seed there is no interval and nothing can ``match``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from advlearn._io import atomic_write_text
from advlearn.report.page import Section, write_page

Spread = Literal["run", "mean"]

LEVEL = 0.95
"""The coverage of every interval."""


@dataclass(frozen=True)
class Context:
    """How a reproduction is asked to run.

    Attributes:
        quick: the smoke-sized budget (under two minutes on two cores).
        seeds: the seeds to average over, e.g. ``(0, 1, 2, 3, 4)``.
        data_dir: a folder with the full dataset (the experiments that read one), else ``None``.
        run_dir: the folder the run writes (``OUT/reproduce-NAME``).
        quiet: no progress bars.
    """

    quick: bool
    seeds: tuple[int, ...]
    data_dir: Path | None
    run_dir: Path
    quiet: bool = True


def wilson_interval(proportion: float, count: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion observed on ``count`` trials.

    Example:
        >>> lo, hi = wilson_interval(1.0, 1000)
        >>> round(lo, 4), hi
        (0.9962, 1.0)
    """
    z = 1.959963984540054  # the standard normal's 97.5% quantile
    centre = (proportion + z * z / (2 * count)) / (1 + z * z / count)
    half = z / (1 + z * z / count) * math.sqrt(proportion * (1 - proportion) / count + z * z / (4 * count**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: Sequence[float], spread: Spread = "run") -> tuple[float, float]:
    """The 95% Student-t interval of ``values``: of one more run (``"run"``) or of their mean (``"mean"``).

    Example:
        >>> lo, hi = t_interval([1.0, 2.0, 3.0], spread="mean")
        >>> round(lo, 4), round(hi, 4)
        (-0.4841, 4.4841)
    """
    if len(values) < 2:
        return math.nan, math.nan
    from scipy.stats import t

    n = len(values)
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    factor = math.sqrt(1 + 1 / n) if spread == "run" else math.sqrt(1 / n)
    half = float(t.ppf(0.5 + LEVEL / 2, n - 1)) * sd * factor
    return mean - half, mean + half


@dataclass(frozen=True)
class Comparison:
    """One row of the main table: a published figure beside ours over seeds.

    Attributes:
        quantity: what is measured, e.g. ``"standard LR, FGSM accuracy"``.
        published: the published figure; ``None`` for a row the source lacks.
        values: ours, one value per seed.
        holds: whether the qualitative claim behind the figure holds in our runs.
        why: one sentence saying why the verdict is what it is.
        percent: format the numbers as percentages.
        spread: ``"run"`` when the published figure is one run, ``"mean"`` when it is an average
            or an expectation (see the module docs).
        count: the test points per seed an accuracy was measured on (adds the Wilson interval).
    """

    quantity: str
    published: float | None
    values: tuple[float, ...]
    holds: bool
    why: str
    percent: bool = False
    spread: Spread = "run"
    count: int | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def interval(self) -> tuple[float, float]:
        """The t-interval; a proportion's is cut to ``[0, 1]`` (the report says so)."""
        lo, hi = t_interval(self.values, self.spread)
        if self.count is not None:
            w_lo, w_hi = wilson_interval(min(1.0, max(0.0, self.mean)), self.count * len(self.values))
            lo, hi = (w_lo, w_hi) if math.isnan(lo) else (min(lo, w_lo), max(hi, w_hi))
        return (max(lo, 0.0), min(hi, 1.0)) if self.percent else (lo, hi)

    @property
    def verdict(self) -> str:
        if self.published is None:
            return "no published figure" if self.holds else "no published figure; our check fails"
        lo, hi = self.interval
        if lo <= self.published <= hi:
            return "matches"
        return "same direction" if self.holds else "differs"

    def _fmt(self, value: float) -> str:
        if math.isnan(value):
            return "—"
        return f"{100 * value:.1f}%" if self.percent else f"{value:.6g}"

    def row(self) -> list[str]:
        lo, hi = self.interval
        interval = "— (one seed)" if math.isnan(lo) else f"[{self._fmt(lo)}, {self._fmt(hi)}]"
        published = "—" if self.published is None else self._fmt(self.published)
        return [self.quantity, published, self._fmt(self.mean), interval, f"{self.verdict}: {self.why}"]

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {
            "quantity": self.quantity,
            "published": self.published,
            "ours": self.mean,
            "values": list(self.values),
            "interval": None if math.isnan(lo) else [lo, hi],
            "interval_kind": (
                f"{LEVEL:.0%} t-interval of one run"
                if self.spread == "run"
                else f"{LEVEL:.0%} t-interval of the mean"
            )
            + (
                ""
                if self.count is None
                else f", spanning the Wilson interval of {self.count} points per seed"
            ),
            "verdict": self.verdict,
            "why": self.why,
        }


def percent_rows(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    arms: Mapping[str, str] | Iterable[str],
    measures: Mapping[str, str] | Iterable[str],
    verdict: Callable[[str, str], tuple[bool, str]],
    *,
    count: int | Mapping[str, int],
    quantity: str = "{arm}: {measure} accuracy",
    published: Mapping[str, float] | None = None,
) -> list[Comparison]:
    """The main table's percentage rows (accuracies, errors): one per arm and measure, arms outermost.

    Args:
        scores: ``scores[arm][measure]`` is the per-seed values (as :func:`._mnist.score` collects them).
        arms, measures: which rows, in order: keys of ``scores``, or a mapping from each key to
            the name the row shows.
        verdict: ``(arm, measure) -> (holds, why)`` (the keys); ``why`` is one sentence.
        count: the test points per seed (by measure, where they differ).
        quantity: the row's name, formatted with the names of ``arm`` and ``measure``.
        published: the published figure by measure; a measure not in it has none.

    Example:
        >>> rows = percent_rows(
        ...     {"AT": {"clean": [0.9, 0.8]}}, ["AT"], ["clean"], lambda a, m: (True, "fine."),
        ...     count=100, published={"clean": 0.85},
        ... )
        >>> rows[0].quantity, rows[0].verdict
        ('AT: clean accuracy', 'matches')
    """
    arm_names = arms if isinstance(arms, Mapping) else {a: a for a in arms}
    measure_names = measures if isinstance(measures, Mapping) else {m: m for m in measures}
    published = published or {}
    rows = []
    for arm, arm_name in arm_names.items():
        for measure, measure_name in measure_names.items():
            holds, why = verdict(arm, measure)
            rows.append(
                Comparison(
                    quantity.format(arm=arm_name, measure=measure_name),
                    published.get(measure),
                    tuple(scores[arm][measure]),
                    holds=bool(holds),
                    why=why,
                    percent=True,
                    count=count if isinstance(count, int) else count[measure],
                )
            )
    return rows


@dataclass(frozen=True)
class Check:
    """An identity checked against an independent computation: ``|ours − reference| ≤ tolerance``."""

    quantity: str
    ours: float
    reference: float
    reference_name: str
    tolerance: float

    @property
    def difference(self) -> float:
        return abs(self.ours - self.reference)

    @property
    def passed(self) -> bool:
        return bool(self.difference <= self.tolerance)

    def row(self) -> list[str]:
        return [
            self.quantity,
            f"{self.ours:.10g}",
            f"{self.reference:.10g} ({self.reference_name})",
            f"{self.difference:.3g}",
            f"{self.tolerance:.3g}",
            "pass" if self.passed else "FAIL",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "ours": self.ours,
            "reference": self.reference,
            "reference_name": self.reference_name,
            "difference": self.difference,
            "tolerance": self.tolerance,
            "passed": self.passed,
        }


@dataclass
class Outcome:
    """What a reproduction measured.

    Attributes:
        header: the data size, architecture and budget, in one or two sentences.
        comparisons: the main table's rows.
        checks: identities verified against independent computations.
        sections: further sections of the report (explanations, figures).
        details: anything else worth keeping in ``results.json``.
    """

    header: str
    comparisons: list[Comparison] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One registered reproduction.

    Attributes:
        name: what ``advlearn reproduce NAME`` takes.
        source: paper, table or equation.
        claim: what it checks, one sentence.
        cost: its measured time, quick and full, with how it was taken (wall and CPU on a quiet
            2-core machine, or CPU seconds on one thread), or "not timed".
        run: the reproduction itself.
        seeds: the default number of seeds, quick and full.
        reads_data_dir: whether ``--data-dir`` (full MNIST IDX files) applies.
    """

    name: str
    source: str
    claim: str
    cost: str
    run: Callable[[Context], Outcome]
    seeds: tuple[int, int] = (3, 5)
    reads_data_dir: bool = False


COMPARISON_HEADER = ["quantity", "published", "ours (mean over seeds)", "interval over seeds", "verdict"]
CHECK_HEADER = ["identity", "ours", "independent computation", "|difference|", "tolerance", "result"]


def write_run(experiment: Experiment, context: Context, outcome: Outcome, seconds: float) -> Path:
    """Write ``results.json``, ``report.md``, ``report.html`` and the PNGs into ``context.run_dir``."""
    run_dir = context.run_dir
    seeds = ", ".join(map(str, context.seeds))
    summary = (
        f"{experiment.source}. {experiment.claim} {outcome.header} "
        f"Seeds {seeds}{' (--quick)' if context.quick else ''}; {seconds:.1f} s."
    )
    intervals = (
        "Intervals are 95% Student-t intervals over the seeds: of one run where the published "
        "figure is one run, of the mean where it is an average or an expectation (accuracies' "
        "intervals cut to [0, 100%], and never narrower than the Wilson interval of the pooled test "
        "points). "
        "'matches': the published figure lies in our interval; 'same direction': it does not, but "
        "the qualitative claim holds; 'differs': neither."
    )
    sections = [
        Section(
            "Published vs ours",
            [intervals],
            [COMPARISON_HEADER, *(c.row() for c in outcome.comparisons)],
        )
    ]
    if outcome.checks:
        sections.append(
            Section(
                "Checks against independent computations",
                [],
                [CHECK_HEADER, *(c.row() for c in outcome.checks)],
            )
        )
    sections += outcome.sections
    failed = [c.quantity for c in outcome.checks if not c.passed]
    warnings = [f"check failed: {q}" for q in failed]
    write_page(run_dir, f"advlearn reproduce {experiment.name}", summary, sections, warnings)
    results = {
        "experiment": experiment.name,
        "source": experiment.source,
        "claim": experiment.claim,
        "header": outcome.header,
        "quick": context.quick,
        "seeds": list(context.seeds),
        "data_dir": None if context.data_dir is None else str(context.data_dir),
        "seconds": seconds,
        "comparisons": [c.to_dict() for c in outcome.comparisons],
        "checks": [c.to_dict() for c in outcome.checks],
        "figures": sorted(f for s in sections for f, _, _ in s.figures),
        "details": outcome.details,
    }
    atomic_write_text(run_dir / "results.json", json.dumps(_finite(results), indent=2) + "\n")
    return run_dir


def _finite(value: Any) -> Any:
    """JSON has no NaN: NaN and infinities become ``None``."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
