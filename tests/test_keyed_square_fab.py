"""Square's and FAB's draws keyed by the example (issue 13 item 5): the same per-example result whatever
the batch size and the early-exit compaction, alone and inside AutoAttack."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from advlearn._keyed_random import KeyedGenerator
from advlearn.attacks import FAB, FABT, AutoAttack, Square
from advlearn.attacks._base import Attack
from advlearn.evaluation import evaluate
from advlearn.threat import ThreatModel

N, SMALL = 128, 48
# about the median of FAB's minimal distances on these examples: half of them can be broken
THREATS = {
    "linf": ThreatModel("linf", 0.03, bounds=(0.0, 1.0)),
    "l2": ThreatModel("l2", 0.15, bounds=(0.0, 1.0)),
    "l1": ThreatModel("l1", 0.4, bounds=(0.0, 1.0)),
}


class RowwiseMLP(nn.Module):
    """A 36-64-5 ReLU MLP whose layers are elementwise products and row sums, so each example's logits
    and input gradient are the same bits in any batch. ``nn.Linear``'s kernels are not: on this CPU
    batches of 1 or 2 rows take another GEMM path (last-bit differences, which FAB's steps, built on
    gradient magnitudes, carry on). This model separates the draws, under test, from the kernels."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            layers = [nn.Linear(36, 64), nn.Linear(64, 5)]
        self.weights = nn.ParameterList([layer.weight for layer in layers])
        self.biases = nn.ParameterList([layer.bias for layer in layers])

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = (h[:, None, :] * w).sum(dim=2) + b  # (B, out)
            h = h.relu() if i + 1 < len(self.weights) else h
        return h


def _model_and_data(n: int = N) -> tuple[nn.Module, Tensor, Tensor]:
    model = RowwiseMLP().eval()
    x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    y[::10] = (y[::10] + 1) % 5  # a tenth misclassified clean, never attacked
    return model, x, y


def _whole_and_parts(
    attack: Attack, model: nn.Module, x: Tensor, y: Tensor, seed: int = 1
) -> tuple[Any, Any]:
    """``attack`` run on all examples at once and in batches of SMALL, each keyed by the examples' indices."""
    whole = attack.run(model, x, y, generator=KeyedGenerator(seed, torch.arange(len(y))))
    parts = []
    for start in range(0, len(y), SMALL):
        keys = torch.arange(start, min(start + SMALL, len(y)))
        parts.append(attack.run(model, x[keys], y[keys], generator=KeyedGenerator(seed, keys)))
    return whole, parts


@pytest.mark.parametrize("norm", sorted(THREATS))
def test_square_gives_each_example_the_same_result_in_any_batch(norm: str) -> None:
    model, x, y = _model_and_data()
    attack = Square(THREATS[norm], queries=30)
    whole, parts = _whole_and_parts(attack, model, x, y)
    assert torch.equal(torch.cat([p.success for p in parts]), whole.success)
    assert torch.equal(torch.cat([p.x_adv for p in parts]), whole.x_adv)
    # the queries spent per example do not depend on the batch either (each stops at its first success)
    assert sum(p.num_forwards for p in parts) == whole.num_forwards
    # the attack does something, and the early exits compacted the batch mid-run
    clean_ok = model(x).argmax(1) == y
    broken = int((whole.success & clean_ok).sum())
    assert 0 < broken < int(clean_ok.sum())
    # and the seed matters
    other = attack.run(model, x, y, generator=KeyedGenerator(2, torch.arange(N)))
    assert not torch.equal(other.x_adv, whole.x_adv)


@pytest.mark.parametrize("norm", sorted(THREATS))
def test_fab_restarts_give_each_example_the_same_result_in_any_batch(norm: str) -> None:
    model, x, y = _model_and_data()
    for early_stop in (False, True):
        for attack in (
            FAB(THREATS[norm], steps=4, restarts=2, early_stop=early_stop),
            FABT(THREATS[norm], steps=3, restarts=2, num_targets=2, early_stop=early_stop),
        ):
            whole, parts = _whole_and_parts(attack, model, x, y)
            assert torch.equal(torch.cat([p.success for p in parts]), whole.success)
            assert torch.equal(torch.cat([p.x_adv for p in parts]), whole.x_adv)
    clean_ok = model(x).argmax(1) == y
    assert 0 < int((whole.success & clean_ok).sum()) < int(clean_ok.sum())
    # the restarts are random: another seed moves some points
    other = attack.run(model, x, y, generator=KeyedGenerator(2, torch.arange(N)))
    assert not torch.equal(other.x_adv, whole.x_adv)


def _small_autoattack(threat: ThreatModel, early_stop: bool) -> AutoAttack:
    """The standard members in their order, on small budgets (FAB-T with a random restart)."""
    members = (
        {"name": "apgd", "steps": 5, "loss": "ce", "early_stop": early_stop},
        {"name": "apgd_t", "steps": 5, "num_targets": 2, "early_stop": early_stop},
        {"name": "fab_t", "steps": 5, "num_targets": 2, "restarts": 2, "early_stop": early_stop},
        {"name": "square", "queries": 80},
    )
    return AutoAttack(threat, version="custom", attacks=members)


def _per_example(attack: AutoAttack, model: nn.Module, x: Tensor, y: Tensor) -> None:
    """The ensemble on all examples at once and in batches of SMALL: the same breaker and point each."""
    whole = attack.evaluate(model, x, y, generator=KeyedGenerator(1, torch.arange(len(y))), quiet=True)
    parts = [
        attack.evaluate(model, x[k], y[k], generator=KeyedGenerator(1, k), quiet=True)
        for k in torch.arange(len(y)).split(SMALL)
    ]
    assert torch.equal(torch.cat([p.broken_by for p in parts]), whole.broken_by)
    assert torch.equal(torch.cat([p.x_adv for p in parts]), whole.x_adv)
    # the first member leaves some standing for the others (FAB-T's restarts and Square draw on them)
    assert 0 < int((whole.broken_by == 0).sum()) < int(whole.clean_correct.sum())
    assert int(whole.robust.sum()) > 0


@pytest.mark.parametrize("early_stop", [False, True])
def test_autoattack_gives_each_example_the_same_result_in_any_batch(early_stop: bool) -> None:
    model, x, y = _model_and_data()
    attack = _small_autoattack(THREATS["linf"], early_stop)
    _per_example(attack, model, x, y)
    if early_stop:  # and evaluate's figure, which keys by the index in the data set
        small = evaluate(model, (x, y), attacks={"aa": attack}, batch_size=SMALL, seed=1, quiet=True)
        large = evaluate(model, (x, y), attacks={"aa": attack}, batch_size=N, seed=1, quiet=True)
        assert torch.equal(small.correct["aa"], large.correct["aa"])


@pytest.mark.slow
@pytest.mark.parametrize("norm", sorted(THREATS))
def test_autoattack_standard_gives_each_example_the_same_result_in_any_batch(norm: str) -> None:
    model, x, y = _model_and_data()
    _per_example(_small_autoattack(THREATS[norm], False), model, x, y)
    _per_example(AutoAttack(THREATS[norm], version="standard"), model, x, y)
