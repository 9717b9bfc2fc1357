"""Sparse APGD-ℓ1 (Croce & Hein 2021, "Mind the box"): the exact ℓ1 ∩ box projection, the sparse step,
the 3ε→2ε→ε schedule, and strength against the one-coordinate step it replaced (issue 14)."""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import apgd, apgd_t
from advlearn.threat import L1

APGD_MODULE = sys.modules["advlearn.attacks.apgd"]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), dim=st.integers(1, 9), eps=st.floats(0.0, 3.0))
def test_projection_is_the_nearest_point_of_ball_and_box(seed: int, dim: int, eps: float) -> None:
    """project_in_box is feasible and no feasible point of a dense sample is nearer (KKT by bisection)."""
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(3, dim, generator=g, dtype=torch.float64)
    x0 = torch.rand(3, dim, generator=g, dtype=torch.float64)
    lower, upper = -x0, 1 - x0
    e = torch.full((3,), eps, dtype=torch.float64)
    d = L1().project_in_box(z, e, lower, upper)
    assert (d.abs().sum(1) <= e + 1e-9).all()
    assert ((d >= lower - 1e-12) & (d <= upper + 1e-12)).all()
    # The same soft-threshold found by bisection on θ.
    room = torch.where(z >= 0, upper, -lower)

    def mass(theta: Tensor) -> Tensor:
        return torch.minimum((z.abs() - theta[:, None]).clamp_min(0), room).sum(1)

    lo, hi = torch.zeros(3, dtype=torch.float64), z.abs().amax(1)
    for _ in range(200):
        mid = (lo + hi) / 2
        big = mass(mid) > e
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    theta = torch.where(mass(torch.zeros(3, dtype=torch.float64)) <= e, 0.0, hi)
    expected = z.sign() * torch.minimum((z.abs() - theta[:, None]).clamp_min(0), room)
    torch.testing.assert_close(d, expected, atol=1e-9, rtol=0)


def test_sparse_ascent_spreads_unit_mass_over_the_top_fraction() -> None:
    g = torch.tensor([[0.5, -4.0, 3.0, 0.0, 1.0, -2.0]])
    for fraction, count in ((1e-6, 1), (0.5, 3), (1.0, 5)):
        d = L1().sparse_ascent(g, torch.tensor([fraction]))
        assert float(d.abs().sum()) == pytest.approx(1.0)
        assert int((d != 0).sum()) == count
        assert (d * g >= 0).all()
    torch.testing.assert_close(L1().sparse_ascent(g, torch.tensor([1e-6])), L1().steepest_ascent(g))


@pytest.fixture(scope="module")
def digits(digits_mlp: tuple[nn.Module, Tensor, Tensor]) -> tuple[nn.Module, Tensor, Tensor]:
    """conftest's undefended MLP on 8×8 digits with the first 200 of its held-out digits."""
    model, x, y = digits_mlp
    return model, x[:200], y[:200]


@pytest.mark.parametrize("schedule", [False, True])
def test_points_in_ball_and_box_and_budget(schedule: bool, digits: tuple[nn.Module, Tensor, Tensor]) -> None:
    """Every point lies in ball ∩ box (per-example ε too); the schedule spends the same gradients."""
    model, x, y = digits
    eps = torch.linspace(0.5, 3.0, len(y))
    threat = al.ThreatModel("l1", eps)
    out = apgd(
        model, x, y, threat, steps=20, eps_schedule=schedule, generator=torch.Generator().manual_seed(0)
    )
    assert threat.contains(out.x_adv, x).all()
    assert out.num_grads == 20 * len(y)
    assert out.num_forwards == (3 if schedule else 1) * len(y)
    t = apgd_t(model, x, y, threat, steps=10, num_targets=2, eps_schedule=schedule, early_stop=True)
    assert threat.contains(t.x_adv, x).all()
    with torch.no_grad():
        assert torch.equal(out.success, model(out.x_adv).argmax(1) != y)


def test_unbounded_ball_works() -> None:
    """bounds=None (hidden activations): the sparse step runs without a box."""
    model = nn.Linear(6, 3)
    x, y = torch.randn(5, 6), torch.zeros(5, dtype=torch.long)
    threat = al.ThreatModel("l1", 0.5, bounds=None)
    out = apgd(model, x, y, threat, steps=10)
    assert threat.contains(out.x_adv, x).all()


def test_at_least_as_strong_as_the_one_coordinate_step(
    digits: tuple[nn.Module, Tensor, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the same budget (50 steps, same seed) sparse APGD-ℓ1 leaves no more robust digits than the
    one-coordinate step it replaced, at ε = 2 (issue 14; see the report for where it is weaker)."""
    model, x, y = digits
    threat = al.ThreatModel("l1", 2.0)
    sparse = apgd(model, x, y, threat, steps=50, generator=torch.Generator().manual_seed(0))
    monkeypatch.delitem(APGD_MODULE._RUNS, L1)  # back to Algorithm 1 with the ℓ1 steepest ascent
    one_coordinate = apgd(model, x, y, threat, steps=50, generator=torch.Generator().manual_seed(0))
    assert int((~sparse.success).sum()) <= int((~one_coordinate.success).sum())
