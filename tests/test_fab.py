"""FAB and FAB-T: the box-constrained hyperplane projections, the linear closed form, the contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import FAB, FABT, fab, fab_t
from advlearn.threat import get_norm
from conftest import Trained

DUAL = {"linf": 1.0, "l2": 2.0, "l1": float("inf")}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_norm(norm: str, w: np.ndarray, c: float, lower: np.ndarray, upper: np.ndarray) -> float | None:
    """The minimal norm of d with ⟨w, d⟩ = c in the box, by a generic solver (None when infeasible)."""
    d = len(w)
    if norm == "l1":  # d = d⁺ − d⁻
        bounds = [(0, max(u, 0)) for u in upper] + [(0, max(-lo, 0)) for lo in lower]
        out = linprog(np.ones(2 * d), A_eq=np.r_[w, -w][None], b_eq=[c], bounds=bounds)
        return float(out.fun) if out.success else None
    if norm == "linf":  # variables d and s, −s ≤ d ≤ s
        a_ub = np.r_[np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]]
        out = linprog(
            np.r_[np.zeros(d), 1.0],
            A_ub=a_ub,
            b_ub=np.zeros(2 * d),
            A_eq=np.r_[w, 0.0][None],
            b_eq=[c],
            bounds=[*zip(lower, upper, strict=True), (0, None)],
        )
        return float(out.fun) if out.success else None
    # ℓ2: |dᵢ| = min(λ|wᵢ|, roomᵢ) by KKT; find λ by bisection on the monotone reach.
    sign = np.sign(w) * np.sign(c)
    room = np.where(sign >= 0, upper, -lower)
    gain = np.abs(w)
    if (gain * room).sum() < abs(c):
        return None
    lo_l, hi_l = 0.0, 1e6
    for _ in range(200):
        mid = (lo_l + hi_l) / 2
        if (gain * np.minimum(mid * gain, room)).sum() < abs(c):
            lo_l = mid
        else:
            hi_l = mid
    return float(np.linalg.norm(np.minimum(hi_l * gain, room)))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    norm=st.sampled_from(["linf", "l2", "l1"]),
    dim=st.integers(1, 7),
    zeros=st.integers(0, 2),
)
def test_hyperplane_step_is_the_minimal_norm_point(seed: int, norm: str, dim: int, zeros: int) -> None:
    """hyperplane_step reaches ⟨w, d⟩ = c inside the box with the least norm a generic solver finds."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, dim, generator=g, dtype=torch.float64)
    w[0, : min(zeros, dim - 1)] = 0.0
    t = torch.rand(1, dim, generator=g, dtype=torch.float64)
    lower, upper = -t, 1 - t
    c = 0.7 * torch.randn(1, generator=g, dtype=torch.float64)
    d = get_norm(norm).hyperplane_step(w, c, lower, upper)
    assert ((d >= lower - 1e-12) & (d <= upper + 1e-12)).all()
    reference = _reference_norm(norm, w[0].numpy(), float(c), lower[0].numpy(), upper[0].numpy())
    if reference is None:
        # Out of reach: the box corner that gets closest, c·⟨w, d⟩ as large as the box allows.
        best = (w.abs() * torch.where(w * c >= 0, upper, -lower)).sum()
        assert float((w * d).sum() * c.sign()) == pytest.approx(float(best), rel=1e-9, abs=1e-12)
    else:
        assert float((w * d).sum()) == pytest.approx(float(c), abs=1e-9)
        assert float(get_norm(norm)(d)) == pytest.approx(reference, rel=1e-6, abs=1e-9)


