"""The AutoAttack-style ensemble: early exit equals the worst case over members, resumable state, versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import AutoAttack, AutoAttackResult, Square, build_attack
from advlearn.attacks.ensemble import CLEAN_WRONG, ROBUST
from advlearn.evaluation.state import AutoAttackState
from conftest import Trained

EPS = 0.15


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def problem(trained: Trained) -> tuple[nn.Module, Tensor, Tensor]:
    """The blobs MLP in float64, with a few labels flipped so that some inputs are misclassified clean."""
    model = trained.model.double()
    y = trained.y.clone()
    y[:5] = (y[:5] + 1) % 3
    yield model, trained.x.double(), y
    trained.model.float()


# Deterministic members (no random start): each example's outcome does not depend on the batch it is in.
MEMBERS = (
    "fgsm",
    {"name": "apgd", "steps": 10, "random_start": False, "early_stop": True},
    {"name": "pgd", "steps": 10, "random_start": False, "loss": "cw", "early_stop": True},
)


def test_early_exit_equals_every_member_on_every_example(problem: tuple[nn.Module, Tensor, Tensor]) -> None:
    """Robust = correct clean and fooled by no member run on all examples; broken_by = the first to fool."""
    model, x, y = problem
    threat = al.ThreatModel("linf", EPS)
    ensemble = AutoAttack(threat, version="custom", attacks=MEMBERS)
    out = ensemble.evaluate(model, x, y)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    fooled = [attack.run(model, x, y).success for _, attack in ensemble.members()]
    first = torch.full_like(y, ROBUST)
    for i in reversed(range(len(fooled))):
        first = torch.where(fooled[i], i, first)
    first[~clean] = CLEAN_WRONG
    assert torch.equal(out.clean_correct, clean)
    assert torch.equal(out.broken_by, first)
    assert torch.equal(out.robust, clean & ~torch.stack(fooled).any(0))
    assert 0 < out.robust_accuracy < out.clean_accuracy, "EPS should leave a mix of robust and fooled"
    assert len(set(first[clean & ~out.robust].tolist())) > 1, "more than one member should break examples"
    # Each member ran only on what was left: fewer gradients than running everything on everything.
    assert out.num_grads < sum(a.run(model, x, y).num_grads for _, a in ensemble.members())


def test_points_come_from_the_first_successful_member(problem: tuple[nn.Module, Tensor, Tensor]) -> None:
    """x_adv fools the model where broken_by names a member; misclassified inputs stay at x; all in S(x)."""
    model, x, y = problem
    threat = al.ThreatModel("linf", EPS)
    out = AutoAttack(threat, version="custom", attacks=MEMBERS).evaluate(model, x, y)
    with torch.no_grad():
        pred = model(out.x_adv).argmax(1)
    broken = out.broken_by >= 0
    assert (pred[broken] != y[broken]).all()
    assert (pred[out.robust] == y[out.robust]).all()
    assert torch.equal(out.x_adv[~out.clean_correct], x[~out.clean_correct])
    assert threat.contains(out.x_adv, x).all()
    after = out.accuracy_after()
    assert list(after) == ["fgsm", "apgd", "pgd"]
    assert list(after.values()) == sorted(after.values(), reverse=True)
    assert after["pgd"] == pytest.approx(out.robust_accuracy)


@pytest.mark.parametrize("version", [pytest.param("standard", marks=pytest.mark.slow), "fast"])
def test_at_least_as_strong_as_its_first_member(
    problem: tuple[nn.Module, Tensor, Tensor], version: str
) -> None:
    """The ensemble leaves at most as many robust as APGD-CE alone; run() agrees with evaluate()."""
    model, x, y = problem
    threat = al.ThreatModel("l2", 0.4)
    ensemble = AutoAttack(threat, version=version)
    fab_t = ["FAB-T"] if version == "standard" else []  # issue 14: the standard version runs FAB-T
    assert [name for name, _ in ensemble.members()] == ["APGD-CE", "APGD-T", *fab_t, "Square"]
    out = ensemble.evaluate(model, x, y, generator=seeded(0))
    apgd_ce = ensemble.members()[0][1].run(model, x, y, generator=seeded(0))
    assert out.robust.sum() <= (~apgd_ce.success).sum()
    result = ensemble.run(model, x, y, generator=seeded(0))
    assert torch.equal(result.x_adv, out.x_adv)
    assert torch.equal(~result.success, out.robust)
    assert threat.contains(result.x_adv, x).all()


def test_l1_uses_only_l1_members() -> None:
    """The ℓ1 ensemble is APGD-CE, APGD-T, FAB-T and (session 3, as the reference) Square at ℓ1; a
    member without an ℓ1 version (DeepFool, ℓ2 only) is refused."""
    names = [name for name, _ in AutoAttack(al.ThreatModel("l1", 1.0)).members()]
    assert names == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    with pytest.raises(ValueError, match="l1"):
        AutoAttack(al.ThreatModel("l1", 1.0), version="custom", attacks=("deepfool",))


def test_versions_and_options() -> None:
    threat = al.ThreatModel("linf", 0.1)
    fast = dict(AutoAttack(threat, version="fast").members())
    assert fast["APGD-T"].num_targets == 3  # type: ignore[attr-defined]
    assert fast["Square"] == Square(threat, queries=1000)
    standard = dict(AutoAttack(threat).members())
    assert (standard["APGD-T"].steps, standard["APGD-T"].num_targets) == (100, 4)  # type: ignore[attr-defined]
    assert standard["Square"].queries == 5000  # type: ignore[attr-defined]
    assert build_attack("autoattack", threat, version="fast") == AutoAttack(threat, version="fast")
    with pytest.raises(ValueError, match="version"):
        AutoAttack(threat, version="plus")
    with pytest.raises(ValueError, match="attacks"):
        AutoAttack(threat, version="custom")
    with pytest.raises(ValueError, match="attacks"):
        AutoAttack(threat, attacks=("pgd",))
    with pytest.raises(ValueError, match="stepz"):
        AutoAttack(threat, version="custom", attacks=({"name": "pgd", "stepz": 3},))
    with pytest.raises(ValueError, match="member"):
        AutoAttack(threat, version="custom", attacks=("autoattack",))


# ----------------------------------------------------------------------------- resumable state


def _kill_square(monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Square, "run", killed)


def test_resume_after_a_kill(
    problem: tuple[nn.Module, Tensor, Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in the last member, a new object resumes from the state file and ends as an unbroken run."""
    model, x, y = problem
    threat = al.ThreatModel("linf", EPS)
    attacks = ({"name": "apgd", "steps": 10, "early_stop": True}, {"name": "square", "queries": 200})
    state = tmp_path / "state.json"
    reference = AutoAttack(threat, version="custom", attacks=attacks).evaluate(
        model, x, y, generator=seeded(3)
    )

    with monkeypatch.context() as patch:
        _kill_square(patch)
        with pytest.raises(KeyboardInterrupt):
            AutoAttackState(str(state)).evaluate(
                AutoAttack(threat, version="custom", attacks=attacks), model, x, y, generator=seeded(3)
            )
    saved = json.loads(state.read_text())
    (entry,) = saved["entries"].values()
    assert entry["done"] == ["apgd"]
    assert entry["broken_by"] == torch.where(reference.broken_by == 1, ROBUST, reference.broken_by).tolist()

    resumed = AutoAttackState(str(state)).evaluate(
        AutoAttack(threat, version="custom", attacks=attacks), model, x, y, generator=seeded(3)
    )
    assert resumed.resumed == 1
    assert resumed.seconds[0] == 0.0
    assert torch.equal(resumed.broken_by, reference.broken_by)
    assert torch.equal(resumed.x_adv, reference.x_adv)
    # APGD's gradients were not spent again; Square's queries were.
    assert resumed.num_grads == 0 < reference.num_grads

    # Once everything is done, a third call attacks nothing.
    again = AutoAttackState(str(state)).evaluate(
        AutoAttack(threat, version="custom", attacks=attacks), model, x, y
    )
    assert again.resumed == 2
    assert again.num_forwards == len(y)
    assert torch.equal(again.x_adv, reference.x_adv)


