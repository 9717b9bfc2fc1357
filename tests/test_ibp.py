"""Interval bound propagation: exactness on one affine layer, soundness on random networks, errors,
verified accuracy against PGD, and IBP training."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import PGD
from advlearn.certify import (
    ibp_bounds,
    ibp_margin_bounds,
    ibp_radius,
    input_box,
    verified_accuracy,
    verify,
)
from advlearn.models import Maxout, Normalize, build_model
from advlearn.training import OBJECTIVES, IBPTraining, Trainer, build_objective, ibp_loss


def _sample_box(lower: Tensor, upper: Tensor, num: int, g: torch.Generator) -> Tensor:
    """``num`` points per example of the box: its two extreme corners, random corners, uniform interior."""
    b = lower.shape[0]
    u = torch.rand((num, *lower.shape), generator=g, dtype=lower.dtype)
    u[: num // 4] = u[: num // 4].round()  # random vertices, where a ReLU network's extremes lie
    u[0], u[1] = 0.0, 1.0
    points = lower + u * (upper - lower)  # (num, B, ...)
    return points.reshape(num * b, *lower.shape[1:])


def _check_sound(model: nn.Module, x: Tensor, threat: al.ThreatModel, num: int = 2000, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lower, upper = ibp_bounds(model, x, threat)
        box_lo, box_hi = input_box(x, threat)
        points = _sample_box(box_lo, box_hi, num, g)
        out = model(points).reshape(num, *lower.shape)  # (num, B, C)
    tol = 1e-9 if x.dtype == torch.float64 else 1e-4
    assert (out >= lower - tol).all()
    assert (out <= upper + tol).all()
    # The bounds are attained or nearly so somewhere: not vacuous (finite, ordered).
    assert torch.isfinite(lower).all()
    assert (lower <= upper).all()


# ----------------------------------------------------------------------------- exactness and soundness


def test_bounds_are_exact_for_a_single_linear_layer():
    """For z = Wx + b over a box inside the bounds, the lower bound of z_j is attained at x − ε·sign(W_j)."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    x = 0.3 + 0.4 * torch.rand(5, 6, dtype=torch.float64)
    eps = 0.1
    lower, upper = ibp_bounds(layer, x, al.ThreatModel("linf", eps))
    sign = layer.weight.sign()  # (C, D)
    with torch.no_grad():
        for j in range(4):
            at_min = layer(x - eps * sign[j])[:, j]
            at_max = layer(x + eps * sign[j])[:, j]
            torch.testing.assert_close(lower[:, j], at_min, rtol=0, atol=1e-12)
            torch.testing.assert_close(upper[:, j], at_max, rtol=0, atol=1e-12)


