"""ThreatModel geometry: closed forms, an independent L1 reference, properties, random-start statistics."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import brentq

from advlearn import ThreatModel
from advlearn.threat import NORMS

F64 = torch.float64
WIDE = (-100.0, 100.0)  # bounds that never bind, to test the ball alone
PROPERTY = settings(max_examples=50, deadline=None)
RADII = st.floats(0.0, 5.0, allow_subnormal=False)


def t64(values: object) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def dual_norm(g: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    return torch.linalg.vector_norm(g.flatten(1), ord=threat.dual_ord, dim=1)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


@st.composite
def problems(draw: st.DrawFn, ranges: tuple[tuple[float, float], ...] = ((-10.0, 10.0),)) -> tuple:
    """A radius (one float, or a (B,) tensor) and one float64 (B, D) batch per range, all of one shape."""
    b, d = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    arrays = [
        torch.tensor(draw(hnp.arrays(np.float64, (b, d), elements=st.floats(lo, hi, allow_subnormal=False))))
        for lo, hi in ranges
    ]
    eps = draw(st.one_of(RADII, hnp.arrays(np.float64, (b,), elements=RADII).map(torch.tensor)))
    return (eps, *arrays)


# ----------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"norm": "l3", "eps": 0.1}, "norm"),
        ({"norm": "Linf", "eps": 0.1}, "norm"),
        ({"norm": "linf", "eps": -0.1}, "eps"),
        ({"norm": "linf", "eps": math.nan}, "eps"),
        ({"norm": "linf", "eps": math.inf}, "eps"),
        ({"norm": "linf", "eps": True}, "eps"),
        ({"norm": "linf", "eps": "0.1"}, "eps"),
        ({"norm": "linf", "eps": torch.tensor([0.1, -0.1])}, "eps"),
        ({"norm": "linf", "eps": torch.tensor([0.1, math.nan])}, "eps"),
        ({"norm": "linf", "eps": torch.tensor([[0.1, 0.2]])}, "eps"),
        ({"norm": "linf", "eps": torch.tensor(0.1)}, "eps"),
        ({"norm": "linf", "eps": torch.tensor([1, 2])}, "eps"),
        ({"norm": "linf", "eps": 0.1, "bounds": (1.0, 0.0)}, "bounds"),
        ({"norm": "linf", "eps": 0.1, "bounds": (0.5, 0.5)}, "bounds"),
        ({"norm": "linf", "eps": 0.1, "bounds": (0.0, math.inf)}, "bounds"),
        ({"norm": "linf", "eps": 0.1, "bounds": (0.0, 1.0, 2.0)}, "bounds"),
        (
            {"norm": "linf", "eps": 0.1, "bounds": "wide"},
            "bounds",
        ),  # None is the unbounded ball (tested below)
    ],
)
def test_invalid_arguments_raise(kwargs: dict, name: str) -> None:
    """An unknown norm, a negative/NaN/inf/non-float eps or bad bounds raise a ValueError naming it."""
    with pytest.raises(ValueError, match=name):
        ThreatModel(**kwargs)


def test_per_example_eps_must_match_batch() -> None:
    """A (B,) eps tensor of the wrong length is rejected by every method that meets a batch."""
    threat = ThreatModel("l2", torch.tensor([0.1, 0.2, 0.3]))
    x = torch.full((2, 4), 0.5)
    for call in (
        lambda: threat.eps_for(x),
        lambda: threat.contains(x, x),
        lambda: threat.project(x, x),
        lambda: threat.project_ball(x),
        lambda: threat.random_init(x),
    ):
        with pytest.raises(ValueError, match="eps"):
            call()


def test_fields_are_normalized_and_frozen() -> None:
    """An int eps and int bounds become floats; a ThreatModel cannot be mutated."""
    threat = ThreatModel("l1", 1, bounds=(0, 255))
    assert threat.eps == 1.0
    assert isinstance(threat.eps, float)
    assert threat.bounds == (0.0, 255.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        threat.eps = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("norm", "ord_", "dual"), [("linf", math.inf, 1.0), ("l2", 2.0, 2.0), ("l1", 1.0, math.inf)]
)
def test_norm_name_and_per_example_norm(norm: str, ord_: float, dual: float) -> None:
    """threat.norm equals its name and, called, gives the per-example norm over all non-batch dims."""
    threat = ThreatModel(norm, 0.1)
    assert threat.norm == norm
    assert isinstance(threat.norm, str)
    assert threat.ord == ord_
    assert threat.dual_ord == dual
    delta = torch.randn(3, 2, 2, 2, dtype=F64)  # (B, C, H, W)
    flat = delta.reshape(3, -1).numpy()
    expected = {"linf": np.abs(flat).max(1), "l2": np.sqrt((flat**2).sum(1)), "l1": np.abs(flat).sum(1)}[norm]
    torch.testing.assert_close(threat.norm(delta), torch.from_numpy(expected))


def test_equality_and_hash() -> None:
    """ThreatModels are equal iff norm, eps (float or tensor) and bounds agree; equal ones hash alike."""
    base = ThreatModel("linf", 0.1)
    assert base == ThreatModel("linf", 0.1)
    assert hash(base) == hash(ThreatModel("linf", 0.1))
    assert base != ThreatModel("l2", 0.1)
    assert base != ThreatModel("linf", 0.2)
    assert base != ThreatModel("linf", 0.1, bounds=(-1.0, 1.0))
    assert base != "linf"
    tensor_eps = ThreatModel("linf", torch.tensor([0.1, 0.2]))
    assert tensor_eps == ThreatModel("linf", torch.tensor([0.1, 0.2]))
    assert hash(tensor_eps) == hash(ThreatModel("linf", torch.tensor([0.1, 0.2])))
    assert tensor_eps != ThreatModel("linf", torch.tensor([0.1, 0.3]))
    assert tensor_eps != ThreatModel("linf", torch.tensor([0.1, 0.2, 0.3]))
    assert ThreatModel("linf", torch.tensor([0.1])) != ThreatModel("linf", 0.1)


def test_select_and_with_eps() -> None:
    """select indexes a per-example eps (and keeps a shared one); with_eps changes only the radius."""
    threat = ThreatModel("l2", torch.tensor([0.1, 0.2, 0.3]), bounds=(-1.0, 1.0))
    assert torch.equal(threat.select(torch.tensor([2, 0])).eps, torch.tensor([0.3, 0.1]))
    assert torch.equal(threat.select(torch.tensor([True, False, True])).eps, torch.tensor([0.1, 0.3]))
    shared = ThreatModel("l2", 0.5)
    assert shared.select(torch.tensor([1])) == shared
    changed = shared.with_eps(0.25)
    assert changed == ThreatModel("l2", 0.25)
    assert shared.eps == 0.5


def test_eps_for_matches_dtype_and_batch() -> None:
    """eps_for gives a (B,) tensor of x's dtype, from a float or from the per-example tensor."""
    x = torch.zeros(3, 2, dtype=F64)
    assert torch.equal(ThreatModel("l1", 0.5).eps_for(x), t64([0.5, 0.5, 0.5]))
    eps = ThreatModel("l1", torch.tensor([0.1, 0.2, 0.3])).eps_for(x)
    assert eps.dtype == F64
    assert torch.allclose(eps, t64([0.1, 0.2, 0.3]))


