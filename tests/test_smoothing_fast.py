"""The noise drawn after a leading linear layer (issue 17, part 2): the same distribution, fewer normals.

For ``Sequential(Flatten, Linear, ...)`` :meth:`Smooth.sample_counts_many` draws ``W η`` as
``σ Rᵀ z`` (``Wᵀ = QR``). Checked against closed forms (an all-linear model: class 0 wins with
probability ``Φ(m / (σ ‖a‖))`` for the logit margin ``a·x + c``), against the general path on a
ReLU network (two-sample binomial tolerances, fixed seeds), and for the models it must not touch.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

from advlearn.certify import Smooth
from advlearn.certify.smoothing import _leading_affine

SIGMA = 0.7


def _linear_net(rank_deficient: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Linear(5, 2))
    if rank_deficient:
        with torch.no_grad():
            net[1].weight[3] = net[1].weight[1] * 2.0  # rank 4 < 5: no Cholesky factor, QR still works
            net[1].weight[4] = 0.0
    return net.eval()


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_fast_path_counts_match_the_closed_form(rank_deficient):
    net = _linear_net(rank_deficient)
    assert _leading_affine(net, torch.Size([3, 4])) is not None
    torch.manual_seed(1)
    xs = torch.randn(6, 3, 4) * 0.5
    w = (net[2].weight @ net[1].weight).detach()  # (2, 12)
    c = (net[2].weight @ net[1].bias + net[2].bias).detach()
    a, m = w[0] - w[1], xs.reshape(6, -1) @ (w[0] - w[1]) + (c[0] - c[1])
    num = 4000
    counts = Smooth(net, 2, SIGMA).sample_counts_many(xs, num, 1000, torch.Generator().manual_seed(2))
    for row, margin in zip(counts, m.tolist(), strict=True):
        p = float(norm.cdf(margin / (SIGMA * float(a.norm()))))
        sd = math.sqrt(num * p * (1 - p))
        assert abs(int(row[0]) - num * p) <= 4.5 * sd + 1  # 4.5 sd: false alarm < 1e-5 per row


def test_fast_path_matches_the_general_path_on_a_relu_net():
    torch.manual_seed(3)
    fast = nn.Sequential(nn.Flatten(), nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    plain = nn.Sequential(nn.Identity(), *list(fast)[1:]).eval()  # the same function, the general path
    assert _leading_affine(fast, torch.Size([20])) is not None
    assert _leading_affine(plain, torch.Size([20])) is None
    xs = torch.randn(5, 20) * 0.3
    num = 6000
    got = Smooth(fast, 3, SIGMA).sample_counts_many(xs, num, 512, torch.Generator().manual_seed(4))
    ref = Smooth(plain, 3, SIGMA).sample_counts_many(xs, num, 512, torch.Generator().manual_seed(5))
    assert got.sum(1).tolist() == [num] * 5
    p = (got + ref).double() / (2 * num)
    sd = (2 * p * (1 - p) / num).sqrt() * num  # sd of the difference of two Binomial(num, p)
    assert bool(((got - ref).abs().double() <= 4.5 * sd + 2).all())
    assert not torch.equal(got, ref)  # the two paths draw differently (otherwise the test shows nothing)


def test_models_the_fast_path_leaves_alone():
    class Residual(nn.Sequential):
        def forward(self, x):  # type: ignore[override]
            return super().forward(x) + x.flatten(1)[:, :2]

    shape = torch.Size([1, 4, 4])
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 2))
    assert _leading_affine(net, shape) is not None
    assert _leading_affine(Residual(*net), shape) is None  # a subclass with its own forward
    assert _leading_affine(nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Linear(32, 2)), shape) is None
    assert _leading_affine(nn.Sequential(nn.Flatten(2), nn.Linear(16, 4)), shape) is None
    assert _leading_affine(nn.Sequential(nn.Linear(16, 4)), shape) is None  # 3-d inputs need a Flatten
    handle = net[1].register_forward_hook(lambda module, inputs, output: output * 0)
    assert _leading_affine(net, shape) is None  # a hook may change the layer's output
    handle.remove()
    handle = nn.modules.module.register_module_forward_pre_hook(lambda module, inputs: None)
    try:
        assert _leading_affine(net, shape) is None
    finally:
        handle.remove()
    assert _leading_affine(net, shape) is not None
