"""Attacks: closed forms on linear models, feasibility, restarts, early stopping, targeted mode, losses."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import ATTACKS, FGSM, PGD, build_attack, fgsm, pgd, random_sign_noise, uniform_noise
from advlearn.losses import get_loss
from advlearn.threat import NORMS
from conftest import LinearProblem, Trained, make_mlp

F64 = torch.float64
EPS = 0.05  # small enough that x ± EPS stays inside [0, 1] for x in [0.3, 0.7]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Each attack in each norm it declares (``Attack.norms``); test_conformance checks it refuses the others.
SUPPORTED = [(name, norm) for name in sorted(ATTACKS) for norm in NORMS if norm in ATTACKS[name].norms]
IMAGE_ATTACKS = {"rotation"}  # spatial transformations need (B, C, H, W) inputs


def as_images(name: str, model: nn.Module, x: Tensor) -> tuple[nn.Module, Tensor]:
    """For an attack on images, view vectors ``(B, D)`` as ``(B, 1, 2, D/2)`` images behind a Flatten."""
    if name not in IMAGE_ATTACKS:
        return model, x
    return nn.Sequential(nn.Flatten(), model), x.reshape(x.shape[0], 1, 2, -1)


def steepest_direction(w: Tensor, norm: str) -> Tensor:
    """The maximizer of ⟨w, d⟩ over the unit ball, per norm: the vertex / radius / axis closest to w."""
    if norm == "linf":
        return w.sign()
    if norm == "l2":
        return w / w.norm(dim=1, keepdim=True)
    return torch.nn.functional.one_hot(w.abs().argmax(1), w.shape[1]).to(w) * w.sign()


def radii(kind: str, batch: int) -> float | Tensor:
    """The radius ``kind`` for a batch: one float, one per example, zero, or per example with some zeros."""
    return {
        "float": EPS,
        "per_example": torch.linspace(0.01, 0.05, batch),
        "zero": 0.0,
        "per_example_with_zeros": torch.linspace(0.0, 0.05, batch) * (torch.arange(batch) % 2),
    }[kind]


# ----------------------------------------------------------------------------- closed forms on linear models


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("eps_kind", ["float", "per_example"])
def test_fgsm_linear_closed_form(linear2: LinearProblem, norm: str, loss: str, eps_kind: str) -> None:
    """On a 2-class linear model FGSM moves ε along the steepest direction of w_eff: margin +ε‖w_eff‖_q."""
    p = linear2
    threat = al.ThreatModel(norm, radii(eps_kind, len(p.y)))
    eps = threat.eps_for(p.x)
    result = fgsm(p.model, p.x, p.y, threat, loss=loss)
    expected = p.x + eps[:, None] * steepest_direction(p.w_eff, norm)
    torch.testing.assert_close(result.x_adv, expected, atol=1e-12, rtol=0)
    gain = p.margin(result.x_adv) - p.margin(p.x)
    holder = eps * torch.linalg.vector_norm(p.w_eff, ord=threat.dual_ord, dim=1)
    torch.testing.assert_close(gain, holder, atol=1e-12, rtol=1e-12)
    # Hölder: no other point of the ball raises the margin more.
    for seed in range(5):
        other = threat.random_init(p.x, seeded(seed))
        assert (p.margin(other) - p.margin(p.x) <= holder + 1e-12).all()


def test_fgsm_targeted_is_untargeted_on_the_other_class(linear2: LinearProblem) -> None:
    """With 2 classes, FGSM towards target 1 − y takes exactly the untargeted step away from y."""
    p = linear2
    threat = al.ThreatModel("linf", EPS)
    targeted = fgsm(p.model, p.x, 1 - p.y, threat, targeted=True)
    torch.testing.assert_close(targeted.x_adv, fgsm(p.model, p.x, p.y, threat).x_adv, atol=0, rtol=0)
    torch.testing.assert_close(targeted.x_adv, p.x + EPS * p.w_eff.sign(), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("norm", "options"), [
    ("linf", {"steps": 10}),
    ("l2", {"steps": 20, "step_size": EPS}),
    ("l1", {"steps": 20, "step_size": EPS}),
])  # fmt: skip
def test_pgd_linear_reaches_fgsm_optimum(linear2: LinearProblem, norm: str, options: dict) -> None:
    """On a linear model FGSM's point maximizes over the ball (a vertex for Linf); PGD reaches it too."""
    p = linear2
    threat = al.ThreatModel(norm, EPS)
    result = pgd(p.model, p.x, p.y, threat, generator=seeded(0), **options)
    torch.testing.assert_close(result.x_adv, fgsm(p.model, p.x, p.y, threat).x_adv, atol=1e-6, rtol=0)


