"""`AdversarialLogisticRegression(solver="lbfgsb")`: the ℓ∞ closed form solved on w = u − v, u, v ≥ 0."""

from __future__ import annotations

import math

import pytest
import torch

from advlearn.data import gaussian_pair, tsipras
from advlearn.linear import AdversarialLogisticRegression
from advlearn.threat import ThreatModel


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_lbfgsb_never_worse_than_lbfgs(seed: int):
    """On the chapter's two Gaussians at ε = 1 its objective is at most L-BFGS's (which stalls at kinks)."""
    data = gaussian_pair(n_train=240, n_test=10, seed=seed).train
    x = data.x.double()
    threat = ThreatModel("linf", 1.0, data.bounds)
    smooth = AdversarialLogisticRegression(threat, solver="lbfgsb").fit(x, data.y)
    kinked = AdversarialLogisticRegression(threat).fit(x, data.y)
    assert smooth.loss_ <= kinked.loss_ + 1e-12


def test_lbfgsb_finds_the_robust_feature_where_lbfgs_returns_zero():
    """Tsipras et al.'s data at d = 100, ε = 2η: L-BFGS stops at w = 0 at once; the optimum is not 0.

    First-order condition at w = 0: the loss can decrease iff ‖mean(y·x)‖_∞ > ε, and here the robust
    feature's mean(y·x₁) ≈ 2p − 1 = 0.9 > ε = 0.8; the solution leans on x₁ and reaches about p.
    """
    d = 100
    eta = 4 / math.sqrt(d)
    split = tsipras(n_train=500, n_test=1000, d=d, p=0.95, eta=eta, seed=0)
    x, y = split.train.x.double(), split.train.y
    threat = ThreatModel("linf", 2 * eta, split.train.bounds)
    m = ((2 * y - 1).double().unsqueeze(1) * x).mean(0)
    assert float(m.abs().max()) > 2 * eta  # so w = 0 is not optimal
    smooth = AdversarialLogisticRegression(threat, solver="lbfgsb").fit(x, y)
    assert smooth.loss_ < math.log(2) - 1e-4
    assert float(smooth.coef_[0]) > 0.1
    accuracy = float((smooth.predict(split.test.x.double()) == split.test.y).double().mean())
    assert 0.92 < accuracy < 0.98  # p = 0.95 on 1,000 points, ±3 binomial sd


def test_lbfgsb_needs_linf():
    with pytest.raises(ValueError, match="l-inf"):
        AdversarialLogisticRegression(ThreatModel("l2", 0.5, None), solver="lbfgsb")


def test_lbfgsb_at_eps_zero_is_maximum_likelihood():
    """ε = 0: the same optimum as L-BFGS on the smooth ordinary logistic loss."""
    data = gaussian_pair(n_train=200, n_test=10, seed=1).train
    threat = ThreatModel("linf", 0.0, data.bounds)
    a = AdversarialLogisticRegression(threat, solver="lbfgsb").fit(data.x.double(), data.y)
    b = AdversarialLogisticRegression(threat).fit(data.x.double(), data.y)
    assert torch.allclose(a.coef_, b.coef_, atol=1e-5)
    assert a.loss_ == pytest.approx(b.loss_, abs=1e-10)
