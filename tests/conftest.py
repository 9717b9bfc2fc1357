"""Shared fixtures: tiny seeded models and batches on which every attack runs in milliseconds."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import settings
from torch import Tensor, nn

# The default run draws the same hypothesis cases every time (seeded by each test's name), so a CI
# verdict does not depend on the luck of the draw and a failure seen once is seen again.
# `HYPOTHESIS_PROFILE=explore pytest` draws fresh cases on every run, to search wider.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Under pytest-xdist (`pytest -n 2`) each worker is one process on one core: torch's default of one
# thread per core would run 2 × 2 threads on 2 cores and slow every worker down.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

NUM_CLASSES = 3


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[nn.Module, Tensor, Tensor]:
    """A two-layer MLP on sklearn's 8×8 digits (1,500 to train, the 297 others held out), undefended,
    frozen in eval mode; trained once per session for the tests that attack a real model."""
    from sklearn.datasets import load_digits  # here: sklearn costs a second to import

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(200):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[:1500]), y[:1500]).backward()
            optimizer.step()
    return model.eval().requires_grad_(False), x[1500:], y[1500:]


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global RNG state."""
    torch.manual_seed(0)


@dataclass(frozen=True)
class LinearProblem:
    """A 2-class linear model ``z = W x + b`` and a batch in the interior of ``[0, 1]^D``.

    ``w_eff[i] = W[1 - y_i] − W[y_i]`` is the gradient of the logit margin
    ``z_{1−y} − z_y`` w.r.t. ``x``, hence the direction of the CE and CW gradients.
    """

    model: nn.Module
    x: Tensor  # (B, D)
    y: Tensor  # (B,)
    w_eff: Tensor  # (B, D)

    def margin(self, x: Tensor) -> Tensor:
        """``z_{1−y} − z_y`` per example."""
        with torch.no_grad():
            logits = self.model(x)
        return logits.gather(1, (1 - self.y)[:, None]).squeeze(1) - logits.gather(1, self.y[:, None]).squeeze(
            1
        )


@pytest.fixture
def linear2() -> LinearProblem:
    g = torch.Generator().manual_seed(1)
    dim = 5
    model = nn.Linear(dim, 2).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, dim, generator=g, dtype=torch.float64))
        model.bias.copy_(0.1 * torch.randn(2, generator=g, dtype=torch.float64))
    x = 0.3 + 0.4 * torch.rand(6, dim, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    w_eff = (model.weight[1 - y] - model.weight[y]).detach()
    return LinearProblem(model=model, x=x, y=y, w_eff=w_eff)


def make_mlp(
    in_features: int = 8, hidden: int = 16, num_classes: int = NUM_CLASSES, seed: int = 0
) -> nn.Module:
    """A seeded two-layer ReLU network in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    return model.eval()


class SmallCNN(nn.Module):
    """Conv, BatchNorm, ReLU, Dropout, Linear on ``(B, 1, 6, 6)`` inputs: every layer whose mode matters."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.25), nn.Flatten()
        )
        self.head = nn.Linear(4 * 6 * 6, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, C)


@pytest.fixture
def mlp() -> nn.Module:
    return make_mlp()


@pytest.fixture
def vectors() -> tuple[Tensor, Tensor]:
    """``(x, y)``: 12 inputs of 8 features in [0, 1], some on the box faces, with labels in [0, 3)."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(12, 8, generator=g)
    x[0, :3], x[1, :3] = 0.0, 1.0
    return x, torch.randint(0, NUM_CLASSES, (12,), generator=g)


@pytest.fixture
def cnn() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = SmallCNN()
    return model.eval()


@pytest.fixture
def images() -> tuple[Tensor, Tensor]:
    """``(x, y)``: 6 one-channel 6×6 images in [0, 1], some pixels on the box faces, labels in [0, 3)."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 1, 6, 6, generator=g)
    x[0, 0, 0, :3], x[1, 0, 0, :3] = 0.0, 1.0
    return x, torch.randint(0, NUM_CLASSES, (6,), generator=g)


@dataclass(frozen=True)
class Trained:
    """A small MLP trained to ~100% accuracy on separable blobs, and held-out points of those blobs."""

    model: nn.Module
    x: Tensor  # (B, D)
    y: Tensor  # (B,)


def _blobs(n: int, centers: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = torch.randint(0, centers.shape[0], (n,), generator=g)
    x = centers[y] + 0.1 * (2 * torch.rand(n, centers.shape[1], generator=g) - 1)
    return x.clamp(0.0, 1.0), y


@pytest.fixture(scope="session")
def trained() -> Trained:
    g = torch.Generator().manual_seed(5)
    centers = 0.25 + 0.5 * torch.rand(NUM_CLASSES, 8, generator=g)  # (C, D) inside [0.25, 0.75]
    x_train, y_train = _blobs(300, centers, g)
    x_test, y_test = _blobs(64, centers, g)
    model = make_mlp(seed=6).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy == 1.0, f"the fixture model should separate the blobs, got accuracy {accuracy}"
    return Trained(model=model, x=x_test, y=y_test)
