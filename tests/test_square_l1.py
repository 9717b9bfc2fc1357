"""Square at ℓ1 (the reference's L1 branch, Croce & Hein 2021): inside ball ∩ box, stronger than noise,
in AutoAttack's ℓ1 standard version, and resumable like the other norms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import AutoAttack, square, uniform_noise
from advlearn.evaluation.state import AutoAttackState


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@settings(max_examples=12, deadline=None)
@given(
    shape=st.sampled_from([(3, 1, 7, 7), (2, 3, 6, 5), (4, 10), (2, 2, 9)]),
    eps=st.floats(0.05, 30.0),
    per_example=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_point_in_the_l1_ball_and_the_box(
    shape: tuple[int, ...], eps: float, per_example: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    x[..., 0] = 0.0  # pixels on the box's faces, where a bad projection leaves it
    x[..., -1] = 1.0
    y = torch.randint(0, 3, (shape[0],), generator=g)
    radius = eps * (0.5 + torch.rand(shape[0], generator=g)) if per_example else eps
    threat = al.ThreatModel("l1", radius)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape[1:]).prod()), 3))
    result = square(model, x, y, threat, queries=25, generator=g)
    assert threat.contains(result.x_adv, x).all()
    assert result.x_adv.shape == x.shape


def test_at_least_as_strong_as_random_l1_noise(digits_mlp: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = digits_mlp
    x, y = x[:100].reshape(-1, 1, 8, 8), y[:100]
    images = nn.Sequential(nn.Flatten(), model)
    threat = al.ThreatModel("l1", 2.0)
    fooled = square(images, x, y, threat, queries=150, generator=seeded(0)).success
    # Noise gets the same 150 tries per example; an example counts if any try fools it.
    noisy = torch.zeros_like(fooled)
    for i in range(150):
        noisy |= uniform_noise(images, x, y, threat, generator=seeded(i)).success
    assert int(fooled.sum()) >= int(noisy.sum()) + 10
    assert threat.contains(square(images, x, y, threat, queries=20).x_adv, x).all()


def test_in_the_l1_standard_version_as_the_reference() -> None:
    members = dict(AutoAttack(al.ThreatModel("l1", 10.0)).members())
    assert list(members) == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert members["Square"].queries == 5000  # type: ignore[attr-defined]


def test_resume_at_l1_equals_an_unbroken_run(
    digits_mlp: tuple[nn.Module, Tensor, Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, y = digits_mlp
    x, y = x[:40].reshape(-1, 1, 8, 8), y[:40]
    images = nn.Sequential(nn.Flatten(), model)
    threat = al.ThreatModel("l1", 3.0)  # APGD's one step leaves examples that Square breaks (7 of 40)
    attacks = ({"name": "apgd", "steps": 1, "early_stop": True}, {"name": "square", "queries": 100})
    reference = AutoAttack(threat, version="custom", attacks=attacks).evaluate(
        images, x, y, generator=seeded(3), quiet=True
    )
    assert (reference.broken_by == 1).any(), "Square should break something here"

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed")

    state = tmp_path / "state.json"
    with monkeypatch.context() as patch:
        patch.setattr(al.attacks.Square, "run", killed)
        with pytest.raises(KeyboardInterrupt):
            AutoAttackState(str(state)).evaluate(
                AutoAttack(threat, version="custom", attacks=attacks), images, x, y, generator=seeded(3)
            )
    resumed = AutoAttackState(str(state)).evaluate(
        AutoAttack(threat, version="custom", attacks=attacks), images, x, y, generator=seeded(3)
    )
    assert resumed.resumed == 1
    assert torch.equal(resumed.broken_by, reference.broken_by)
    assert torch.equal(resumed.x_adv, reference.x_adv)