# ----------------------------------------------------------------------------- projections: closed forms


@pytest.mark.parametrize(
    ("norm", "eps", "v", "expected"),
    [
        ("l1", 1.0, [3.0, 1.0, 0.2], [1.0, 0.0, 0.0]),
        ("l1", 1.0, [-3.0, 1.0, 0.2], [-1.0, 0.0, 0.0]),
        ("l1", 1.5, [2.0, -1.5, 0.0], [1.0, -0.5, 0.0]),
        ("l1", 1.0, [1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3]),
        ("l1", 1.0, [0.2, -0.3, 0.4], [0.2, -0.3, 0.4]),
        ("l1", 0.0, [0.2, -0.3, 0.4], [0.0, 0.0, 0.0]),
        ("l2", 1.0, [3.0, 4.0, 0.0], [0.6, 0.8, 0.0]),
        ("l2", 1.0, [0.3, -0.4, 0.0], [0.3, -0.4, 0.0]),
        ("l2", 0.0, [0.3, -0.4, 0.0], [0.0, 0.0, 0.0]),
        ("linf", 1.0, [3.0, -0.5, -2.0], [1.0, -0.5, -1.0]),
        ("linf", 1.0, [0.9, -0.9, 0.0], [0.9, -0.9, 0.0]),
    ],
)
def test_project_ball_closed_form(norm: str, eps: float, v: list[float], expected: list[float]) -> None:
    """project_ball gives the nearest point (L1 soft-threshold, L2 rescale, Linf clip); inside points stay."""
    threat = ThreatModel(norm, eps, bounds=WIDE)
    torch.testing.assert_close(threat.project_ball(t64([v])), t64([expected]), atol=1e-12, rtol=0)