class Bump(nn.Module):
    """Logits ``[0, −(x − c)²]`` on 1-D inputs: class 0's CE loss peaks at ``x = c``, so PGD hops over c."""

    def __init__(self, center: float) -> None:
        super().__init__()
        self.center = center

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([torch.zeros_like(x), -((x - self.center) ** 2)], dim=1)  # (B, 2)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("step_size", "expected_move"), [(None, [0.1, 0.2]), (0.03, [0.03, 0.03])])
def test_pgd_step_size(norm: str, step_size: float | None, expected_move: list[float]) -> None:
    """The step is η = 2.5·ε/steps per example by default, or step_size: with an odd step count on a bump
    just right of x, PGD alternates x → x + η → x → … and ends at x + η."""
    x = torch.full((2, 1), 0.5, dtype=F64)
    threat = al.ThreatModel(norm, torch.tensor([0.2, 0.4], dtype=F64))  # η = 0.1 and 0.2 with 5 steps
    result = pgd(
        Bump(0.501),
        x,
        torch.zeros(2, dtype=torch.long),
        threat,
        steps=5,
        step_size=step_size,
        random_start=False,
    )
    torch.testing.assert_close(
        result.x_adv - x, torch.tensor([expected_move], dtype=F64).T, atol=1e-12, rtol=0
    )


# ----------------------------------------------------------------------------- feasibility


@pytest.mark.parametrize(("name", "norm"), SUPPORTED)
@pytest.mark.parametrize("eps_kind", ["float", "per_example", "zero", "per_example_with_zeros"])
def test_output_in_threat_set(
    name: str, norm: str, eps_kind: str, mlp: nn.Module, vectors: tuple[Tensor, Tensor]
) -> None:
    """Every attack's output lies in ball ∩ box for every example; where ε = 0 it is exactly x."""
    x, y = vectors
    mlp, x = as_images(name, mlp, x)
    eps = radii(eps_kind, len(y))
    if norm != "linf":  # radii large enough for the box to bind
        eps = eps * (8 if norm == "l2" else 40)
    threat = al.ThreatModel(norm, eps)
    result = build_attack(name, threat).run(mlp, x, y, generator=seeded(0))
    x_adv = result.x_adv
    assert x_adv.shape == x.shape
    assert x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert threat.contains(x_adv, x).all()
    zero = threat.eps_for(x) == 0
    assert torch.equal(x_adv[zero], x[zero])


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_with_restarts_and_early_stop_stays_in_set(
    norm: str, targeted: bool, mlp: nn.Module, vectors: tuple[Tensor, Tensor]
) -> None:
    """PGD's bookkeeping (restarts, early stopping, per-example radii with zeros) keeps outputs in the set."""
    x, y = vectors
    threat = al.ThreatModel(norm, 8 * radii("per_example_with_zeros", len(y)))
    result = pgd(
        mlp, x, y, threat, steps=5, restarts=3, early_stop=True, targeted=targeted, generator=seeded(0)
    )
    assert threat.contains(result.x_adv, x).all()
    zero = threat.eps_for(x) == 0
    assert torch.equal(result.x_adv[zero], x[zero])


@pytest.mark.parametrize(("norm", "size"), [("linf", 1.0), ("l2", 5**-0.5), ("l1", 1 / 5)])
def test_sign_noise_closed_form(linear2: LinearProblem, norm: str, size: float) -> None:
    """Sign noise moves each coordinate by exactly ±ε (Linf), ±ε/√D (L2) or ±ε/D (L1): onto the sphere."""
    p = linear2
    threat = al.ThreatModel(norm, EPS)
    delta = random_sign_noise(p.model, p.x, p.y, threat, generator=seeded(0)).x_adv - p.x
    torch.testing.assert_close(delta.abs(), torch.full_like(delta, EPS * size), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        threat.norm(delta), torch.full((len(p.y),), EPS, dtype=F64), atol=1e-12, rtol=0
    )
    assert (delta > 0).any()
    assert (delta < 0).any()


