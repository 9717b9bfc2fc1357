"""diagnose_masking: deliberately masked models are flagged, honest models are not.

The masked models wrap a small MLP trained on scikit-learn's 8×8 digits: its
input rounded (zero gradients), its logits scaled by 1e4 (saturated softmax:
the cross-entropy gradient underflows to exactly 0 in float32), noise added at
inference (randomized outputs), its input detached (no gradient at all). A
PGD-trained MLP, trained in about two seconds, must pass every check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import FGSM
from advlearn.data import digits
from advlearn.diagnostics import CHECKS, MaskingDiagnosis, _check_iterative, diagnose_masking
from advlearn.evaluation import diagnose_masking as reexported
from advlearn.evaluation import evaluate
from advlearn.report import ModelReport, write_report

EPS = 0.1
NUM_EXAMPLES = 300


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    split = digits()
    return split.train.x, split.train.y, split.test.x[:NUM_EXAMPLES], split.test.y[:NUM_EXAMPLES]


def train_mlp(data: tuple[Tensor, ...], *, adversarial: bool, seed: int) -> nn.Module:
    """A 64-64-10 MLP, 15 epochs of Adam; with ``adversarial``, PGD-3 training at ε = 0.1 (Madry et al.)."""
    x_train, y_train = data[0], data[1]
    threat = al.ThreatModel("linf", EPS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    objective = al.training.PGDAT(threat, steps=3) if adversarial else None
    for _ in range(15):
        order = torch.randperm(len(y_train), generator=g)
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            xb, yb = x_train[batch], y_train[batch]
            optimizer.zero_grad()
            if objective is None:
                loss = nn.functional.cross_entropy(model(xb), yb)
            else:
                loss = objective(model, xb, yb)
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def standard(data: tuple[Tensor, ...]) -> nn.Module:
    return train_mlp(data, adversarial=False, seed=0)


@pytest.fixture(scope="module")
def robust(data: tuple[Tensor, ...]) -> nn.Module:
    return train_mlp(data, adversarial=True, seed=1)


class Rounded(nn.Module):
    """Rounds its input to {0, 1} before the model: torch.round has zero gradient (no straight-through)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(torch.round(x))
        return out


class Scaled(nn.Module):
    """Multiplies the logits by 1e4: the softmax saturates and the cross-entropy gradient is exactly 0."""

    def __init__(self, model: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x) * self.scale
        return out


class Noisy(nn.Module):
    """Adds Gaussian noise to the input at every forward pass, in eval mode too."""

    def __init__(self, model: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x + self.sigma * torch.randn_like(x))
        return out


