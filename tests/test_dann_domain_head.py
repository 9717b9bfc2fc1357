"""Issue 17 part 3: the reversed domain gradient checked by hand, and DANN's domain-head option.

The gradient test builds the smallest DANN-shaped graph whose gradients can be written down in
closed form (a scalar linear feature ``h = w x``, a linear domain logit ``z = v h``, the BCE loss)
and checks that the reversal layer hands the feature weight exactly ``−λ`` times the plain
gradient while the domain classifier descends its own loss. The head tests check that
``domain_hidden`` builds the stated layers, leaves the paper's network as it was, refuses bad
widths by name and survives a checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advlearn.checkpoint import load_model, save_model
from advlearn.experiments.dann_job import DANNConfig
from advlearn.games.dann import DANN
from advlearn.games.reversal import GradientReversal


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


@pytest.mark.parametrize("lambd", [0.0, 0.25, 1.0])
def test_reversed_domain_gradient_matches_the_hand_computed_one(lambd: float) -> None:
    # Source x = 2 (label 0), target x = −1 (label 1); h = w x, z = v h, L = mean BCE(z, t).
    w0, v0 = 0.5, -0.8
    x = torch.tensor([2.0, -1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    v = torch.tensor(v0, dtype=torch.float64, requires_grad=True)
    reversal = GradientReversal(lambd)
    z = v * reversal(w * x)
    F.binary_cross_entropy_with_logits(z, t).backward()
    # By hand: ∂L/∂z_i = (σ(z_i) − t_i) / 2, ∂z_i/∂v = h_i = w x_i, ∂z_i/∂h_i = v, ∂h_i/∂w = x_i.
    residual = [(_sigmoid(v0 * w0 * xi) - ti) / 2 for xi, ti in ((2.0, 0.0), (-1.0, 1.0))]
    dv = sum(r * w0 * xi for r, xi in zip(residual, (2.0, -1.0), strict=True))
    dw_plain = sum(r * v0 * xi for r, xi in zip(residual, (2.0, -1.0), strict=True))
    assert v.grad is not None
    assert w.grad is not None
    assert float(v.grad) == pytest.approx(dv, rel=1e-12)  # the domain classifier descends L_d
    assert float(w.grad) == pytest.approx(-lambd * dw_plain, rel=1e-12, abs=1e-15)  # the features ascend it
    assert dw_plain != 0.0
    assert dv != 0.0


def test_dann_reverses_the_domain_gradient_exactly_once() -> None:
    """Through the whole DANN: G_f's domain gradient is −λ × the plain one (one reversal, not two)."""
    torch.manual_seed(1)
    net = DANN(domain_hidden=(16,))
    x = torch.rand(6, 3, 28, 28)
    t = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    net.reversal.lambd = 0.4
    f_params = list(net.feature_extractor.parameters())
    reversed_grads = torch.autograd.grad(
        F.binary_cross_entropy_with_logits(net.domain_logits(net.features(x)), t), f_params
    )
    plain = F.binary_cross_entropy_with_logits(
        net.domain_classifier(net.feature_extractor(x - 0.5)).squeeze(1), t
    )
    for got, want in zip(reversed_grads, torch.autograd.grad(plain, f_params), strict=True):
        torch.testing.assert_close(got, -0.4 * want, rtol=1e-5, atol=1e-8)
    assert sum(float(g.abs().sum()) for g in reversed_grads) > 0.0


def test_domain_hidden_builds_the_stated_layers() -> None:
    net = DANN(domain_hidden=(1024, 1024))
    linears = [m for m in net.domain_classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(768, 1024), (1024, 1024), (1024, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in net.domain_classifier) == 2
    assert net.domain_logits(net.features(torch.rand(3, 3, 28, 28))).shape == (3,)
    assert DANN(domain_hidden=()).domain_classifier[0].in_features == 768  # a linear domain classifier


def test_default_head_is_the_papers_and_draws_the_same_weights() -> None:
    torch.manual_seed(3)
    default = DANN()
    torch.manual_seed(3)
    explicit = DANN(domain_hidden=(100,))
    shapes = [tuple(p.shape) for p in default.domain_classifier.parameters()]
    assert shapes == [(100, 768), (100,), (1, 100), (1,)]
    for a, b in zip(default.state_dict().values(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [(0,), (100, -1), (1.5,), (True,), "100", 100])
def test_bad_domain_hidden_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="domain_hidden"):
        DANN(domain_hidden=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="domain_hidden"):
        DANNConfig(domain_hidden=bad)  # type: ignore[arg-type]


def test_checkpoint_rebuilds_the_domain_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = DANN(domain_hidden=(32, 8))
    options = {"in_channels": 3, "num_classes": 10, "batchnorm": False, "domain_hidden": [32, 8]}
    save_model(tmp_path, net, name="dann", options=options)
    loaded, _ = load_model(tmp_path)
    assert isinstance(loaded, DANN)
    assert loaded.domain_hidden == (32, 8)
    h = torch.rand(4, 768)
    assert torch.equal(net.domain_logits(h), loaded.domain_logits(h))
