"""APGD and APGD-T: the checkpoint schedule, closed forms on linear models, strength against PGD, budgets."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import APGD, APGDT, apgd, apgd_checkpoints, apgd_t, build_attack, pgd, targeted_dlr
from advlearn.data import digits
from conftest import LinearProblem, Trained, make_mlp

F64 = torch.float64
EPS = 0.05  # x ± EPS stays inside [0, 1] for the linear problem's x in [0.3, 0.7]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, Tensor, Tensor]:
    """An MLP trained for a second on scikit-learn's 8x8 digits (10 classes), and 200 test digits."""
    split = digits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(split.train.x), split.train.y).backward()
            optimizer.step()
    model.eval().requires_grad_(False)
    x, y = split.test.x[:200], split.test.y[:200]
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9, f"the digits model should be accurate, got {accuracy}"
    return model, x, y


# ----------------------------------------------------------------------------- schedule and loss


def test_checkpoints_of_the_paper() -> None:
    """p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (intervals shrink by 0.03 to 0.06), times the steps."""
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1000) == [0, 220, 410, 570, 700, 800, 870, 930, 990]


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10, 37, 250])
def test_checkpoints_are_increasing_and_inside_the_budget(steps: int) -> None:
    """Checkpoints start at 0, increase strictly, and never pass the number of steps."""
    w = apgd_checkpoints(steps)
    assert w[0] == 0
    assert all(a < b for a, b in itertools.pairwise(w))
    assert w[-1] <= steps


def test_checkpoints_reject_bad_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        apgd_checkpoints(0)


def test_targeted_dlr_closed_form() -> None:
    """-(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), computed by hand; invariant to shifting and scaling logits."""
    logits = torch.tensor([[4.0, 3.0, 1.0, 0.0, -2.0], [0.5, 2.0, 1.5, 3.0, -1.0]], dtype=F64)
    y, t = torch.tensor([0, 1]), torch.tensor([1, 3])
    expected = torch.tensor([-(4.0 - 3.0) / (4.0 - 0.5), -(2.0 - 3.0) / (3.0 - (1.5 + 0.5) / 2)], dtype=F64)
    torch.testing.assert_close(targeted_dlr(logits, y, t), expected)
    torch.testing.assert_close(targeted_dlr(3.0 * logits - 7.0, y, t), expected)


def test_targeted_dlr_with_three_classes_and_two() -> None:
    """With 3 classes z_π3 stands in for z_π4; with 2 the loss is undefined and refused."""
    logits = torch.tensor([[3.0, 1.0, 0.0]])
    torch.testing.assert_close(
        targeted_dlr(logits, torch.tensor([0]), torch.tensor([2])), torch.tensor([-1.0])
    )
    with pytest.raises(ValueError, match="3 classes"):
        targeted_dlr(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([1]))


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("eps_kind", ["float", "per_example"])
def test_linear_model_reaches_the_worst_case(linear2: LinearProblem, norm: str, eps_kind: str) -> None:
    """On a 2-class linear model the margin's maximizer over the ball is x + ε·d*(w_eff); APGD lands on it.

    The first step of length 2ε overshoots and the projection brings it back to the
    vertex (ℓ∞) or the sphere point (ℓ2); nothing in the ball is better after that.
    """
    p = linear2
    eps: float | Tensor = EPS if eps_kind == "float" else torch.linspace(0.01, EPS, len(p.y), dtype=F64)
    threat = al.ThreatModel(norm, eps)
    result = apgd(p.model, p.x, p.y, threat, steps=10, loss="cw", random_start=False)
    e = threat.eps_for(p.x)[:, None]
    direction = p.w_eff.sign() if norm == "linf" else p.w_eff / p.w_eff.norm(dim=1, keepdim=True)
    torch.testing.assert_close(result.x_adv, p.x + e * direction, atol=1e-12, rtol=0)
    torch.testing.assert_close(result.loss, p.margin(result.x_adv))


