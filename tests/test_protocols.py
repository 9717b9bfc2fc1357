"""Training protocols: early stopping on adversarial validation error then refit; multi-seed mean ± std."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import PGD
from advlearn.data import digits
from advlearn.training import Standard, Trainer
from advlearn.training.protocols import SeedSummary, early_stop_then_refit, multi_seed


@dataclass(frozen=True)
class CountingStandard(Standard):
    """Standard training that counts the examples each step sees (class-level: the dataclass is frozen)."""

    seen: ClassVar[list[int]] = []

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        CountingStandard.seen.append(len(y))
        return super().__call__(model, x, y)


@pytest.fixture(scope="module")
def small_digits() -> tuple[al.data.Dataset, al.data.Dataset]:
    """200 training and 100 validation 8×8 digits."""
    train = digits().train
    return train.subset(200), train.subset(slice(200, 300))


def _logreg() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.5)


def test_refit_uses_the_best_adversarial_epoch_on_train_plus_validation(small_digits) -> None:
    """The search validates under attack and picks its best epoch; the refit runs that many on all data.

    The refit is a fresh model: bit-identical to a Trainer run from the same seed on the joined data.
    """
    train, val = small_digits
    threat = al.ThreatModel("linf", eps=0.1)
    attack = PGD(threat, steps=3, early_stop=True)
    CountingStandard.seen.clear()
    result = early_stop_then_refit(
        _logreg, _sgd, CountingStandard(), train, val,
        max_epochs=6, patience=2, val_attack=attack, batch_size=50, device="cpu", seed=3,
    )  # fmt: skip
    robust = result.search.column("val_robust_acc")
    assert len(robust) == len(result.search.records) >= 1
    assert result.best_epochs == result.search.best_epoch == int(np.argmax(robust)) + 1  # first maximum
    assert len(result.refit.records) == result.best_epochs
    # the search saw 200 examples per epoch, the refit 300
    search_steps = len(result.search.records) * 4
    assert sum(CountingStandard.seen[:search_steps]) == 200 * len(result.search.records)
    assert sum(CountingStandard.seen[search_steps:]) == 300 * result.best_epochs

    torch.manual_seed(3)  # the same recipe by hand
    reference = _logreg()
    data = torch.utils.data.TensorDataset(torch.cat([train.x, val.x]), torch.cat([train.y, val.y]))
    Trainer(reference, Standard(), _sgd(reference), device="cpu", seed=3, quiet=True).fit(
        torch.utils.data.DataLoader(data, batch_size=50, shuffle=True), epochs=result.best_epochs
    )
    for ours, theirs in zip(result.model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_search_stops_after_patience_epochs_without_improvement() -> None:
    """With learning rate 0 nothing improves after epoch 1: best epoch 1, stopped after 1 + patience."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 5, generator=g), torch.randint(0, 2, (40,), generator=g)
    result = early_stop_then_refit(
        lambda: nn.Linear(5, 2), lambda m: torch.optim.SGD(m.parameters(), lr=0.0), Standard(),
        (x[:30], y[:30]), (x[30:], y[30:]),
        max_epochs=10, patience=3, val_attack=None, batch_size=10, device="cpu",
    )  # fmt: skip
    assert result.best_epochs == 1
    assert result.search.stopped_early
    assert len(result.search.records) == 4
    assert "val_robust_acc" not in result.search.records[0]  # no attack: clean validation error
    assert len(result.refit.records) == 1


def test_refit_rejects_bad_arguments(small_digits) -> None:
    """ValueErrors name the argument."""
    train, val = small_digits
    common = {"max_epochs": 2, "patience": 1, "val_attack": None, "device": "cpu"}
    with pytest.raises(ValueError, match="max_epochs"):
        early_stop_then_refit(_logreg, _sgd, Standard(), train, val, **{**common, "max_epochs": 0})
    with pytest.raises(ValueError, match="patience"):
        early_stop_then_refit(_logreg, _sgd, Standard(), train, val, **{**common, "patience": 0})
    with pytest.raises(ValueError, match="val_data"):
        early_stop_then_refit(_logreg, _sgd, Standard(), train, (val.x, val.y[:3]), **common)
    with pytest.raises(ValueError, match="different shapes"):
        early_stop_then_refit(_logreg, _sgd, Standard(), train, (val.x[:, :, :4], val.y), **common)