def test_project_l1_readme_example_exact() -> None:
    """Projecting (3, 1, 0.2) onto the unit L1 ball around 0 gives exactly (1, 0, 0), in float32 too."""
    threat = ThreatModel("l1", eps=1.0, bounds=(-10.0, 10.0))
    out = threat.project(torch.tensor([[3.0, 1.0, 0.2]]), torch.zeros(1, 3))
    assert torch.equal(out, torch.tensor([[1.0, 0.0, 0.0]]))


def l1_projection_reference(v: np.ndarray, eps: float) -> np.ndarray:
    """The L1-ball projection ``sign(v)·max(|v| − θ, 0)``, θ from ``Σ max(|v| − θ, 0) = eps`` by brentq."""
    a = np.abs(v)
    if a.sum() <= eps:
        return v.copy()
    theta = brentq(lambda t: np.maximum(a - t, 0.0).sum() - eps, 0.0, a.max(), xtol=1e-15, rtol=1e-15)
    return np.sign(v) * np.maximum(a - theta, 0.0)


def test_project_l1_matches_reference() -> None:
    """The Duchi et al. L1 projection agrees with a root-finding reference on random (B, C, H, W) batches."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal((40, 2, 3, 3)) * rng.choice([0.01, 1.0, 30.0], size=(40, 1, 1, 1))
    v[0] = 0.0
    v[1] = 1.0  # all coordinates tied
    eps = rng.uniform(0.0, 4.0, size=40)
    threat = ThreatModel("l1", torch.from_numpy(eps), bounds=WIDE)
    out = threat.project_ball(torch.from_numpy(v))
    expected = np.stack(
        [l1_projection_reference(v[i].ravel(), eps[i]).reshape(v.shape[1:]) for i in range(40)]
    )
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-9, rtol=0)


def test_project_linf_is_exact_nearest_point_of_intersection() -> None:
    """For Linf, project(x, x0) is the coordinate-wise clip to [max(x0 − ε, lo), min(x0 + ε, hi)]."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(5, 7, generator=g, dtype=F64)
    x = 3 * torch.rand(5, 7, generator=g, dtype=F64) - 1
    threat = ThreatModel("linf", 0.2)
    expected = torch.minimum(torch.maximum(x, (x0 - 0.2).clamp_min(0)), (x0 + 0.2).clamp_max(1))
    torch.testing.assert_close(threat.project(x, x0), expected, atol=1e-15, rtol=0)


# ----------------------------------------------------------------------------- projections: properties