@pytest.mark.parametrize("norm", NORMS)
def test_uniform_noise_is_a_random_start(linear2: LinearProblem, norm: str) -> None:
    """Uniform noise is threat.random_init from the same generator state, scored without gradients."""
    p = linear2
    threat = al.ThreatModel(norm, EPS)
    result = uniform_noise(p.model, p.x, p.y, threat, generator=seeded(4))
    assert torch.equal(result.x_adv, threat.random_init(p.x, seeded(4)))
    assert (result.num_grads, result.num_forwards) == (0, len(p.y))


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(ATTACKS)),
    norm=st.sampled_from(NORMS),
    eps=st.floats(0.0, 3.0, allow_subnormal=False),
    loss=st.sampled_from(["ce", "cw", "dlr"]),
    seed=st.integers(0, 2**16),
)
def test_output_in_threat_set_property(name: str, norm: str, eps: float, loss: str, seed: int) -> None:
    """For random models, data, radii and losses, every attack's output satisfies threat.contains."""
    assume(norm in ATTACKS[name].norms)
    g = seeded(seed)
    model = make_mlp(in_features=6, num_classes=4, seed=seed)
    x = torch.rand(5, 6, generator=g).round(decimals=1)  # many coordinates on the box faces
    y = torch.randint(0, 4, (5,), generator=g)
    model, x = as_images(name, model, x)
    threat = al.ThreatModel(norm, eps)
    options = {"loss": loss} if "loss" in ATTACKS.fields(name) else {}  # an ensemble picks its own losses
    x_adv = build_attack(name, threat, **options)(model, x, y, generator=g)
    assert threat.contains(x_adv, x).all()


# ----------------------------------------------------------------------------- restarts and early stopping


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", NORMS)
def test_restarts_never_worse(trained: Trained, loss: str, targeted: bool, norm: str) -> None:
    """With the same generator seed, 3 restarts are per example at least as good as 1: success, then loss."""
    y = (trained.y + 1) % 3 if targeted else trained.y
    threat = al.ThreatModel(norm, {"linf": 0.1, "l2": 0.3, "l1": 1.0}[norm])
    kwargs = {"steps": 5, "loss": loss, "targeted": targeted}
    one = pgd(trained.model, trained.x, y, threat, restarts=1, generator=seeded(3), **kwargs)
    three = pgd(trained.model, trained.x, y, threat, restarts=3, generator=seeded(3), **kwargs)
    assert (three.success >= one.success).all()
    sign = -1.0 if targeted else 1.0
    same = three.success == one.success
    assert (sign * three.loss[same] >= sign * one.loss[same] - 1e-6).all()


def test_restart_accounting(mlp: nn.Module, vectors: tuple[Tensor, Tensor]) -> None:
    """Without early stopping PGD spends steps·restarts gradients and one forward per restart, per example."""
    x, y = vectors
    result = pgd(mlp, x, y, al.ThreatModel("l2", 0.5), steps=4, restarts=3)
    assert (result.num_grads, result.num_forwards) == (4 * 3 * len(y), 3 * len(y))
    assert fgsm(mlp, x, y, al.ThreatModel("l2", 0.5)).num_grads == len(y)


@pytest.mark.parametrize("norm", NORMS)
def test_early_stop_never_lowers_success(trained: Trained, norm: str) -> None:
    """From one deterministic start, early stopping succeeds wherever the full run does, for fewer grads."""
    threat = al.ThreatModel(norm, {"linf": 0.1, "l2": 0.3, "l1": 1.0}[norm])
    kwargs = {"steps": 10, "random_start": False}
    full = pgd(trained.model, trained.x, trained.y, threat, **kwargs)
    early = pgd(trained.model, trained.x, trained.y, threat, early_stop=True, **kwargs)
    assert (early.success >= full.success).all()
    assert early.success.float().mean() >= full.success.float().mean()  # robust accuracy never higher
    if early.success.any():
        assert early.num_grads < full.num_grads
    assert threat.contains(early.x_adv, trained.x).all()