def test_multi_seed_mean_and_sample_std() -> None:
    """Mean and ddof=1 standard deviation per metric, as statistics/NumPy compute them."""
    summary = multi_seed(
        lambda seed: {"acc": 0.5 + 0.1 * seed, "loss": float(seed**2)}, seeds=[1, 2, 3, 4, 5]
    )
    accs = [0.6, 0.7, 0.8, 0.9, 1.0]
    assert summary.seeds == (1, 2, 3, 4, 5)
    assert summary.mean["acc"] == pytest.approx(0.8)
    assert summary.std["acc"] == pytest.approx(float(np.std(accs, ddof=1)))
    assert summary.std["loss"] == pytest.approx(statistics.stdev([1, 4, 9, 16, 25]))
    assert [r["loss"] for r in summary.runs] == [1.0, 4.0, 9.0, 16.0, 25.0]
    assert "acc: 0.8000 ± 0.1581 (5 seeds)" in str(summary)
    one = multi_seed(lambda seed: {"acc": 1.0}, seeds=[7])
    assert one.mean["acc"] == 1.0
    assert math.isnan(one.std["acc"])


def test_multi_seed_seeds_the_global_generators() -> None:
    """Each call starts from its seed: a run that draws from torch's RNG without seeding is reproducible."""
    summary = multi_seed(lambda seed: {"draw": float(torch.rand(()))}, seeds=[0, 1, 2])
    for seed, run in zip(summary.seeds, summary.runs, strict=True):
        torch.manual_seed(seed)
        assert run["draw"] == float(torch.rand(()))
    assert len({run["draw"] for run in summary.runs}) == 3


def test_multi_seed_trains_real_models(small_digits) -> None:
    """Three seeds of a tiny digits model: a non-zero spread (seeds matter), accuracies of a real model."""
    train, val = small_digits

    def run(seed: int) -> dict[str, float]:
        model = _logreg()
        Trainer(model, Standard(), _sgd(model), device="cpu", seed=seed, quiet=True).fit(
            train.loader(50, shuffle=True), epochs=2
        )
        with torch.no_grad():
            return {"val_acc": float((model(val.x).argmax(1) == val.y).float().mean())}

    summary = multi_seed(run, seeds=[0, 1, 2])
    assert isinstance(summary, SeedSummary)
    assert 0.5 < summary.mean["val_acc"] <= 1.0
    assert summary.std["val_acc"] > 0


def test_multi_seed_rejects_bad_input() -> None:
    """No seeds, repeated seeds, non-numeric or non-finite metrics, metric names that change: ValueErrors."""
    with pytest.raises(ValueError, match="at least one seed"):
        multi_seed(lambda s: {"a": 1.0}, seeds=[])
    with pytest.raises(ValueError, match="distinct"):
        multi_seed(lambda s: {"a": 1.0}, seeds=[1, 1])
    with pytest.raises(ValueError, match="integers"):
        multi_seed(lambda s: {"a": 1.0}, seeds=[1.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="finite numbers"):
        multi_seed(lambda s: {"a": float("nan")}, seeds=[0])
    with pytest.raises(ValueError, match="finite numbers"):
        multi_seed(lambda s: {"a": "high"}, seeds=[0])  # type: ignore[dict-item,return-value]
    with pytest.raises(ValueError, match="dict of metric"):
        multi_seed(lambda s: [1.0], seeds=[0])  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="same metrics"):
        multi_seed(lambda s: {"a": 1.0} if s == 0 else {"b": 1.0}, seeds=[0, 1])
