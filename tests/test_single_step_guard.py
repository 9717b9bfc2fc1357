"""Issue 17 part 4, session 4: the single-step objectives' shared base and the catastrophic-overfitting guard.

The guard's options live once, in the single-step base (keyword-only dataclass fields): the
registered option lists and defaults are what they were when each objective repeated them. The
guard measures at the full ε also on an ε warm-up's copies of the objective. Its decision is a
pure function of the recorded figures, replayed here on trajectories recorded by
``bench/defenses.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.training import NFGSM, OBJECTIVES, FastAT, GradAlign, defenses

# Each objective of training/defenses.py with its options in order and their defaults, as registered
# before the guard's fields moved into the base (printed from the registry at main 72af683).
OPTIONS: dict[str, list[tuple[str, object]]] = {
    "awp": [
        ("threat", inspect.Parameter.empty),
        ("gamma", 0.005),
        ("inner", "pgd_at"),
        ("steps", 10),
        ("step_size", None),
        ("beta", 6.0),
        ("eps_warmup", 0),
        ("awp_warmup", 0),
    ],
    "consistency_at": [
        ("threat", inspect.Parameter.empty),
        ("lambda_", 1.0),
        ("temperature", 0.5),
        ("label_smoothing", 0.1),
        ("shift", 2),
        ("flip", False),
        ("steps", 10),
        ("step_size", None),
        ("eps_warmup", 0),
    ],
    "fast_at": [
        ("threat", inspect.Parameter.empty),
        ("step_ratio", 1.25),
        ("random_start", True),
        ("guard", True),
        ("guard_steps", 10),
        ("collapse_gap", 0.3),
        ("fallback_steps", 5),
        ("fallback", False),
        ("eps_warmup", 0),
    ],
    "fgsm_blend": [("threat", inspect.Parameter.empty), ("alpha", 0.5), ("eps_warmup", 0)],
    "free_at": [("threat", inspect.Parameter.empty), ("replays", 4), ("step_size", None), ("eps_warmup", 0)],
    "grad_align": [
        ("threat", inspect.Parameter.empty),
        ("align_weight", 0.2),
        ("step_ratio", 1.0),
        ("guard", True),
        ("guard_steps", 10),
        ("collapse_gap", 0.3),
        ("fallback_steps", 5),
        ("fallback", False),
        ("eps_warmup", 0),
    ],
    "grad_norm": [("threat", inspect.Parameter.empty), ("eps_warmup", 0)],
    "mart": [
        ("threat", inspect.Parameter.empty),
        ("lambda_", 6.0),
        ("steps", 10),
        ("step_size", None),
        ("eps_warmup", 0),
    ],
    "n_fgsm": [
        ("threat", inspect.Parameter.empty),
        ("noise_ratio", 2.0),
        ("step_ratio", 1.0),
        ("guard", True),
        ("guard_steps", 10),
        ("collapse_gap", 0.3),
        ("fallback_steps", 5),
        ("fallback", False),
        ("eps_warmup", 0),
    ],
    "noise_augment": [
        ("threat", inspect.Parameter.empty),
        ("kind", "sign"),
        ("alpha", 0.5),
        ("eps_warmup", 0),
    ],
    "trades": [
        ("threat", inspect.Parameter.empty),
        ("beta", 6.0),
        ("steps", 10),
        ("step_size", None),
        ("eps_warmup", 0),
    ],
}


def _defined_in_defenses() -> list[str]:
    return sorted(n for n in OBJECTIVES if OBJECTIVES.lookup(n).__module__ == defenses.__name__)


def test_the_snapshot_covers_every_objective_of_the_defenses_module() -> None:
    assert _defined_in_defenses() == sorted(OPTIONS)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_registered_options_and_defaults_are_unchanged(name: str) -> None:
    assert OBJECTIVES.options(name) == tuple(option for option, _ in OPTIONS[name])
    parameters = inspect.signature(OBJECTIVES.lookup(name)).parameters
    assert [(p, spec.default) for p, spec in parameters.items()] == OPTIONS[name]
    assert OBJECTIVES.required(name) == ("threat",)


@pytest.mark.parametrize("cls", [FastAT, NFGSM, GradAlign])
def test_guard_fields_are_declared_once_in_the_base(cls: type) -> None:
    shared = ("guard", "guard_steps", "collapse_gap", "fallback_steps", "fallback", "eps_warmup")
    assert all(name not in inspect.get_annotations(cls) for name in shared)
    kinds = {f.name: f.kw_only for f in dataclasses.fields(cls)}
    assert all(kinds[name] for name in shared)
    assert not kinds["threat"]
    # the threat is still the one positional argument the registry and the CLI pass
    objective = cls(al.ThreatModel("linf", 0.1), fallback_steps=2, eps_warmup=3)
    assert objective.fallback_steps == 2
    assert objective.eps_warmup == 3
    with pytest.raises(TypeError):
        cls(al.ThreatModel("linf", 0.1), 1.0, 1.0, True)  # type: ignore[call-arg]
    for option, value in (
        ("guard_steps", 0),
        ("fallback_steps", -1),
        ("collapse_gap", 1.5),
        ("eps_warmup", -1),
    ):
        with pytest.raises(ValueError, match=option):
            cls(al.ThreatModel("linf", 0.1), **{option: value})


# ----------------------------------------------------------------------------- the guard's radius


class _Threshold(nn.Module):
    """Class 0 iff ``x₀ > ½``: an example with margin ``m = x₀ − ½`` is ℓ∞-robust exactly when ``m > ε``."""

    def forward(self, x: Tensor) -> Tensor:
        z = x[:, 0] - 0.5
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def _margins() -> tuple[Tensor, Tensor]:
    margins = torch.linspace(0.02, 0.4, 40)  # robust at ε = 0.1: 32 of 40; at ε = 0.3: 11 of 40
    x = torch.full((40, 4), 0.5)
    x[:, 0] += margins
    return x, torch.zeros(40, dtype=torch.long)


@pytest.mark.parametrize("cls", [FastAT, NFGSM, GradAlign])
def test_guard_measures_at_the_full_eps_during_a_warm_up(cls: type) -> None:
    x, y = _margins()
    full = cls(al.ThreatModel("linf", 0.3), eps_warmup=3)
    first = full.at_epoch(0, 10)
    assert float(first.threat.eps) == pytest.approx(0.1)  # training at the ramped radius
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ramped = first.end_epoch(_Threshold(), x, y, [])
        reference = full.end_epoch(_Threshold(), x, y, [])
        plain = cls(al.ThreatModel("linf", 0.1)).end_epoch(_Threshold(), x, y, [])
    robust_at_full = float(((x[:, 0] - 0.5) > 0.3).float().mean())
    assert ramped["co_pgd_acc"] == reference["co_pgd_acc"] == pytest.approx(robust_at_full)
    assert ramped["co_fgsm_acc"] == pytest.approx(robust_at_full)
    assert plain["co_pgd_acc"] > robust_at_full + 0.4  # the ramped radius would have read 80%, not 28%
    # the fallback's copy keeps the full radius too
    fallen = full.at_epoch(1, 10, [{"co_pgd_acc": 0.5, "co_fgsm_acc": 0.6, "co_detected": 1.0}])
    assert fallen.fallback  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fallen.end_epoch(_Threshold(), x, y, [])["co_pgd_acc"] == pytest.approx(robust_at_full)
