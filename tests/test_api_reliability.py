"""Issue 15, the API half: no silent wrong result from evaluate, the attacks, the AutoAttack state,
low-precision inputs, infinite gradients, odd labels, dtypes and train-mode BatchNorm."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import (
    APGD,
    APGDT,
    FGSM,
    PGD,
    Attack,
    AttackResult,
    AutoAttack,
    DeepFool,
    Square,
)
from advlearn.evaluation import accuracy_vs_eps, evaluate, named_attacks
from advlearn.evaluation.state import AutoAttackState, _encode
from advlearn.threat.model import round_toward

LINF = al.ThreatModel("linf", eps=0.1)


def _mlp(d: int = 16, classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, classes)).eval()


def _data(n: int = 24, d: int = 16) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, 1, 4, d // 4)
    return x, torch.randint(0, 3, (n,))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- item 1: names


def test_a_list_of_two_pgds_scores_both_like_the_same_pair_as_a_dict() -> None:
    """The issue's pair: a list once kept only the last PGD (97% robust vs 16.5% as a dict)."""
    model, (x, y) = _mlp(), _data()
    strong = PGD(LINF, steps=40, restarts=3)
    weak = PGD(LINF, steps=1, step_size=0.001)
    as_list = evaluate(model, (x, y), LINF, [strong, weak], quiet=True)
    names = list(as_list.robust_accuracy)
    assert len(names) == 2
    assert names[0] != names[1]
    as_dict = evaluate(model, (x, y), LINF, dict(zip(names, [strong, weak], strict=True)), quiet=True)
    assert as_list.robust_accuracy == as_dict.robust_accuracy
    assert as_list.worst_case_accuracy == as_dict.worst_case_accuracy
    assert as_list.robust_accuracy[names[0]] < as_list.robust_accuracy[names[1]], "PGD-40x3 is the stronger"
    sweep_list = accuracy_vs_eps(model, (x, y), LINF, [0.05, 0.1], [strong, weak], quiet=True)
    sweep_dict = accuracy_vs_eps(model, (x, y), LINF, [0.05, 0.1], {"a": strong, "b": weak}, quiet=True)
    assert sweep_list.accuracy == sweep_dict.accuracy


def test_names_come_from_the_differing_options_and_exact_duplicates_are_refused() -> None:
    names = list(named_attacks([FGSM(LINF), PGD(LINF, steps=40, restarts=3), PGD(LINF, steps=1)]))
    assert names == ["FGSM", "PGD(steps=40, restarts=3)", "PGD(steps=1, restarts=1)"]
    with pytest.raises(ValueError, match=r"attacks\[0\] and attacks\[1\] are the same attack"):
        named_attacks([PGD(LINF), PGD(LINF)])
    with pytest.raises(ValueError, match=r"attacks\[1\] must be an advlearn Attack"):
        named_attacks([PGD(LINF), "pgd"])  # type: ignore[list-item]


# ----------------------------------------------------------------------------- item 5: every point checked


@dataclass(frozen=True)
class _Far(Attack):
    """A user's attack that returns points ``offset`` away from x (outside the ball)."""

    threat: al.ThreatModel
    offset: float = 0.9

    def run(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: Any = None) -> AttackResult:
        x_adv = (x + self.offset).clamp(0, 1)  # in the box, far outside the ball (NaN stays NaN)
        return AttackResult(x_adv, torch.ones(len(y), dtype=torch.bool), torch.zeros(len(y)))


def test_evaluate_refuses_a_custom_attack_whose_points_leave_the_threat_set() -> None:
    model, data = _mlp(), _data()
    with pytest.raises(ValueError, match=r"attack 'far' returned \d+ point\(s\) outside the threat set"):
        evaluate(model, data, LINF, {"far": _Far(LINF)}, quiet=True)
    with pytest.raises(ValueError, match=r"attack '_Far' returned \d+ point\(s\) holding NaN"):
        evaluate(model, data, LINF, [_Far(LINF, offset=float("nan"))], quiet=True)


def test_evaluate_reports_the_largest_perturbation_and_nan_counts() -> None:
    model, data = _mlp(), _data()
    ev = evaluate(model, data, LINF, [FGSM(LINF), PGD(LINF, steps=5)], quiet=True)
    for name in ev.robust_accuracy:
        assert 0.05 < ev.max_perturbation[name] <= 0.1 + 1e-6  # FGSM/PGD reach the ball's surface
        assert ev.nan_count[name] == 0
    row = ev.table()[1]
    assert row["max_perturbation"] == ev.max_perturbation[row["attack"]]
    assert row["nan_count"] == 0


