"""The report's verified-vs-ε figure and table: drawn only when something is certified; the gap."""

from __future__ import annotations

import re
from pathlib import Path

from advlearn.evaluation import EpsSweep, Evaluation
from advlearn.report import ModelReport, write_report
from advlearn.threat import ThreatModel

THREAT = ThreatModel("linf", 0.3)
EPS = [0.0, 0.1, 0.2, 0.3]


def _report(label: str, empirical: list[float], verified: list[float]) -> ModelReport:
    evaluation = Evaluation(THREAT, 200, empirical[0], {"PGD": empirical[-1]}, empirical[-1], {}, {})
    return ModelReport(
        label=label,
        evaluation=evaluation,
        sweep=EpsSweep(THREAT, EPS, empirical, 200),
        certified_sweep=list(zip(EPS, verified, strict=True)),
    )


def test_verified_curve_and_gap_table(tmp_path: Path) -> None:
    models = [
        _report("pgd-at", [0.98, 0.9, 0.8, 0.7], [0.98, 0.0, 0.0, 0.0]),
        _report("ibp<x>", [0.95, 0.85, 0.75, 0.62], [0.95, 0.8, 0.6, 0.45]),
    ]
    html_path, md_path = write_report(tmp_path, title="t", models=models)
    assert (tmp_path / "verified_vs_eps.png").read_bytes().startswith(b"\x89PNG")
    md = md_path.read_text()
    assert "![Verified accuracy against ε](verified_vs_eps.png)" in md
    # Only the certifying model gets a verified column; both empirical curves are there.
    header = next(line for line in md.splitlines() if line.startswith("| ε |"))
    assert "pgd-at verified" not in header
    assert "ibp<x> verified" in header or "ibp\\<x\\> verified" in header
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if re.match(r"\| 0\.\d+ \|", line)}
    # At ε = 0.3: best empirical 70.0% (pgd-at), best verified 45.0%: a gap of 25.0 points.
    assert rows["0.3"].rstrip().endswith("| 25.0 |")
    assert "| 45.0% |" in rows["0.3"]
    assert rows["0.1"].rstrip().endswith("| 10.0 |")
    html = html_path.read_text()
    assert "ibp&lt;x&gt; verified" in html
    assert "ibp<x>" not in html


def test_no_verified_figure_when_nothing_is_certified(tmp_path: Path) -> None:
    models = [_report("pgd-at", [0.98, 0.9, 0.8, 0.7], [0.0, 0.0, 0.0, 0.0])]
    _, md_path = write_report(tmp_path, title="t", models=models)
    assert not (tmp_path / "verified_vs_eps.png").exists()
    assert "Verified accuracy against ε" not in md_path.read_text()
