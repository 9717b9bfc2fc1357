"""The report's words: number formatting, the results table, the summary and the warnings.

:func:`format_table` is the one table formatter: the CLI prints it and
``report.md`` embeds it. The summary paragraph and the warnings are generated
from the measurements; the verdicts behind the warnings come from
:mod:`advlearn.diagnostics` (the ε-sweep checks and the gradient-masking
checks), which judges, while this module only words them. Every function takes
an ``esc`` that escapes the user's strings for the output format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from torch import Tensor

from advlearn.diagnostics import SweepFinding, check_sweep
from advlearn.evaluation import Evaluation
from advlearn.report.model import ModelReport
from advlearn.threat import Norm, ThreatModel


def _pct(value: float) -> str:
    """``0.851`` → ``"85.1%"``; NaN (nothing to average) → ``"—"``."""
    return "—" if math.isnan(value) else f"{100.0 * value:.1f}%"


def _format_eps(eps: float | Tensor) -> str:
    """``0.3`` → ``"0.3"``; ``8/255`` → ``"0.03137 (8/255)"``; a per-example tensor → its range.

    The ``k/255`` form is added only when the short decimal does not already say it exactly.
    """
    if isinstance(eps, Tensor):
        if eps.numel() == 0:
            return "per example"
        lo, hi = float(eps.min()), float(eps.max())
        return _format_eps(lo) if lo == hi else f"per example, {_format_eps(lo)} to {_format_eps(hi)}"
    short = f"{eps:.4g}"
    k = round(eps * 255)
    if float(short) != eps and k % 255 != 0 and math.isclose(eps * 255, k, rel_tol=0.0, abs_tol=1e-6):
        return f"{short} ({k}/255)"
    return short


def _format_threat(threat: ThreatModel) -> str:
    """``"ℓ∞, ε = 0.3"``."""
    return f"{threat.norm.symbol}, ε = {_format_eps(threat.eps)}"


def _threat_key(threat: ThreatModel) -> tuple[Norm, str, tuple[float, float]]:
    """What makes two threat models the same for the text (tensor radii compare by their description)."""
    return (threat.norm, _format_eps(threat.eps), threat.box)


def _join(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_MD_CELL_SPECIAL = re.compile(r"([\\|<>])")


def _md_cell(text: str) -> str:
    """Keep a table cell on one line, out of the column separators, and free of raw HTML."""
    return _MD_CELL_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def _md_text(text: str) -> str:
    """Backslash-escape Markdown's active characters (and ``<``, so no raw HTML gets through)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def _rows(evaluations: Mapping[str, Evaluation]) -> list[list[str]]:
    """model | attack | accuracy | error | conf. on errors | n, one row per (model, attack)."""
    return [
        [
            label,
            str(row["attack"]),
            _pct(row["accuracy"]),
            _pct(row["error"]),
            _pct(row["confidence_on_errors"]),
            str(ev.num_examples),
        ]
        for label, ev in evaluations.items()
        for row in ev.table()
    ]