class Detached(nn.Module):
    """Cuts the graph at its input: no gradient reaches x at all (autograd would raise without care)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x.detach())
        return out


MASKED: dict[str, tuple[Callable[[nn.Module], nn.Module], set[str]]] = {
    "input rounding": (Rounded, {"zero_gradients", "unbounded_attack", "black_box_vs_white_box"}),
    "logits x 1e4": (Scaled, {"zero_gradients", "unbounded_attack"}),
    "noise at inference": (Noisy, {"randomized_outputs"}),
    "detached input": (Detached, {"zero_gradients", "unbounded_attack"}),
}


def diagnose(model: nn.Module, data: tuple[Tensor, ...], **options: object) -> MaskingDiagnosis:
    return diagnose_masking(model, (data[2], data[3]), al.ThreatModel("linf", EPS), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", sorted(MASKED))
def test_masked_models_are_flagged(case: str, standard: nn.Module, data: tuple[Tensor, ...]) -> None:
    """Each deliberately masked model fails the checks that its kind of masking must trip."""
    wrap, expected = MASKED[case]
    diag = diagnose(wrap(standard).eval(), data)
    assert diag.masked
    assert expected <= set(diag.flagged), [f"{c.name}: {c.status} ({c.detail})" for c in diag.checks]


def test_pgd_trained_model_is_not_flagged(robust: nn.Module, data: tuple[Tensor, ...]) -> None:
    """A PGD-trained model passes every check, and the checks show why: PGD beats FGSM, the unbounded attack
    reaches 0 %, Square does no better than the white-box attacks."""
    diag = diagnose(robust, data)
    assert [c.status for c in diag.checks] == ["pass"] * len(CHECKS), [c.detail for c in diag.checks]
    assert not diag.masked
    assert diag.figures["iterative_accuracy"] < diag.figures["fgsm_accuracy"] < diag.clean_accuracy
    assert diag.figures["unbounded_accuracy"] == 0.0
    assert diag.figures["pgd_accuracy"] > 0.5  # it is robust, not just unflagged


def test_standard_model_is_not_flagged(standard: nn.Module, data: tuple[Tensor, ...]) -> None:
    """An undefended model is not robust, but its gradients are honest: nothing is flagged."""
    diag = diagnose(standard, data)
    assert not diag.masked, [c.detail for c in diag.checks if c.flagged]


def test_transfer_from_a_surrogate(standard: nn.Module, data: tuple[Tensor, ...]) -> None:
    """At ℓ1 examples crafted on the unrounded model fool the rounded one where its zero gradients fool
    nothing. (Until session 3 Square had no ℓ1 version and the check ran only with a surrogate; now
    Square at ℓ1 already flags the rounded model without one.)"""
    threat = al.ThreatModel("l1", 4.0)
    pair = (data[2], data[3])
    rounded = Rounded(standard).eval()
    without = diagnose_masking(rounded, pair, threat)
    assert without["black_box_vs_white_box"].status == "fail", without["black_box_vs_white_box"].detail
    with_surrogate = diagnose_masking(rounded, pair, threat, surrogate=standard)
    check = with_surrogate["black_box_vs_white_box"]
    assert check.status == "fail", check.detail
    assert "surrogate" in check.detail
    honest = diagnose_masking(standard, pair, threat, surrogate=Rounded(standard).eval())
    assert honest["black_box_vs_white_box"].status == "pass", honest["black_box_vs_white_box"].detail


def test_result_structure(standard: nn.Module, data: tuple[Tensor, ...]) -> None:
    """Checks come in CHECKS order with a figure, a detail and a sentence; lookup by name; table rows."""
    diag = diagnose(standard, data, num_examples=120)
    assert diag.num_examples == 120
    assert tuple(c.name for c in diag.checks) == CHECKS
    for check in diag.checks:
        assert check.status in ("pass", "fail", "not run")
        assert check.detail
        assert check.meaning.endswith(".")
        assert diag[check.name] is check
    with pytest.raises(KeyError, match="zero_gradients"):
        diag["nope"]
    rows = diag.table()
    assert [r["check"] for r in rows] == list(CHECKS)
    assert set(rows[0]) == {"check", "title", "status", "figure", "detail", "meaning"}
    assert reexported is diagnose_masking
    with torch.no_grad():
        clean = float((standard(data[2][:120]).argmax(1) == data[3][:120]).float().mean())
    assert diag.clean_accuracy == pytest.approx(clean)


def test_reproducible_and_leaves_the_model_alone(robust: nn.Module, data: tuple[Tensor, ...]) -> None:
    """Same seed, same figures; the model's mode, parameters and their .grad are untouched."""
    model = robust.train()
    model.zero_grad(set_to_none=True)  # training left .grad behind
    params = [p.clone() for p in model.parameters()]
    first = diagnose(model, data, num_examples=100, square_queries=50)
    second = diagnose(model, data, num_examples=100, square_queries=50)
    assert first.figures == second.figures
    assert all(m.training for m in model.modules())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    assert all(p.grad is None for p in model.parameters())
    model.eval()


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"num_examples": 0}, "num_examples"),
        ({"steps": 0}, "steps"),
        ({"square_queries": 0}, "square_queries"),
        ({"grad_fraction": -0.1}, "grad_fraction"),
        ({"black_box_tol": float("nan")}, "black_box_tol"),
        ({"surrogate": "model"}, "surrogate"),
    ],
)
def test_rejects_bad_options(options: dict, argument: str, standard: nn.Module, data: tuple) -> None:
    """Bad options raise a ValueError naming the option."""
    with pytest.raises(ValueError, match=argument):
        diagnose(standard, data, **options)


def test_rejects_bad_data(standard: nn.Module, data: tuple[Tensor, ...]) -> None:
    """Inputs outside the box, per-example radii and empty data raise ValueErrors."""
    threat = al.ThreatModel("linf", EPS)
    with pytest.raises(ValueError, match=r"\bx\b"):
        diagnose_masking(standard, (data[2] * 2, data[3]), threat)
    with pytest.raises(ValueError, match="eps"):
        diagnose_masking(standard, (data[2], data[3]), al.ThreatModel("linf", torch.full((300,), EPS)))
    with pytest.raises(ValueError, match="no examples"):
        diagnose_masking(standard, [], threat)