class _NanAbove(nn.Module):
    """Finite logits at the clean inputs, NaN logits once any input moves above 0.95."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _mlp()

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        bad = (x.flatten(1) > 0.95).any(1, keepdim=True)
        return torch.where(bad, torch.full_like(z, float("nan")), z)


def test_nan_logits_at_an_adversarial_point_count_against_robustness() -> None:
    x, _ = _data()
    x = x * 0.9  # clean inputs below 0.95: clean logits are finite
    model = _NanAbove().eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # every example correct clean
    ev = evaluate(model, (x, y), LINF, {"up": _Up(LINF)}, quiet=True)
    hit = (x.flatten(1) > 0.85).any(1)
    assert 0 < int(hit.sum()) < len(y)
    assert ev.nan_count["up"] == int(hit.sum())
    assert ev.nan_count["clean"] == 0
    assert ev.clean_accuracy == 1.0
    assert not ev.correct["up"][hit].any(), "an example with NaN logits is never counted robust"


@dataclass(frozen=True)
class _Up(Attack):
    threat: al.ThreatModel

    def run(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: Any = None) -> AttackResult:
        return AttackResult(self.threat.project(x + 1.0, x), torch.zeros(len(y), dtype=torch.bool), y * 0.0)


# ----------------------------------------------------------------------------- item 5: the state file


@pytest.fixture
def saved_state(tmp_path: Path) -> tuple[AutoAttack, nn.Module, Tensor, Tensor, Path, float]:
    model, (x, _) = _mlp(), _data(30)
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = AutoAttack(al.ThreatModel("linf", eps=0.25), version="custom", attacks=("fgsm", {"name": "pgd"}))
    path = tmp_path / "state.json"
    robust = AutoAttackState(path).evaluate(attack, model, x, y).robust_accuracy
    assert 0 < robust < 1, "the fixture needs both broken and robust examples"
    return attack, model, x, y, path, robust


def _tampered(path: Path, edit: Any) -> None:
    state = json.loads(path.read_text())
    (entry,) = state["entries"].values()
    edit(entry)
    path.write_text(json.dumps(state))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e, x: e["index"].__setitem__(0, -1), "index must list distinct positions"),
        (lambda e, x: e["index"].pop(), "index must list exactly the examples"),
        (lambda e, x: e.__setitem__("broken_by", [-1 if b >= 0 else b for b in e["broken_by"]]), "disagree"),
        (lambda e, x: e.__setitem__("broken_by", [0 if b == -1 else b for b in e["broken_by"]]), "disagree"),
        (lambda e, x: e.__setitem__("broken_by", e["broken_by"][:-1]), "one per example"),
        (lambda e, x: e.__setitem__("broken_by", [7] * len(e["broken_by"])), r"must lie in \[-2, 2\)"),
        (lambda e, x: e["x_adv"].__setitem__("shape", [1, 2]), "x_adv has shape"),
        (lambda e, x: e["x_adv"].__setitem__("dtype", "float64"), "x_adv has dtype"),
        (lambda e, x: e["x_adv"].__setitem__("data", "AAAA"), "does not decode"),
        (
            lambda e, x: e.__setitem__("x_adv", _encode((x[e["index"]] + 0.5).clamp(0, 1))),
            "outside the threat",
        ),
        (lambda e, x: e.__setitem__("x_adv", _encode(x[e["index"]])), "disagree"),
        (lambda e, x: e.__setitem__("done", "fgsm"), "done must list"),
        (lambda e, x: e.pop("index"), "must hold exactly"),
    ],
)
def test_a_tampered_state_file_is_refused_in_one_line(
    saved_state: tuple[AutoAttack, nn.Module, Tensor, Tensor, Path, float], edit: Any, message: str
) -> None:
    attack, model, x, y, path, _ = saved_state
    _tampered(path, lambda e: edit(e, x))
    with pytest.raises(ValueError, match=message) as err:
        AutoAttackState(path).evaluate(attack, model, x, y)
    assert "state_path=" in str(err.value)
    assert "\n" not in str(err.value)


def test_an_untouched_state_file_resumes_to_the_same_figure(
    saved_state: tuple[AutoAttack, nn.Module, Tensor, Tensor, Path, float],
) -> None:
    attack, model, x, y, path, robust = saved_state
    again = AutoAttackState(path).evaluate(attack, model, x, y)
    assert again.resumed == 2
    assert again.robust_accuracy == robust


# ----------------------------------------------------------------------------- item 9: no NaN


def test_steepest_ascent_is_a_unit_direction_or_zero_for_infinite_and_nan_gradients() -> None:
    inf, nan = float("inf"), float("nan")
    g = torch.tensor(
        [[inf, 1.0, -inf, nan], [nan, 0.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    for norm in al.threat.NORMS:
        d = norm.steepest_ascent(g)
        assert not d.isnan().any()
        assert torch.allclose(norm(d[[0, 2]]), torch.ones(2))
        assert bool((d[[1, 3]] == 0).all())
    assert torch.equal(
        al.threat.norms.L2().steepest_ascent(g)[0], torch.tensor([1.0, 0.0, -1.0, 0.0]) / 2**0.5
    )


class _Sqrt(nn.Module):
    """``sqrt`` at the input: the input gradient is infinite at every coordinate that is 0."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1).sqrt())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(
    "build",
    [
        lambda t: FGSM(t),
        lambda t: PGD(t, steps=3),
        lambda t: APGD(t, steps=5),
        lambda t: APGDT(t, steps=5, num_targets=2),
        lambda t: AutoAttack(
            t, version="custom", attacks=("apgd", "deepfool") if t.norm == "l2" else ("apgd",)
        ),
        lambda t: DeepFool(t, steps=5) if t.norm == "l2" else FGSM(t),
    ],
)
def test_no_attack_returns_a_nan_point_on_an_infinite_gradient(norm: str, build: Any) -> None:
    model = _Sqrt().eval()
    x, y = _data(8)
    x[:, :, :2] = 0.0  # sqrt at 0: infinite gradient
    threat = al.ThreatModel(norm, eps=0.1 if norm == "linf" else 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # DeepFool's repaired points are reported
        result = build(threat).run(model, x, y, generator=_gen())
    assert not result.x_adv.isnan().any()
    assert bool(threat.contains(result.x_adv, x).all())


# ----------------------------------------------------------------------------- item 8: half and bf16

LOW_ATTACKS = [
    lambda t: FGSM(t),
    lambda t: PGD(t, steps=3, restarts=2),
    lambda t: APGD(t, steps=5),
    lambda t: APGDT(t, steps=5, num_targets=2),
    lambda t: AutoAttack(t, version="custom", attacks=("apgd", {"name": "square", "queries": 20})),
    lambda t: Square(t, queries=30),
    lambda t: DeepFool(t, steps=3) if t.norm == "l2" else PGD(t, steps=2),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("index", range(len(LOW_ATTACKS)))
def test_low_precision_points_lie_in_the_set_tested_in_float32(
    dtype: torch.dtype, norm: str, index: int
) -> None:
    model = _mlp().to(dtype)
    x, y = _data(12)
    x = x.to(dtype)
    threat = al.ThreatModel(norm, eps=0.1 if norm == "linf" else 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fp16 overflow in Square's ℓ2 proposal is repaired
        result = LOW_ATTACKS[index](threat).run(model, x, y, generator=_gen())
    assert result.x_adv.dtype == dtype
    assert not result.x_adv.isnan().any()
    delta = result.x_adv.float() - x.float()
    assert bool((threat.norm(delta) <= threat.eps).all()), "in the ball exactly, not just up to atol"
    assert bool(threat.contains(result.x_adv, x).all())
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)


def test_round_toward_never_leaves_the_interval_between_x0_and_x() -> None:
    x0 = torch.rand(1000).to(torch.bfloat16)
    x = x0.float() + (torch.rand(1000) - 0.5) * 0.2
    r = round_toward(x, x0).float()
    lo, hi = torch.minimum(x, x0.float()), torch.maximum(x, x0.float())
    assert bool(((r >= lo) & (r <= hi)).all())


# ----------------------------------------------------------------------------- items 11-12: inputs


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32])
def test_labels_of_any_integer_dtype_give_the_int64_result(dtype: torch.dtype) -> None:
    model, (x, y) = _mlp(), _data()
    want = PGD(LINF, steps=3).run(model, x, y, generator=_gen())
    got = PGD(LINF, steps=3).run(model, x, y.to(dtype), generator=_gen())
    assert torch.equal(want.x_adv, got.x_adv)
    assert torch.equal(want.success, got.success)
    assert (
        evaluate(model, (x, y.to(dtype)), LINF, [FGSM(LINF)], quiet=True).robust_accuracy["FGSM"]
        == (evaluate(model, (x, y), LINF, [FGSM(LINF)], quiet=True).robust_accuracy["FGSM"])
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_labels_that_are_not_integers_are_refused_by_name(dtype: torch.dtype) -> None:
    model, (x, y) = _mlp(), _data()
    with pytest.raises(ValueError, match="y must be an integer tensor"):
        PGD(LINF)(model, x, y.to(dtype))


def test_an_empty_batch_is_a_value_error_everywhere() -> None:
    model = _mlp()
    x, y = torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.int64)
    for attack in (FGSM(LINF), PGD(LINF), APGD(LINF), Square(LINF), AutoAttack(LINF)):
        with pytest.raises(ValueError, match="empty batch"):
            attack(model, x, y)
    with pytest.raises(ValueError, match="empty batch"):
        al.certify.ibp_bounds(model, x, LINF)
    with pytest.raises(ValueError, match="no examples"):
        evaluate(model, (x, y), LINF, [FGSM(LINF)], quiet=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_inputs_of_another_dtype_than_the_model_name_both(dtype: torch.dtype) -> None:
    model, (x, y) = _mlp(), _data()
    name = str(dtype).removeprefix("torch.")
    both = rf"x is {name} but the model's parameters are float32"
    for attack in (FGSM(LINF), PGD(LINF), APGD(LINF), Square(LINF), AutoAttack(LINF)):
        with pytest.raises(ValueError, match=both):
            attack(model, x.to(dtype), y)
    with pytest.raises(ValueError, match=both):
        evaluate(model, (x.to(dtype), y), LINF, [FGSM(LINF)], quiet=True)
    with pytest.raises(ValueError, match=both):
        al.certify.ibp_bounds(model, x.to(dtype), LINF)
    smooth = al.certify.Smooth(model, num_classes=3, sigma=0.25)
    with pytest.raises(ValueError, match=both):
        smooth.certify(x[0].to(dtype), n0=10, n=20, alpha=0.01, batch_size=10)


def test_smooth_certify_given_a_batch_says_so() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)).eval()
    smooth = al.certify.Smooth(model, num_classes=3, sigma=0.25)
    with pytest.raises(ValueError, match="without a batch dimension"):
        smooth.certify(torch.rand(5, 1, 4, 4), n0=10, n=20, alpha=0.01, batch_size=10)


