"""Issue 16 item 3: `al.evaluation.benchmark` and `advlearn evaluate --report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import advlearn as al
from advlearn.attacks import FGSM, PGD
from advlearn.cli import main
from advlearn.threat import ThreatModel


def _model_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.rand(24, 1, 4, 4, generator=g), torch.randint(0, 3, (24,), generator=g)


@pytest.mark.slow  # about 6 s on 2 busy cores (the doctest of benchmark() covers the default run)
def test_benchmark_writes_the_report_and_a_json_that_matches_evaluate(tmp_path: Path) -> None:
    model, x, y = _model_and_data()
    threat = ThreatModel("linf", 0.1)
    attacks = {"FGSM": FGSM(threat), "PGD": PGD(threat, steps=5)}
    loader = [{"image": x[:12], "label": y[:12]}, {"image": x[12:], "label": y[12:]}]  # a dict loader
    out = al.evaluation.benchmark(
        model,
        loader,
        threat,
        out_dir=tmp_path / "b",
        attacks=attacks,
        eps_sweep=[0.0, 0.1, 0.3],
        diagnose_examples=24,
        examples=4,
        seed=2,
        quiet=True,
    )
    for name in ("report.html", "report.md", "results.json", "accuracy_vs_eps.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    direct = al.evaluation.evaluate(model, (x, y), threat, attacks, seed=2, quiet=True)
    assert results["num_examples"] == 24
    assert [row["accuracy"] for row in results["table"][:4]] == pytest.approx(
        [
            direct.clean_accuracy,
            direct.robust_accuracy["FGSM"],
            direct.robust_accuracy["PGD"],
            direct.worst_case_accuracy,
        ]
    )
    assert results["per_example"]["PGD"] == direct.correct["PGD"].tolist()
    assert results["eps_sweep"]["accuracy"][0] == pytest.approx(direct.clean_accuracy)
    # at the evaluation eps the sweep's APGD-CE + APGD-T cannot do better than the table would allow
    assert results["eps_sweep"]["eps"] == [0.0, 0.1, 0.3]
    assert results["seed"] == 2
    assert results["torch_version"] == torch.__version__
    assert results["hardware"]["device"] == "cpu"
    assert {row["check"] for row in results["masking_diagnostics"]} == set(al.evaluation.CHECKS)
    assert "IBP" in results["certified"]  # a linear model has bound rules: the certified row is there
    assert "advlearn benchmark" in (out / "report.html").read_text()


@pytest.mark.slow
def test_evaluate_report_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    argv = ["evaluate", "--model", str(path), "--data", "digits", "--attack", "fgsm", "--eps", "0.1"]
    assert main([*argv, "--num-examples", "20", "--report", str(tmp_path / "r"), "--quiet"]) == 0
    assert "report.html" in capsys.readouterr().out
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["label"] == "net.pt"
    assert len(results["per_example"]["fgsm"]) == 20
