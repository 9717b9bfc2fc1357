"""Issue 16 item 5: progress that tells the truth, and an ε sweep that runs no attack at ε = 0."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlearn.attacks import APGD, APGDT, FGSM, PGD
from advlearn.evaluation import accuracy_vs_eps, evaluate, sweep_attacks
from advlearn.evaluation._progress import count_examples, example_bar
from advlearn.threat import ThreatModel


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)  # type: ignore[no-any-return]


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_sweep_at_eps_zero_is_clean_accuracy_without_attacks() -> None:
    model = _Counting().eval()
    x, y = _data()
    threat = ThreatModel("linf", 0.1)
    sweep = accuracy_vs_eps(model, (x, y), threat, [0.0], [PGD(threat, steps=20)], batch_size=16, quiet=True)
    assert model.calls == 3  # one forward pass per batch of 16, 16, 8: no attack ran
    with torch.no_grad():
        clean = float((model.net(x).argmax(1) == y).float().mean())
    assert sweep.accuracy == [clean]
    assert sweep.num_examples == 40


def test_sweep_points_equal_evaluate_at_each_eps(capsys: pytest.CaptureFixture[str]) -> None:
    model = _Counting().eval()
    x, y = _data()
    threat = ThreatModel("linf", 0.1)
    attacks = {"PGD": PGD(threat, steps=5)}
    sweep = accuracy_vs_eps(model, (x, y), threat, [0.0, 0.05, 0.2], attacks, batch_size=16, seed=3)
    for eps, acc in zip(sweep.eps[1:], sweep.accuracy[1:], strict=True):
        at = threat.with_eps(eps)
        direct = evaluate(model, (x, y), at, {"PGD": PGD(at, steps=5)}, batch_size=16, seed=3, quiet=True)
        assert acc == direct.worst_case_accuracy
    err = capsys.readouterr().err
    assert "eps sweep (linf, PGD), 40 examples: 0: " in err  # the summary line left behind
    assert "0.2: " in err


def test_evaluate_leaves_a_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    model = _Counting().eval()
    x, y = _data()
    threat = ThreatModel("linf", 0.1)
    ev = evaluate(model, (x, y), threat, {"FGSM": FGSM(threat), "PGD": PGD(threat, steps=3)})
    lines = [line for line in capsys.readouterr().err.splitlines() if " examples, clean " in line]
    assert len(lines) == 1
    assert f"evaluate: 40 examples, clean {ev.clean_accuracy:.1%}, FGSM " in lines[0]
    assert f"worst case {ev.worst_case_accuracy:.1%}" in lines[0]
    evaluate(model, (x, y), threat, {"FGSM": FGSM(threat)}, quiet=True)
    assert capsys.readouterr().err == ""  # quiet means quiet


def test_bars_count_examples_with_a_total() -> None:
    x, y = _data(10)
    assert count_examples((x, y)) == 10
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    assert count_examples(loader) == 10
    assert count_examples(iter([(x, y)])) is None
    bar = example_bar(10, "t", quiet=False)
    assert bar.total == 10
    assert bar.unit == "ex"
    bar.close()


def test_sweep_defaults_are_apgd_ce_and_t() -> None:
    threat = ThreatModel("linf", 0.1)
    attacks = sweep_attacks(threat)
    assert list(attacks) == ["APGD-CE", "APGD-T"]
    assert isinstance(attacks["APGD-CE"], APGD)
    assert isinstance(attacks["APGD-T"], APGDT)
    assert attacks["APGD-CE"].early_stop
    assert attacks["APGD-T"].early_stop
