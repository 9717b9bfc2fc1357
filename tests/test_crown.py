"""CROWN bounds (issue 17, part 1): sound, and never looser than IBP, on random nets and boxes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import advlearn as al
from advlearn.certify import crown_bounds, crown_margin_bounds, ibp_bounds, ibp_margin_bounds
from advlearn.certify.crown import crown_verified
from advlearn.models import Normalize

TOL = 1e-5


def _random_net(seed: int, conv: bool, depth: int, width: int) -> tuple[nn.Sequential, tuple[int, ...]]:
    torch.manual_seed(seed)
    if conv:
        layers: list[nn.Module] = [Normalize(0.4, 0.3), nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU()]
        layers += [nn.AvgPool2d(2), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten()]
        features = 4 * 2 * 2
        shape: tuple[int, ...] = (1, 8, 8)
    else:
        layers, features, shape = [nn.Flatten()], 5, (5,)
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, 3))
    net = nn.Sequential(*layers).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, shape


def _extreme_points(net: nn.Module, x: Tensor, threat: al.ThreatModel, steps: int = 15) -> list[Tensor]:
    """Inputs in the box that push each logit up and down (signed-gradient ascent), plus random ones."""
    lower, upper = threat.enclosing_box(x)
    points = [lower + (upper - lower) * torch.rand_like(x) for _ in range(20)]
    points += [torch.where(torch.rand_like(x) < 0.5, lower, upper) for _ in range(10)]  # corners
    num_classes = net(x).shape[1]
    for j in range(num_classes):
        for sign in (1.0, -1.0):
            z = x.clone()
            for _ in range(steps):
                z.requires_grad_(True)
                (grad,) = torch.autograd.grad(sign * net(z)[:, j].sum(), z)
                z = torch.min(torch.max(z.detach() + 0.25 * (upper - lower) * grad.sign(), lower), upper)
            points.append(z.detach())
    return points


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    conv=st.booleans(),
    depth=st.integers(1, 3),
    width=st.integers(2, 12),
    eps=st.floats(0.0, 0.3),
    intermediate=st.sampled_from(["crown", "ibp"]),
)
def test_crown_is_inside_ibp_and_contains_every_sampled_output(seed, conv, depth, width, eps, intermediate):
    net, shape = _random_net(seed, conv, depth, width)
    torch.manual_seed(seed + 1)
    x = torch.rand(3, *shape)
    threat = al.ThreatModel("linf", eps)
    lower, upper = crown_bounds(net, x, threat, intermediate=intermediate)
    ibp_lower, ibp_upper = ibp_bounds(net, x, threat)
    assert bool((lower >= ibp_lower).all())
    assert bool((upper <= ibp_upper).all())
    assert bool((lower <= upper + TOL).all())
    for point in _extreme_points(net, x, threat):
        out = net(point)
        assert bool((out >= lower - TOL).all()), float((lower - out).max())
        assert bool((out <= upper + TOL).all()), float((out - upper).max())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), conv=st.booleans(), eps=st.floats(0.0, 0.2))
def test_crown_margins_are_sound_and_inside_ibp_margins(seed, conv, eps):
    net, shape = _random_net(seed, conv, 2, 8)
    torch.manual_seed(seed + 2)
    x, y = torch.rand(3, *shape), torch.randint(0, 3, (3,))
    threat = al.ThreatModel("linf", eps)
    margins = crown_margin_bounds(net, x, y, threat)
    assert bool((margins >= ibp_margin_bounds(net, x, y, threat)).all())
    for point in _extreme_points(net, x, threat, steps=5):
        out = net(point)
        real = out.gather(1, y[:, None]) - out  # (B, C)
        assert bool((real >= margins - TOL).all())


def test_crown_is_exact_on_an_affine_net_and_strictly_tighter_than_ibp_on_a_deep_one():
    torch.manual_seed(0)
    x, threat = torch.rand(4, 5), al.ThreatModel("linf", 0.1)
    affine = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 3))  # composition: IBP is loose, CROWN exact
    lower, upper = crown_bounds(affine, x, threat)
    weight = affine[1].weight @ affine[0].weight  # the exact range of x -> W x + b over the box
    box_lo, box_hi = threat.enclosing_box(x)
    centre = affine((box_lo + box_hi) / 2)
    radius = ((box_hi - box_lo) / 2) @ weight.abs().T
    torch.testing.assert_close(lower, centre - radius, atol=1e-5, rtol=0)
    torch.testing.assert_close(upper, centre + radius, atol=1e-5, rtol=0)
    net, _ = _random_net(3, False, 3, 16)
    lo, up = crown_bounds(net, x, al.ThreatModel("linf", 0.05))
    ilo, iup = ibp_bounds(net, x, al.ThreatModel("linf", 0.05))
    assert float((up - lo).mean()) < 0.8 * float((iup - ilo).mean())


def test_crown_ibp_mix_and_verification():
    net, shape = _random_net(5, True, 1, 8)
    x, y = torch.rand(4, *shape), torch.randint(0, 3, (4,))
    threat = al.ThreatModel("linf", 0.0)
    # at eps = 0 the margins are the real ones and an example is verified iff it is correct
    margins = crown_margin_bounds(net, x, y, threat)
    out = net(x)
    torch.testing.assert_close(margins, out.gather(1, y[:, None]) - out, atol=1e-5, rtol=0)
    assert torch.equal(crown_verified(net, x, y, threat), out.argmax(1) == y)
    threat = al.ThreatModel("linf", 0.05)
    crown_ibp = crown_margin_bounds(net, x, y, threat, intermediate="ibp", mix=1.0)
    ibp = ibp_margin_bounds(net, x, y, threat)
    half = crown_margin_bounds(net, x, y, threat, intermediate="ibp", mix=0.5)
    raw = crown_margin_bounds(net, x, y, threat, intermediate="ibp", mix=0.999999)
    torch.testing.assert_close(half, 0.5 * raw + 0.5 * ibp, atol=1e-4, rtol=0)
    assert bool((crown_ibp >= ibp).all())
    with pytest.raises(ValueError, match="mix"):
        crown_margin_bounds(net, x, y, threat, mix=1.5)


def test_crown_refuses_layers_without_a_relaxation_naming_them():
    x, threat = torch.rand(2, 1, 8, 8), al.ThreatModel("linf", 0.1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(ValueError, match=r"CROWN cannot pass layer '2' \(MaxPool2d\)"):
        crown_bounds(model, x, threat)
    with pytest.raises(ValueError, match=r"'1' \(Tanh\)"):
        crown_bounds(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), torch.rand(2, 4), threat)
    hooked = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    hooked[1].register_forward_hook(lambda m, i, o: o + 1)
    with pytest.raises(ValueError, match="hooks"):
        crown_bounds(hooked, torch.rand(2, 4), threat)
    with pytest.raises(ValueError, match="intermediate"):
        crown_bounds(hooked[:1], torch.rand(2, 4), threat, intermediate="zono")  # type: ignore[arg-type]


def test_crown_bounds_carry_gradients_for_training():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 2])
    margins = crown_margin_bounds(net, x, y, al.ThreatModel("linf", 0.1), intermediate="ibp", mix=0.5)
    margins.sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters())