def test_l2_step_is_blind_to_the_box() -> None:
    """An ℓ2 step is ``Π(x + η∇f/‖∇f‖)`` over the whole gradient, as in the paper and the reference.

    Dropping the coordinates pressed against the box before normalizing (what
    ThreatModel.ascent_step does) let the ball's rescale pull them off the box at every step; on an
    adversarially trained MNIST CNN that made ℓ2 APGD-T break a digit 3 times in 20 seeds where the
    reference broke it 12 times. One step from x (η = 2ε > ε, so the ball's rescale brings the step to
    ε·∇f/‖∇f‖) on a linear model with inputs on the box must land at the clip of that point.
    """
    gen = seeded(0)
    model = nn.Linear(12, 3).to(F64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 12, generator=gen, dtype=F64))
    model.requires_grad_(False)
    x = torch.rand(16, 12, generator=gen, dtype=F64)
    x[:, :4], x[:, 4:8] = 0.0, 1.0  # a third of the coordinates at each face of the box
    y = torch.randint(0, 3, (16,), generator=gen)
    threat = al.ThreatModel("l2", eps=0.5)
    x_req = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x_req), y, reduction="sum").backward()
    g = x_req.grad
    assert g is not None
    blocked = ((x <= 0) & (g < 0)) | ((x >= 1) & (g > 0))
    assert bool(blocked.any(dim=1).all()), "every example should have coordinates the box blocks"
    expected = (x + 0.5 * g / g.norm(dim=1, keepdim=True)).clamp(0.0, 1.0)
    free = g.masked_fill(blocked, 0.0)
    masked = (x + 0.5 * free / free.norm(dim=1, keepdim=True)).clamp(0.0, 1.0)
    assert (masked - expected).abs().amax() > 1e-2, "the masked step should land elsewhere"

    result = apgd(model, x, y, threat, steps=1, random_start=False)

    # CE is convex in x and the step raises ⟨∇f, ·⟩, so the step's point is the one kept.
    torch.testing.assert_close(result.x_adv, expected)


def test_zero_eps_examples_do_not_move(linear2: LinearProblem) -> None:
    """A per-example ε of 0 keeps that example at x, random start or not."""
    p = linear2
    eps = torch.tensor([0.0, EPS, 0.0, EPS, 0.0, EPS], dtype=F64)
    threat = al.ThreatModel("l2", eps)
    result = apgd(p.model, p.x, p.y, threat, steps=5, generator=seeded(0))
    zero = eps == 0
    assert torch.equal(result.x_adv[zero], p.x[zero])
    assert not torch.equal(result.x_adv[~zero], p.x[~zero])
    assert threat.contains(result.x_adv, p.x).all()


# ----------------------------------------------------------------------------- strength


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 0.3), ("l2", 0.4)])
@pytest.mark.parametrize("steps", [10, 20])
def test_at_least_as_strong_as_pgd_on_blobs(trained: Trained, norm: str, eps: float, steps: int) -> None:
    """With the same number of gradient steps, APGD leaves at most as many examples robust as PGD."""
    threat = al.ThreatModel(norm, eps)
    robust_pgd = ~pgd(trained.model, trained.x, trained.y, threat, steps=steps, generator=seeded(0)).success
    robust_apgd = ~apgd(trained.model, trained.x, trained.y, threat, steps=steps, generator=seeded(0)).success
    assert robust_pgd.any(), "eps should leave PGD something to miss"
    assert robust_apgd.sum() <= robust_pgd.sum()


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.6)])
def test_at_least_as_strong_as_pgd_on_digits(
    digits_model: tuple[nn.Module, Tensor, Tensor], norm: str, eps: float
) -> None:
    """On a trained 10-class digits model: APGD-CE ≤ PGD with the same budget, and APGD-T ≤ APGD-CE."""
    model, x, y = digits_model
    threat = al.ThreatModel(norm, eps)
    acc_pgd = (~pgd(model, x, y, threat, steps=20, generator=seeded(0)).success).float().mean()
    acc_apgd = (~apgd(model, x, y, threat, steps=20, generator=seeded(0)).success).float().mean()
    apgd_t_result = apgd_t(model, x, y, threat, steps=20, loss="dlr", num_targets=3, early_stop=True)
    acc_apgd_t = (~apgd_t_result.success).float().mean()
    assert 0.0 < acc_pgd < 0.9, "eps should leave PGD something to miss"
    assert acc_apgd <= acc_pgd
    # Spread over 3 targets, APGD-T has 3x the budget of APGD-CE here.
    assert acc_apgd_t <= acc_apgd


