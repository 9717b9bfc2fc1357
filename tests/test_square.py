"""Square attack: no gradients, the p schedule, the query budget, the shape of its perturbations."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import Square, build_attack, pgd, square, square_fraction, uniform_noise
from conftest import Trained


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        raise RuntimeError("this model cannot be differentiated")


class Undifferentiable(nn.Module):
    """A model whose backward raises; it also counts its forward passes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.model(_NoBackward.apply(x))


class CNN(nn.Module):
    """A fixed random convolutional classifier on (B, 3, 12, 12) images, to exercise channels."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 5))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def test_schedule_of_the_paper() -> None:
    """p halves after iteration 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000 (rescaled)."""
    at_10k = [square_fraction(0.8, i, 10_000) for i in (0, 10, 11, 50, 51, 200, 201, 8000, 8001, 9999)]
    assert at_10k == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 2**8, 0.8 / 2**9, 0.8 / 2**9]
    # 1,000 queries: the same fractions at a tenth of the iterations.
    assert [square_fraction(0.5, i, 1000) for i in (1, 2, 6, 21, 999)] == [
        0.5,
        0.25,
        0.125,
        0.0625,
        0.5 / 2**9,
    ]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_needs_no_gradient(trained: Trained, norm: str) -> None:
    """A model whose backward raises works, and every query is a counted forward pass."""
    model = Undifferentiable(trained.model)
    threat = al.ThreatModel(norm, 0.15 if norm == "linf" else 0.3)
    with pytest.raises(RuntimeError, match="differentiated"):
        pgd(model, trained.x, trained.y, threat, steps=1)
    model.calls = 0
    result = square(model, trained.x, trained.y, threat, queries=100, generator=seeded(0))
    assert result.num_grads == 0
    assert model.calls <= 100
    assert result.num_forwards <= 100 * len(trained.y)
    assert threat.contains(result.x_adv, trained.x).all()
    assert result.success.any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_beats_random_noise(trained: Trained, norm: str) -> None:
    """With 300 queries Square fools far more examples than uniform noise in the same ball."""
    x, y = trained.x, trained.y
    threat = al.ThreatModel(norm, 0.15 if norm == "linf" else 0.3)
    fooled = square(trained.model, x, y, threat, queries=300, generator=seeded(0)).success.sum()
    noise = uniform_noise(trained.model, x, y, threat, generator=seeded(0)).success.sum()
    assert fooled >= noise + len(y) // 4


def test_linf_matches_pgd(trained: Trained) -> None:
    """In ℓ∞, where the worst case sits on a vertex, 300 queries fool about as many examples as PGD-20."""
    x, y = trained.x, trained.y
    threat = al.ThreatModel("linf", 0.15)
    fooled = square(trained.model, x, y, threat, queries=300, generator=seeded(0)).success.sum()
    reference = pgd(trained.model, x, y, threat, steps=20, generator=seeded(0)).success.sum()
    assert fooled >= reference - len(y) // 16


def test_stops_each_example_at_success() -> None:
    """Examples fooled by the initial point cost one query; the budget caps the rest."""
    model = CNN().eval()
    g = seeded(3)
    x = torch.rand(10, 3, 12, 12, generator=g)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:4] = (pred[:4] + 1) % 5  # wrong labels: any point already "fools" the model
    threat = al.ThreatModel("linf", 1e-4)  # too small to fool the other six
    result = square(model, x, y, threat, queries=40, generator=seeded(0))
    assert result.success[:4].all()
    assert not result.success[4:].any()
    assert result.num_forwards == 4 + 6 * 40


def test_linf_perturbation_sits_on_the_vertices() -> None:
    """Away from the box faces every coordinate of the ℓ∞ perturbation is ±ε (stripes, then squares)."""
    model = CNN().eval()
    x = 0.2 + 0.6 * torch.rand(6, 3, 12, 12, generator=seeded(1))
    y = torch.randint(0, 5, (6,), generator=seeded(2))
    threat = al.ThreatModel("linf", 0.05)
    result = square(model, x, y, threat, queries=60, generator=seeded(0))
    torch.testing.assert_close((result.x_adv - x).abs(), torch.full_like(x, 0.05))


def test_l2_perturbation_spends_the_whole_radius() -> None:
    """Away from the box faces the ℓ2 perturbation has norm ε (mass moves between windows, none is lost)."""
    model = CNN().eval()
    x = 0.3 + 0.4 * torch.rand(6, 3, 12, 12, generator=seeded(1))
    y = torch.randint(0, 5, (6,), generator=seeded(2))
    eps = torch.linspace(0.1, 0.5, 6)
    threat = al.ThreatModel("l2", eps)
    result = square(model, x, y, threat, queries=60, generator=seeded(0))
    torch.testing.assert_close(threat.norm(result.x_adv - x), eps)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_vectors_and_sequences(mlp: nn.Module, vectors: tuple[Tensor, Tensor], norm: str) -> None:
    """(B, D) inputs are attacked as one-row images; the result keeps the input's shape and the threat set."""
    x, y = vectors
    threat = al.ThreatModel(norm, 0.2)
    result = square(mlp, x, y, threat, queries=50, generator=seeded(0))
    assert result.x_adv.shape == x.shape
    assert threat.contains(result.x_adv, x).all()


def test_refuses_5d_inputs(trained: Trained) -> None:
    # ℓ1 is supported since session 3 (tests/test_square_l1.py); 5-d inputs are still refused.
    with pytest.raises(ValueError, match="shape"):
        square(
            nn.Flatten(),
            torch.rand(2, 1, 2, 2, 2),
            torch.zeros(2, dtype=torch.long),
            al.ThreatModel("linf", 0.1),
        )


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"queries": 0}, "queries"),
        ({"p_init": 0.0}, "p_init"),
        ({"p_init": 1.5}, "p_init"),
        ({"loss": "x"}, "loss"),
    ],
)
def test_rejects_bad_options(options: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        Square(al.ThreatModel("linf", 0.1), **options)


def test_registered_with_queries_option() -> None:
    """H2's gradient-masking diagnostics build it by name with a query budget."""
    attack = build_attack("square", al.ThreatModel("l2", 0.5), queries=300)
    assert attack == Square(al.ThreatModel("l2", 0.5), queries=300)


@pytest.mark.parametrize("sides", [(3, 3), (5, 7), (1, 4)])
def test_placed_puts_each_pattern_at_its_window(sides: tuple[int, int]) -> None:
    # the one-hot matrix products must give exactly the pattern inside the window and 0 outside
    from advlearn.attacks.square import _axes, _placed, _window_mask

    h, w, b = 9, 11, 6
    u = torch.rand(b, 2, generator=seeded(1))
    patterns = torch.randn(b, *sides, generator=seeded(2))
    rows, cols = _axes(sides, h, w, u)
    placed, mask = _placed(sides, rows, cols, patterns), _window_mask(sides, rows, cols)
    assert placed.shape == mask.shape == (b, 1, h, w)
    for e in range(b):
        top, left = int((rows[e] == 0).nonzero()), int((cols[e] == 0).nonzero())
        expected = torch.zeros(h, w)
        expected[top : top + sides[0], left : left + sides[1]] = patterns[e]
        assert torch.equal(placed[e, 0], expected)
        assert torch.equal(mask[e, 0], expected != 0)