def test_eps_zero_gives_the_forward_pass_and_box_is_clipped_to_the_bounds():
    torch.manual_seed(0)
    model = build_model("small_cnn", in_shape=(1, 8, 8), num_classes=3, channels=(4, 8), hidden=16).eval()
    x = torch.rand(4, 1, 8, 8)
    lower, upper = ibp_bounds(model, x, al.ThreatModel("linf", 0.0))
    with torch.no_grad():
        torch.testing.assert_close(lower, model(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(upper, model(x), rtol=0, atol=1e-5)
    box_lo, box_hi = input_box(torch.tensor([[0.0, 0.5, 1.0]]), al.ThreatModel("linf", 0.2))
    assert box_lo[0].tolist() == pytest.approx([0.0, 0.3, 0.8])
    assert box_hi[0].tolist() == pytest.approx([0.2, 0.7, 1.0])


class _Random:
    """Random small networks covering every supported layer."""

    @staticmethod
    def conv(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        bn = nn.BatchNorm2d(4)
        with torch.no_grad():  # non-trivial running statistics, some negative scales
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.2, 2.0)
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        return nn.Sequential(
            Normalize(mean=0.4, std=0.3),
            nn.Conv2d(1, 4, 3, padding=1),
            bn,
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Sequential(nn.Conv2d(4, 6, 3, stride=1, padding=1), nn.LeakyReLU(0.1), nn.AvgPool2d(2)),
            nn.Dropout(0.5),
            nn.Flatten(),
            nn.Linear(6 * 2 * 2, 10),
            nn.Tanh(),
            nn.Linear(10, 3),
        ).eval()

    @staticmethod
    def dense(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(16, 12),
            nn.ReLU(),
            Maxout(12, 6, 3),
            nn.Sigmoid(),
            nn.Linear(6, 8),
            nn.ELU(),
            nn.BatchNorm1d(8).eval(),
            nn.Linear(8, 4),
        ).eval()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["conv", "dense"])
@pytest.mark.parametrize("eps", [0.02, 0.1, 0.5])
def test_random_networks_keep_sampled_outputs_inside_the_bounds(seed, kind, eps):
    model = getattr(_Random, kind)(seed).double()
    g = torch.Generator().manual_seed(seed)
    x = (
        torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
        if kind == "conv"
        else torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    )
    _check_sound(model, x, al.ThreatModel("linf", eps), num=1000, seed=seed)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_pgd_best_point_lies_inside_the_bounds_and_margins(norm):
    """PGD pushes each example toward the worst logit margin; its point must respect the bounds."""
    model = _Random.conv(7)
    g = torch.Generator().manual_seed(7)
    x, y = torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
    threat = al.ThreatModel(norm, {"linf": 0.1, "l2": 0.5, "l1": 2.0}[norm])
    x_adv = PGD(threat, steps=30, loss="cw").run(model, x, y, generator=g).x_adv
    lower, upper = ibp_bounds(model, x, threat)
    margins = ibp_margin_bounds(model, x, y, threat)
    with torch.no_grad():
        out = model(x_adv)
    assert (out >= lower - 1e-4).all()
    assert (out <= upper + 1e-4).all()
    true_margin = out.gather(1, y[:, None]) - out  # (B, C)
    assert (true_margin >= margins - 1e-4).all()


def test_margin_bounds_are_sound_and_tighter_than_logit_differences():
    model = _Random.dense(3).double()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (6,), generator=g)
    threat = al.ThreatModel("linf", 0.05)
    margins = ibp_margin_bounds(model, x, y, threat)
    lower, upper = ibp_bounds(model, x, threat)
    naive = (lower.gather(1, y[:, None]) - upper).scatter(1, y[:, None], 0.0)
    assert (margins >= naive - 1e-12).all()
    assert (margins > naive + 1e-6).any()  # elision helps somewhere
    points = _sample_box(*input_box(x, threat), 1000, g)
    with torch.no_grad():
        out = model(points).reshape(1000, 6, 4)
    true = out.gather(2, y[None, :, None].expand(1000, 6, 1)) - out  # (num, B, C)
    assert (true >= margins - 1e-9).all()


def test_l2_and_l1_threats_use_the_enclosing_linf_box():
    model = _Random.dense(0)
    x = torch.rand(4, 1, 4, 4)
    linf = ibp_bounds(model, x, al.ThreatModel("linf", 0.1))
    for norm in ("l2", "l1"):
        other = ibp_bounds(model, x, al.ThreatModel(norm, 0.1))
        torch.testing.assert_close(other, linf)


# ----------------------------------------------------------------------------- errors


def test_unsupported_layers_are_named():
    class Residual(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x + x

    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 4), Residual()), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layer '1\.1' \(Residual\)"):
        ibp_bounds(model, torch.rand(2, 4), al.ThreatModel("linf", 0.1))
    with pytest.raises(ValueError, match="GELU"):
        ibp_bounds(nn.Sequential(nn.Linear(4, 4), nn.GELU()), torch.rand(2, 4), al.ThreatModel("linf", 0.1))
    resnet = build_model("preact_resnet18", in_shape=(3, 8, 8), num_classes=2)
    with pytest.raises(ValueError, match="PreActResNet"):
        verified_accuracy(resnet, (torch.rand(2, 3, 8, 8), torch.tensor([0, 1])), al.ThreatModel("linf", 0.1))


def test_training_mode_batchnorm_and_dropout_and_bad_inputs_are_refused():
    threat = al.ThreatModel("linf", 0.1)
    with pytest.raises(ValueError, match="batch statistics"):
        ibp_bounds(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train(), torch.rand(3, 4), threat)
    with pytest.raises(ValueError, match="Dropout"):
        ibp_bounds(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train(), torch.rand(3, 4), threat)
    with pytest.raises(ValueError, match=r"outside threat.bounds"):
        ibp_bounds(nn.Linear(4, 2), 2 * torch.ones(3, 4), threat)
    with pytest.raises(ValueError, match="NaN"):
        ibp_bounds(nn.Linear(4, 2), torch.full((3, 4), float("nan")), threat)
    with pytest.raises(ValueError, match="label 5"):
        ibp_margin_bounds(nn.Linear(4, 2), torch.rand(3, 4), torch.tensor([0, 1, 5]), threat)


# ----------------------------------------------------------------------------- verified accuracy


@pytest.mark.parametrize("name", ["mlp", "small_cnn", "logreg", "maxout"])
def test_zoo_models_pass_ibp_with_normalize(name):
    options = {
        "mlp": {"hidden": (16,)},
        "small_cnn": {"channels": (4, 8), "hidden": 16},
        "maxout": {"hidden": (8,)},
    }
    torch.manual_seed(0)
    model = build_model(name, in_shape=(1, 8, 8), num_classes=3, mean=0.5, std=0.25, **options.get(name, {}))
    model.eval()
    _check_sound(model, torch.rand(2, 1, 8, 8), al.ThreatModel("linf", 0.05), num=500)