def test_early_stop_saves_gradients_on_an_easy_model(trained: Trained) -> None:
    """When ε is large enough to fool every example fast, early stopping spends far fewer gradient passes."""
    threat = al.ThreatModel("linf", 0.5)
    full = pgd(trained.model, trained.x, trained.y, threat, steps=20, restarts=2, generator=seeded(0))
    early = pgd(
        trained.model,
        trained.x,
        trained.y,
        threat,
        steps=20,
        restarts=2,
        early_stop=True,
        generator=seeded(0),
    )
    assert early.success.all()
    assert full.success.all()
    assert early.num_grads < full.num_grads // 4


def test_early_stop_counts_clean_errors_as_success(trained: Trained) -> None:
    """With early_stop, an example misclassified at x is a success, left at x, scored by its clean loss."""
    y = trained.y.clone()
    wrong = torch.arange(len(y)) < 8
    y[wrong] = (y[wrong] + 1) % 3  # the model is right on every example, so these labels make it wrong
    threat = al.ThreatModel("linf", 0.01)  # too small to fool the rest
    result = pgd(trained.model, trained.x, y, threat, steps=5, early_stop=True, generator=seeded(0))
    assert result.success[wrong].all()
    assert torch.equal(result.x_adv[wrong], trained.x[wrong])
    with torch.no_grad():
        clean_loss = get_loss("ce")(trained.model(trained.x), y)
    torch.testing.assert_close(result.loss[wrong], clean_loss[wrong])
    assert result.num_forwards >= len(y)


# ----------------------------------------------------------------------------- targeted mode and losses


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_targeted_pgd_reaches_targets(trained: Trained, norm: str, loss: str) -> None:
    """Targeted PGD moves most examples to their target class, and success means prediction == target."""
    targets = (trained.y + 1) % 3
    threat = al.ThreatModel(norm, {"linf": 0.3, "l2": 1.0, "l1": 3.0}[norm])
    result = pgd(
        trained.model, trained.x, targets, threat, steps=20, targeted=True, loss=loss, generator=seeded(0)
    )
    with torch.no_grad():
        pred = trained.model(result.x_adv).argmax(1)
    assert torch.equal(result.success, pred == targets)
    assert result.success_rate >= 0.9, f"success rate {result.success_rate:.3f}"
    assert threat.contains(result.x_adv, trained.x).all()


def test_targeted_dlr_is_rejected() -> None:
    """Negated DLR stalls once the target ranks third (zero gradient), so targeted DLR is refused up front."""
    threat = al.ThreatModel("linf", 0.1)
    for build in (
        lambda: PGD(threat, targeted=True, loss="dlr"),
        lambda: FGSM(threat, targeted=True, loss="dlr"),
    ):
        with pytest.raises(ValueError, match="dlr"):
            build()


@pytest.mark.parametrize("loss", ["ce", "cw", "dlr"])
def test_losses_drive_pgd(trained: Trained, loss: str) -> None:
    """Untargeted PGD fools the trained model with every loss, and reports that loss at x_adv."""
    threat = al.ThreatModel("linf", 0.2)
    result = pgd(trained.model, trained.x, trained.y, threat, steps=20, loss=loss, generator=seeded(0))
    with torch.no_grad():
        logits = trained.model(result.x_adv)
    torch.testing.assert_close(result.loss, get_loss(loss)(logits, trained.y))
    assert torch.equal(result.success, logits.argmax(1) != trained.y)
    assert result.success_rate >= 0.9, f"success rate {result.success_rate:.3f}"


def test_pgd_beats_noise_of_the_same_size(trained: Trained) -> None:
    """At one ε, PGD fools the trained model almost always, uniform and sign noise rarely (Goodfellow §5)."""
    threat = al.ThreatModel("linf", 0.2)
    attack_rate = pgd(trained.model, trained.x, trained.y, threat, steps=20, generator=seeded(0)).success_rate
    for noise in (random_sign_noise, uniform_noise):
        noise_rate = noise(trained.model, trained.x, trained.y, threat, generator=seeded(0)).success_rate
        assert attack_rate >= 0.9
        assert noise_rate <= 0.25
