"""Closed-form adversarial logistic regression (Goodfellow et al. 2015, §5) against its definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import advlearn as al
from advlearn.attacks import fgsm, pgd
from advlearn.data import gaussian_pair
from advlearn.linear import (
    AdversarialLogisticRegression,
    adversarial_logistic_loss,
    linear_fgsm,
    signed_labels,
)

NORMS = ("linf", "l2", "l1")
BOX = (-21.0, 21.0)  # gaussian_pair's box: 20 standard deviations out, never binding below


@pytest.fixture(scope="module")
def gaussians() -> al.data.DataSplit:
    return gaussian_pair(n_train=600, n_test=400, seed=0)


def _problem(
    dim: int = 5, n: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    b = 0.3 * torch.randn((), generator=g, dtype=torch.float64)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    return w, b, x, y


def _loss_at(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The plain logistic loss ζ(−y(wᵀx + b)) per example, written out independently."""
    sign = 2.0 * y.to(torch.float64) - 1.0
    return torch.log1p(torch.exp(-sign * (x.reshape(len(x), -1) @ w + b)))


@pytest.mark.parametrize("norm", NORMS)
def test_closed_form_equals_the_loss_at_the_exact_fgsm_point(norm: str) -> None:
    """ζ(−y(wᵀx+b) + ε‖w‖_q) equals the logistic loss at x − ε·y·d(w), to float64 precision, per example."""
    w, b, x, y = _problem()
    threat = al.ThreatModel(norm, eps=0.4, bounds=(-50.0, 50.0))
    closed = adversarial_logistic_loss(w, b, x, y, threat, reduction="none")
    x_adv = linear_fgsm(w, x, y, threat)
    torch.testing.assert_close(closed, _loss_at(w, b, x_adv, y), rtol=1e-12, atol=1e-12)
    # and the step has exactly the norm ε (it sits on the sphere of the ball)
    torch.testing.assert_close(threat.norm(x_adv - x), torch.full((len(x),), 0.4, dtype=torch.float64))


def test_fgsm_closed_forms_for_linf_and_l2() -> None:
    """x − ε·y·sign(w) for ℓ∞ and x − ε·y·w/‖w‖₂ for ℓ2, with y = ±1."""
    w, _, x, y = _problem()
    sign = (2.0 * y - 1.0).to(torch.float64).unsqueeze(1)
    linf = al.ThreatModel("linf", eps=0.2, bounds=(-50.0, 50.0))
    l2 = al.ThreatModel("l2", eps=0.7, bounds=(-50.0, 50.0))
    torch.testing.assert_close(linear_fgsm(w, x, y, linf), x - 0.2 * sign * w.sign())
    torch.testing.assert_close(linear_fgsm(w, x, y, l2), x - 0.7 * sign * w / w.norm())


@pytest.mark.parametrize("norm", NORMS)
def test_closed_form_matches_the_library_fgsm_on_the_two_logit_module(norm: str) -> None:
    """Library FGSM on to_module() lands on linear_fgsm's point, and the loss there is the closed form."""
    split = gaussian_pair(n_train=200, n_test=50, seed=1)
    threat = al.ThreatModel(norm, eps=0.5, bounds=split.train.bounds)
    model = AdversarialLogisticRegression(threat).fit(split.train.x, split.train.y)
    x, y = split.test.x.double(), split.test.y
    w, b = model.coef_, model.intercept_
    assert w is not None
    assert b is not None
    x_attack = fgsm(model.to_module(), x, y, threat).x_adv
    torch.testing.assert_close(x_attack, linear_fgsm(w, x, y, threat), rtol=0, atol=1e-12)
    ce = F.cross_entropy(model.to_module()(x_attack), y, reduction="none")
    torch.testing.assert_close(ce, adversarial_logistic_loss(w, b, x, y, threat, reduction="none"))


@pytest.mark.parametrize("norm", NORMS)
def test_closed_form_is_the_maximum_over_the_ball(norm: str) -> None:
    """No point of the ball (random points on its sphere, then PGD-20) exceeds the closed form."""
    w, b, x, y = _problem(n=8)
    threat = al.ThreatModel(norm, eps=0.3, bounds=(-50.0, 50.0))
    closed = adversarial_logistic_loss(w, b, x, y, threat, reduction="none")
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        delta = threat.random_init(x, generator=g) - x
        worst = _loss_at(w, b, x + delta, y)
        assert bool((worst <= closed + 1e-12).all())
    module = torch.nn.Sequential(torch.nn.Linear(5, 2, dtype=torch.float64))
    with torch.no_grad():
        module[0].weight.copy_(torch.stack([torch.zeros_like(w), w]))
        module[0].bias.copy_(torch.stack([torch.zeros_like(b), b]))
    x_pgd = pgd(module, x, y, threat, steps=20, random_start=False).x_adv
    pgd_loss = _loss_at(w, b, x_pgd, y)
    assert bool((pgd_loss <= closed + 1e-12).all())
    torch.testing.assert_close(pgd_loss, closed, rtol=1e-6, atol=0)  # from x, PGD walks straight to it


