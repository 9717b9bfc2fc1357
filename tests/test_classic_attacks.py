"""CW, DeepFool, L-BFGS, Rotation and Transfer: closed forms, minimality, the ball contract, targeted mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import (
    ATTACKS,
    CW,
    FGSM,
    LBFGS,
    PGD,
    DeepFool,
    Rotation,
    Transfer,
    cw,
    deepfool,
    lbfgs,
    rotate,
    rotation,
    transfer,
)
from advlearn.losses import margin
from conftest import LinearProblem, Trained, make_mlp

F64 = torch.float64
OVERSHOOT = 0.02
WIDE = (-10.0, 10.0)  # a box the linear closed forms never reach


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def l2(delta: Tensor) -> Tensor:
    return delta.reshape(delta.shape[0], -1).norm(dim=1)


def predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        out: Tensor = model(x).argmax(1)
    return out


MINIMAL = {
    "cw": lambda m, x, y, t: cw(m, x, y, t),
    "deepfool": lambda m, x, y, t: deepfool(m, x, y, t),
    "lbfgs": lambda m, x, y, t: lbfgs(m, x, y, t, steps=20, search_steps=4),  # scipy's loop is the cost
}


# ----------------------------------------------------------------------------- DeepFool: closed forms


def test_deepfool_linear_binary_closed_form(linear2: LinearProblem) -> None:
    """On z = Wx + b with 2 classes DeepFool returns x − (1 + η)·m/‖w‖²·w: the projection onto the
    hyperplane pushed η further, at distance (1 + η)|m|/‖w‖, and x itself where already wrong."""
    p = linear2
    threat = al.ThreatModel("l2", 100.0, bounds=WIDE)
    result = deepfool(p.model, p.x, p.y, threat, overshoot=OVERSHOOT)
    m = p.margin(p.x)  # z_{1-y} − z_y: negative where x is classified correctly
    assert bool((m < 0).any()), "the fixture should hold correctly classified examples"
    assert bool((m > 0).any()), "the fixture should hold misclassified examples"
    w_sq = (p.w_eff**2).sum(dim=1)
    step = torch.where(m < 0, -(1 + OVERSHOOT) * m / w_sq, torch.zeros_like(m))
    torch.testing.assert_close(result.x_adv, p.x + step[:, None] * p.w_eff, atol=1e-10, rtol=0)
    distance = (1 + OVERSHOOT) * m.abs() / p.w_eff.norm(dim=1)
    torch.testing.assert_close(l2(result.x_adv - p.x)[m < 0], distance[m < 0], atol=1e-10, rtol=0)
    assert bool(result.success.all())


def test_deepfool_linear_multiclass_nearest_boundary() -> None:
    """With 4 linear classes DeepFool steps once, onto the nearest pairwise boundary: (1 + η)·|f_k|/‖w_k‖."""
    g = seeded(3)
    model = nn.Linear(6, 4).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 6, generator=g, dtype=F64))
        model.bias.copy_(torch.randn(4, generator=g, dtype=F64))
    x = torch.rand(20, 6, generator=g, dtype=F64)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example correct: DeepFool must move all of them
    result = deepfool(model, x, y, al.ThreatModel("l2", 100.0, bounds=WIDE), overshoot=OVERSHOOT)
    w_k = model.weight[None, :, :] - model.weight[y][:, None, :]  # (B, C, D)
    with torch.no_grad():
        logits = model(x)
    f_k = logits - logits.gather(1, y[:, None])  # (B, C)
    dist = f_k.abs() / w_k.norm(dim=2).clamp_min(1e-300)
    dist = dist.scatter(1, y[:, None], math.inf).min(dim=1).values
    torch.testing.assert_close(l2(result.x_adv - x), (1 + OVERSHOOT) * dist.detach(), atol=1e-10, rtol=0)
    assert bool(result.success.all())
    assert result.num_grads == 3 * len(y)  # one step, one backward pass per candidate class


def test_deepfool_crosses_when_the_box_binds() -> None:
    """With a coordinate pinned at a box face and the boundary beyond it, DeepFool steps along the free
    coordinates: one step of (1 + η)·|f|/‖w_free‖ that crosses, instead of stalling against the face."""
    model = nn.Linear(3, 2).double().eval()
    with torch.no_grad():
        # z1 − z0 = x0 + x1 − x2 − 1, so w = (1, 1, −1).
        model.weight.copy_(torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=F64))
        model.bias.copy_(torch.tensor([1.0, 0.0], dtype=F64))
    x = torch.tensor([[0.2, 1.0, 0.5]], dtype=F64)  # f = −0.3; x1 sits on the upper face, w pushes it out
    y = torch.tensor([0])
    threat = al.ThreatModel("l2", 10.0, bounds=(0.0, 1.0))
    result = deepfool(model, x, y, threat, overshoot=OVERSHOOT)
    assert bool(result.success.all())
    expected = x + (1 + OVERSHOOT) * 0.3 / 2 * torch.tensor([[1.0, 0.0, -1.0]], dtype=F64)
    torch.testing.assert_close(result.x_adv, expected, atol=1e-12, rtol=0)
    assert result.num_grads == 1


# ----------------------------------------------------------------------------- CW and L-BFGS: minimality


def test_cw_is_near_the_exact_distance_on_a_linear_model(linear2: LinearProblem) -> None:
    """On a linear model the least ℓ2 perturbation is |m|/‖w‖: CW lands between it and DeepFool's (1+η)×."""
    p = linear2
    threat = al.ThreatModel("l2", 100.0, bounds=WIDE)
    result = cw(p.model, p.x, p.y, threat, steps=300, lr=0.01)
    m = p.margin(p.x)
    exact = m.abs() / p.w_eff.norm(dim=1)
    found = l2(result.x_adv - p.x)
    wrong = m > 0
    assert bool(result.success.all())
    assert bool((found[~wrong] >= exact[~wrong] * (1 - 1e-6)).all())  # nothing beats the exact distance
    assert bool((found[~wrong] <= exact[~wrong] * (1 + OVERSHOOT)).all())
    assert bool((found[wrong] == 0).all())