class _Tuple(nn.Module):
    def __init__(self, flat: bool = False) -> None:
        super().__init__()
        self.inner, self.flat = _mlp(), flat

    def forward(self, x: Tensor) -> Any:
        z = self.inner(x)
        return z[:, 0] if self.flat else (z, z)


@pytest.mark.parametrize("flat", [False, True])
def test_a_model_returning_a_tuple_or_a_vector_gets_the_attacks_error(flat: bool) -> None:
    model, data = _Tuple(flat).eval(), _data()
    match = "model must return" + (" logits of shape" if flat else " a logits tensor")
    with pytest.raises(ValueError, match=match):
        PGD(LINF)(model, *data)
    with pytest.raises(ValueError, match=match):
        evaluate(model, data, LINF, [FGSM(LINF)], quiet=True)
    smooth = al.certify.Smooth(model, num_classes=3, sigma=0.25)
    with pytest.raises(ValueError, match="model must return logits"):
        smooth.certify(data[0][0], n0=10, n=20, alpha=0.01, batch_size=10)


# ----------------------------------------------------------------------------- item 16: train-mode BN


def _bn_model() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)
    ).train()


@pytest.mark.parametrize(
    "attack", [PGD(LINF, steps=3), PGD(LINF, steps=3, early_stop=True), APGD(LINF, steps=5), FGSM(LINF)]
)
def test_an_attack_leaves_train_mode_batchnorm_statistics_untouched(attack: Attack) -> None:
    model, (x, y) = _bn_model(), _data(32)
    model(torch.rand(32, 1, 4, 4))  # running statistics away from their init
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack(model, x, y, generator=_gen())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training
    ev = evaluate(model, (x, y), LINF, [FGSM(LINF)], quiet=True)
    assert ev.num_examples == 32
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)


