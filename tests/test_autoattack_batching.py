"""AutoAttack's members run in chunks of at most ``batch_size`` over the whole call: same per-example
result for any chunk size, no pass over more than ``batch_size`` examples, resumable chunk by chunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn._keyed_random import KeyedGenerator
from advlearn.attacks import AutoAttack, Square
from advlearn.attacks.ensemble import ROBUST
from advlearn.evaluation.state import AutoAttackState

THREAT = al.ThreatModel("linf", eps=0.08)
# Every member draws random numbers (random starts, Square's windows, FAB's restarts) or picks targets.
MEMBERS = (
    {"name": "apgd", "steps": 10, "early_stop": True},
    {"name": "apgd_t", "steps": 5, "num_targets": 3, "early_stop": True},
    {"name": "fab_t", "steps": 5, "num_targets": 2, "early_stop": True},
    {"name": "square", "queries": 60},
)


class _Recording(nn.Module):
    """The model, recording the batch size of every pass through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.sizes = model, []  # type: list[int]

    def forward(self, x: Tensor) -> Tensor:
        self.sizes.append(int(x.shape[0]))
        out: Tensor = self.model(x)
        return out


@pytest.fixture
def digits(digits_mlp: tuple[nn.Module, Tensor, Tensor]) -> tuple[nn.Module, Tensor, Tensor]:
    model, x, y = digits_mlp
    return model, x[:40], y[:40]


def keyed(seed: int = 0) -> KeyedGenerator:
    return KeyedGenerator(seed, torch.arange(100, 140))  # as evaluate() keys examples 100-139


def test_result_does_not_depend_on_the_batch_size(digits: tuple[nn.Module, Tensor, Tensor]) -> None:
    """Chunks of 3, of 7 and one chunk give each example the same point and the same breaking member."""
    model, x, y = digits
    runs = [
        AutoAttack(THREAT, version="custom", attacks=MEMBERS, batch_size=size).evaluate(
            model, x, y, generator=keyed(), quiet=True
        )
        for size in (3, 7, None)
    ]
    reference = runs[-1]
    # The case is not trivial: members after the first break examples, and some stay robust.
    assert bool((reference.broken_by >= 1).any())
    assert bool(reference.robust.any())
    for run in runs[:-1]:
        assert torch.equal(run.broken_by, reference.broken_by)
        assert torch.equal(run.x_adv, reference.x_adv)
        assert bool(THREAT.contains(run.x_adv, x).all())
    # A torch generator: the draws are keyed by the position in the call, the same for any chunk size.
    plain = [
        AutoAttack(THREAT, version="custom", attacks=MEMBERS, batch_size=size).evaluate(
            model, x, y, generator=torch.Generator().manual_seed(1), quiet=True
        )
        for size in (3, 40)
    ]
    assert torch.equal(plain[0].broken_by, plain[1].broken_by)
    assert torch.equal(plain[0].x_adv, plain[1].x_adv)


@pytest.mark.parametrize("version", ["custom", "standard", "rand"])
def test_no_pass_sees_more_than_the_batch_size(
    digits: tuple[nn.Module, Tensor, Tensor], version: str
) -> None:
    """Every forward pass (clean, checks, members, run's final one) sees at most ``batch_size`` examples,
    and every chunk a member gets but its last is full."""
    model, x, y = digits
    recording = _Recording(model)
    attacks = MEMBERS if version == "custom" else ()
    attack = AutoAttack(THREAT, version=version, attacks=attacks, batch_size=6)
    if version != "custom":  # the full versions are slow: a few examples, a chunk of 3
        x, y, attack = x[:8], y[:8], AutoAttack(THREAT, version=version, batch_size=3)
    seen: list[list[int]] = []

    def member_sizes(run: object) -> object:
        def wrapped(self: object, target: nn.Module, xs: Tensor, ys: Tensor, **kw: object) -> object:
            seen[-1].append(int(xs.shape[0]))
            return run(self, target, xs, ys, **kw)  # type: ignore[operator]

        return wrapped

    with pytest.MonkeyPatch.context() as patch:
        for cls in {type(member) for _, member in attack.members()}:
            patch.setattr(cls, "run", member_sizes(cls.run))
        seen.append([])
        result = attack.run(recording, x, y, generator=keyed())
    assert bool(THREAT.contains(result.x_adv, x).all())
    size = attack.batch_size
    assert size is not None
    assert recording.sizes
    assert max(recording.sizes) <= size
    assert seen[0]
    assert max(seen[0]) <= size
    assert sum(s < size for s in seen[0]) <= len(attack.members())  # only a member's last chunk is short
    assert len(recording.sizes) > len(seen[0])  # the clean pass went in chunks too, not in one