def test_per_example_eps_and_clip() -> None:
    """A (B,) radius gives each example its own ε‖w‖_q; clip=True keeps x_adv inside the box."""
    w, b, x, y = _problem(n=4)
    eps = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    threat = al.ThreatModel("linf", eps=eps, bounds=(-50.0, 50.0))
    closed = adversarial_logistic_loss(w, b, x, y, threat, reduction="none")
    sign = 2.0 * y.double() - 1.0
    torch.testing.assert_close(closed, F.softplus(-sign * (x @ w + b) + eps * w.abs().sum()))
    boxed = al.ThreatModel("linf", eps=0.5, bounds=(-0.2, 0.2))
    x_in = x.clamp(-0.2, 0.2)
    x_adv = linear_fgsm(w, x_in, y, boxed, clip=True)
    assert bool(boxed.contains(x_adv, x_in).all())
    # the box binds here, so the loss at the clipped point is below the closed form (an upper bound)
    assert bool(
        (_loss_at(w, b, x_adv, y) <= adversarial_logistic_loss(w, b, x_in, y, boxed, reduction="none")).all()
    )


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fit_matches_gradient_descent_on_fgsm_data_regenerated_every_step(norm: str, gaussians) -> None:
    """Gradient descent on FGSM points (recomputed from the current w each step) fits the closed form.

    By Danskin's theorem the gradient at the fixed worst case equals the closed form's gradient, so the two
    runs share every iterate; and both reach the L-BFGS solution of the closed form.
    """
    x, y = gaussians.train.x.double(), gaussians.train.y
    threat = al.ThreatModel(norm, eps=0.3, bounds=gaussians.train.bounds)
    lbfgs = AdversarialLogisticRegression(threat).fit(x, y)
    gd_closed = AdversarialLogisticRegression(threat, solver="gd", lr=1.0, max_iter=400, tol=1e-10).fit(x, y)

    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w, b], lr=1.0)
    for step in range(400):
        x_adv = linear_fgsm(w.detach(), x, y, threat)  # the exact worst case for the current weights
        optimizer.zero_grad()
        loss = _loss_at(w, b, x_adv, y).mean()
        loss.backward()
        if step == 0:
            closed = adversarial_logistic_loss(w, b, x, y, threat)
            assert float(loss.detach()) == pytest.approx(float(closed.detach()), rel=1e-12)
        optimizer.step()
        if step == 49:  # iterates agree with full-batch GD on the closed form run for as many steps
            mid = AdversarialLogisticRegression(threat, solver="gd", lr=1.0, max_iter=50, tol=0.0)
            with pytest.warns(RuntimeWarning, match="max_iter"):
                mid.fit(x, y)
            torch.testing.assert_close(w.detach(), mid.coef_, rtol=1e-9, atol=1e-12)
    assert lbfgs.converged_
    assert gd_closed.converged_
    for other in (w.detach(), gd_closed.coef_):
        torch.testing.assert_close(other, lbfgs.coef_, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.detach(), lbfgs.intercept_, rtol=0, atol=1e-6)