class Affine(nn.Module):
    """A binary linear model: logits ``(0, wᵀx + b)``."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("attack", [fab, fab_t])
def test_linear_binary_model_closed_form(norm: str, attack: object) -> None:
    """FAB finds |wᵀx + b| / ‖w‖_q, the minimal ℓp distance to the boundary, up to its 5 % overshoot."""
    g = seeded(0)
    w = torch.randn(12, generator=g, dtype=torch.float64)
    model = Affine(w, 0.3)
    x = 0.2 + 0.6 * torch.rand(10, 12, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    # A box far from x, so that the closed form (no box) is the minimum.
    threat = al.ThreatModel(norm, eps=1e3, bounds=(-50.0, 50.0))
    out = attack(model, x, y, threat, steps=20)  # type: ignore[operator]
    exact = (x @ w + 0.3).abs() / torch.linalg.vector_norm(w, ord=DUAL[norm])
    found = get_norm(norm)(out.x_adv - x)
    assert out.success.all()
    assert (found >= exact * (1 - 1e-9)).all(), "no point closer than the boundary can fool the model"
    assert (found <= exact * 1.01).all(), (found / exact).max()


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_box_binds_in_l1(norm: str) -> None:
    """With the box binding, the minimal point still lies in the box and on the far side of the boundary."""
    w = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    model = Affine(w, -2.5)
    x = torch.tensor([[0.3, 0.3, 0.3]], dtype=torch.float64)  # wᵀx + b = −1.15: class 0
    threat = al.ThreatModel(norm, eps=10.0)
    out = fab(model, x, torch.tensor([0]), threat, steps=50)
    assert out.success.all()
    assert threat.contains(out.x_adv, x).all()
    if norm == "l1":
        # x₀ can move by 0.7 (gain 2.1 ≥ 1.15 needed): the exact minimum is 1.15 / 3.
        assert float(get_norm(norm)(out.x_adv - x)) == pytest.approx(1.15 / 3, rel=0.01)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_points_in_threat_set_and_small_eps_projects(norm: str, trained: Trained) -> None:
    """Every returned point lies in ball ∩ box; success is measured there; a larger ε breaks more."""
    eps = {"linf": 0.05, "l2": 0.15, "l1": 0.3}[norm]
    counts = []
    for scale in (1.0, 4.0):
        threat = al.ThreatModel(norm, eps * scale)
        out = FABT(threat, steps=20, num_targets=2).run(trained.model, trained.x, trained.y)
        assert threat.contains(out.x_adv, trained.x).all()
        with torch.no_grad():
            assert torch.equal(out.success, trained.model(out.x_adv).argmax(1) != trained.y)
        counts.append(int(out.success.sum()))
    assert counts[0] <= counts[1]
    assert counts[1] > 0


def test_early_stop_keeps_the_outcome(trained: Trained) -> None:
    """early_stop only stops minimizing once a point inside the ball fools: the same examples are broken."""
    threat = al.ThreatModel("l2", 0.3)
    full = fab_t(trained.model, trained.x, trained.y, threat, steps=20, num_targets=2)
    quick = fab_t(trained.model, trained.x, trained.y, threat, steps=20, num_targets=2, early_stop=True)
    assert torch.equal(full.success, quick.success)
    assert quick.num_grads < full.num_grads


def test_restarts_and_untargeted_at_least_as_strong(trained: Trained) -> None:
    """More restarts keep the best of each; they never lose an example the first run broke."""
    threat = al.ThreatModel("linf", 0.06)
    one = fab(trained.model, trained.x, trained.y, threat, steps=15)
    three = fab(trained.model, trained.x, trained.y, threat, steps=15, restarts=3, generator=seeded(0))
    assert (three.success | ~one.success).all()


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"steps": 0}, "steps"),
        ({"eta": 0.5}, "eta"),
        ({"beta": 2.0}, "beta"),
        ({"alpha_max": -1}, "alpha_max"),
    ],
)
def test_rejects_bad_options(options: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        FAB(al.ThreatModel("linf", 0.1), **options)
    with pytest.raises(ValueError, match="num_targets"):
        FABT(al.ThreatModel("linf", 0.1), num_targets=0)


def test_needs_a_box(trained: Trained) -> None:
    with pytest.raises(ValueError, match="bounds"):
        fab(trained.model, trained.x, trained.y, al.ThreatModel("l2", 0.1, bounds=None))


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hyperplane_step_in_half_precision_is_solved_in_fp32(norm: str, dtype: torch.dtype) -> None:
    """fp16/bf16 rows are solved in fp32 (the water-filling sentinels overflow half) and come back
    in the input's dtype, equal to the fp32 solution rounded (found by the fuzz of issue 15)."""
    g = torch.Generator().manual_seed(0)
    w, lo, hi = (torch.rand(3, 16, generator=g) for _ in range(3))
    lo = -lo
    c = torch.rand(3, generator=g)
    w, lo, hi, c = (t.to(dtype) for t in (w, lo, hi, c))
    got = get_norm(norm).hyperplane_step(w, c, lo, hi)
    want = get_norm(norm).hyperplane_step(w.float(), c.float(), lo.float(), hi.float()).to(dtype)
    assert got.dtype == dtype
    assert torch.equal(got, want)
