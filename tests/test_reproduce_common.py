"""The pieces the trained reproductions share: one scoring call, one row builder, the digits setup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advlearn.attacks import FGSM, PGD
from advlearn.evaluation import evaluate
from advlearn.experiments.reproduce import EXPERIMENTS, _mnist
from advlearn.experiments.reproduce._common import Context, percent_rows
from advlearn.threat import ThreatModel


def _context(quick: bool) -> Context:
    return Context(quick=quick, seeds=(0,), data_dir=None, run_dir=Path("unused"))


def test_percent_rows_order_names_counts_and_published():
    scores = {
        "a": {"clean": [0.9, 0.8], "PGD": [0.5, 0.5]},
        "b": {"clean": [0.7, 0.7], "PGD": [0.1, 0.2]},
    }
    seen: list[tuple[str, str]] = []

    def verdict(arm: str, measure: str) -> tuple[bool, str]:
        seen.append((arm, measure))
        return arm == "a", f"{arm}/{measure}."

    rows = percent_rows(
        scores,
        {"b": "model B", "a": "model A"},
        {"clean": "clean", "PGD": "PGD-20"},
        verdict,
        count={"clean": 100, "PGD": 50},
        published={"PGD": 0.15},
    )
    # arms outermost, in the order given; the verdict is asked with the keys, the names are shown
    assert [r.quantity for r in rows] == [
        "model B: clean accuracy",
        "model B: PGD-20 accuracy",
        "model A: clean accuracy",
        "model A: PGD-20 accuracy",
    ]
    assert seen == [("b", "clean"), ("b", "PGD"), ("a", "clean"), ("a", "PGD")]
    assert [r.values for r in rows] == [(0.7, 0.7), (0.1, 0.2), (0.9, 0.8), (0.5, 0.5)]
    assert [r.count for r in rows] == [100, 50, 100, 50]
    assert [r.published for r in rows] == [None, 0.15, None, 0.15]
    assert [r.holds for r in rows] == [False, False, True, True]
    assert rows[1].why == "b/PGD."
    assert all(r.percent for r in rows)
    assert rows[1].verdict == "matches"  # 0.15 lies in B's PGD interval
    # A: 0.15 lies outside even the Wilson interval of 100 points at 50%, and A holds
    assert rows[3].verdict == "same direction"


def test_percent_rows_plain_keys_and_quantity_template():
    rows = percent_rows(
        {"x": {"m": [0.5]}}, ["x"], ["m"], lambda *_: (True, "."), count=10, quantity="{measure} of {arm}"
    )
    assert rows[0].quantity == "m of x"
    assert rows[0].verdict == "no published figure"


def test_score_appends_what_evaluate_measures():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x, y = torch.rand(32, 1, 2, 2), torch.randint(0, 3, (32,))
    threat = ThreatModel("linf", 0.1, (0.0, 1.0))
    attacks = {"FGSM": FGSM(threat), "PGD-5": PGD(threat, steps=5)}
    scores: _mnist.Scores = {}
    for seed in (0, 1):
        _mnist.score(scores, "arm", model, x, y, threat, attacks, seed)
    assert list(scores) == ["arm"]
    assert list(scores["arm"]) == ["clean", "FGSM", "PGD-5"]
    for i, seed in enumerate((0, 1)):
        ev = evaluate(model, (x, y), threat, attacks, seed=seed, quiet=True)
        assert scores["arm"]["clean"][i] == ev.clean_accuracy
        assert scores["arm"]["FGSM"][i] == ev.robust_accuracy["FGSM"]
        assert scores["arm"]["PGD-5"][i] == ev.robust_accuracy["PGD-5"]


@pytest.mark.parametrize("quick", [True, False])
def test_digits_setup(quick: bool):
    bench = _mnist.DigitsPGD.make(_context(quick), 0.1)
    x, y = bench.test
    assert len(x) == len(y) == (300 if quick else len(bench.split.test))
    assert torch.equal(x, bench.split.test.x[: len(x)])
    assert bench.threat.eps == 0.1
    assert list(bench.attacks) == ["PGD-20"] == list(bench.measures)[1:]
    assert bench.measures["PGD-20"] == "PGD-20 at ε = 0.1"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_listed_times_say_how_they_were_taken(name: str):
    """`--list` states measured times with their conditions, or says 'not timed'; no loaded-machine figure."""
    cost = EXPERIMENTS[name].cost
    assert "quick" in cost
    assert "full" in cost
    assert "load" not in cost
    assert "quiet, 2 cores" in cost or "1 thread" in cost