@pytest.mark.parametrize("norm", NORMS)
@PROPERTY
@given(problem=problems())
def test_project_ball_lands_in_ball_and_is_idempotent(norm: str, problem: tuple) -> None:
    """project_ball(v) lies in the ε-ball and projecting it again changes nothing."""
    eps, v = problem
    threat = ThreatModel(norm, eps, bounds=WIDE)
    p = threat.project_ball(v)
    radius = threat.eps_for(v)
    assert (threat.norm(p) <= radius * (1 + 1e-12) + 1e-12).all()
    torch.testing.assert_close(threat.project_ball(p), p, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
@PROPERTY
@given(problem=problems(ranges=((0.0, 1.0), (-3.0, 4.0))))
def test_project_lands_in_set_and_is_idempotent(norm: str, problem: tuple) -> None:
    """project(x, x0) lies in ball ∩ box and projecting it again changes nothing."""
    eps, x0, x = problem
    threat = ThreatModel(norm, eps)
    p = threat.project(x, x0)
    assert threat.contains(p, x0, atol=1e-12).all()
    torch.testing.assert_close(threat.project(p, x0), p, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
@PROPERTY
@given(problem=problems(ranges=((-10.0, 10.0), (-10.0, 10.0))), seed=st.integers(0, 2**32 - 1))
def test_project_ball_variational_inequality(norm: str, problem: tuple, seed: int) -> None:
    """⟨v − P(v), z − P(v)⟩ ≤ 0 for z in the ball (boundary points P(w), random interior points)."""
    eps, v, w = problem
    threat = ThreatModel(norm, eps, bounds=WIDE)
    p = threat.project_ball(v)
    for z in (
        threat.project_ball(w),
        threat.random_init(torch.zeros_like(v), torch.Generator().manual_seed(seed)),
    ):
        assert (inner(v - p, z - p) <= 1e-6).all()


@PROPERTY
@given(problem=problems(ranges=((0.0, 1.0), (-3.0, 4.0), (-3.0, 4.0))), seed=st.integers(0, 2**32 - 1))
def test_project_linf_variational_inequality_on_intersection(problem: tuple, seed: int) -> None:
    """For Linf, project(x, x0) is the nearest point of ball ∩ box: ⟨x − P, z − P⟩ ≤ 0 for z in S(x0)."""
    eps, x0, x, w = problem
    threat = ThreatModel("linf", eps)
    p = threat.project(x, x0)
    for z in (threat.project(w, x0), threat.random_init(x0, torch.Generator().manual_seed(seed))):
        assert (inner(x - p, z - p) <= 1e-6).all()


# ----------------------------------------------------------------------------- steepest ascent

GRADIENT_ENTRIES = st.one_of(st.just(0.0), st.floats(1e-6, 1e3), st.floats(-1e3, -1e-6))


@pytest.mark.parametrize("norm", NORMS)
@PROPERTY
@given(g=st.tuples(st.integers(1, 4), st.integers(1, 6)).flatmap(
    lambda shape: hnp.arrays(np.float64, shape, elements=GRADIENT_ENTRIES)).map(torch.tensor))  # fmt: skip
def test_steepest_ascent_attains_dual_norm(norm: str, g: torch.Tensor) -> None:
    """⟨g, d⟩ = ‖g‖_q (Hölder with equality) and ‖d‖_p = 1 for g ≠ 0; d = 0 where g = 0."""
    threat = ThreatModel(norm, 1.0)
    d = threat.steepest_ascent(g)
    assert d.shape == g.shape
    dual = dual_norm(g, threat)
    torch.testing.assert_close(inner(g, d), dual, rtol=1e-12, atol=0)
    nonzero = dual > 0
    torch.testing.assert_close(threat.norm(d)[nonzero], torch.ones_like(dual[nonzero]), rtol=1e-12, atol=0)
    assert (d[~nonzero] == 0).all()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-25, 1e-32])
def test_steepest_ascent_is_unit_for_tiny_gradients(norm: str, dtype: torch.dtype, scale: float) -> None:
    """A tiny nonzero gradient (a saturated softmax gives ~1e-25 in float32) still gives a unit direction."""
    threat = ThreatModel(norm, 1.0)
    g = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=dtype) * scale
    d = threat.steepest_ascent(g)
    torch.testing.assert_close(threat.norm(d), torch.ones(1, dtype=dtype))
    assert (inner(g, d) > 0).all()


@pytest.mark.parametrize(
    ("norm", "expected"),
    [
        ("linf", [0.0, 0.0, 1.0, 1.0, -1.0]),
        ("l2", [0.0, 0.0, 0.5, 3.0, -4.0]),  # normalized below
        ("l1", [0.0, 0.0, 0.0, 0.0, -1.0]),
    ],
)
def test_steepest_ascent_skips_blocked_box_coordinates(norm: str, expected: list[float]) -> None:
    """With x given, coordinates on a box face whose gradient points outward get no mass; others as usual.

    For ℓ∞ the direction itself keeps sign(g) (every coordinate moves by the full
    step, so the mask would only cost time); what is promised is the projected
    step, which equals the one taken along the masked direction.
    """
    threat = ThreatModel(norm, 1.0)
    x = t64([[0.0, 1.0, 0.5, 0.0, 1.0]])
    g = t64([[-1.0, 2.0, 0.5, 3.0, -4.0]])  # coordinates 0 and 1 point out of the box, 3 and 4 into it
    want = t64([expected])
    if norm == "l2":
        want = want / want.norm()
    d = threat.steepest_ascent(g, x)
    if norm == "linf":
        x0 = t64([[0.2, 0.8, 0.5, 0.1, 0.9]])
        torch.testing.assert_close(threat.project(x + 0.3 * d, x0), threat.project(x + 0.3 * want, x0))
    else:
        torch.testing.assert_close(d, want, atol=1e-15, rtol=0)