def test_train_mode_batchnorm_on_one_example_is_refused_clearly() -> None:
    """Early exit that leaves one example (here: a batch of 2 where one is already fooled)."""
    model, (x, y) = _bn_model(), _data(2)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.stack([(pred[0] + 1) % 3, pred[1]])  # the first is misclassified clean, the second not
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"PGD: the model has BatchNorm layers in training mode.*model\.eval\(\)"
    ):
        PGD(LINF, steps=3, early_stop=True)(model, x, y)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    with pytest.raises(ValueError, match="BatchNorm layers in training mode"):
        FGSM(LINF)(model, x[:1], y[:1])


def test_transfer_matrix_checks_the_points_it_scores() -> None:
    models = {"a": _mlp(), "b": _mlp()}
    with pytest.raises(ValueError, match=r"attack '_Far' returned \d+ point\(s\) outside the threat set"):
        al.evaluation.transfer_matrix(models, _data(), _Far(LINF), quiet=True)


def test_the_function_forms_refuse_other_label_widths_by_name() -> None:
    """The configs convert; a direct call of the function says how (before, int32 failed in cross-entropy)."""
    model, (x, y) = _mlp(), _data()
    with pytest.raises(ValueError, match=r"y must hold int64 class indices.*y\.long\(\)"):
        al.attacks.pgd(model, x, y.int(), LINF, steps=2)