@pytest.mark.parametrize(
    ("acc_fgsm", "acc_pgd", "status"),
    [
        (0.80, 0.70, "pass"),  # iterating helps
        (0.80, 0.80, "fail"),  # FGSM finds errors, PGD no more
        (0.80, 0.85, "fail"),  # PGD worse than FGSM (randomized or shattered gradients)
        (0.0, 0.0, "pass"),  # FGSM fools everything: nothing left to improve on
        (0.898, 0.898, "pass"),  # FGSM fools < 1 %: inconclusive
    ],
)
def test_iterative_rule(acc_fgsm: float, acc_pgd: float, status: str) -> None:
    """The iterative-vs-single-step rule on its own (clean accuracy 0.9, 1,000 examples)."""
    check = _check_iterative(acc_fgsm, acc_pgd, 0.9, 1000, 20, 0.0)
    assert check.status == status
    assert check.figure == pytest.approx(acc_fgsm - acc_pgd)


def test_report_panel(tmp_path: Path, standard: nn.Module, data: tuple[Tensor, ...]) -> None:
    """The report shows each model's checks (result, figure, meaning) and warns about a flagged model;
    labels are escaped."""
    threat = al.ThreatModel("linf", EPS)
    pair = (data[2][:100], data[3][:100])
    masked = Scaled(standard).eval()
    evil = "<b>scaled</b>"
    reports = [
        ModelReport(label, evaluate(model, pair, threat, [FGSM(threat)], quiet=True), diagnosis=diag)
        for label, model, diag in [
            ("standard", standard, diagnose_masking(standard, pair, threat, square_queries=50)),
            (evil, masked, diagnose_masking(masked, pair, threat, square_queries=50)),
        ]
    ]
    html_path, md_path = write_report(tmp_path, title="t", models=reports)
    page, text = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    for report in (page, text):
        assert "Gradient-masking diagnostics" in report
        for check in reports[1].diagnosis.checks:  # type: ignore[union-attr]
            assert check.title in report
    assert "<td class='fail'>fail</td>" in page
    assert evil not in page
    assert "The gradient-masking checks flag the &lt;b&gt;scaled&lt;/b&gt; model (zero gradients" in page
    assert "| zero gradients | **fail** |" in text
    assert "flag the standard model" not in page
    bare = write_report(tmp_path / "bare", title="t", models=[ModelReport("m", reports[0].evaluation)])
    assert "Gradient-masking" not in bare[0].read_text(encoding="utf-8")


def test_rejects_a_model_without_logits(data: tuple[Tensor, ...]) -> None:
    """A model that does not return (B, C) logits gets a ValueError naming the model."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Flatten(0))  # (B·C,)
    with pytest.raises(ValueError, match="model"):
        diagnose(model, data)


def test_sweep_checks_return_verdicts_with_their_numbers() -> None:
    """check_sweep judges a sweep on its own: a rise with ε, a sweep weaker than the table, a survivor of
    the whole box; a clean monotone sweep that reaches 0 at the box's width passes every check."""
    from advlearn.diagnostics import SWEEP_CHECKS, check_sweep
    from advlearn.evaluation import EpsSweep, Evaluation

    threat = al.ThreatModel("linf", 0.3)
    table = Evaluation(
        threat=threat, num_examples=200, clean_accuracy=0.9, robust_accuracy={"PGD": 0.3},
        worst_case_accuracy=0.3, confidence_on_errors={}, correct={},
    )  # fmt: skip
    bad = EpsSweep(threat, [1.0, 0.0, 0.3, 0.1], [0.4, 0.9, 0.7, 0.5], 200)  # unsorted on purpose
    found = check_sweep(bad, table)
    assert [f.check for f in found] == list(SWEEP_CHECKS)
    rise, weaker, survives = found
    assert (rise.eps, rise.accuracy) == ((0.1, 0.3), (0.5, 0.7))
    assert (weaker.eps, weaker.accuracy, weaker.table_accuracy) == ((0.3,), (0.7,), 0.3)
    assert (survives.eps, survives.accuracy) == ((1.0,), (0.4,))
    assert survives.threat == threat.with_eps(1.0)
    good = EpsSweep(threat, [0.0, 0.3, 1.0], [0.9, 0.3, 0.0], 200)
    assert check_sweep(good, table) == []
    # the whole-box check needs a ball that is its own box: an ℓ2 sweep to ε = 1 proves nothing
    l2 = EpsSweep(al.ThreatModel("l2", 0.3), [0.0, 1.0], [0.9, 0.4], 200)
    assert check_sweep(l2) == []