def test_cw_and_lbfgs_find_small_perturbations(trained: Trained) -> None:
    """On a trained MLP, CW fools every example with perturbations no larger than DeepFool's (its median
    within 2 %), and L-BFGS fools at least 95 % with a median within 1.5× DeepFool's."""
    t = trained
    threat = al.ThreatModel("l2", 100.0)
    reference = l2(deepfool(t.model, t.x, t.y, threat).x_adv - t.x)
    result_cw = cw(t.model, t.x, t.y, threat)
    assert bool(result_cw.success.all())
    assert float(l2(result_cw.x_adv - t.x).median()) <= 1.02 * float(reference.median())
    result_lbfgs = lbfgs(t.model, t.x, t.y, threat)
    assert result_lbfgs.success_rate >= 0.95
    found = l2(result_lbfgs.x_adv - t.x)[result_lbfgs.success]
    assert float(found.median()) <= 1.5 * float(reference[result_lbfgs.success].median())


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_minimal_attacks_project_onto_the_ball(name: str, trained: Trained) -> None:
    """Inside a small ball a minimal-norm attack returns the projection of its unconstrained point, and
    reports success honestly at that point."""
    t = trained
    x, y = t.x[:32], t.y[:32]
    attack = MINIMAL[name]
    free = attack(t.model, x, y, al.ThreatModel("l2", 100.0))
    norms = l2(free.x_adv - x)
    small = al.ThreatModel("l2", float(norms[norms > 0].quantile(0.25)))
    ball = attack(t.model, x, y, small)
    torch.testing.assert_close(ball.x_adv, small.project(free.x_adv, x), atol=1e-6, rtol=0)
    assert bool(small.contains(ball.x_adv, x).all())
    assert torch.equal(ball.success, predict(t.model, ball.x_adv) != y)
    inside = norms <= small.eps
    assert torch.equal(ball.success[inside], free.success[inside])
    assert 0 < ball.success_rate < free.success_rate  # some fooled inside the ball, not all


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_misclassified_inputs_are_returned_unchanged(name: str, trained: Trained) -> None:
    """δ = 0 is the minimal perturbation of an input the model already gets wrong."""
    t = trained
    x, y = t.x[:16], t.y[:16].clone()
    y[:5] = (y[:5] + 1) % 3  # wrong labels: the model disagrees with them at x
    result = MINIMAL[name](t.model, x, y, al.ThreatModel("l2", 100.0))
    assert torch.equal(result.x_adv[:5], x[:5])
    assert bool(result.success[:5].all())


