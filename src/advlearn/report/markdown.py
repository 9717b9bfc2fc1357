"""``report.md``: the same report in Markdown, linking the PNG files written beside it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from advlearn.diagnostics import MaskingCheck
from advlearn.report.figures import _Figure
from advlearn.report.model import ModelReport
from advlearn.report.text import (
    _AUTOATTACK_CHECKS_LEGEND,
    _DIAGNOSTICS_LEGEND,
    _TABLE_LEGEND,
    Escape,
    _format_threat,
    _join,
    _masking_warnings,
    _md_cell,
    _md_text,
    _summary,
    _sweep_warnings,
    _threat_key,
    format_table,
)
from advlearn.threat import Norm


def _check_row(c: MaskingCheck) -> str:
    result = "**fail**" if c.flagged else c.status
    return f"| {_md_cell(c.title)} | {result} | {_md_cell(c.detail)} | {_md_cell(c.meaning)} |"


def _diagnostics_markdown(models: Sequence[ModelReport], esc: Escape) -> list[str]:
    """The diagnostics panel in Markdown: one table per model."""
    diagnosed = [m for m in models if m.diagnosis is not None]
    if not diagnosed:
        return []
    out = ["## Gradient-masking diagnostics", "", _DIAGNOSTICS_LEGEND, ""]
    for m in diagnosed:
        diag = m.diagnosis
        assert diag is not None
        out += [
            f"### {esc(m.label)} ({diag.num_examples:,} examples, {_format_threat(diag.threat)})",
            "",
            "| check | result | figure | what it means |",
            "|---|---|---|---|",
        ]
        out += [_check_row(c) for c in diag.checks]
        out.append("")
    return out


def _markdown(
    title: str,
    notes: Sequence[str],
    models: Sequence[ModelReport],
    figures: Sequence[_Figure],
    config_text: str | None,
) -> str:
    """The same report in Markdown, linking the PNG files beside it; the user's strings are escaped."""
    esc = _md_text
    out = [f"# {esc(title)}", "", _summary(models, esc), ""]
    checks = _sweep_warnings(models, esc) + _masking_warnings(models, esc)
    if notes or checks:
        out += [f"- {esc(note)}" for note in notes]
        out += [f"- **Warning:** {check}" for check in checks]
        out.append("")
    out += ["## Results", "", format_table({m.label: m.evaluation for m in models}), ""]
    threats: dict[tuple[Norm, str, tuple[float, float]], list[str]] = {}
    for m in models:
        threats.setdefault(_threat_key(m.evaluation.threat), []).append(esc(m.label))
    for (norm, eps, (lo, hi)), labels in threats.items():
        who = "" if len(threats) == 1 else f" ({_join(labels)})"
        out.append(f"Threat model{who}: {norm.symbol}, ε = {eps}, inputs in [{lo:g}, {hi:g}].  ")
    out += [_TABLE_LEGEND, ""]
    for m in models:  # AutoAttack's own checks, beside its figure
        for attack, aa_checks in m.autoattack_checks.items():
            out += [
                f"{esc(m.label)}, {esc(attack)}: {_AUTOATTACK_CHECKS_LEGEND}",
                "",
                "| check | result | figure | what it means |",
                "|---|---|---|---|",
            ]
            out += [_check_row(c) for c in aa_checks]
            out.append("")
    out += _diagnostics_markdown(models, esc)
    in_examples = False
    for fig in figures:
        fig_title, caption = fig.text(esc)
        if fig.model is None:
            out += [f"## {fig_title}", ""]
        else:
            if not in_examples:
                out += ["## Adversarial examples", ""]
                in_examples = True
            out += [f"### {fig_title}", ""]
        out += [f"![{fig_title}]({fig.file})", "", caption, ""]
        if fig.table:
            head, *rows = [[_md_cell(cell) for cell in row] for row in fig.table]
            out += [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
            out += [f"| {' | '.join(row)} |" for row in rows] + [""]
    if config_text is not None:
        # A fence longer than any run of backticks inside, so the config cannot close it.
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", config_text)), default=0))
        out += ["## Configuration", "", f"{fence}toml", config_text.rstrip("\n"), fence, ""]
    return "\n".join(out)