def test_dlr_resists_logit_scaling(trained: Trained) -> None:
    """Scaling the logits by 1e4 saturates softmax and starves CE of gradient; APGD-DLR does not care."""

    class Scaled(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Tensor) -> Tensor:
            return 1e4 * self.model(x)

    threat = al.ThreatModel("linf", 0.15)
    plain = apgd(trained.model, trained.x, trained.y, threat, steps=20, loss="dlr", generator=seeded(0))
    scaled = apgd(
        Scaled(trained.model), trained.x, trained.y, threat, steps=20, loss="dlr", generator=seeded(0)
    )
    assert torch.equal(plain.success, scaled.success)


# ----------------------------------------------------------------------------- bookkeeping


def test_budget_is_counted(trained: Trained) -> None:
    """Without early stop: steps·B gradients and B forwards per run; APGD-T runs once per target (≤ C − 1)."""
    x, y = trained.x, trained.y
    threat = al.ThreatModel("linf", 0.1)
    result = apgd(trained.model, x, y, threat, steps=7, restarts=2)
    assert (result.num_grads, result.num_forwards) == (7 * 2 * len(y), 2 * len(y))
    result = apgd_t(trained.model, x, y, threat, steps=7, loss="ce", num_targets=9)
    # 3 classes: 2 targets; one extra forward pass ranks them at x.
    assert (result.num_grads, result.num_forwards) == (7 * 2 * len(y), 3 * len(y))


def test_early_stop_skips_what_is_fooled(trained: Trained) -> None:
    """With early stop misclassified inputs stay at x and cost no gradient; fooled ones stop early."""
    x, y = trained.x, trained.y.clone()
    y[:4] = (y[:4] + 1) % 3  # four inputs now misclassified clean
    threat = al.ThreatModel("linf", 0.2)  # every other example falls (PGD leaves none at 0.2)
    result = apgd(trained.model, x, y, threat, steps=50, early_stop=True, generator=seeded(0))
    assert result.success.all()
    assert torch.equal(result.x_adv[:4], x[:4])
    assert result.num_grads < 50 * (len(y) - 4)
    full = apgd(trained.model, x, y, threat, steps=50, generator=seeded(0))
    assert full.num_grads == 50 * len(y)


def test_result_agrees_with_the_model(digits_model: tuple[nn.Module, Tensor, Tensor]) -> None:
    """APGD-T reports success and the untargeted DLR w.r.t. y at x_adv, as the model sees them."""
    model, x, y = digits_model
    x, y = x[:40], y[:40]
    result = APGDT(al.ThreatModel("l2", 0.5), steps=10, num_targets=2).run(model, x, y, generator=seeded(1))
    with torch.no_grad():
        logits = model(result.x_adv)
    assert torch.equal(result.success, logits.argmax(1) != y)
    torch.testing.assert_close(result.loss, al.losses.dlr(logits, y))


def test_l1_stays_in_the_ball(trained: Trained) -> None:
    """The ℓ1 variant (one-coordinate steps, exact ℓ1 projection) stays in ball ∩ box and fools examples."""
    threat = al.ThreatModel("l1", 0.8)
    result = apgd(trained.model, trained.x, trained.y, threat, steps=20, generator=seeded(0))
    assert threat.contains(result.x_adv, trained.x).all()
    assert result.success.float().mean() > 0.5