def test_eps_zero_is_ordinary_logistic_regression(gaussians) -> None:
    """ε = 0 reproduces scikit-learn's unpenalized logistic regression (an independent solver)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x, y = gaussians.train.x, gaussians.train.y
    ours = AdversarialLogisticRegression(al.ThreatModel("linf", 0.0, gaussians.train.bounds)).fit(x, y)
    theirs = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x.double().numpy(), y.numpy())
    torch.testing.assert_close(ours.coef_, torch.from_numpy(theirs.coef_[0]), rtol=0, atol=1e-5)
    assert float(ours.intercept_) == pytest.approx(float(theirs.intercept_[0]), abs=1e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_robust_training_shrinks_the_weights_like_weight_decay(norm: str, gaussians) -> None:
    """Goodfellow's observation: on two Gaussians adversarial training shrinks ‖w‖₁, more for larger ε.

    It also makes the robust loss lower than the standard model's (it is its minimizer), and past
    ε = ‖mean(y·x)‖_p (the primal norm) the optimum is w = 0 exactly.
    """
    x, y = gaussians.train.x, gaussians.train.y
    bounds = gaussians.train.bounds
    fits = {
        eps: AdversarialLogisticRegression(al.ThreatModel(norm, eps, bounds)).fit(x, y)
        for eps in (0.0, 0.1, 0.3, 0.6)
    }
    l1 = [float(m.coef_.abs().sum()) for m in fits.values()]
    assert all(a > b for a, b in itertools.pairwise(l1)), l1
    threat = al.ThreatModel(norm, 0.3, bounds)
    robust, standard = fits[0.3], fits[0.0]
    assert robust.coef_ is not None
    assert standard.coef_ is not None
    assert adversarial_logistic_loss(
        robust.coef_, robust.intercept_, x, y, threat
    ) < adversarial_logistic_loss(standard.coef_, standard.intercept_, x, y, threat)
    # the kink at w = 0: optimal iff eps >= ||mean(y x)||_p (the directional derivative there is >= 0)
    sign = signed_labels(y).double()
    threshold = float(threat.norm((sign.unsqueeze(1) * x.double()).mean(0, keepdim=True)))
    dead = AdversarialLogisticRegression(al.ThreatModel(norm, 1.05 * threshold, bounds)).fit(x, y)
    assert float(dead.coef_.abs().max()) < 1e-6
    assert dead.loss_ == pytest.approx(math.log(2.0), abs=1e-6)


def test_robust_model_is_more_accurate_under_attack(gaussians) -> None:
    """Under the exact ℓ∞ attack at ε = 0.5 the robust fit beats the standard one on held-out data."""
    bounds = gaussians.train.bounds
    threat = al.ThreatModel("linf", 0.5, bounds)
    standard = AdversarialLogisticRegression(al.ThreatModel("linf", 0.0, bounds)).fit(
        gaussians.train.x, gaussians.train.y
    )
    robust = AdversarialLogisticRegression(threat).fit(gaussians.train.x, gaussians.train.y)
    x, y = gaussians.test.x.double(), gaussians.test.y

    def robust_acc(model: AdversarialLogisticRegression) -> float:
        assert model.coef_ is not None
        return float((model.predict(linear_fgsm(model.coef_, x, y, threat)) == y).double().mean())

    assert robust_acc(robust) >= robust_acc(standard)
    # and it is still a sensible classifier on clean data (Bayes accuracy here is about 0.92)
    assert float((robust.predict(x) == y).double().mean()) > 0.8


def test_label_conventions_and_predictions(gaussians) -> None:
    """{0, 1} and {−1, +1} labels fit the same weights; predict answers in the fitted convention."""
    x, y = gaussians.train.x, gaussians.train.y
    threat = al.ThreatModel("l2", 0.2, gaussians.train.bounds)
    a = AdversarialLogisticRegression(threat).fit(x, y)
    b = AdversarialLogisticRegression(threat).fit(x, 2 * y - 1)
    torch.testing.assert_close(a.coef_, b.coef_)
    assert set(a.predict(x).tolist()) == {0, 1}
    assert set(b.predict(x).tolist()) == {-1, 1}
    torch.testing.assert_close(a.predict_proba(x).sum(1), torch.ones(len(x)))
    assert torch.equal(a.predict(x), (a.decision_function(x) > 0).long())
    assert a.decision_function(x).dtype == x.dtype


def test_bad_input_is_refused() -> None:
    """ValueErrors name the problem: labels, shapes, unfitted models, options."""
    threat = al.ThreatModel("linf", 0.1, (-5.0, 5.0))
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="binary labels"):
        signed_labels(torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match="binary labels"):
        linear_fgsm(torch.ones(2), x, torch.tensor([0, 2, 1]), threat)
    with pytest.raises(ValueError, match="batch size 3"):
        adversarial_logistic_loss(torch.ones(2), 0.0, x, torch.tensor([0, 1]), threat)
    with pytest.raises(ValueError, match="w must have shape"):
        adversarial_logistic_loss(torch.ones(3), 0.0, x, torch.tensor([0, 1, 1]), threat)
    with pytest.raises(ValueError, match="floating-point"):
        linear_fgsm(torch.ones(2), torch.zeros(3, 2, dtype=torch.long), torch.tensor([0, 1, 1]), threat)
    with pytest.raises(ValueError, match="reduction"):
        adversarial_logistic_loss(torch.ones(2), 0.0, x, torch.tensor([0, 1, 1]), threat, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not fitted"):
        AdversarialLogisticRegression(threat).predict(x)
    with pytest.raises(ValueError, match="solver"):
        AdversarialLogisticRegression(threat, solver="newton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight_decay"):
        AdversarialLogisticRegression(threat, weight_decay=-1.0)