def test_resume_mid_member_equals_an_uninterrupted_run(
    digits: tuple[nn.Module, Tensor, Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in Square's second chunk, the state file holds its first chunk; resumed, the result is
    that of a run never interrupted, and Square does not attack the first chunk again."""
    model, x, y = digits
    attack = AutoAttack(THREAT, version="custom", attacks=MEMBERS, batch_size=4)
    reference = attack.evaluate(model, x, y, generator=keyed(), quiet=True)
    standing = int(((reference.broken_by == ROBUST) | (reference.broken_by == 3)).sum())
    assert standing > 4  # Square runs more than one chunk

    real, calls = Square.run, []

    def killed_on_the_second_chunk(self: Square, *args: object, **kwargs: object) -> object:
        calls.append(len(args[1]))  # type: ignore[arg-type]
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    state = tmp_path / "state.json"
    with monkeypatch.context() as patch:
        patch.setattr(Square, "run", killed_on_the_second_chunk)
        with pytest.raises(KeyboardInterrupt):
            AutoAttackState(state).evaluate(attack, model, x, y, generator=keyed())
    (entry,) = json.loads(state.read_text())["entries"].values()
    assert entry["done"] == ["apgd", "apgd_t", "fab_t"]
    assert len(entry["covered"]) == 4  # Square's first chunk is saved

    resumed = AutoAttackState(state).evaluate(attack, model, x, y, generator=keyed())
    assert resumed.resumed == 3
    assert torch.equal(resumed.broken_by, reference.broken_by)
    assert torch.equal(resumed.x_adv, reference.x_adv)
    assert resumed.num_forwards < reference.num_forwards  # the first chunk's queries were not spent again


def test_a_saved_chunk_is_checked(digits: tuple[nn.Module, Tensor, Tensor], tmp_path: Path) -> None:
    """A state entry whose running member claims an example it did not cover is refused."""
    model, x, y = digits
    attack = AutoAttack(THREAT, version="custom", attacks=MEMBERS[:2], batch_size=4)
    state = tmp_path / "state.json"
    AutoAttackState(state).evaluate(attack, model, x, y, generator=keyed())
    data = json.loads(state.read_text())
    (key,) = data["entries"]
    entry = data["entries"][key]
    broken = entry["broken_by"]
    first = next(i for i, b in enumerate(broken) if b >= 0)
    entry["done"] = entry["done"][:1]
    entry["covered"] = []  # the example broken by the second member is not covered: inconsistent
    broken[first] = 1
    state.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="state_path"):
        AutoAttackState(state).evaluate(attack, model, x, y, generator=keyed())


def test_bad_batch_size() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            AutoAttack(THREAT, batch_size=bad)  # type: ignore[arg-type]


def test_evaluate_runs_autoattack_once_over_the_set(digits: tuple[nn.Module, Tensor, Tensor]) -> None:
    """evaluate() calls AutoAttack once over every batch, in chunks of its batch size: the per-example
    figure is that of one call per batch (same keys, same draws), and no pass exceeds the batch size."""
    from advlearn.attacks.ensemble import recording

    model, x, y = digits
    attack = AutoAttack(THREAT, version="custom", attacks=MEMBERS)
    recorder = _Recording(model)
    with recording() as records:
        ev = al.evaluation.evaluate(recorder, (x, y), THREAT, {"AA": attack}, batch_size=8, quiet=True)
    assert len(records) == 1  # one call, not one per batch
    assert max(recorder.sizes) <= 8
    per_batch = []
    for start in range(0, len(y), 8):  # what the evaluation layer did before: one call per batch
        keys = torch.arange(start, start + 8)
        out = attack.evaluate(
            model, x[start : start + 8], y[start : start + 8], generator=KeyedGenerator(0, keys)
        )
        per_batch.append(out.robust)
    assert torch.equal(ev.correct["AA"], torch.cat(per_batch))
    assert torch.equal(records[0][1].robust, ev.correct["AA"])
    assert 0 < int(ev.correct["AA"].sum()) < int(ev.correct["clean"].sum())
