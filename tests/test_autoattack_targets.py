"""Targeted members on the targets that matter (issue 14 item 6): APGD-T and FAB-T attack a given
ranking, and AutoAttack passes the clean ranking interleaved with the one at its first member's point."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import APGD, APGDT, FABT, AutoAttack, apgd_t, ensemble, fab_t
from advlearn.attacks.apgd import target_ranking
from advlearn.evaluation.state import AutoAttackState

EPS = {"linf": 0.08, "l2": 0.6, "l1": 1.5}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def members(early_stop: bool = True, random_start: bool = True) -> tuple[dict[str, Any], ...]:
    return (
        {"name": "apgd", "steps": 10, "random_start": random_start, "early_stop": early_stop},
        {
            "name": "apgd_t",
            "steps": 10,
            "num_targets": 2,
            "random_start": random_start,
            "early_stop": early_stop,
        },
        {"name": "fab_t", "steps": 10, "num_targets": 2, "early_stop": early_stop},
    )


def test_target_ranking_interleaves_the_two_rankings() -> None:
    """``c₀, p₀, c₁, p₁, …``, each class once, never the label; one ranking alone is the clean order."""
    clean = torch.tensor([[0.0, 5, 4, 3, 2, 1], [0.0, 5, 4, 3, 2, 1]])
    point = torch.tensor([[0.0, 1, 2, 3, 4, 5], [0.0, 1, 2, 3, 4, 5]])
    y = torch.tensor([0, 2])
    assert target_ranking(clean, y).tolist() == [[1, 2, 3, 4, 5], [1, 3, 4, 5, 0]]
    # row 0: c = 1 2 3 4 5, p = 5 4 3 2 1; row 1: c = 1 3 4 5 0, p = 5 4 3 1 0
    assert target_ranking(clean, y, point).tolist() == [[1, 5, 2, 4, 3], [1, 5, 3, 4, 0]]
    assert torch.equal(target_ranking(clean, y, clean), target_ranking(clean, y))


class _OneWay(nn.Module):
    """Four classes at ``x ∈ [0, 1]²``: ``z = (1, 0.9, 0.5 + 10 (x₁ − 0.5), 0)``. Class 1 ranks first at
    ``x = (0.5, 0.5)`` but no input reaches it; class 2, ranked second, is reached by moving ``x₁``."""

    def forward(self, x: Tensor) -> Tensor:
        ones = torch.ones_like(x[:, 0])
        return torch.stack([ones, 0.9 * ones, 0.5 + 10 * (x[:, 1] - 0.5), 0 * ones], dim=1)


# APGD-T with −CE towards the target and no random start: towards class 1 it only lowers class 2.
PICKERS = [(apgd_t, {"loss": "ce", "random_start": False}), (fab_t, {})]


@pytest.mark.parametrize(("attack", "options"), PICKERS)
def test_members_attack_the_targets_given(
    attack: Callable[..., al.attacks.AttackResult], options: dict[str, Any]
) -> None:
    """By default the first target is the clean top class (unreachable here); given ``targets``, the
    first given column is attacked instead."""
    model, threat = _OneWay(), al.ThreatModel("linf", 0.1)
    x, y = torch.full((2, 2), 0.5), torch.zeros(2, dtype=torch.int64)
    assert target_ranking(model(x), y)[:, 0].tolist() == [1, 1]
    assert not attack(model, x, y, threat, steps=10, num_targets=1, **options).success.any()
    given = torch.tensor([[2, 1], [3, 2]])
    out = attack(model, x, y, threat, steps=10, num_targets=1, targets=given, **options)
    assert out.success.tolist() == [True, False]  # class 2 for the first, unreachable class 3 for the second
    assert attack(model, x, y, threat, steps=10, num_targets=2, targets=given, **options).success.all()
    assert threat.contains(out.x_adv, x).all()


@pytest.mark.parametrize("attack", [apgd_t, fab_t])
def test_targets_are_checked(attack: Callable[..., al.attacks.AttackResult]) -> None:
    model, threat = _OneWay(), al.ThreatModel("linf", 0.1)
    x, y = torch.full((2, 2), 0.5), torch.zeros(2, dtype=torch.int64)
    for bad in (
        torch.tensor([1, 2]),
        torch.tensor([[1], [2], [3]]),
        torch.tensor([[1.0], [2.0]]),
        [[1], [2]],
    ):
        with pytest.raises(ValueError, match="targets must be a"):
            attack(model, x, y, threat, targets=bad)
    for bad in (torch.tensor([[0], [2]]), torch.tensor([[4], [2]])):
        with pytest.raises(ValueError, match="targets must hold classes"):
            attack(model, x, y, threat, targets=bad)


@pytest.mark.parametrize("attack", [apgd_t, fab_t])
def test_clean_ranking_given_is_bit_identical_to_none(
    attack: Callable[..., al.attacks.AttackResult], digits_mlp: tuple[nn.Module, Tensor, Tensor]
) -> None:
    model, x, y = digits_mlp
    x, y = x[:40], y[:40]
    threat = al.ThreatModel("l2", EPS["l2"])
    plain = attack(model, x, y, threat, steps=5, num_targets=3, early_stop=True, generator=seeded(1))
    with torch.no_grad():
        ranking = target_ranking(model(x), y)
    given = attack(
        model, x, y, threat, steps=5, num_targets=3, early_stop=True, generator=seeded(1), targets=ranking
    )
    assert torch.equal(plain.x_adv, given.x_adv)
    assert torch.equal(plain.success, given.success)


def _spy(monkeypatch: pytest.MonkeyPatch, cls: type, calls: list[tuple[str, Any]]) -> None:
    original = cls.run

    def run(self: Any, model: nn.Module, x: Tensor, y: Tensor, *, generator: Any = None) -> Any:
        out = original(self, model, x, y, generator=generator)
        calls.append((cls.__name__, getattr(self, "targets", None), x, out))
        return out

    monkeypatch.setattr(cls, "run", run)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_ensemble_ranks_at_the_first_members_point(
    norm: str, digits_mlp: tuple[nn.Module, Tensor, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """APGD-T and FAB-T get the clean ranking interleaved with the one at APGD-CE's points, which here
    differs from the clean one (so a clean ranking would fail the test); every point lies in the set."""
    model, x, y = digits_mlp
    x, y = x[:60], y[:60]
    threat = al.ThreatModel(norm, EPS[norm])
    calls: list[tuple[str, Any]] = []
    for cls in (APGD, APGDT, FABT):
        _spy(monkeypatch, cls, calls)
    out = AutoAttack(threat, version="custom", attacks=members()).evaluate(model, x, y, generator=seeded(0))
    assert threat.contains(out.x_adv, x).all()
    (_, none, x_ce, ce), (_, t_apgd, x_t, _), (_, t_fab, x_f, _) = calls
    assert none is None
    standing = x_ce[~ce.success]
    point = ce.x_adv[~ce.success]
    assert torch.equal(x_t, standing)
    with torch.no_grad():
        clean, at_point = model(standing), model(point)
    labels = y[out.clean_correct][~ce.success]
    expected = target_ranking(clean, labels, at_point)
    assert torch.equal(t_apgd, expected)
    assert not torch.equal(expected[:, :2], target_ranking(clean, labels)[:, :2])  # the rankings differ
    # FAB-T: the ranking at the same points (APGD-CE's), for those APGD-T left standing.
    still = (~ce.success).nonzero().squeeze(1)
    left = [i for i, row in enumerate(standing) if (x_f == row).all(dim=1).any()]
    assert torch.equal(x_f, standing[left])
    assert torch.equal(t_fab, expected[left])
    assert len(still) >= len(left) > 0


def test_all_targets_give_todays_per_example_results(
    digits_mlp: tuple[nn.Module, Tensor, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every wrong class a target (num_targets ≥ C − 1) the set of targets is today's: the
    per-example results equal those of the clean ranking (today's order), deterministic members."""
    model, x, y = digits_mlp
    x, y = x[:60], y[:60]
    threat = al.ThreatModel("linf", EPS["linf"])
    every = tuple({**m, "num_targets": 9} if "num_targets" in m else m for m in members(random_start=False))
    attack = AutoAttack(threat, version="custom", attacks=every)
    new = attack.evaluate(model, x, y)
    monkeypatch.setattr(ensemble, "target_ranking", lambda logits, y, also=None: target_ranking(logits, y))
    today = attack.evaluate(model, x, y)
    assert torch.equal(new.broken_by, today.broken_by)
    assert (new.broken_by == 1).any() or (new.broken_by == 2).any(), "a targeted member should break some"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_early_exit_keeps_the_per_example_result(
    norm: str, digits_mlp: tuple[nn.Module, Tensor, Tensor]
) -> None:
    model, x, y = digits_mlp
    x, y = x[:60], y[:60]
    threat = al.ThreatModel(norm, EPS[norm])
    runs = [
        AutoAttack(threat, version="custom", attacks=members(early, random_start=False)).evaluate(model, x, y)
        for early in (True, False)
    ]
    assert torch.equal(runs[0].robust, runs[1].robust)
    assert torch.equal(runs[0].broken_by, runs[1].broken_by)
    assert 0 < int(runs[0].robust.sum()) < int(runs[0].clean_correct.sum())


