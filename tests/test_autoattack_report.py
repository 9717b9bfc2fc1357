"""Issue 14 item 5: AutoAttack's own checks appear in the benchmark report beside its figure."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

import advlearn as al
from advlearn.attacks import AutoAttack
from advlearn.attacks.ensemble import AutoAttackResult, recording
from advlearn.diagnostics import AUTOATTACK_CHECKS, autoattack_checks
from advlearn.threat import ThreatModel


def test_the_checks_are_in_the_report_beside_the_figure(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(24, 1, 4, 4, generator=g), torch.randint(0, 3, (24,), generator=g)
    threat = ThreatModel("linf", 0.1)
    members = ({"name": "apgd", "steps": 5}, {"name": "square", "queries": 30})
    attack = AutoAttack(threat, version="custom", attacks=members)
    out = al.evaluation.benchmark(
        model,
        (x, y),
        threat,
        out_dir=tmp_path / "b",
        attacks={"AA": attack},
        eps_sweep=[0.0, 0.1],
        diagnose_examples=8,
        examples=0,
        batch_size=10,  # three batches, one AutoAttack call in chunks of 10: the checks read all of it
        quiet=True,
    )
    results = json.loads((out / "results.json").read_text())
    saved = results["autoattack_checks"]["AA"]
    assert [c["name"] for c in saved] == list(AUTOATTACK_CHECKS)
    # The same checks as on one direct evaluation of every example (same seeds: recompute them).
    with recording() as records:
        al.evaluation.evaluate(model, (x, y), threat, {"AA": attack}, batch_size=10, quiet=True)
    assert len(records) == 1  # evaluate runs AutoAttack once over the set
    direct = autoattack_checks(model, x, y, threat, AutoAttackResult.concat([r for _, r in records]))
    assert [(c["status"], c["detail"]) for c in saved] == [(c.status, c.detail) for c in direct]
    assert [c.status for c in direct][1:] != ["not run"] * 3  # the checks ran on a real result
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    results_at = html.index("<h2>Results</h2>")
    for c in direct:
        for page in (html, md):
            assert c.title in page
        # beside the figure: after the results table, before the masking diagnostics
        assert results_at < html.index(c.title) < html.index("Gradient-masking diagnostics")
    assert direct[0].meaning in md


def test_concat_keeps_the_batches_in_order() -> None:
    model = nn.Linear(4, 3)
    threat = ThreatModel("linf", 0.1)
    attack = AutoAttack(threat, version="custom", attacks=({"name": "apgd", "steps": 2},))
    x, y = torch.rand(6, 4), torch.randint(0, 3, (6,))
    parts = [
        attack.evaluate(model, x[:4], y[:4], quiet=True),
        attack.evaluate(model, x[4:], y[4:], quiet=True),
    ]
    whole = AutoAttackResult.concat(parts)
    assert torch.equal(whole.x_adv, torch.cat([p.x_adv for p in parts]))
    assert torch.equal(whole.broken_by, torch.cat([p.broken_by for p in parts]))
    assert whole.num_forwards == sum(p.num_forwards for p in parts)
