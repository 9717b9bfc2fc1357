"""Randomized smoothing: closed forms, the guarantee over many seeds, abstention, and noise training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy.stats import binom
from scipy.stats import norm as normal
from torch import Tensor, nn

import advlearn as al
from advlearn.certify import (
    ABSTAIN,
    Smooth,
    certified_accuracy,
    certify_dataset,
    lower_confidence_bound,
)
from advlearn.cli import main
from advlearn.training import OBJECTIVES, GaussianAugment, Trainer, build_objective


class Constant(nn.Module):
    """A base classifier that ignores its input and always predicts ``label``."""

    def __init__(self, num_classes: int, label: int) -> None:
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(label), num_classes).double())

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(x.shape[0], -1)


def linear_binary(w: Tensor, b: float) -> nn.Module:
    """``f(x) = 0`` iff ``w·x + b > 0``: logits ``(w·x + b, −(w·x + b))``; the boundary is a hyperplane."""
    model = nn.Linear(w.numel(), 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.stack([w, -w]))
        model.bias.copy_(torch.tensor([b, -b], dtype=torch.float64))
    return model.eval()


W = torch.tensor([3.0, -4.0], dtype=torch.float64)  # ‖w‖ = 5
B = 0.5


def point_at(distance: float) -> Tensor:
    """A point at signed distance ``distance`` from the hyperplane w·x + b = 0 (positive: class 0)."""
    unit = W / W.norm()
    foot = -B * W / W.norm() ** 2  # the hyperplane's point closest to the origin
    return foot + distance * unit


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize(("sigma", "n", "alpha"), [(0.25, 100, 0.001), (0.5, 1000, 0.01), (1.0, 37, 0.05)])
def test_constant_classifier_radius_is_sigma_phi_inverse_alpha_root(sigma, n, alpha):
    """f ≡ c: every sample votes for c, so p̲A = α^(1/n) and the radius is σ·Φ⁻¹(α^(1/n)) exactly."""
    smooth = Smooth(Constant(4, label=2), num_classes=4, sigma=sigma)
    label, radius = smooth.certify(
        torch.zeros(3, 5, dtype=torch.float64), n0=10, n=n, alpha=alpha, batch_size=64
    )
    assert label == 2
    assert radius == pytest.approx(sigma * normal.ppf(alpha ** (1.0 / n)), rel=1e-12)


@pytest.mark.parametrize(
    ("k", "n", "alpha"), [(1, 10, 0.05), (37, 50, 0.001), (999, 1000, 0.01), (0, 5, 0.1)]
)
def test_lower_confidence_bound_inverts_the_binomial_tail(k, n, alpha):
    """Clopper–Pearson: p̲ solves P(Bin(n, p̲) ≥ k) = α (independent check by bisection on the tail)."""
    p = lower_confidence_bound(k, n, alpha)
    if k == 0:
        assert p == 0.0
        return
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if binom.sf(k - 1, n, mid) < alpha:  # P(X >= k) grows with p
            lo = mid
        else:
            hi = mid
    assert p == pytest.approx(lo, abs=1e-9)


def test_certified_accuracy_counts_correct_examples_with_radius_at_least_r():
    radii = torch.tensor([0.0, 0.3, 0.3, 1.0, 2.0])
    correct = torch.tensor([True, True, False, True, False])
    acc = certified_accuracy(radii, correct, [0.0, 0.3, 0.31, 1.0, 5.0])
    assert acc.tolist() == pytest.approx([0.6, 0.4, 0.2, 0.2, 0.0])
    with pytest.raises(ValueError, match="same length"):
        certified_accuracy(radii, correct[:3], [0.0])


# ----------------------------------------------------------------------------- the guarantee


@pytest.mark.parametrize(("alpha", "seeds"), [(1e-6, 200), (0.05, 400)])
def test_linear_classifier_certified_radius_never_exceeds_the_distance_to_the_hyperplane(alpha, seeds):
    """The smoothed linear classifier's true radius is the distance to the hyperplane.

    A certificate may be loose but is too large with probability at most α per run. At
    α = 1e-6 it must never be, over 200 seeds; at α = 0.05 the share of runs that overshoot
    must stay within a binomial tolerance of α. Using the point estimate p̂A instead of the
    lower bound would overshoot in about half the runs; a two-sided bound at level α would
    overshoot at rate α/2 and pass, so the second case also checks the bound is not looser
    than one-sided Clopper–Pearson (its overshoot rate stays above 0).
    """
    sigma, distance = 0.5, 0.4
    smooth = Smooth(linear_binary(W, B), num_classes=2, sigma=sigma)
    x = point_at(distance)
    radii = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        label, radius = smooth.certify(x, n0=50, n=1000, alpha=alpha, batch_size=1000, generator=g)
        assert label == 0
        radii.append(radius)
    overshoots = sum(r > distance for r in radii)
    assert min(radii) > 0.0
    if alpha < 1e-3:
        assert overshoots == 0
    else:
        assert 0 < overshoots <= binom.ppf(1 - 1e-4, seeds, alpha)


def test_linear_classifier_certified_radius_approaches_the_distance_as_n_grows():
    sigma, alpha, distance = 0.5, 0.001, 0.5  # pA = Φ(1) ≈ 0.841
    smooth = Smooth(linear_binary(W, B), num_classes=2, sigma=sigma)
    x = point_at(distance)
    gaps = {}
    for n in (1000, 10_000, 100_000):
        g = torch.Generator().manual_seed(n)
        runs = [smooth.certify(x, 100, n, alpha, 10_000, generator=g)[1] for _ in range(3)]
        gaps[n] = distance - sum(runs) / len(runs)
    assert 0.0 < gaps[100_000] < gaps[10_000] < gaps[1000]
    # At n = 1e5 the Clopper–Pearson slack is ≈ 3.1·sqrt(p(1−p)/n)/φ(1)·σ ≈ 0.0074; MC noise ≈ 0.0014.
    assert gaps[100_000] < 0.015


def test_predict_abstains_on_the_boundary_and_rarely_errs_near_it():
    """On the hyperplane pA = pB = ½: predict answers at most at rate α. At distance 0.2σ it answers
    the right class at least sometimes, and a wrong one at most at rate α (binomial tolerances)."""
    sigma, alpha, trials = 0.5, 0.05, 200
    smooth = Smooth(linear_binary(W, B), num_classes=2, sigma=sigma)
    g = torch.Generator().manual_seed(0)
    on_boundary = [
        smooth.predict(point_at(0.0), n=500, alpha=alpha, batch_size=500, generator=g) for _ in range(trials)
    ]
    answered = sum(label != ABSTAIN for label in on_boundary)
    assert answered <= binom.ppf(1 - 1e-4, trials, alpha)

    near = [
        smooth.predict(point_at(0.1), n=500, alpha=alpha, batch_size=500, generator=g) for _ in range(trials)
    ]
    wrong = sum(label == 1 for label in near)
    right = sum(label == 0 for label in near)
    assert wrong <= binom.ppf(1 - 1e-4, trials, alpha)
    # pA = Φ(0.2) ≈ 0.579: the two-sided test at n = 500 has power ≈ 0.95, so it answers most times.
    assert right >= trials // 2

    assert smooth.predict(point_at(1.0), n=500, alpha=0.001, batch_size=500, generator=g) == 0
    assert smooth.predict(point_at(-1.0), n=500, alpha=0.001, batch_size=500, generator=g) == 1


def test_certify_abstains_when_the_top_class_is_not_a_majority():
    """Three classes split evenly: p̲A < ½, so certify abstains with radius 0."""

    class Thirds(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            # the class of the first noisy coordinate's tercile under N(0, 1): each ≈ 1/3
            z = x[:, 0]
            cls = (z > -0.4307).long() + (z > 0.4307).long()
            return torch.nn.functional.one_hot(cls, 3).float()

    smooth = Smooth(Thirds(), num_classes=3, sigma=1.0)
    g = torch.Generator().manual_seed(0)
    assert smooth.certify(torch.zeros(2), n0=100, n=2000, alpha=0.001, batch_size=500, generator=g) == (
        ABSTAIN,
        0.0,
    )


# ----------------------------------------------------------------------------- engineering


def test_smoothing_is_reproducible_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).eval()
    before = [p.detach().clone() for p in model.parameters()]
    smooth = Smooth(model, num_classes=3, sigma=0.25)
    x = torch.rand(1, 2, 2)
    first = smooth.certify(x, 20, 300, 0.01, 64, generator=torch.Generator().manual_seed(3))
    second = smooth.certify(x, 20, 300, 0.01, 64, generator=torch.Generator().manual_seed(3))
    assert first == second
    counts = smooth.sample_counts(x, 101, batch_size=7)
    assert counts.sum() == 101
    assert counts.dtype == torch.int64
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())


def test_smoothing_rejects_bad_arguments_by_name():
    model = Constant(3, 0)
    with pytest.raises(ValueError, match="sigma"):
        Smooth(model, 3, sigma=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        Smooth(model, 1, sigma=0.5)
    smooth = Smooth(model, 3, sigma=0.5)
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="alpha"):
        smooth.certify(x, 10, 100, alpha=1.5, batch_size=10)
    with pytest.raises(ValueError, match="n0"):
        smooth.certify(x, 0, 100, alpha=0.01, batch_size=10)
    with pytest.raises(ValueError, match="batch_size"):
        smooth.predict(x, 100, alpha=0.01, batch_size=0)
    with pytest.raises(ValueError, match="NaN"):
        smooth.predict(torch.tensor([float("nan"), 0.0]), 100, alpha=0.01, batch_size=10)
    with pytest.raises(ValueError, match="logits of shape"):
        Smooth(model, 5, sigma=0.5).predict(x, 10, alpha=0.01, batch_size=10)


def test_certify_dataset_records_every_example():
    smooth = Smooth(linear_binary(W, B), num_classes=2, sigma=0.5)
    x = torch.stack([point_at(d) for d in (0.5, 0.3, -0.4, 0.0)])
    y = torch.tensor([0, 1, 1, 0])
    result = certify_dataset(
        smooth,
        x,
        y,
        n0=50,
        n=2000,
        alpha=0.001,
        batch_size=1000,
        generator=torch.Generator().manual_seed(0),
        quiet=True,
    )
    assert result.predictions[:3].tolist() == [0, 0, 1]
    assert result.correct.tolist()[:3] == [True, False, True]
    assert (result.radii[:3] <= torch.tensor([0.5, 0.3, 0.4], dtype=torch.float64)).all()
    assert (result.seconds >= 0).all()
    assert result.num_examples == 4
    curve = result.certified_accuracy([0.0, 0.2, 1.0])
    assert curve[0] >= curve[1] >= curve[2]
    assert curve[2] == 0.0


# ----------------------------------------------------------------------------- Gaussian noise training


def test_gaussian_objective_is_registered_and_validates_sigma():
    assert OBJECTIVES["gaussian_noise"] is GaussianAugment
    assert build_objective("gaussian_noise", al.ThreatModel("linf", 0.1), sigma=0.5) == GaussianAugment(0.5)
    with pytest.raises(ValueError, match="unknown option 'steps'"):
        build_objective("gaussian_noise", steps=3)
    with pytest.raises(ValueError, match="sigma"):
        GaussianAugment(sigma=-1.0)


def test_noise_training_makes_the_smoothed_classifier_certify():
    """Two blobs 0.6 apart in 2-D: a classifier trained under σ = 0.5 noise certifies most points."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.2, 0.5], [0.8, 0.5]])
    y = torch.randint(0, 2, (256,), generator=g)
    x = centers[y] + 0.05 * torch.randn(256, 2, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    history = Trainer(
        model,
        GaussianAugment(sigma=0.5),
        torch.optim.Adam(model.parameters(), lr=0.02),
        device="cpu",
        quiet=True,
    ).fit(loader, epochs=5)
    assert history.records[-1]["train_loss"] < history.records[0]["train_loss"]
    model.eval()
    smooth = Smooth(model, num_classes=2, sigma=0.5)
    result = certify_dataset(
        smooth, x[:20], y[:20], n0=50, n=1000, alpha=0.001, batch_size=1000, generator=g, quiet=True
    )
    assert float(result.certified_accuracy([0.0])[0]) >= 0.8
    assert float(result.radii.median()) > 0.1


# ----------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def trained_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`advlearn train` with the two certification objectives, one short epoch each on the 8x8 digits."""
    root = tmp_path_factory.mktemp("certify")
    config = root / "cfg.toml"
    config.write_text(
        'name = "cert"\n[data]\nname = "digits"\nval_size = 0\n[model]\nname = "mlp"\nhidden = [16]\n'
        '[threat]\nnorm = "linf"\neps = 0.05\n'
        '[[train]]\nlabel = "noise"\nobjective = { name = "gaussian_noise", sigma = 0.25 }\nepochs = 1\n'
        '[[train]]\nlabel = "ibp"\nobjective = { name = "ibp", kappa = 0.5, ramp_epochs = 1 }\nepochs = 1\n'
    )
    assert main(["train", str(config), "--out-dir", str(root), "--quiet"]) == 0
    return root / "cert"


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_cli_certifies_a_saved_model_by_smoothing(trained_dirs: Path, tmp_path: Path, capsys):
    out = tmp_path / "smooth"
    argv = ["certify", "--model", str(trained_dirs / "noise"), "--sigma", "0.25", "--n0", "20", "--n", "200"]
    assert main([*argv, "--num-examples", "6", "--out", str(out), "--quiet"]) == 0
    rows = _rows(out / "certify.tsv")
    assert rows[0] == ["idx", "label", "predict", "radius", "correct", "time"]
    assert len(rows) == 7
    for _, label, predict, radius, correct, seconds in rows[1:]:
        assert float(radius) >= 0.0
        assert float(seconds) >= 0.0
        assert correct == str(int(label == predict))
        if predict == "-1":
            assert float(radius) == 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "smoothing"
    assert summary["n"] == 200
    assert summary["num_examples"] == 6
    assert (out / "certified_accuracy.png").stat().st_size > 1000
    assert "certified accuracy" in capsys.readouterr().out


def test_cli_certifies_a_saved_model_by_ibp_and_evaluate_shows_the_gap(
    trained_dirs: Path, tmp_path: Path, capsys
):
    out = tmp_path / "ibp"
    model = str(trained_dirs / "ibp")
    assert (
        main(["certify", "--model", model, "--method", "ibp", "--eps", "0.05", "--out", str(out), "--quiet"])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["verified_accuracy"] <= summary["clean_accuracy"]
    rows = _rows(out / "certify.tsv")[1:]
    radii = torch.tensor([float(r[3]) for r in rows])
    correct = torch.tensor([r[4] == "1" for r in rows])
    # A bisection radius ≥ ε was verified at a radius ≥ ε, hence at ε: never more than the verified share.
    assert float(certified_accuracy(radii, correct, [0.05])[0]) <= summary["verified_accuracy"] + 1e-12
    assert main(["certify", "--model", model, "--method", "ibp", "--quiet"]) == 2
    assert "--eps" in capsys.readouterr().err

    assert (
        main(
            [
                "evaluate",
                "--model",
                model,
                "--attack",
                "pgd",
                "--eps",
                "0.05",
                "-o",
                "steps=5",
                "--num-examples",
                "50",
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "certified (IBP)" in printed
    assert "a gap of" in printed
