"""advlearn.games: gradient reversal, the GAN theory checks, GAN losses and monitoring, DANN, the CLI."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, linalg
from torch import nn

from advlearn.checkpoint import load_model
from advlearn.cli import main
from advlearn.data import Dataset, _blend_with_patches
from advlearn.games import (
    DANN,
    GANConfig,
    GradientReversal,
    ModeCollapseWarning,
    dann_lambda,
    discriminator_loss,
    frechet_distance,
    generator_loss,
    grad_reverse,
    gradient_penalty,
    mode_coverage,
    train_dann,
    train_gan,
)
from advlearn.games.gan import GAN_ARCHS, ModeCoverage, build_gan
from advlearn.games.theory import (
    Gaussian,
    check_optimal_discriminator,
    gan_value,
    jensen_shannon,
    optimal_discriminator,
)

LOG4 = math.log(4.0)


# ----------------------------------------------------------------------------- gradient reversal


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_reversal_forward_is_identity_bit_for_bit(dtype: torch.dtype) -> None:
    h = torch.randn(5, 7).to(dtype)
    h[0, 0], h[0, 1], h[0, 2] = -0.0, float("nan"), float("inf")
    h.requires_grad_(True)
    out = grad_reverse(h, lambd=0.37)
    int_type = {torch.float16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}[dtype]
    assert torch.equal(out.detach().view(int_type), h.detach().view(int_type))  # same bits, NaN and -0 too
    assert out.data_ptr() == h.data_ptr()  # a view: nothing was computed


@pytest.mark.parametrize("lambd", [0.0, 0.1, 1.0, 2.5, 1e3])
def test_reversal_backward_is_exactly_minus_lambda_times_incoming(lambd: float) -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    incoming = torch.randn(4, 3, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(grad_reverse(h, lambd), h, incoming)
    assert torch.equal(grad, incoming * -lambd)
    if lambd > 0:
        assert torch.equal(torch.sign(grad), -torch.sign(incoming))


def test_reversal_layer_flips_the_gradient_of_everything_below_it() -> None:
    torch.manual_seed(0)
    body, head = nn.Linear(6, 4), nn.Linear(4, 1)
    x = torch.randn(8, 6)
    plain = torch.autograd.grad(head(body(x)).sum(), list(body.parameters()))
    reversed_ = torch.autograd.grad(head(GradientReversal(0.5)(body(x))).sum(), list(body.parameters()))
    head_plain = torch.autograd.grad(head(body(x)).sum(), list(head.parameters()))
    head_rev = torch.autograd.grad(head(GradientReversal(0.5)(body(x))).sum(), list(head.parameters()))
    for a, b in zip(plain, reversed_, strict=True):
        torch.testing.assert_close(b, -0.5 * a, rtol=1e-6, atol=1e-7)
    for a, b in zip(head_plain, head_rev, strict=True):  # the layer above is untouched
        assert torch.equal(a, b)


def test_reversal_supports_double_backward() -> None:
    h = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad((grad_reverse(h, 2.0) ** 2).sum(), h, create_graph=True)
    torch.testing.assert_close(g1, -2.0 * 2 * h.detach())
    # g1 = −λ · 2 R(h): differentiating it passes through R once more, −λ · 2 · (−λ) = 2λ² = 8.
    (g2,) = torch.autograd.grad(g1.sum(), h)
    torch.testing.assert_close(g2, torch.full_like(h, 8.0))


@pytest.mark.parametrize("lambd", [-0.1, float("nan"), float("inf"), True, "1"])
def test_reversal_rejects_bad_lambda(lambd: object) -> None:
    with pytest.raises(ValueError, match="lambd"):
        grad_reverse(torch.zeros(2), lambd)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lambd"):
        GradientReversal(lambd)  # type: ignore[arg-type]


def test_reversal_rejects_integer_tensors() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        grad_reverse(torch.arange(3), 1.0)


# ----------------------------------------------------------------------------- theory (eq. 62.4, 62.5)

PAIRS = [
    (Gaussian(0.0, 1.0), Gaussian(1.5, 0.7)),
    (Gaussian(-1.0, 0.5), Gaussian(2.0, 2.0)),
    (Gaussian(3.0, 1.0), Gaussian(3.0, 3.0)),
]


def test_optimal_discriminator_is_half_when_pg_equals_pdata() -> None:
    p = Gaussian(0.3, 1.7)
    x = np.linspace(-10, 10, 101)
    np.testing.assert_allclose(optimal_discriminator(x, p, p), 0.5, rtol=1e-15)


def test_optimal_discriminator_is_the_density_ratio() -> None:
    pd, pg = PAIRS[0]
    x = np.linspace(-3, 3, 13)
    expected = pd.pdf(x) / (pd.pdf(x) + pg.pdf(x))
    np.testing.assert_allclose(optimal_discriminator(x, pd, pg), expected, rtol=1e-12)


def test_value_at_pg_equal_pdata_is_minus_log_4() -> None:
    for p in (Gaussian(0.0, 1.0), Gaussian(-5.0, 0.1), Gaussian(2.0, 30.0)):
        assert gan_value(p, p) == pytest.approx(-LOG4, abs=1e-10)
        assert jensen_shannon(p, p) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("pd", "pg"), PAIRS)
def test_value_at_optimum_is_minus_log_4_plus_twice_jsd(pd: Gaussian, pg: Gaussian) -> None:
    jsd = jensen_shannon(pd, pg)
    assert 0.0 < jsd < math.log(2)
    assert gan_value(pd, pg) == pytest.approx(-LOG4 + 2 * jsd, abs=1e-9)
    assert jensen_shannon(pg, pd) == pytest.approx(jsd, abs=1e-12)


@pytest.mark.parametrize(("pd", "pg"), PAIRS)
def test_jsd_matches_adaptive_quadrature(pd: Gaussian, pg: Gaussian) -> None:
    """An independent reference: scipy's adaptive quadrature of the JSD integrand over the real line."""

    def integrand(t: float) -> float:
        p, q = float(pd.pdf(np.array(t))), float(pg.pdf(np.array(t)))
        m = 0.5 * (p + q)
        return 0.5 * ((p * math.log(p / m) if p > 0 else 0.0) + (q * math.log(q / m) if q > 0 else 0.0))

    points = sorted({pd.mean, pg.mean})
    lo, hi = points[0] - 40 * max(pd.std, pg.std), points[-1] + 40 * max(pd.std, pg.std)
    reference, _ = integrate.quad(integrand, lo, hi, points=points, limit=500, epsabs=1e-13)
    assert jensen_shannon(pd, pg) == pytest.approx(reference, abs=1e-9)