class _Recorder(nn.Module):
    """The wrapped model, remembering every input it is asked about."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("eps_schedule", [False, True])
def test_l1_starts_sparse_on_the_sphere(
    digits_model: tuple[nn.Module, Tensor, Tensor], eps_schedule: bool
) -> None:
    """ℓ1 APGD's random start carries all of ε (times 3 for the schedule's first stage) on a few
    coordinates, in ball ∩ box. A uniform point of the ball spreads about ε/D over every coordinate
    and loses what the box clips (most digits' pixels are 0): the first sparse step erased it, and
    restarts from such starts ran nearly the same path."""
    model, x, y = digits_model
    x, y = x[:20], y[:20]
    recorder = _Recorder(model)
    threat = al.ThreatModel("l1", 2.0)
    apgd(recorder, x, y, threat, steps=10, eps_schedule=eps_schedule, generator=seeded(0))
    start = recorder.inputs[0]  # without early_stop the first call is the gradient at the start
    radius = 3.0 * 2.0 if eps_schedule else 2.0
    delta = (start - x).flatten(1)
    assert threat.with_eps(radius).contains(start, x).all()
    torch.testing.assert_close(delta.abs().sum(1), torch.full((20,), radius), atol=1e-4, rtol=0)
    assert (delta != 0).sum(1).float().mean() < x[0].numel() / 3


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"steps": 0}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"num_targets": 0}, "num_targets"),
        ({"rho": 1.5}, "rho"),
        ({"momentum": 0.0}, "momentum"),
        ({"momentum": True}, "momentum"),
        ({"loss": "hinge"}, "loss"),
    ],
)
def test_rejects_bad_options(
    options: dict, argument: str, mlp: nn.Module, vectors: tuple[Tensor, Tensor]
) -> None:
    threat = al.ThreatModel("linf", 0.1)
    # num_targets is APGD-T's option (apgd_t picks its targets; apgd's y may hold them).
    config, function = (APGDT, apgd_t) if "num_targets" in options else (APGD, apgd)
    with pytest.raises(ValueError, match=argument):
        config(threat, **options)
    with pytest.raises(ValueError, match=argument):
        function(mlp, *vectors, threat, **options)


def test_targeted_dlr_needs_three_classes(vectors: tuple[Tensor, Tensor]) -> None:
    x, _ = vectors
    model = make_mlp(num_classes=2)
    with pytest.raises(ValueError, match="3 classes"):
        apgd_t(
            model,
            x,
            torch.zeros(len(x), dtype=torch.long),
            al.ThreatModel("linf", 0.1),
            loss="dlr",
        )


def test_registered_configs() -> None:
    threat = al.ThreatModel("linf", 0.1)
    assert build_attack("apgd", threat) == APGD(threat)
    apgd_t = build_attack("apgd_t", threat)
    assert apgd_t == APGDT(threat)
    assert (apgd_t.loss, apgd_t.num_targets, apgd_t.steps) == ("dlr", 9, 100)
    # APGD-T takes true labels and picks its targets: no `targeted` flag meaning something else.
    assert "targeted" not in al.attacks.ATTACKS.fields("apgd_t")


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_targeted_means_y_holds_targets(trained: Trained, loss: str) -> None:
    """apgd(targeted=True), like pgd(targeted=True): y holds targets, success means prediction == target."""
    targets = (trained.y + 1) % 3
    threat = al.ThreatModel("linf", 0.3)
    result = apgd(
        trained.model, trained.x, targets, threat, steps=20, targeted=True, loss=loss, generator=seeded(0)
    )
    with torch.no_grad():
        logits = trained.model(result.x_adv)
    assert torch.equal(result.success, logits.argmax(1) == targets)
    torch.testing.assert_close(result.loss, al.losses.get_loss(loss)(logits, targets))
    assert result.success_rate >= 0.9, f"success rate {result.success_rate:.3f}"
    assert threat.contains(result.x_adv, trained.x).all()
    with pytest.raises(ValueError, match="dlr"):
        APGD(threat, targeted=True, loss="dlr")