def test_cw_confidence_margin(trained: Trained) -> None:
    """With κ = 2 every adversarial example CW returns beats the true logit by at least κ."""
    t = trained
    result = cw(t.model, t.x, t.y, al.ThreatModel("l2", 100.0), confidence=2.0)
    assert bool(result.success.all())
    with torch.no_grad():
        margins = margin(t.model(result.x_adv), t.y)
    assert float(margins.min()) >= 2.0 - 1e-4
    plain = cw(t.model, t.x, t.y, al.ThreatModel("l2", 100.0))
    assert float(l2(result.x_adv - t.x).mean()) > float(l2(plain.x_adv - t.x).mean())


@pytest.mark.parametrize("attack", [cw, lbfgs])
def test_targeted(attack: object, trained: Trained) -> None:
    """Targeted CW and L-BFGS reach the target class on at least 95 % of the examples."""
    t = trained
    target = (t.y + 1) % 3
    result = attack(t.model, t.x, target, al.ThreatModel("l2", 100.0), targeted=True)  # type: ignore[operator]
    assert torch.equal(result.success, predict(t.model, result.x_adv) == target)
    assert result.success_rate >= 0.95


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda t: CW(t, steps=0), "steps"),
        (lambda t: CW(t, search_steps=0), "search_steps"),
        (lambda t: CW(t, initial_const=0.0), "initial_const"),
        (lambda t: CW(t, lr=-1.0), "lr"),
        (lambda t: CW(t, confidence=-1.0), "confidence"),
        (lambda t: DeepFool(t, overshoot=-0.1), "overshoot"),
        (lambda t: DeepFool(t, num_candidates=0), "num_candidates"),
        (lambda t: LBFGS(t, search_steps=0), "search_steps"),
        (lambda t: LBFGS(t, targeted=True, loss="dlr"), "loss"),
        (lambda t: Rotation(t, max_angle=181.0), "max_angle"),
        (lambda t: Rotation(t, max_angle=-1.0), "max_angle"),
        (lambda t: Rotation(t, num_angles=0), "num_angles"),
        (lambda t: Rotation(t, angle_steps=-1), "angle_steps"),
    ],
)
def test_rejects_bad_options(build: object, argument: str) -> None:
    """Bad options raise a ValueError naming the option."""
    with pytest.raises(ValueError, match=argument):
        build(al.ThreatModel("l2", 1.0))  # type: ignore[operator]


# ----------------------------------------------------------------------------- Rotation