def format_table(evaluations: Mapping[str, Evaluation]) -> str:
    """A Markdown table of every model's accuracy, one row per (model, attack), padded to read in a terminal.

    Columns: model, attack, accuracy, error, mean confidence on errors (``—``
    where there were no errors) and the number of examples. Rows come from
    :meth:`Evaluation.table`: clean, each attack, and the worst case when there
    is more than one attack.

    Args:
        evaluations: evaluations by model label, in the order to print them.

    Returns:
        The table, lines joined by ``"\\n"``, without a trailing newline.

    Example:
        >>> ev = Evaluation(
        ...     threat=ThreatModel("linf", 0.3), num_examples=4, clean_accuracy=1.0,
        ...     robust_accuracy={"PGD": 0.25}, worst_case_accuracy=0.25,
        ...     confidence_on_errors={"clean": float("nan"), "PGD": 0.9}, correct={},
        ... )
        >>> print(format_table({"standard": ev}))
        | model    | attack | accuracy | error | conf. on errors | n |
        |----------|--------|---------:|------:|----------------:|--:|
        | standard | clean  |   100.0% |  0.0% |               — | 4 |
        | standard | PGD    |    25.0% | 75.0% |           90.0% | 4 |
    """
    header = ["model", "attack", "accuracy", "error", "conf. on errors", "n"]
    right = [False, False, True, True, True, True]
    body = [[_md_cell(cell) for cell in row] for row in _rows(evaluations)]
    if any(getattr(ev, "max_perturbation", None) for ev in evaluations.values()):
        # Beside each robust figure, as the reference AutoAttack prints: the largest ‖δ‖ scored
        # (every point was checked to lie in the threat set) and how many outputs were NaN/Inf.
        header, right = [*header, "max ‖δ‖", "NaN"], [*right, True, True]
        extra = [
            [
                "—" if math.isnan(row["max_perturbation"]) else f"{row['max_perturbation']:.4g}",
                str(row["nan_count"]) if row["attack"] in ev.nan_count else "—",
            ]
            for ev in evaluations.values()
            for row in ev.table()
        ]
        body = [[*cells, *more] for cells, more in zip(body, extra, strict=True)]
    widths = [max(len(c) for c in column) for column in zip(header, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |"

    # Right-aligned columns end their rule in ":" (Markdown's alignment marker).
    rules = ["-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right, strict=True)]
    return "\n".join([line(header), "|" + "|".join(rules) + "|", *(line(row) for row in body)])


Escape = Callable[[str], str]


def _headline(ev: Evaluation, esc: Escape) -> tuple[float, str]:
    """The accuracy the summary leads with and what it was measured against."""
    attacks = [esc(name) for name in ev.robust_accuracy]
    if not attacks:
        return ev.clean_accuracy, ""
    if len(attacks) == 1:
        return ev.worst_case_accuracy, f"under {attacks[0]}"
    return ev.worst_case_accuracy, f"in the worst case over {_join(attacks)}"


def _gap_sentences(models: Sequence[ModelReport], esc: Escape) -> list[str]:
    """Per model with a certificate: the interval [certified, empirical] that holds its true robust accuracy.

    An attack that fails proves nothing, so the attacks' accuracy is an upper bound; a
    certificate (IBP) is a lower bound; the gap between them is what is not known.
    """
    out = []
    for m in models:
        ev = m.evaluation
        certified = getattr(ev, "certified", None)
        if not certified or not ev.robust_accuracy:
            continue
        best = max(certified, key=certified.__getitem__)
        note = ""
        if best.startswith("smoothing"):
            note = " (smoothing certifies the smoothed classifier, not the model attacked)"
        elif certified[best] == 0.0:
            note = " (nothing is certified: the model was not trained to be verifiable)"
        out.append(
            f"The {esc(m.label)} model's true robust accuracy lies between {_pct(certified[best])} "
            f"certified by {esc(best)}, a lower bound, and {_pct(ev.worst_case_accuracy)} under the "
            f"attacks, an upper bound: a gap of {100.0 * ev.gap:.1f} points{note}."
        )
    return out


def _summary(models: Sequence[ModelReport], esc: Escape) -> str:
    """One paragraph, generated from the numbers: the headline accuracy of every model, most robust first.

    ``esc`` escapes the user's strings (labels, attack names) for the output format.
    """
    ranked = sorted(models, key=lambda m: -_headline(m.evaluation, esc)[0])
    threats = {_threat_key(m.evaluation.threat) for m in models}
    counts = {m.evaluation.num_examples for m in models}
    attack_sets = {tuple(m.evaluation.robust_accuracy) for m in models}
    shared = len(threats) == 1 and len(attack_sets) == 1

    clauses = []
    for i, m in enumerate(ranked):
        ev, label = m.evaluation, esc(m.label)
        accuracy, against = _headline(ev, esc)
        count = "" if len(counts) == 1 else f", n = {ev.num_examples:,}"
        if not ev.robust_accuracy:
            clauses.append(f"the {label} model classifies {_pct(accuracy)} of its inputs correctly{count}")
            continue
        threat = ev.threat
        where = "" if shared else f" at ε = {_format_eps(threat.eps)} ({threat.norm.symbol})"
        clean = f" (clean {_pct(ev.clean_accuracy)}{count})"
        if i == 0 or not shared:
            clauses.append(f"the {label} model keeps {_pct(accuracy)} accuracy {against}{where}{clean}")
        else:
            clauses.append(f"the {label} model keeps {_pct(accuracy)}{clean}")
    sentence = "; ".join(clauses) + "."
    first = ranked[0].evaluation
    if shared and first.robust_accuracy:
        norm, eps = first.threat.norm.symbol, _format_eps(first.threat.eps)
        sentence = f"Under {norm} attacks of radius ε = {eps}, {sentence}"
    else:
        sentence = sentence[0].upper() + sentence[1:]
    parts = [sentence]
    if len(counts) == 1:
        parts.append(f"Every accuracy is measured on {counts.pop():,} examples.")
    parts += _gap_sentences(ranked, esc)

    sweeps = [(esc(m.label), m.sweep) for m in ranked if m.sweep is not None and len(m.sweep.eps) > 0]
    if sweeps:
        last = [(label, max(s.eps), s.accuracy[int(np.argmax(s.eps))]) for label, s in sweeps]
        if len({eps for _, eps, _ in last}) == 1:
            ends = [f"{_pct(acc)} ({label})" for label, _, acc in last]
            parts.append(
                f"At the largest radius swept, ε = {_format_eps(last[0][1])}, worst-case accuracy falls to "
                f"{_join(ends)}."
            )
        else:
            ends = [f"{_pct(acc)} for {label} at ε = {_format_eps(eps)}" for label, eps, acc in last]
            parts.append(f"At the largest radius swept, worst-case accuracy is {_join(ends)}.")
    return " ".join(parts)


def _sweep_warnings(models: Sequence[ModelReport], esc: Escape) -> list[str]:
    """One sentence per failed ε-sweep check; :func:`advlearn.diagnostics.check_sweep` judges them."""
    found = []
    for m in models:
        if m.sweep is None:
            continue
        label = esc(m.label)
        for f in check_sweep(m.sweep, m.evaluation):
            found.append(_SWEEP_SENTENCES[f.check](label, f))
    return found


def _rises(label: str, f: SweepFinding) -> str:
    (e0, e1), (a0, a1) = f.eps, f.accuracy
    return (
        f"The {label} model's worst-case accuracy rises from {_pct(a0)} at ε = {_format_eps(e0)} to "
        f"{_pct(a1)} at ε = {_format_eps(e1)}, although the larger ball holds every perturbation of the "
        "smaller one: the attack misses adversarial examples (suspect gradient masking or too few steps)."
    )


def _weaker(label: str, f: SweepFinding) -> str:
    return (
        f"The sweep of the {label} model measures {_pct(f.accuracy[0])} at the evaluation radius "
        f"ε = {_format_eps(f.eps[0])}, where the results table's worst case gives "
        f"{_pct(f.table_accuracy)}: the sweep's attacks are weaker, so its curve "
        "is an upper bound on the accuracy."
    )


def _survives(label: str, f: SweepFinding) -> str:
    return (
        f"At ε = {_format_eps(f.eps[0])} an {f.threat.norm.symbol} attacker can reach any input, yet the "
        f"{label} model keeps {_pct(f.accuracy[0])}: unless it ignores its input, the attack is failing, "
        "not the model succeeding."
    )


_SWEEP_SENTENCES: dict[str, Callable[[str, SweepFinding], str]] = {
    "rises_with_eps": _rises,
    "weaker_than_table": _weaker,
    "survives_whole_box": _survives,
}


_AUTOATTACK_CHECKS_LEGEND = (
    "AutoAttack's own checks on its result (as the reference runs them): randomized outputs, "
    "probabilities instead of logits, Square breaking what the gradient members missed, and every point "
    "inside ball ∩ box; a failed check means the figure beside it is not to be trusted as it stands."
)


_DIAGNOSTICS_LEGEND = (
    "Symptoms of gradient masking (Athalye, Carlini & Wagner 2018, §3.1): a failed check means the "
    "attacks' robust accuracy may come from gradients that mislead them rather than from robustness; "
    "passing every check proves no robustness, it only removes the usual reasons to doubt the figure."
)


def _masking_warnings(models: Sequence[ModelReport], esc: Escape) -> list[str]:
    """One warning per model whose gradient-masking checks failed."""
    out = []
    for m in models:
        diag = m.diagnosis
        if diag is None or not diag.masked:
            continue
        titles = [c.title for c in diag.checks if c.flagged]
        out.append(
            f"The gradient-masking checks flag the {esc(m.label)} model ({_join(titles)}): its accuracy "
            "under gradient attacks may be an artefact of masked gradients; see the diagnostics."
        )
    return out


_TABLE_LEGEND = (
    "Accuracy under an attack counts an example only if the model classifies it correctly both clean and "
    "under that attack; the worst case counts it only if it survives every attack. Conf. on errors is the "
    "mean softmax probability the model gives its wrong prediction (— where it made no error). A certified "
    "row, where present, is a provable lower bound: the share of examples that no perturbation in the threat "
    "model can misclassify (interval bound propagation bounds ℓ2 and ℓ1 balls through their ℓ∞ box)."
)


__all__ = ["Escape", "format_table"]