def test_steepest_ascent_keeps_shape() -> None:
    """An image-shaped gradient gives an image-shaped direction with unit norm per example."""
    g = torch.randn(3, 2, 4, 4, dtype=F64)
    for norm in NORMS:
        threat = ThreatModel(norm, 1.0)
        d = threat.steepest_ascent(g)
        assert d.shape == g.shape
        torch.testing.assert_close(threat.norm(d), torch.ones(3, dtype=F64))


# ----------------------------------------------------------------------------- random starts


@pytest.mark.parametrize("norm", NORMS)
@PROPERTY
@given(problem=problems(ranges=((0.0, 1.0),)), seed=st.integers(0, 2**32 - 1))
def test_random_init_lands_in_set(norm: str, problem: tuple, seed: int) -> None:
    """random_init(x0) lies in ball ∩ box, for a shared and for a per-example eps."""
    eps, x0 = problem
    threat = ThreatModel(norm, eps)
    x = threat.random_init(x0, torch.Generator().manual_seed(seed))
    assert x.shape == x0.shape
    assert x.dtype == x0.dtype
    assert threat.contains(x, x0, atol=1e-12).all()


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_follows_generator(norm: str) -> None:
    """Equal generator seeds give equal starts, different seeds different ones, whatever the global RNG."""
    threat = ThreatModel(norm, 0.3)
    x0 = torch.full((4, 6), 0.5)
    first = threat.random_init(x0, torch.Generator().manual_seed(7))
    torch.rand(10)  # move the global RNG
    assert torch.equal(first, threat.random_init(x0, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, threat.random_init(x0, torch.Generator().manual_seed(8)))


def within_binomial(count_fraction: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    return abs(count_fraction - p) <= sigmas * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("dim", "radius"), [(1, 0.5), (2, 0.5), (5, 0.5 ** (1 / 5))])
def test_random_init_is_uniform_in_volume(norm: str, dim: int, radius: float) -> None:
    """P(‖δ‖ ≤ r·ε) = r^D for a uniform point of the ball (1/4 for D=2, r=1/2); a surface sampler gives 0."""
    n, eps = 20_000, 2.0
    threat = ThreatModel(norm, eps, bounds=WIDE)
    delta = threat.random_init(torch.zeros(n, dim, dtype=F64), torch.Generator().manual_seed(0))
    fraction = (threat.norm(delta) <= radius * eps).double().mean().item()
    assert within_binomial(fraction, radius**dim, n)


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_is_symmetric(norm: str) -> None:
    """Each coordinate of a uniform point of the ball is positive with probability 1/2 and has mean 0."""
    n, dim, eps = 20_000, 3, 1.0
    threat = ThreatModel(norm, eps, bounds=WIDE)
    delta = threat.random_init(torch.zeros(n, dim, dtype=F64), torch.Generator().manual_seed(1))
    for i in range(dim):
        assert within_binomial((delta[:, i] > 0).double().mean().item(), 0.5, n)
        assert abs(delta[:, i].mean().item()) <= 4 * eps / math.sqrt(n)  # |δ_i| ≤ ε bounds the std by ε


def test_random_init_linf_coordinates_uniform() -> None:
    """For Linf every coordinate is U[−ε, ε]: |δ_i| < ε/2 with probability 1/2 and variance ε²/3."""
    n, eps = 20_000, 0.5
    threat = ThreatModel("linf", eps, bounds=WIDE)
    delta = threat.random_init(torch.zeros(n, 2, dtype=F64), torch.Generator().manual_seed(2))
    for i in range(2):
        assert within_binomial((delta[:, i].abs() < eps / 2).double().mean().item(), 0.5, n)
    # Var of the sample variance of U[-ε, ε]: (μ4 − σ⁴)/n with μ4 = ε⁴/5, σ² = ε²/3.
    tol = 4 * math.sqrt((eps**4 / 5 - eps**4 / 9) / n)
    assert abs(delta.var(dim=0) - eps**2 / 3).max().item() <= tol


def test_contains_tolerance_and_box() -> None:
    """contains checks ball and box per example, up to atol."""
    threat = ThreatModel("l2", 0.5)
    x0 = t64([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.9, 0.5]])
    x = x0 + t64(
        [[0.3, 0.4], [0.3, 0.4 + 1e-3], [0.0, 0.0], [0.1 + 1e-3, 0.0]]
    )  # the last leaves the box by 1e-3
    assert threat.contains(x, x0).tolist() == [True, False, True, False]
    assert threat.contains(x, x0, atol=1e-2).tolist() == [True, True, True, True]


