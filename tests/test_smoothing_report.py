"""Randomized smoothing in the main job's report (issue 17, part 2): the ℓ2 curve and its table."""

from __future__ import annotations

import json

import pytest
import torch

from advlearn.certify import certified_accuracy
from advlearn.config import ConfigError, parse_config
from advlearn.experiments import main_job

CHEAP = {"sigma": 0.25, "n0": 16, "n": 100, "alpha": 0.01, "batch_size": 256}


def _cfg(tmp_path, smoothing_examples):
    return parse_config({
        "name": f"smooth-{smoothing_examples}",
        "out_dir": str(tmp_path),
        "data": {"name": "digits", "val_size": 50},
        "model": {"name": "mlp", "hidden": [16]},
        "train": [{"label": "std", "epochs": 2}, {"label": "adv", "epochs": 1, "objective": "pgd_at"}],
        "threat": {"norm": "linf", "eps": 0.1},
        "evaluate": {"num_examples": 30, "attacks": ["fgsm"], "examples": 0,
                     "smoothing_examples": smoothing_examples},
    })  # fmt: skip


@pytest.mark.slow  # two small runs of the main job: about 15 s on a quiet core
def test_the_report_shows_the_smoothing_curve_and_leaves_the_main_table_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(main_job, "SMOOTHING", CHEAP)
    with_smoothing = main_job.run_experiment(_cfg(tmp_path, 12), quiet=True)
    without = main_job.run_experiment(_cfg(tmp_path, 0), quiet=True)
    run = with_smoothing.run_dir
    results = json.loads((run / "results.json").read_text())
    plain = json.loads((without.run_dir / "results.json").read_text())
    assert results["models"] == plain["models"]  # the smoothing noise has its own generator
    assert results["eps_sweeps"] == plain["eps_sweeps"]
    assert plain["smoothing"] == {}
    assert set(results["smoothing"]) == {"std", "adv"}
    for label, entry in results["smoothing"].items():
        assert (entry["num_examples"], entry["n"], entry["n0"]) == (12, 100, 16)
        assert len(entry["radii"]) == 12
        # the table's figures are certified_accuracy of the stored radii and predictions
        assert 0.0 <= entry["certified_accuracy"]["0"] <= 1.0
        curve = list(entry["certified_accuracy"].values())
        assert curve == sorted(curve, reverse=True), label
        top = CHEAP["sigma"] * float(torch.distributions.Normal(0, 1).icdf(torch.tensor(0.01 ** (1 / 100))))
        assert max(entry["radii"]) <= top + 1e-6  # n = 100 samples cannot certify beyond this
    assert (run / "certified_l2.png").stat().st_size > 1000
    md = (run / "report.md").read_text()
    assert "## Certified accuracy against the ℓ2 radius (randomized smoothing)" in md
    assert "| model | r = 0 | r = 0.125 | r = 0.25 | r = 0.375 | r = 0.5 | abstained | examples |" in md
    std = results["smoothing"]["std"]
    row = next(line for line in md.splitlines() if line.startswith("| std |"))
    assert row.split(" | ")[1] == f"{100 * std['certified_accuracy']['0']:.1f}%"
    html = (run / "report.html").read_text()
    assert "<th>r = 0.125</th>" in html
    assert "certified_l2.png" not in html  # embedded, not linked
    assert "certified_l2.png" not in (without.run_dir / "report.md").read_text()


def test_smooth_one_certifies_the_first_examples():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    from advlearn.data import Dataset

    x = torch.rand(9, 1, 2, 2)
    data = Dataset(x, model(x).argmax(1).detach(), num_classes=2, name="toy")
    old = main_job.SMOOTHING
    try:
        main_job.SMOOTHING = CHEAP
        first = main_job.smooth_one(model, data, 5, seed=3)
        again = main_job.smooth_one(model, data, 5, seed=3)
    finally:
        main_job.SMOOTHING = old
    assert (first.num_examples, first.n, first.sigma) == (5, 100, 0.25)
    assert torch.equal(first.radii, again.radii)  # seeded
    assert torch.equal(first.labels, data.y[:5])
    assert (
        certified_accuracy(first.radii, first.correct, [0.0]).item() == first.correct.double().mean().item()
    )


def test_smoothing_examples_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"evaluate\.smoothing_examples"):
        parse_config({"evaluate": {"smoothing_examples": -1}})


def test_write_report_draws_the_curve_and_the_table(tmp_path):
    from advlearn.certify import SmoothingCertificates
    from advlearn.evaluation import Evaluation
    from advlearn.report import ModelReport, write_report
    from advlearn.threat import ThreatModel

    def certs(radii, predictions):
        n = len(radii)
        return SmoothingCertificates(
            labels=torch.zeros(n, dtype=torch.int64), predictions=torch.tensor(predictions),
            radii=torch.tensor(radii, dtype=torch.float64), seconds=torch.ones(n, dtype=torch.float64),
            sigma=0.5, n0=32, n=500, alpha=0.001,
        )  # fmt: skip

    threat = ThreatModel("linf", eps=0.1)
    ev = Evaluation(threat, 4, 1.0, {"PGD": 0.5}, 0.5, {"clean": 0.5, "PGD": 0.9}, {})
    models = [
        ModelReport("a|b", ev, smoothing=certs([0.0, 0.3, 0.6, 1.2], [-1, 0, 0, 1])),
        ModelReport("plain", ev),
    ]
    _, md_path = write_report(tmp_path, title="t", models=models)
    md = md_path.read_text()
    assert "| model | r = 0 | r = 0.25 | r = 0.5 | r = 0.75 | r = 1 | abstained | examples |" in md
    # correct: examples 2 and 3 (radii 0.3, 0.6); example 4 is certified but wrong, example 1 abstains
    assert r"| a\|b | 50.0% | 50.0% | 25.0% | 0.0% | 0.0% | 25.0% | 4 |" in md
    table = md.split("| model | r = 0 |")[1].split("\n\n")[0].splitlines()
    assert len(table) == 3  # header rest, rule, one row: a model without certificates gets none
    assert (tmp_path / "certified_l2.png").exists()
    assert "σ = 0.5, n0 = 32, n = 500, α = 0.001 on 4 test examples" in md