def test_state_file_refuses_another_evaluation(
    problem: tuple[nn.Module, Tensor, Tensor], tmp_path: Path
) -> None:
    """A state file written under another threat model or version is refused; a garbage file too."""
    model, x, y = problem
    state = tmp_path / "state.json"
    attacks = ("fgsm",)
    AutoAttackState(str(state)).evaluate(
        AutoAttack(al.ThreatModel("linf", EPS), version="custom", attacks=attacks), model, x, y
    )
    for threat, members in [
        (al.ThreatModel("linf", 2 * EPS), attacks),
        (al.ThreatModel("l2", EPS), attacks),
        (al.ThreatModel("linf", EPS), ("fgsm", "pgd")),
    ]:
        with pytest.raises(ValueError, match="state_path"):
            AutoAttackState(str(state)).evaluate(
                AutoAttack(threat, version="custom", attacks=members), model, x, y
            )
    state.write_text("{not json")
    with pytest.raises(ValueError, match="state_path"):
        AutoAttackState(str(state)).evaluate(
            AutoAttack(al.ThreatModel("linf", EPS), version="custom", attacks=attacks), model, x, y
        )


def test_state_file_keeps_one_entry_per_batch(
    problem: tuple[nn.Module, Tensor, Tensor], tmp_path: Path
) -> None:
    """Batches of one evaluation share a file: each gets its entry (keyed by a hash of model, x and y)."""
    model, x, y = problem
    state = tmp_path / "state.json"
    attack = AutoAttack(al.ThreatModel("linf", EPS), version="custom", attacks=("fgsm",))
    saved = AutoAttackState(str(state))
    first = saved.evaluate(attack, model, x[:32], y[:32])
    saved.evaluate(attack, model, x[32:], y[32:])
    assert len(json.loads(state.read_text())["entries"]) == 2
    assert saved.evaluate(attack, model, x[:32], y[:32]).resumed == 1
    assert torch.equal(saved.evaluate(attack, model, x[:32], y[:32]).broken_by, first.broken_by)
    # Another model is another entry, never the old flags.
    other = nn.Sequential(nn.Linear(8, 3)).double().eval()
    assert saved.evaluate(attack, other, x[:32], y[:32]).resumed == 0


