"""SmoothAdv (Salman et al. 2019; issue 17, part 2): it trains, its attack stays in the ball and box,
and it raises the smoothed classifier's loss above Gaussian augmentation's on the same noise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlearn.certify import Smooth
from advlearn.training import OBJECTIVES, GaussianAugment, SmoothAdv, build_objective
from advlearn.training.smoothadv import SoftSmoothed


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes in [0, 1]^16: mean 0.25 or 0.75 in every pixel (ℓ2 gap 2), spread 0.1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (0.25 + 0.5 * y[:, None].float() + 0.1 * torch.randn(n, 16, generator=g)).clamp(0, 1)
    return x.reshape(n, 1, 4, 4), y


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))


def _trained(objective, epochs: int = 6) -> nn.Module:
    """The objective's own train_step (what the Trainer calls; tests/test_objective_conformance.py runs
    SmoothAdv through the Trainer, resume included)."""
    x, y = _blobs(512, 0)
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(1)
    for epoch in range(epochs):
        step = objective.at_epoch(epoch, epochs)
        for idx in torch.randperm(len(x)).split(64):
            step.train_step(model, x[idx], y[idx], optimizer)
    return model.eval()


def test_it_trains_a_smoothed_classifier_that_certifies():
    model = _trained(SmoothAdv(eps=0.5, sigma=0.25, steps=2, num_noise=2))
    x, y = _blobs(40, 1)
    smooth = Smooth(model, num_classes=2, sigma=0.25)
    labels, radii = smooth.certify_many(x, 32, 500, 0.001, 1000, torch.Generator().manual_seed(0))
    assert float((labels == y).double().mean()) >= 0.9
    assert float(radii[labels == y].median()) > 0.4  # the means are 1.0 from the boundary; n caps it at 0.55


def test_the_inner_attack_stays_in_the_ball_and_the_box_and_raises_the_smoothed_loss():
    model = _trained(GaussianAugment(sigma=0.25), epochs=3)
    x, y = _blobs(64, 2)
    objective = SmoothAdv(eps=0.5, sigma=0.25, steps=4, num_noise=4)
    noise = 0.25 * torch.randn((4, *x.shape), generator=torch.Generator().manual_seed(3))
    x_adv = objective.attack(model, x, y, noise)
    distance = (x_adv - x).flatten(1).norm(dim=1)
    assert float(distance.max()) <= 0.5 * (1 + 1e-5)
    assert float(distance.mean()) > 0.25  # it moves
    assert float(x_adv.min()) >= 0.0
    assert float(x_adv.max()) <= 1.0
    soft = SoftSmoothed(model, noise)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    x_random = x + 0.5 * direction / direction.flatten(1).norm(dim=1)[:, None, None, None]
    with torch.no_grad():
        smoothed_adv = F.cross_entropy(soft(x_adv), y, reduction="none")
        smoothed_clean = F.cross_entropy(soft(x), y, reduction="none")  # Gaussian augmentation's point
        smoothed_random = F.cross_entropy(soft(x_random), y, reduction="none")  # a random step as long
        # and the training losses themselves: SmoothAdv's outer loss vs Gaussian augmentation's
        outer_adv = F.cross_entropy(model((x_adv + noise).flatten(0, 1)), y.repeat(4))
        outer_clean = F.cross_entropy(model((x + noise).flatten(0, 1)), y.repeat(4))
    assert bool((smoothed_adv >= smoothed_clean - 1e-6).all())
    assert float(smoothed_adv.mean()) > 1.5 * float(smoothed_clean.mean())  # measured: 0.50 vs 0.25
    assert float(smoothed_adv.mean()) > 1.5 * float(smoothed_random.mean())
    assert float(outer_adv) > float(outer_clean)


def test_the_attack_runs_in_eval_mode_and_the_outer_loss_in_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)
    ).train()
    x, y = _blobs(16, 4)
    SmoothAdv(eps=0.5, steps=3, num_noise=2)(model, x, y)
    assert int(model[2].num_batches_tracked) == 1  # the 3 attack steps left the statistics alone
    assert model.training


def test_eps_zero_is_gaussian_augmentation_on_the_same_draws():
    model, (x, y) = _net(), _blobs(8, 5)
    torch.manual_seed(7)
    loss = SmoothAdv(eps=0.0, sigma=0.5, num_noise=1)(model, x, y)
    torch.manual_seed(7)
    assert torch.allclose(loss, GaussianAugment(sigma=0.5)(model, x, y))


def test_it_is_registered_ramps_eps_and_refuses_bad_options():
    objective = build_objective("smooth_adv", None, eps=0.5, num_noise=1, eps_warmup=4)
    assert type(objective) is SmoothAdv is OBJECTIVES["smooth_adv"]
    assert objective.at_epoch(0, 10).eps == pytest.approx(0.125)
    assert objective.at_epoch(4, 10) is objective
    assert SmoothAdv(eps=1.0, bounds=[0, 2]).bounds == (0.0, 2.0)
    assert SmoothAdv(eps=1.0, bounds=None).ball.bounds is None
    for options, name in [({"sigma": 0.0}, "sigma"), ({"num_noise": 0}, "num_noise"),
                          ({"bounds": (0.0,)}, "bounds"), ({"step_size": 0.0}, "step_size")]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            SmoothAdv(eps=0.5, **options)
    with pytest.raises(ValueError, match="SoftSmoothed holds noise"):
        SoftSmoothed(_net(), torch.zeros(2, 4, 1, 4, 4))(torch.zeros(3, 1, 4, 4))
