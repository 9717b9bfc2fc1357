"""Issue 15: a hypothesis fuzz of the attack / evaluate / certify API.

Every case either returns points inside the threat set with no NaN (and int64-compatible
results), or raises a ValueError; never another exception. The strategies draw input dtypes,
shapes, extreme and non-finite values in ``x``, radii inside and outside their range, label
dtypes and out-of-range labels, for every registered attack (with small settings).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import ATTACKS, build_attack
from advlearn.evaluation import evaluate

SMALL = {"steps": 2, "queries": 10, "max_iter": 2, "binary_steps": 1, "restarts": 1, "num_targets": 2}
NAMES = sorted(n for n in ATTACKS if n != "transfer")  # transfer needs a source model option
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LABELS = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.float32, torch.bool]


def _model(dtype: torch.dtype, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, classes)).to(dtype).eval()


#: at most one fault per case (half the cases have none), so both outcomes are exercised
FAULTS = ["none"] * 8 + [
    "nan",
    "inf",
    "-inf",
    "above",
    "below",
    "empty",
    "eps",
    "labels",
    "label_range",
    "model_dtype",
    "norm",
]


@st.composite
def cases(draw: Any) -> dict[str, Any]:
    fault = draw(st.sampled_from(FAULTS))
    name = draw(st.sampled_from(NAMES))
    x_dtype = draw(st.sampled_from(FLOATS))
    norms = ATTACKS[name].norms if fault != "norm" else ("linf", "l2", "l1")
    bad_eps = [-0.1, float("nan"), float("inf"), 1e300]
    return {
        "name": name,
        "norm": draw(st.sampled_from(norms)),
        "eps": draw(st.sampled_from(bad_eps if fault == "eps" else [0.0, 1e-8, 0.05, 0.3, 1.0, 5.0])),
        "x_dtype": x_dtype,
        "model_dtype": draw(st.sampled_from(FLOATS)) if fault == "model_dtype" else x_dtype,
        "shape": draw(
            st.sampled_from([(0 if fault == "empty" else b, *s) for b in (1, 2, 5) for s in SHAPES])
        ),
        "special": fault
        if fault in ("nan", "inf", "-inf", "above", "below")
        else draw(st.sampled_from(["none", "none", "edges"])),
        "label_dtype": draw(st.sampled_from(LABELS[5:] if fault == "labels" else LABELS[:5])),
        "label_shift": draw(st.sampled_from([3, -1])) if fault == "label_range" else 0,
        "seed": draw(st.integers(0, 2**16)),
    }


SHAPES = [(1, 4, 4), (16,), (4, 4)]


def _inputs(case: dict[str, Any]) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.rand(case["shape"], generator=g)
    if x.numel():
        flat = x.view(-1)
        if case["special"] == "nan":
            flat[0] = float("nan")
        elif case["special"] in ("inf", "-inf"):
            flat[0] = float(case["special"])
        elif case["special"] == "above":
            flat[0] = 1.5
        elif case["special"] == "below":
            flat[0] = -1e-3
        elif case["special"] == "edges":
            x = (x > 0.5).float()  # every coordinate on the box's boundary
    y = torch.randint(0, 3, (case["shape"][0],), generator=g) + case["label_shift"]
    if case["label_dtype"] == torch.uint8:
        y = y.clamp(min=0)  # uint8 cannot hold the -1 case
    return x.to(case["x_dtype"]), y.to(case["label_dtype"])


def _check_points(threat: al.ThreatModel, x_adv: Tensor, x: Tensor) -> None:
    assert x_adv.shape == x.shape
    assert x_adv.dtype == x.dtype
    assert not bool(x_adv.isnan().any()), "an attack returned a NaN point"
    assert bool(threat.contains(x_adv, x).all()), "an attack returned a point outside the threat set"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_attacks_return_points_in_the_set_or_raise_value_error(case: dict[str, Any]) -> None:
    try:
        threat = al.ThreatModel(case["norm"], eps=case["eps"])
        fields = ATTACKS.fields(case["name"])
        attack = build_attack(case["name"], threat, **{k: v for k, v in SMALL.items() if k in fields})
    except ValueError:
        return  # a bad radius or an unsupported norm: refused by name, before any work
    model = _model(case["model_dtype"])
    x, y = _inputs(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            result = attack.run(model, x, y, generator=torch.Generator().manual_seed(1))
        except ValueError:
            return
    _check_points(threat, result.x_adv, x)
    assert result.success.shape == (x.shape[0],)
    assert result.success.dtype == torch.bool


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_evaluate_scores_checked_points_or_raises_value_error(case: dict[str, Any]) -> None:
    try:
        threat = al.ThreatModel(case["norm"], eps=case["eps"])
    except ValueError:
        return
    model = _model(case["model_dtype"])
    x, y = _inputs(case)
    attacks = [al.attacks.FGSM(threat), al.attacks.PGD(threat, steps=2)]
    try:
        ev = evaluate(model, (x, y), threat, attacks, quiet=True)
    except ValueError:
        return
    assert ev.num_examples == x.shape[0] > 0
    for name, acc in ev.robust_accuracy.items():
        assert 0.0 <= ev.worst_case_accuracy <= acc <= ev.clean_accuracy <= 1.0
        assert 0.0 <= ev.max_perturbation[name] <= threat.eps + 1e-5


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from([0.0, 0.25, -1.0, float("nan")]), st.booleans())
def test_certify_returns_a_radius_or_raises_value_error(
    case: dict[str, Any], sigma: float, batch: bool
) -> None:
    x, _ = _inputs(case)
    model = _model(case["model_dtype"])
    try:
        smooth = al.certify.Smooth(model, num_classes=3, sigma=sigma)
        inp = x if batch else (x[0] if x.shape[0] else x)
        label, radius = smooth.certify(inp, n0=5, n=20, alpha=0.01, batch_size=8)
    except ValueError:
        pass
    else:
        assert -1 <= label < 3
        assert radius >= 0.0
    try:
        threat = al.ThreatModel("linf", eps=case["eps"])
        lower, upper = al.certify.ibp_bounds(model, x, threat)
    except ValueError:
        return
    assert bool((lower <= upper).all())
    assert not bool(lower.isnan().any())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_extremes_stay_in_the_ball(dtype: torch.dtype) -> None:
    """Inputs on the box's edges and radii that are not representable in the dtype."""
    model = _model(dtype)
    x = (torch.rand(6, 16) > 0.5).float().to(dtype)
    y = torch.arange(6) % 3
    for eps in (0.1, 0.3, 1e-3):
        threat = al.ThreatModel("linf", eps=eps)
        for name in ("fgsm", "pgd", "apgd", "square"):
            fields = ATTACKS.fields(name)
            attack = build_attack(name, threat, **{k: v for k, v in SMALL.items() if k in fields})
            _check_points(threat, attack(model, x, y), x)