def test_jsd_of_far_apart_gaussians_is_log_2() -> None:
    assert jensen_shannon(Gaussian(0.0, 1.0), Gaussian(60.0, 1.0)) == pytest.approx(math.log(2), abs=1e-12)


def test_trained_discriminator_matches_eq_62_4() -> None:
    """Stated tolerance: |D − D*| ≤ 0.05 wherever the mixture density is ≥ 1% of its peak.

    The discriminator sees 2 × 1024 fresh samples per step for 800 Adam steps (measured: max
    error 0.031 and a value gap of 3e-4 nats; 0.024 after 3000 steps), so 0.05 leaves room for
    the noise of the last steps.
    """
    pd, pg = PAIRS[0]
    check = check_optimal_discriminator(pd, pg, steps=800, seed=0)
    assert check.max_abs_error <= 0.05
    # D* maximizes V pointwise, so no discriminator beats it; a converged one comes within 0.01 nats.
    assert check.value_fitted <= check.value_optimal + 1e-9
    assert check.value_fitted >= check.value_optimal - 0.01
    assert check.value_optimal == pytest.approx(check.value_from_jsd, abs=1e-9)


def test_trained_discriminator_is_half_when_pg_equals_pdata() -> None:
    p = Gaussian(0.0, 1.0)
    check = check_optimal_discriminator(p, p, steps=300, seed=1)
    assert check.max_abs_error <= 0.05
    assert check.value_optimal == pytest.approx(-LOG4, abs=1e-10)
    assert check.value_fitted <= -LOG4 + 1e-9