@pytest.mark.parametrize("norm", NORMS)
def test_bounds_none_is_the_ball_alone(norm: str) -> None:
    """``bounds=None``: no box clip anywhere, so points far outside [0, 1] stay where the ball puts them."""
    threat = ThreatModel(norm, eps=0.5, bounds=None)
    x0 = torch.full((3, 4), 7.0, dtype=F64)
    far = x0 + 3.0
    projected = threat.project(far, x0)
    torch.testing.assert_close(threat.norm(projected - x0), torch.full((3,), 0.5, dtype=F64))
    assert bool(threat.contains(projected, x0).all())
    start = threat.random_init(x0, torch.Generator().manual_seed(0))
    assert bool(threat.contains(start, x0).all())
    assert float(start.min()) > 1.0
    torch.testing.assert_close(threat.project_box(far), far)
    g = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(threat.steepest_ascent(g, x=far), threat.norm.steepest_ascent(g))


@pytest.mark.parametrize("norm", NORMS)
def test_norm_objects_are_their_names_and_survive_pickling(norm: str) -> None:
    """A norm equals, hashes and serializes as its name, so configs, JSON and old comparisons keep working."""
    import json
    import pickle

    from advlearn.threat import get_norm

    threat = ThreatModel(norm, eps=0.1)
    assert threat.norm == norm
    assert hash(threat.norm) == hash(norm)
    assert {norm: 1}[threat.norm] == 1
    assert json.dumps(threat.norm) == f'"{norm}"'
    assert pickle.loads(pickle.dumps(threat.norm)) is get_norm(norm)
    assert threat.norm.dual_ord == threat.dual_ord


def test_l1_project_in_box_does_not_depend_on_the_order_of_equal_kinks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # its sort may put equal kinks in any order (numpy's on CPU): every order must give the same bits
    from advlearn.threat import norms

    gen = torch.Generator().manual_seed(0)
    x0 = (torch.rand(8, 60, generator=gen) * 4).round() / 4  # many equal rooms
    sparse = torch.rand(8, 60, generator=gen) < 0.3
    delta = ((torch.randn(8, 60, generator=gen) * 2).round() / 4) * sparse  # many equal magnitudes, zeros
    eps = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25, 5.0, 0.75, 1.5])
    args = (delta.double(), eps.double(), -x0.double(), 1 - x0.double())
    results = [norms.L1().project_in_box(*args)]

    def by_index(descending: bool) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        def sort(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # equal values in ascending (or descending) index order: sort by (value, ±index)
            index = torch.arange(t.shape[1], dtype=t.dtype).expand_as(t)
            key = t * (4 * t.shape[1]) + (-index if descending else index)  # t's values are multiples of 1/4
            order = key.argsort(dim=1)
            return t.gather(1, order), order

        return sort

    for descending in (False, True):
        monkeypatch.setattr(norms, "_argsort_rows", by_index(descending))
        results.append(norms.L1().project_in_box(*args))
    assert torch.equal(results[0], results[1])
    assert torch.equal(results[0], results[2])
    assert bool((results[0].abs().sum(dim=1) <= eps.double() + 1e-12).all())