def test_default_attack_of_evaluation(problem: tuple[nn.Module, Tensor, Tensor]) -> None:
    """evaluation.evaluate runs the ensemble like any attack; its worst case is no better than PGD's."""
    model, x, y = problem
    threat = al.ThreatModel("linf", EPS)
    attacks = {
        "PGD": al.attacks.PGD(threat, steps=10, early_stop=True),
        "AutoAttack": AutoAttack(threat, version="fast"),
    }
    ev = al.evaluation.evaluate(model, (x, y), threat, attacks, quiet=True)
    assert ev.robust_accuracy["AutoAttack"] <= ev.robust_accuracy["PGD"]
    assert isinstance(AutoAttack(threat, version="fast").evaluate(model, x, y), AutoAttackResult)


def test_default_of_the_cli_and_the_main_job() -> None:
    """`advlearn evaluate` attacks with AutoAttack unless told otherwise; the main job reports it last."""
    from advlearn.cli import build_parser
    from advlearn.evaluation import default_attacks
    from advlearn.experiments.main_job import default_config

    args = build_parser().parse_args(["evaluate", "--model", "m", "--eps", "0.3"])
    assert args.attack == "autoattack"
    for quick in (False, True):
        assert default_config(quick).evaluate.attacks[-1].name == "autoattack"
    assert isinstance(list(default_attacks(al.ThreatModel("linf", 0.1)).values())[-1], AutoAttack)