def test_resume_gives_the_uninterrupted_result(
    digits_mlp: tuple[nn.Module, Tensor, Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in APGD-T or in FAB-T, the resumed evaluation ranks at the saved APGD-CE points and ends
    as the uninterrupted one, points included."""
    model, x, y = digits_mlp
    x, y = x[:60], y[:60]
    threat = al.ThreatModel("linf", EPS["linf"])
    attack = AutoAttack(threat, version="custom", attacks=members())
    reference = attack.evaluate(model, x, y, generator=seeded(3))

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed")

    for victim, done in ((APGDT, ["apgd"]), (FABT, ["apgd", "apgd_t"])):
        state = tmp_path / f"{victim.__name__}.json"
        with monkeypatch.context() as patch:
            patch.setattr(victim, "run", killed)
            with pytest.raises(KeyboardInterrupt):
                AutoAttackState(str(state)).evaluate(attack, model, x, y, generator=seeded(3))
        (entry,) = json.loads(state.read_text())["entries"].values()
        assert entry["done"] == done
        resumed = AutoAttackState(str(state)).evaluate(attack, model, x, y, generator=seeded(3))
        assert resumed.resumed == len(done)
        assert torch.equal(resumed.broken_by, reference.broken_by)
        assert torch.equal(resumed.x_adv, reference.x_adv)