def test_theory_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="std"):
        Gaussian(0.0, 0.0)
    with pytest.raises(ValueError, match="mean"):
        Gaussian(float("nan"), 1.0)
    with pytest.raises(ValueError, match="p_g"):
        gan_value(Gaussian(0.0, 1.0), (0.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="density_floor"):
        check_optimal_discriminator(Gaussian(0.0, 1.0), Gaussian(0.0, 1.0), density_floor=1.5)


# ----------------------------------------------------------------------------- GAN losses


def test_gan_losses_match_their_definitions() -> None:
    a_real = torch.tensor([-2.0, 0.3, 4.0], dtype=torch.float64)
    a_fake = torch.tensor([-6.0, -0.1, 1.0, 2.0], dtype=torch.float64)
    d_real, d_fake = torch.sigmoid(a_real), torch.sigmoid(a_fake)
    v = torch.log(d_real).mean() + torch.log(1 - d_fake).mean()  # V(G, D), eq. (1)
    for loss in ("minimax", "nonsaturating"):
        torch.testing.assert_close(discriminator_loss(a_real, a_fake, loss), -v)
    torch.testing.assert_close(generator_loss(a_fake, "minimax"), torch.log(1 - d_fake).mean())
    torch.testing.assert_close(generator_loss(a_fake, "nonsaturating"), -torch.log(d_fake).mean())
    torch.testing.assert_close(discriminator_loss(a_real, a_fake, "wgan-gp"), a_fake.mean() - a_real.mean())
    torch.testing.assert_close(generator_loss(a_fake, "wgan-gp"), -a_fake.mean())


def test_discriminator_loss_at_d_half_is_log_4() -> None:
    zeros = torch.zeros(10, dtype=torch.float64)
    assert float(discriminator_loss(zeros, zeros, "minimax")) == pytest.approx(LOG4, abs=1e-15)


def test_nonsaturating_loss_does_not_saturate() -> None:
    """When D rejects G(z) (a ≪ 0), the minimax gradient vanishes; the non-saturating one does not."""
    a = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
    (g_minimax,) = torch.autograd.grad(generator_loss(a, "minimax"), a)
    (g_ns,) = torch.autograd.grad(generator_loss(a, "nonsaturating"), a)
    assert abs(float(g_minimax)) < 1e-4  # −σ(a)
    assert float(g_ns) == pytest.approx(-1.0, abs=1e-4)  # −(1 − σ(a))


def test_unknown_loss_is_rejected() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        generator_loss(torch.zeros(2), "hinge")


@pytest.mark.parametrize(("scale", "expected"), [(1.0, 0.0), (2.0, 1.0), (0.5, 0.25)])
def test_gradient_penalty_on_a_linear_critic(scale: float, expected: float) -> None:
    """D(x) = w·x has ∇D = w everywhere, so the penalty is (‖w‖₂ − 1)² exactly."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(9, 1, bias=False)).double()
    with torch.no_grad():
        w = torch.randn(1, 9, dtype=torch.float64)
        critic[1].weight.copy_(scale * w / w.norm())
    real, fake = torch.rand(5, 1, 3, 3, dtype=torch.float64), torch.rand(5, 1, 3, 3, dtype=torch.float64)
    penalty = gradient_penalty(critic, real, fake)
    assert float(penalty.detach()) == pytest.approx(expected, abs=1e-12)
    (grad_w,) = torch.autograd.grad(penalty, critic[1].weight)  # differentiable w.r.t. the critic
    expected_grad = 2 * (scale - 1) * critic[1].weight / scale
    torch.testing.assert_close(grad_w, expected_grad.detach())


# ----------------------------------------------------------------------------- monitoring


def test_frechet_distance_against_the_matrix_square_root() -> None:
    g = np.random.RandomState(0)
    a = g.randn(300, 5) @ g.randn(5, 5)
    b = 0.5 + g.randn(200, 5) @ g.randn(5, 5)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    reference = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(reference, rel=1e-8)


def test_frechet_distance_closed_forms() -> None:
    g = np.random.RandomState(1)
    a = g.randn(100, 4)
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + shift) == pytest.approx(float((shift**2).sum()), abs=1e-9)
    # In 1-D: (μ1 − μ2)² + (σ1 − σ2)².
    x = g.randn(500, 1)
    y = 3.0 * g.randn(400, 1) + 1.0
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="features_b"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="features_a"):
        frechet_distance(np.zeros(3), np.zeros((3, 1)))


def test_mode_coverage_counts_and_threshold() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)
    cov = mode_coverage(labels, 5, min_share=0.3)  # need ≥ 0.3 · 100/5 = 6 samples
    assert cov.counts == (50, 30, 15, 5, 0)
    assert cov.covered == 3
    assert mode_coverage(labels, 5, min_share=0.0).covered == 4
    assert cov.fractions[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="labels must lie"):
        mode_coverage(torch.tensor([0, 5]), 5)
    with pytest.raises(ValueError, match="min_share"):
        mode_coverage(labels, 5, min_share=2.0)


# ----------------------------------------------------------------------------- GAN training


@pytest.mark.parametrize("arch", GAN_ARCHS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 28, 28)])
def test_build_gan_shapes(arch: str, shape: tuple[int, int, int]) -> None:
    gen, disc = build_gan(arch, shape, latent_dim=8)
    x = gen.eval()(torch.randn(3, 8))
    assert x.shape == (3, *shape)
    assert float(x.detach().min()) >= 0.0
    assert float(x.detach().max()) <= 1.0
    assert disc(x).shape == (3,)


def test_dcgan_refuses_sides_not_divisible_by_4() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        build_gan("dcgan", (1, 6, 6), latent_dim=8)
    with pytest.raises(ValueError, match="arch must be one of"):
        build_gan("resnet", (1, 8, 8), latent_dim=8)


def test_gan_config_validation_and_defaults() -> None:
    assert GANConfig(loss="wgan-gp").d_steps == 5
    assert GANConfig(loss="wgan-gp").lr == 1e-4
    assert GANConfig().d_steps == 1
    assert GANConfig(d_steps=3).d_steps == 3
    for bad, match in [
        ({"loss": "hinge"}, "loss"),
        ({"arch": "vit"}, "arch"),
        ({"steps": 0}, "steps"),
        ({"d_steps": 0}, "d_steps"),
        ({"lr": -1.0}, "lr"),
        ({"betas": (0.5, 1.5)}, "betas"),
    ]:
        with pytest.raises(ValueError, match=match):
            GANConfig(**bad)  # type: ignore[arg-type]


def _toy_images(n: int = 64, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g), 10, "toy")


class _OneClassMonitor:
    """Labels every sample as class 0: a collapse by construction."""

    num_classes = 10

    def coverage(self, samples: torch.Tensor, *, min_share: float = 0.2) -> ModeCoverage:
        return mode_coverage(torch.zeros(len(samples), dtype=torch.int64), 10, min_share=min_share)

    def distance(self, samples: torch.Tensor) -> float:
        return 1.0


def test_train_gan_is_seeded_and_records_curves() -> None:
    config = GANConfig(steps=6, batch_size=16, log_every=2, eval_every=3, eval_samples=20, latent_dim=8)
    a = train_gan(config, _toy_images(), quiet=True)
    b = train_gan(config, _toy_images(), quiet=True)
    assert a.history == b.history
    assert [r["step"] for r in a.history] == [2.0, 4.0, 6.0]
    assert all(0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1 for r in a.history)
    assert [s for s, _ in a.samples] == [3, 6]
    assert a.samples[-1][1].shape == (100, 1, 8, 8)
    assert not a.generator.training
    assert not a.discriminator.training


@pytest.mark.parametrize("loss", ["minimax", "wgan-gp"])
def test_train_gan_runs_every_loss(loss: str) -> None:
    config = GANConfig(
        loss=loss, arch="dcgan", steps=2, batch_size=8, eval_every=2, eval_samples=8, latent_dim=4
    )
    result = train_gan(config, _toy_images(), quiet=True)
    assert len(result.history) == 1
    assert math.isfinite(result.history[0]["d_loss"])


def test_mode_collapse_warns() -> None:
    config = GANConfig(steps=2, batch_size=8, eval_every=2, eval_samples=10, latent_dim=4)
    with pytest.warns(ModeCollapseWarning, match="cover 1 of 10 classes"):
        train_gan(config, _toy_images(), monitor=_OneClassMonitor(), quiet=True)  # type: ignore[arg-type]


def test_gan_on_digits_covers_most_classes() -> None:
    """A short seeded run of the default MLP GAN on the 8×8 digits covers at least 8 of the 10 classes."""
    from advlearn.data import digits
    from advlearn.games import GANMonitor

    split = digits()
    monitor = GANMonitor(split.train, split.test, epochs=8, seed=0)
    assert monitor.accuracy >= 0.9
    config = GANConfig(steps=400, eval_every=400, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModeCollapseWarning)
        result = train_gan(config, split.train, monitor=monitor, quiet=True)
    assert result.coverage.covered >= 8, result.coverage
    assert result.frechet < monitor.distance(torch.rand(1000, 1, 8, 8))  # far better than noise


# ----------------------------------------------------------------------------- DANN


def test_dann_lambda_schedule() -> None:
    assert dann_lambda(0.0) == 0.0
    for p in (0.05, 0.3, 0.7, 1.0):
        assert dann_lambda(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1, abs=1e-15)
    values = [dann_lambda(p / 20) for p in range(21)]
    assert values == sorted(values)
    assert values[-1] < 1.0
    with pytest.raises(ValueError, match="progress"):
        dann_lambda(1.5)


def test_dann_step_sends_reversed_domain_gradient_to_the_features() -> None:
    """One DANN loss: G_y and G_d descend their own losses, G_f gets ∂L_y − λ ∂L_d."""
    torch.manual_seed(0)
    net = DANN()
    xs, ys, xt = torch.rand(4, 3, 28, 28), torch.tensor([0, 1, 2, 3]), torch.rand(4, 3, 28, 28)
    net.reversal.lambd = 0.3
    hs = net.features(xs)
    class_loss = nn.functional.cross_entropy(net.label_predictor(hs), ys)
    h = torch.cat([hs, net.features(xt)])
    domain_loss = nn.functional.binary_cross_entropy_with_logits(
        net.domain_logits(h), torch.cat([torch.zeros(4), torch.ones(4)])
    )
    f_params = list(net.feature_extractor.parameters())
    d_params = list(net.domain_classifier.parameters())
    total = torch.autograd.grad(class_loss + domain_loss, f_params + d_params, retain_graph=True)
    from_class = torch.autograd.grad(class_loss, f_params, retain_graph=True)
    net.reversal.lambd = 1.0  # the reversal reads λ at backward time from the saved context, not from here
    from_domain = torch.autograd.grad(domain_loss, f_params + d_params, retain_graph=True)
    # Reference without the reversal layer: the plain gradient of L_d.
    plain_h = torch.cat([net.feature_extractor(xs - 0.5), net.feature_extractor(xt - 0.5)])
    plain_d = nn.functional.binary_cross_entropy_with_logits(
        net.domain_classifier(plain_h).squeeze(1), torch.cat([torch.zeros(4), torch.ones(4)])
    )
    plain = torch.autograd.grad(plain_d, f_params + d_params)
    n_f = len(f_params)
    for got, c, p in zip(total[:n_f], from_class, plain[:n_f], strict=True):
        torch.testing.assert_close(got, c - 0.3 * p, rtol=1e-5, atol=1e-7)
    for got, p in zip(total[n_f:], plain[n_f:], strict=True):  # the domain classifier descends L_d
        torch.testing.assert_close(got, p)
    for got, p in zip(from_domain[:n_f], plain[:n_f], strict=True):
        torch.testing.assert_close(got, -0.3 * p, rtol=1e-5, atol=1e-7)


def test_train_dann_is_seeded_and_never_reads_target_labels() -> None:
    g = torch.Generator().manual_seed(0)
    source = Dataset(
        torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g), 10, "s"
    )
    target_x = torch.rand(64, 3, 28, 28, generator=g)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        net = DANN()
        history = train_dann(net, source, target_x, epochs=2, batch_size=32, quiet=True)
        runs.append((history.records, [p.clone() for p in net.parameters()]))
    for key in ("class_loss", "domain_loss", "domain_acc", "lambd"):
        assert [r[key] for r in runs[0][0]] == [r[key] for r in runs[1][0]]
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(a, b)
    records = runs[0][0]
    assert [r["epoch"] for r in records] == [1.0, 2.0]
    assert 0 < records[-1]["lambd"] < 1
    assert math.isnan(records[-1]["target_acc"])  # no labelled target set was given
    assert not net.training


def test_train_dann_rejects_bad_input() -> None:
    source = Dataset(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.int64), 10, "s")
    with pytest.raises(ValueError, match="batch_size"):
        train_dann(DANN(), source, torch.rand(8, 3, 28, 28), batch_size=16, quiet=True)
    with pytest.raises(ValueError, match="same image shape"):
        train_dann(DANN(), source, torch.rand(8, 3, 32, 32), batch_size=4, quiet=True)
    with pytest.raises(ValueError, match="model must be a DANN"):
        train_dann(nn.Linear(2, 2), source, torch.rand(8, 3, 28, 28), quiet=True)  # type: ignore[arg-type]


def test_blend_is_absolute_difference_with_a_patch() -> None:
    digits = np.zeros((2, 1, 4, 4), dtype=np.float32)
    digits[:, 0, 1:3, 1:3] = 1.0
    background = np.empty((3, 6, 6), dtype=np.float32)
    background[0], background[1], background[2] = 0.25, 0.5, 1.0  # a flat colour
    out = _blend_with_patches(digits, [background], np.random.RandomState(0))
    expected = np.abs(background[:, :4, :4][None] - digits)  # |patch − digit| per channel
    np.testing.assert_array_equal(out, expected)


def test_mnist_m_style_dataset() -> None:
    from advlearn.data import DATASETS, MNIST_M_BACKGROUNDS, _background_images, mnist5k, mnist_m_style

    split = mnist_m_style(seed=0)
    assert split.train.x.shape == (4000, 3, 28, 28)
    assert split.test.x.shape == (1000, 3, 28, 28)
    source = mnist5k()
    assert torch.equal(split.train.y, source.train.y)
    assert torch.equal(split.test.y, source.test.y)
    assert DATASETS["mnist_m_style"] is mnist_m_style
    # The draws are fixed by the seed: the same seed, the same images; another seed, others.
    photos = _background_images(MNIST_M_BACKGROUNDS)
    digits = source.test.x[:20].numpy()
    same = [_blend_with_patches(digits, photos, np.random.RandomState(seed)) for seed in (0, 0, 1)]
    assert np.array_equal(same[0], same[1])
    assert not np.array_equal(same[0], same[2])
    # Where the digit is blank the image is the photo patch itself: colourful, not grey.
    blank = source.test.x[:50, 0] == 0  # (50, 28, 28)
    colour = split.test.x[:50].permute(0, 2, 3, 1)[blank]  # (n, 3)
    assert float((colour.max(1).values - colour.min(1).values).mean()) > 0.05
    with pytest.raises(ValueError, match="backgrounds"):
        mnist_m_style(backgrounds=("no_such_image",))


@pytest.mark.slow
def test_dann_beats_source_only_on_the_mnist_m_style_target(tmp_path: Path) -> None:
    """Seeds 0-2 at the default 10 epochs. Measured (bench/results/games.json): source only
    0.534 / 0.484 / 0.501, DANN 0.592 / 0.625 / 0.609 target accuracy, a mean gain of 10.2 points."""
    from advlearn.experiments.games import DANNConfig, run_dann

    gains = []
    for seed in range(3):
        run = run_dann(DANNConfig(seed=seed), name=f"s{seed}", out_dir=tmp_path, quiet=True)
        gains.append(run.dann["target_acc"] - run.source_only["target_acc"])
        assert gains[-1] >= 0.03, (seed, run.source_only, run.dann)
    assert sum(gains) / len(gains) >= 0.07, gains


# ----------------------------------------------------------------------------- CLI


def test_cli_gan_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "gan",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--out-dir",
        str(tmp_path),
        "--quiet",
        "--name",
        "g",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModeCollapseWarning)  # 20 steps cannot cover the classes
        assert main(argv) == 0
    run = tmp_path / "g"
    for name in (
        "report.html",
        "report.md",
        "config.toml",
        "metrics.jsonl",
        "samples.png",
        "curves.png",
        "coverage.png",
        "generator.safetensors",
        "samples/step_000010.png",
        "samples/step_000020.png",
    ):
        assert (run / name).is_file(), name
    generator, record = load_model(run, stem="generator")
    assert record["model"] == "gan_generator"
    assert record["options"]["image_shape"] == (1, 8, 8)
    z = torch.randn(3, record["options"]["latent_dim"])
    assert generator(z).shape == (3, 1, 8, 8)
    discriminator, _ = load_model(run, stem="discriminator")
    assert discriminator(generator(z)).shape == (3,)
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert "<script" not in html
    assert "classes covered" in capsys.readouterr().out


def test_cli_gan_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gan", "--loss", "hinge", "--out-dir", str(tmp_path), "--quiet"]) == 2
    assert "loss must be one of" in capsys.readouterr().err
    assert main(["gan", "--data", "cifar", "--out-dir", str(tmp_path), "--quiet"]) == 2
    assert "data must be one of" in capsys.readouterr().err
    assert main(["dann", "--epochs", "0", "--out-dir", str(tmp_path), "--quiet"]) == 2
    assert "epochs" in capsys.readouterr().err


def test_cli_dann_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "dann",
        "--epochs",
        "1",
        "--max-examples",
        "128",
        "--out-dir",
        str(tmp_path),
        "--quiet",
        "--name",
        "d",
    ]
    assert main(argv) == 0
    run = tmp_path / "d"
    for name in (
        "report.html",
        "report.md",
        "config.toml",
        "metrics.jsonl",
        "embedding.png",
        "curves.png",
        "examples.png",
        "dann.safetensors",
        "source_only.safetensors",
    ):
        assert (run / name).is_file(), name
    for stem in ("dann", "source_only"):
        model, record = load_model(run, stem=stem)
        assert isinstance(model, DANN)
        assert not model.training
        assert record["metadata"]["adapt"] == (stem == "dann")
        x = torch.rand(2, 3, 28, 28)
        assert model(x).shape == (2, 10)
    assert "DANN" in capsys.readouterr().out
