"""The standard AutoAttack with FAB-T (issue 14): members per norm, resume through FAB-T, early exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import FABT, AutoAttack, fab_t
from advlearn.attacks.ensemble import ROBUST
from advlearn.evaluation.state import AutoAttackState
from conftest import Trained


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def problem(trained: Trained) -> tuple[nn.Module, Tensor, Tensor]:
    model = trained.model.double()
    y = trained.y.clone()
    y[:4] = (y[:4] + 1) % 3  # a few misclassified clean
    yield model, trained.x.double(), y
    trained.model.float()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_standard_members_as_the_reference(norm: str) -> None:
    """ℓ∞/ℓ2: APGD-CE (1 run), APGD-T (4 targets), FAB-T (4 targets), Square (5,000 queries); the
    reference's 9 targets cut to the 4 that bench/targets.py measured enough (see test_autoattack_targets)."""
    members = dict(AutoAttack(al.ThreatModel(norm, 0.1)).members())
    assert list(members) == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert members["APGD-CE"].restarts == 1  # type: ignore[attr-defined]
    assert members["APGD-T"].num_targets == 4  # type: ignore[attr-defined]
    assert members["FAB-T"] == FABT(al.ThreatModel(norm, 0.1), steps=100, num_targets=4, early_stop=True)
    assert members["Square"].queries == 5000  # type: ignore[attr-defined]
    assert members["Square"].rescale is True  # type: ignore[attr-defined]  # measured as strong as the reference's
    # The fast version (the main job's) is unchanged: no FAB-T.
    assert [name for name, _ in AutoAttack(al.ThreatModel(norm, 0.1), version="fast").members()] == [
        "APGD-CE",
        "APGD-T",
        "Square",
    ]


def test_standard_l1_options_as_the_reference() -> None:
    """ℓ1: APGD-CE with 5 restarts and APGD-T (4 targets), both on the 3ε→2ε→ε schedule, FAB-T, Square."""
    members = dict(AutoAttack(al.ThreatModel("l1", 10.0)).members())
    assert list(members) == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    ce, t = members["APGD-CE"], members["APGD-T"]
    assert (ce.restarts, ce.eps_schedule) == (5, True)  # type: ignore[attr-defined]
    assert (t.num_targets, t.eps_schedule) == (4, True)  # type: ignore[attr-defined]
    assert members["FAB-T"].num_targets == 4  # type: ignore[attr-defined]


# Deterministic members (no random start; FAB-T's single run starts at x): an example's outcome does not
# depend on the batch it is attacked in, so early exit must not change it.
DETERMINISTIC = (
    {"name": "apgd", "steps": 10, "random_start": False, "early_stop": True},
    {"name": "fab_t", "steps": 10, "num_targets": 2, "early_stop": True},
    {"name": "apgd_t", "steps": 10, "num_targets": 2, "random_start": False, "early_stop": True},
)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_early_exit_keeps_every_per_example_result(
    norm: str, problem: tuple[nn.Module, Tensor, Tensor]
) -> None:
    """With early exit (between and inside members) each example ends robust exactly when no member,
    run without early exit on every example, fools it; broken_by names the first that does."""
    model, x, y = problem
    threat = al.ThreatModel(norm, {"linf": 0.15, "l2": 0.3, "l1": 0.6}[norm])
    out = AutoAttack(threat, version="custom", attacks=DETERMINISTIC).evaluate(model, x, y)
    without = [
        {**spec, "early_stop": False}  # type: ignore[dict-item]
        for spec in DETERMINISTIC
    ]
    full = AutoAttack(threat, version="custom", attacks=tuple(without))
    fooled = [attack.run(model, x, y).success for _, attack in full.members()]
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert torch.equal(out.robust, clean & ~torch.stack(fooled).any(0))
    first = torch.full_like(y, ROBUST)
    for i in reversed(range(len(fooled))):
        first = torch.where(fooled[i] & clean, i, first)
    assert torch.equal(out.broken_by[clean], first[clean])
    assert 0 < int(out.robust.sum()) < int(clean.sum()), "ε should leave a mix"
    assert threat.contains(out.x_adv, x).all()


def test_resume_through_fab_t(
    problem: tuple[nn.Module, Tensor, Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in FAB-T, a new evaluation resumes from the state file after APGD and ends as an unbroken run;
    killed after FAB-T, it does not run FAB-T again."""
    model, x, y = problem
    threat = al.ThreatModel("l2", 0.3)
    attacks = (
        {"name": "apgd", "steps": 10, "early_stop": True},
        {"name": "fab_t", "steps": 10, "num_targets": 2, "early_stop": True},
        {"name": "square", "queries": 100},
    )
    reference = AutoAttack(threat, version="custom", attacks=attacks).evaluate(
        model, x, y, generator=seeded(3)
    )
    assert (reference.broken_by == 1).any(), "FAB-T should break something here"

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed")

    for victim, done in ((FABT, ["apgd"]), (al.attacks.Square, ["apgd", "fab_t"])):
        state = tmp_path / f"{victim.__name__}.json"
        with monkeypatch.context() as patch:
            patch.setattr(victim, "run", killed)
            with pytest.raises(KeyboardInterrupt):
                AutoAttackState(str(state)).evaluate(
                    AutoAttack(threat, version="custom", attacks=attacks), model, x, y, generator=seeded(3)
                )
        (entry,) = json.loads(state.read_text())["entries"].values()
        assert entry["done"] == done
        resumed = AutoAttackState(str(state)).evaluate(
            AutoAttack(threat, version="custom", attacks=attacks), model, x, y, generator=seeded(3)
        )
        assert resumed.resumed == len(done)
        assert torch.equal(resumed.broken_by, reference.broken_by)
        assert torch.equal(resumed.x_adv, reference.x_adv)


def test_fab_t_member_at_least_as_strong_as_alone(problem: tuple[nn.Module, Tensor, Tensor]) -> None:
    """In the ensemble FAB-T attacks only what APGD left: nothing FAB-T alone breaks stays robust."""
    model, x, y = problem
    threat = al.ThreatModel("linf", 0.15)
    members = (
        {"name": "apgd", "steps": 10, "random_start": False, "early_stop": True},
        {"name": "fab_t", "steps": 10},
    )
    out = AutoAttack(threat, version="custom", attacks=members).evaluate(model, x, y)
    alone = fab_t(model, x, y, threat, steps=10)
    assert not (out.robust & alone.success).any()
