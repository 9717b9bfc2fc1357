"""The zero-gradient check fails on NaN or Inf gradients (issue 17, part 0).

``ε·‖∇‖ ≤ tol`` is False for NaN, so a model computing ``log(softmax(100 z))`` (NaN gradients on
every input) used to pass the check as "informative".
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.diagnostics.masking import _check_gradients


class LogSoftmax100(nn.Module):
    """``log(softmax(100 z))``: the softmax underflows to 0, its log to -inf, the gradients to NaN."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.log(torch.softmax(100 * z, dim=1))


def _data() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        net[2].weight.mul_(50)  # logits far apart, as a trained model's: softmax(100 z) underflows
    x = torch.rand(200, 6)
    with torch.no_grad():
        y = net(x).argmax(1)  # every input correctly classified
    return net, x, y


def _check(model: nn.Module, x: Tensor, y: Tensor) -> al.diagnostics.MaskingCheck:
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    check, _ = _check_gradients(model, x, y, correct, al.ThreatModel("linf", 0.1), 200, 1e-8, 0.1)
    return check


def test_nan_gradients_fail_the_zero_gradient_check_with_their_share():
    net, x, y = _data()
    model = nn.Sequential(net, LogSoftmax100())
    check = _check(model, x, y)
    assert check.status == "fail"
    assert check.figure == 1.0
    found = re.search(r"(\d+) of 200 inputs \(([\d.]+)%\) have NaN or Inf gradients", check.detail)
    assert found is not None, check.detail
    assert int(found.group(1)) >= 190  # before the fix: "passed" with 1 of 200 vanishing (0.5%)


def test_a_partial_share_of_nan_gradients_is_counted_and_still_fails():
    net, x, y = _data()

    class HalfNaN(nn.Module):
        def forward(self, z: Tensor) -> Tensor:
            head = z[:50]  # the first 50 inputs: d sqrt(0·z)/dz = 0·∞ = NaN
            return torch.cat([head + torch.sqrt(head * 0.0), z[50:]])

    model = nn.Sequential(net, HalfNaN())
    check = _check(model, x, y)
    assert check.status == "fail"
    assert abs(check.figure - 50 / 200) < 1e-9
    assert "50 of 200 inputs" in check.detail


def test_finite_informative_gradients_still_pass():
    net, x, y = _data()
    check = _check(net, x, y)
    assert check.status == "pass"
    assert check.figure == 0.0
    assert "NaN" not in check.detail
