"""Randomized smoothing with the noise batched across examples (issue 17, part 2).

Statistical checks use fixed seeds and binomial tolerances: each count is Binomial(num, p) with
p = Φ(d/σ) for a linear classifier at signed distance d from its boundary.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import Tensor, nn

from advlearn.certify import Smooth, certify_dataset

SIGMA = 0.5


class Linear(nn.Module):
    """Class 0 where x_0 > 0: the signed distance to the boundary is x_0."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append(len(x))
        z = x[:, 0:1]
        return torch.cat([z, -z], dim=1)


def _points(distances: list[float]) -> Tensor:
    return torch.tensor([[d, 0.3] for d in distances])


@pytest.mark.parametrize(("num", "batch_size"), [(37, 100), (250, 100), (1000, 64)])
def test_counts_are_binomial_per_example_and_batches_are_full(num, batch_size):
    distances = [0.5, -0.2, 0.0, 1.0, -0.7, 0.25, 0.1]
    model = Linear()
    smooth = Smooth(model, num_classes=2, sigma=SIGMA)
    counts = smooth.sample_counts_many(_points(distances), num, batch_size, torch.Generator().manual_seed(0))
    assert counts.shape == (len(distances), 2)
    assert counts.sum(1).tolist() == [num] * len(distances)
    for d, row in zip(distances, counts, strict=True):
        p = float(norm.cdf(d / SIGMA))
        sd = math.sqrt(num * p * (1 - p))
        assert abs(int(row[0]) - num * p) <= 4.5 * sd + 1  # 4.5 sd: false alarm < 1e-5 per row
    total = num * len(distances)
    assert model.calls[:-1] == [batch_size] * (len(model.calls) - 1)  # every batch but the last is full
    assert sum(model.calls) == total


def test_rows_of_one_batch_get_independent_noise():
    model = Linear()
    smooth = Smooth(model, num_classes=2, sigma=SIGMA)
    # 200 examples at distance 0, 5 draws each, batches of 1000 spanning all of them: p = 1/2 each.
    counts = smooth.sample_counts_many(_points([0.0] * 200), 5, 1000, torch.Generator().manual_seed(1))
    wins = counts[:, 0].double()
    assert abs(float(wins.mean()) - 2.5) < 4 * math.sqrt(1.25 / 200)
    assert abs(float(wins.var()) - 1.25) < 0.5  # shared noise would give variance 6.25 (all 0 or all 5)


def test_certify_dataset_gives_valid_radii_close_to_the_truth():
    distances = [0.6, -0.4, 0.9, 0.05, -1.2]
    x, y = _points(distances), torch.tensor([0, 1, 0, 0, 1])
    smooth = Smooth(Linear(), num_classes=2, sigma=SIGMA)
    result = certify_dataset(
        smooth, x, y, n0=100, n=20_000, alpha=0.001, batch_size=1000,
        generator=torch.Generator().manual_seed(2), quiet=True, chunk=2,
    )  # fmt: skip
    for d, label, radius in zip(distances, result.predictions.tolist(), result.radii.tolist(), strict=True):
        if abs(d) < 0.1:
            continue  # close to the boundary it may abstain
        assert label == (0 if d > 0 else 1)
        assert radius <= abs(d)  # the true radius of a linear classifier is its distance
        assert radius >= abs(d) - 0.1  # n = 20,000 pins p_A down
    assert result.seconds.shape == (5,)
    assert bool((result.seconds > 0).all())


def test_certify_many_checks_its_inputs():
    smooth = Smooth(Linear(), num_classes=2, sigma=SIGMA)
    with pytest.raises(ValueError, match="NaN"):
        smooth.sample_counts_many(torch.tensor([[float("nan"), 0.0]]), 10, 10)
    with pytest.raises(ValueError, match="non-empty floating-point batch"):
        smooth.sample_counts_many(torch.zeros(0, 2), 10, 10)
    with pytest.raises(ValueError, match="batch_size"):
        smooth.sample_counts_many(_points([0.1]), 10, 0)
    with pytest.raises(ValueError, match="chunk"):
        certify_dataset(smooth, _points([0.1]), torch.tensor([0]), chunk=0, quiet=True)
