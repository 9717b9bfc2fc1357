"""Issue 17 part 4: the single-step objectives after Fast-AT, N-FGSM and GradAlign.

Their perturbation geometry is checked against the papers' definitions on models whose input
gradient is known in closed form; each one trains (beats standard training under PGD on the 8×8
digits); an interrupted run resumes to the unbroken run's weights, like every other objective.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import advlearn as al
from advlearn.training import NFGSM, OBJECTIVES, GradAlign, Trainer, build_objective
from test_resume_objectives import _Interrupted, _metrics, _run

EPS = 0.1


class _Recorder(nn.Module):
    """A linear classifier that keeps every input it is called on (the training point comes last)."""

    def __init__(self, d: int = 16, k: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(d, k)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(k, d, generator=g))
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach().clone())
        return self.linear(x.flatten(1))  # type: ignore[no-any-return]


def _batch(n: int = 64, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    # away from the box's faces, so that no clipping hides the geometry (one test adds the faces back)
    return 0.35 + 0.3 * torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_n_fgsm_point_is_noise_in_two_eps_then_a_step_of_eps_not_clipped_to_the_ball() -> None:
    model, (x, y) = _Recorder(), _batch()
    torch.manual_seed(0)
    NFGSM(al.ThreatModel("linf", EPS), guard=False)(model, x, y)
    x_noisy, x_adv = model.inputs[0], model.inputs[-1]
    noise, step = x_noisy - x, x_adv - x_noisy
    # the noise: U(-2ε, 2ε) per coordinate, reaching well beyond ε
    assert noise.abs().max() <= 2 * EPS + 1e-6
    assert (noise.abs() > EPS).float().mean() > 0.4  # half of U(-2ε, 2ε) lies beyond ε
    # the step: ε times the sign of the input gradient at the noisy point (closed form for a linear model)
    x_req = x_noisy.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model.linear(x_req.flatten(1)), y, reduction="sum"), x_req)
    assert torch.allclose(step, EPS * grad.sign(), atol=1e-6)
    # no projection onto the ε-ball: ‖δ‖∞ up to 3ε, and beyond ε for most examples
    delta = (x_adv - x).flatten(1).abs().amax(1)
    assert delta.max() <= 3 * EPS + 1e-6
    assert delta.max() > 2.5 * EPS
    assert (delta > EPS + 1e-6).float().mean() > 0.9


def test_n_fgsm_point_stays_in_the_box() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(64, 1, 4, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    model = _Recorder()
    NFGSM(al.ThreatModel("linf", 0.3), guard=False)(model, x, y)
    assert model.inputs[-1].min() >= 0.0
    assert model.inputs[-1].max() <= 1.0
    assert ((model.inputs[-1] - x).abs() > 0.3 + 1e-6).any()  # still outside the ε-ball where the box allows


def test_n_fgsm_with_no_noise_and_step_eps_is_plain_fgsm() -> None:
    model, (x, y) = _Recorder(), _batch()
    NFGSM(al.ThreatModel("linf", EPS), noise_ratio=0.0, guard=False)(model, x, y)
    x_adv = model.inputs[-1]
    assert torch.equal(model.inputs[0], x)
    assert torch.allclose(x_adv, al.attacks.FGSM(al.ThreatModel("linf", EPS))(model, x, y), atol=1e-6)


def test_grad_align_point_is_fgsm_from_x_and_its_penalty_is_one_minus_the_cosine() -> None:
    threat = al.ThreatModel("linf", EPS)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
    x, y = _batch()
    plain = GradAlign(threat, align_weight=0.0, guard=False)
    fgsm = al.attacks.FGSM(threat)(net, x, y)
    assert torch.allclose(plain(net, x, y), F.cross_entropy(net(fgsm), y), atol=1e-6)
    weight = 0.7
    torch.manual_seed(5)
    loss = GradAlign(threat, align_weight=weight, guard=False)(net, x, y)
    # the same random point by hand: cos between the input gradients at x and at x + η, η ~ U(-ε, ε)
    torch.manual_seed(5)
    x_eta = threat.random_init(x).requires_grad_(True)
    x_req = x.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(F.cross_entropy(net(x_req), y, reduction="sum"), x_req)
    (g2,) = torch.autograd.grad(F.cross_entropy(net(x_eta), y, reduction="sum"), x_eta)
    cos = F.cosine_similarity(g1.flatten(1), g2.flatten(1), dim=1)
    expected = F.cross_entropy(net(fgsm), y) + weight * (1 - cos.mean())
    assert torch.allclose(loss, expected, atol=1e-5)
    assert float(1 - cos.mean()) > 1e-4  # a non-linear net: the penalty is not trivially zero


def test_grad_align_penalty_vanishes_on_a_linear_model_and_is_differentiated_through() -> None:
    threat = al.ThreatModel("linf", EPS)
    x, y = _batch()
    linear, y2 = _Recorder(k=2), y % 2
    # two classes, linear logits: ∇ₓCE = (p₀ − [y = 0])(w₀ − w₁) has one direction per label, so cos = 1
    a = GradAlign(threat, align_weight=5.0, guard=False)(linear, x, y2)
    b = GradAlign(threat, align_weight=0.0, guard=False)(linear, x, y2)
    assert torch.allclose(a, b, atol=1e-5)
    # on a non-linear net, the penalty's gradient reaches the weights (double backpropagation)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
    grads = []
    for weight in (0.0, 1.0):
        torch.manual_seed(1)
        (g,) = torch.autograd.grad(
            GradAlign(threat, align_weight=weight, guard=False)(net, x, y),
            net[1].weight,  # type: ignore[arg-type]
        )
        grads.append(g)
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("cls", [NFGSM, GradAlign])
def test_refuses_bad_options_by_name(cls: type) -> None:
    threat = al.ThreatModel("linf", EPS)
    for option in ("step_ratio", "noise_ratio" if cls is NFGSM else "align_weight"):
        with pytest.raises(ValueError, match=option):
            cls(threat, **{option: -1.0})
    with pytest.raises(ValueError, match="guard_steps"):
        cls(threat, guard_steps=0)
    with pytest.raises(ValueError, match="float eps"):
        cls(al.ThreatModel("linf", torch.full((4,), 0.1)))


@pytest.mark.parametrize("name", ["n_fgsm", "grad_align"])
def test_falls_back_to_pgd_after_a_recorded_collapse(name: str) -> None:
    objective = build_objective(name, al.ThreatModel("linf", EPS), fallback_steps=3)
    assert objective.at_epoch(4, 10, [{"co_detected": 0.0}]) is objective
    after = objective.at_epoch(5, 10, [{"co_detected": 1.0}])
    assert type(after) is type(objective)
    assert after.fallback  # type: ignore[attr-defined]


def _digits_pgd_accuracy(name: str) -> float:
    from advlearn.data import digits
    from advlearn.models import mlp

    split = digits()
    threat = al.ThreatModel("linf", 0.1)
    torch.manual_seed(0)
    model = mlp((1, 8, 8), 10, hidden=(64,))
    objective = build_objective(name, threat if name != "standard" else None)
    trainer = Trainer(
        model, objective, torch.optim.Adam(model.parameters(), lr=3e-3), quiet=True, device="cpu"
    )
    trainer.fit(split.train.loader(64, shuffle=True), epochs=6)
    model.eval()
    attack = al.attacks.PGD(threat, steps=20, early_stop=True)
    ev = al.evaluation.evaluate(model, split.test, threat, {"pgd": attack}, quiet=True)
    return ev.robust_accuracy["pgd"]


@pytest.mark.slow
def test_n_fgsm_and_grad_align_train_robust_models() -> None:
    """On the 8×8 digits at ℓ∞ ε = 0.1, both beat standard training under PGD-20 by 10+ points."""
    standard = _digits_pgd_accuracy("standard")
    for name in ("n_fgsm", "grad_align"):
        assert _digits_pgd_accuracy(name) >= standard + 0.10, name


@pytest.mark.parametrize("name", ["n_fgsm", "grad_align"])
def test_interrupted_run_resumes_to_the_unbroken_weights(name: str, tmp_path: Path) -> None:
    assert name in OBJECTIVES
    unbroken = _run(name, tmp_path / "unbroken")
    with pytest.raises(_Interrupted):
        _run(name, tmp_path / "broken", interrupt_at=2 * 3 + 1)
    resumed = _run(name, tmp_path / "broken", resume=True)
    a, b = unbroken.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _metrics(tmp_path / "unbroken") == _metrics(tmp_path / "broken")