@pytest.mark.parametrize("size", [(5, 5), (6, 6)])
def test_rotate_quarter_turns_are_exact(size: tuple[int, int]) -> None:
    """Rotating by ±90° and 180° permutes the pixels exactly as torch.rot90 does (counter-clockwise for +)."""
    x = torch.rand(3, 2, *size, generator=seeded(0))
    n = x.shape[0]
    torch.testing.assert_close(
        rotate(x, torch.full((n,), 90.0)), torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        rotate(x, torch.full((n,), -90.0)), torch.rot90(x, -1, (2, 3)), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(rotate(x, torch.full((n,), 180.0)), x.flip(2, 3), atol=1e-5, rtol=0)
    assert torch.equal(rotate(x, torch.zeros(n)), x)


def test_rotate_non_square_half_turn_and_fill() -> None:
    """A 180° turn of a 4×7 image flips both axes (no shearing); pixels from outside take ``fill``."""
    x = torch.rand(2, 1, 4, 7, generator=seeded(1))
    torch.testing.assert_close(rotate(x, torch.full((2,), 180.0)), x.flip(2, 3), atol=1e-5, rtol=0)
    ones = torch.ones(1, 1, 9, 9)
    turned = rotate(ones, torch.tensor([45.0]), fill=0.25)
    assert float(turned[0, 0, 0, 0]) == pytest.approx(0.25)  # a corner comes from outside the image
    assert float(turned[0, 0, 4, 4]) == pytest.approx(1.0)  # the centre stays


def bar_image(angle: float, size: int = 11) -> Tensor:
    """A one-pixel-wide bright bar through the centre at ``angle`` degrees (counter-clockwise on screen)."""
    c = (size - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(size, dtype=F64), torch.arange(size, dtype=F64), indexing="ij")
    u, v = cols - c, c - rows  # v points up
    theta = math.radians(angle)
    distance = (u * math.sin(theta) - v * math.cos(theta)).abs()  # to the line through 0 at `angle`
    return (distance < 0.6).to(torch.float32)[None]  # (1, H, W)


class TemplateModel(nn.Module):
    """Class k scores the image's overlap with the bar at ``angles[k]``: built to be rotation-sensitive."""

    def __init__(self, angles: list[float], size: int = 11) -> None:
        super().__init__()
        self.templates = nn.Parameter(torch.stack([bar_image(a, size) for a in angles]), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.templates)


def test_rotation_fools_a_rotation_sensitive_model() -> None:
    """A horizontal bar is class 0 (bar at 0°) against class 1 (bar at 20°): turning it by 20° fools the
    model; with ℓ∞ ε = 1 the output is exactly a rotation from the grid; within ±5° nothing fools it."""
    model = TemplateModel([0.0, 20.0]).eval()
    x = torch.stack([bar_image(0.0), bar_image(0.0)]) * torch.tensor([1.0, 0.8]).reshape(2, 1, 1, 1)
    y = torch.zeros(2, dtype=torch.long)
    assert bool((predict(model, x) == 0).all())
    threat = al.ThreatModel("linf", 1.0)
    result = rotation(model, x, y, threat, max_angle=30.0, num_angles=31)
    assert bool(result.success.all())
    grid = torch.linspace(-30.0, 30.0, 31)
    candidates = torch.stack([rotate(x, a.expand(2)) for a in grid])  # (A, B, C, H, W)
    gaps = (candidates - result.x_adv[None]).abs().flatten(2).amax(dim=2)  # (A, B)
    assert float(gaps.min(dim=0).values.max()) < 1e-6  # each output is a pure rotation
    assert bool((grid[gaps.argmin(dim=0)].abs() >= 10).all())  # and a rotation well past 5°
    small = rotation(model, x, y, threat, max_angle=5.0, num_angles=11)
    assert not bool(small.success.any())


def test_rotation_projects_onto_a_small_ball(cnn: nn.Module, images: tuple[Tensor, Tensor]) -> None:
    """In a small ℓ2 ball the output is the projection of a grid rotation, inside the ball."""
    x, y = images
    threat = al.ThreatModel("l2", 0.3)
    result = rotation(cnn, x, y, threat, max_angle=20.0, num_angles=9)
    assert bool(threat.contains(result.x_adv, x).all())
    grid = torch.linspace(-20.0, 20.0, 9)
    candidates = torch.stack([threat.project(rotate(x, a.expand(len(y))), x) for a in grid])
    gaps = (candidates - result.x_adv[None]).abs().flatten(2).amax(dim=2)
    assert float(gaps.min(dim=0).values.max()) < 1e-6


def test_rotation_gradient_steps_never_hurt(cnn: nn.Module, images: tuple[Tensor, Tensor]) -> None:
    """Gradient steps on the angle keep the grid's best unless they do better: success first, then loss."""
    x, y = images
    threat = al.ThreatModel("linf", 1.0)
    grid_only = rotation(cnn, x, y, threat, max_angle=30.0, num_angles=7)
    refined = rotation(cnn, x, y, threat, max_angle=30.0, num_angles=7, angle_steps=4)
    assert bool((refined.success | ~grid_only.success).all())
    same = refined.success == grid_only.success
    assert bool((refined.loss[same] >= grid_only.loss[same] - 1e-6).all())
    assert refined.num_grads == 4 * len(y)


def test_rotation_needs_images(mlp: nn.Module, vectors: tuple[Tensor, Tensor]) -> None:
    """Vectors cannot be rotated: a ValueError names x."""
    with pytest.raises(ValueError, match=r"\bx\b"):
        Rotation(al.ThreatModel("linf", 0.1)).run(mlp, *vectors)


# ----------------------------------------------------------------------------- Transfer


def other_model(trained: Trained) -> nn.Module:
    """A second MLP trained on the same blobs (another seed): the transfer target."""
    g = seeded(8)
    model = make_mlp(seed=9).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = trained.x.repeat(4, 1) + 0.02 * torch.randn(4 * len(trained.y), trained.x.shape[1], generator=g)
    y = trained.y.repeat(4)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x.clamp(0, 1)), y).backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