def test_verified_examples_survive_pgd_and_verified_accuracy_falls_with_eps(trained):
    """On a trained MLP: verified ⊆ robust under PGD (a lower bound never beats an upper bound),
    verified accuracy at ε = 0 is the clean accuracy, and it cannot rise with ε."""
    model, x, y = trained.model, trained.x, trained.y
    accuracies = []
    for eps in (0.0, 0.01, 0.03, 0.1, 1.0):
        threat = al.ThreatModel("linf", eps)
        result = verify(model, (x, y), threat, quiet=True)
        accuracies.append(result.verified_accuracy)
        if eps > 0:
            success = PGD(threat, steps=20, restarts=2).run(model, x, y).success
            assert not (result.verified & success).any()
        assert (result.verified <= result.correct).all()
    assert accuracies[0] == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    assert accuracies == sorted(accuracies, reverse=True)
    assert accuracies[1] > 0.5
    assert accuracies[-1] == 0.0


def test_ibp_radius_is_verified_and_tight_to_the_bisection_step(trained):
    model, x, y = trained.model, trained.x[:16], trained.y[:16]
    threat = al.ThreatModel("linf", 0.0)
    radius = ibp_radius(model, x, y, threat, eps_max=0.5, steps=10)
    step = 0.5 / 2**10
    verified = (
        (ibp_margin_bounds(model, x, y, threat.with_eps(radius)) > 0).scatter(1, y[:, None], True).all(1)
    )
    assert verified[radius > 0].all()
    beyond = (ibp_margin_bounds(model, x, y, threat.with_eps(radius + 2 * step)) > 0).scatter(
        1, y[:, None], True
    )
    assert not beyond.all(1).any()


# ----------------------------------------------------------------------------- IBP training


def test_ibp_objective_is_registered_and_ramps_eps_and_kappa():
    threat = al.ThreatModel("linf", 0.3)
    objective = build_objective("ibp", threat, kappa=0.5, warmup_epochs=2, ramp_epochs=4)
    assert OBJECTIVES["ibp"] is IBPTraining
    assert isinstance(objective, IBPTraining)
    schedule = [objective.at_epoch(e, 10) for e in range(8)]
    assert [float(o.threat.eps) for o in schedule] == pytest.approx([0, 0, 0.075, 0.15, 0.225, 0.3, 0.3, 0.3])
    assert [o.kappa for o in schedule] == pytest.approx([1, 1, 0.875, 0.75, 0.625, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="kappa"):
        IBPTraining(threat, kappa=1.5)
    with pytest.raises(ValueError, match="ramp_epochs"):
        IBPTraining(threat, ramp_epochs=-1)


def test_ibp_loss_mixes_nominal_and_verified_cross_entropy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.rand(5, 4), torch.randint(0, 3, (5,))
    threat = al.ThreatModel("linf", 0.1)
    nominal = nn.functional.cross_entropy(model(x), y)
    verified = ibp_loss(model, x, y, threat, kappa=0.0)
    torch.testing.assert_close(ibp_loss(model, x, y, threat, kappa=1.0), nominal)
    torch.testing.assert_close(ibp_loss(model, x, y, threat, kappa=0.25), 0.25 * nominal + 0.75 * verified)
    assert verified > nominal  # the worst case in the box costs more than the clean point
    torch.testing.assert_close(ibp_loss(model, x, y, threat.with_eps(0.0), kappa=0.0), nominal)


def test_ibp_training_verifies_what_standard_training_does_not():
    """Blobs 0.4 apart (ℓ∞): after six epochs IBP training at ε = 0.2 verifies most points at ε = 0.12;
    the same network trained normally verifies almost none (6% with these seeds), though both
    classify every point correctly."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.3] * 4, [0.7] * 4])
    y = torch.randint(0, 2, (256,), generator=g)
    x = (centers[y] + 0.05 * torch.randn(256, 4, generator=g)).clamp(0, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    results = {}
    for name, objective in {
        "standard": al.training.Standard(),
        "ibp": IBPTraining(al.ThreatModel("linf", 0.2), kappa=0.5, ramp_epochs=3),
    }.items():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        Trainer(model, objective, opt, device="cpu", quiet=True).fit(loader, epochs=6)
        results[name] = verified_accuracy(model.eval(), (x, y), al.ThreatModel("linf", 0.12))
        assert verified_accuracy(model, (x, y), al.ThreatModel("linf", 0.0)) == 1.0
    assert results["ibp"] >= 0.5
    assert results["standard"] <= 0.2