def test_transfer_success_is_measured_on_the_target(trained: Trained) -> None:
    """The examples are the surrogate's attack's; success and loss are the target's."""
    t = trained
    target = other_model(t)
    threat = al.ThreatModel("linf", 0.2)
    pgd = PGD(threat, steps=10)
    result = Transfer(threat, t.model, pgd).run(target, t.x, t.y, generator=seeded(1))
    crafted = pgd.run(t.model, t.x, t.y, generator=seeded(1))
    assert torch.equal(result.x_adv, crafted.x_adv)
    assert torch.equal(result.success, predict(target, result.x_adv) != t.y)
    assert not torch.equal(
        result.success, crafted.success
    )  # the target disagrees with the surrogate somewhere
    assert result.num_grads == crafted.num_grads
    assert result.num_forwards == crafted.num_forwards + len(t.y)


def test_transfer_onto_the_surrogate_is_the_white_box_attack(trained: Trained) -> None:
    """Crafting on the target itself gives the white-box attack's examples and success."""
    t = trained
    threat = al.ThreatModel("l2", 0.3)
    pgd = PGD(threat, steps=10, restarts=2)
    result = transfer(t.model, t.x, t.y, threat, surrogate=t.model, attack=pgd, generator=seeded(2))
    white = pgd.run(t.model, t.x, t.y, generator=seeded(2))
    assert torch.equal(result.x_adv, white.x_adv)
    assert torch.equal(result.success, white.success)


@pytest.mark.parametrize("training", [False, True])
def test_transfer_contract(training: bool, cnn: nn.Module, images: tuple[Tensor, Tensor]) -> None:
    """Transfer keeps the attack contract: threat set, no_grad, modes and parameters of both models, seeds."""
    x, y = images
    surrogate = type(cnn)()
    surrogate.train(training)
    cnn.train(training)
    params = [[v.clone() for v in model.parameters()] for model in (cnn, surrogate)]
    threat = al.ThreatModel("linf", 0.1)
    attack = Transfer(threat, surrogate, PGD(threat, steps=3))
    torch.manual_seed(5)  # dropout in train mode draws from the global RNG
    with torch.no_grad():
        first = attack.run(cnn, x, y, generator=seeded(0))
    assert bool(threat.contains(first.x_adv, x).all())
    assert not torch.equal(first.x_adv, x)
    for model in (cnn, surrogate):
        assert all(m.training == training for m in model.modules())
        for value in model.parameters():
            assert value.grad is None
    for model, before in zip((cnn, surrogate), params, strict=True):
        assert all(torch.equal(v, w) for v, w in zip(model.parameters(), before, strict=True))
    torch.manual_seed(5)
    again = attack.run(cnn, x, y, generator=seeded(0))
    assert torch.equal(first.x_adv, again.x_adv)
    torch.manual_seed(5)
    assert torch.equal(attack(cnn, x, y, generator=seeded(0)), first.x_adv)


def test_transfer_rejects_bad_configs(cnn: nn.Module) -> None:
    """A mismatched threat, a non-module surrogate or a bad loss raise ValueErrors; it is not registered."""
    threat = al.ThreatModel("linf", 0.1)
    with pytest.raises(ValueError, match="threat"):
        Transfer(threat, cnn, FGSM(al.ThreatModel("linf", 0.2)))
    with pytest.raises(ValueError, match="surrogate"):
        Transfer(threat, "model", FGSM(threat))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss"):
        Transfer(threat, cnn, FGSM(threat), loss="hinge")
    assert "transfer" not in ATTACKS
    assert all(cls is not Transfer for cls in ATTACKS.values())
