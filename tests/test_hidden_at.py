"""HiddenAT: adversarial perturbations of a named layer's activations, checked against input attacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import fgsm, pgd
from advlearn.training import OBJECTIVES, Trainer, build_objective
from advlearn.training.hidden import HiddenAT, forward_with_perturbation, hidden_perturbation, resolve_layer


def _ball(norm: str = "linf", eps: float = 0.1) -> al.ThreatModel:
    """The ε-ball of ``norm`` with no box: what hidden-layer perturbations live in."""
    return al.ThreatModel(norm, eps, bounds=None)


def _identity_first(seed: int = 0) -> nn.Sequential:
    """An MLP whose first module is the identity, so that perturbing layer "0" perturbs the input."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Identity(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def _interior_batch(n: int = 10, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Inputs in [0.3, 0.7]: a ball of radius ≤ 0.3 in any norm stays inside the box [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (n,), generator=g)


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 5, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.3), ("l1", 0.3)])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_identity_layer_at_the_input_is_input_fgsm_training(norm: str, eps: float, alpha: float) -> None:
    """HiddenAT on an identity layer in front = α·CE(x) + (1−α)·CE(FGSM(x)), FGSM from advlearn.attacks.

    The batch sits in the interior of the box, so the box of the input attack never binds.
    """
    model = _identity_first()
    x, y = _interior_batch()
    x_adv = fgsm(model, x, y, al.ThreatModel(norm, eps=eps)).x_adv
    expected = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
    loss = HiddenAT(_ball(norm, eps), "0", eps=eps, alpha=alpha)(model, x, y)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    # written out for ℓ∞: x + ε·sign(∇ₓ CE)
    if norm == "linf":
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
        by_hand = F.cross_entropy(model(x + eps * grad.sign()), y)
        by_objective = HiddenAT(_ball("linf", eps), "0", eps=eps, alpha=0.0)(model, x, y)
        torch.testing.assert_close(by_objective, by_hand)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.2)])
def test_identity_layer_pgd_matches_input_pgd(norm: str, eps: float) -> None:
    """Several steps from 0 with the same step size give the iterate of input PGD without a random start."""
    model = _identity_first(seed=2)
    x, y = _interior_batch(seed=3)
    x_pgd = pgd(
        model, x, y, al.ThreatModel(norm, eps=eps), steps=5, step_size=eps / 2, random_start=False
    ).x_adv
    delta = hidden_perturbation(model, x, y, "0", _ball(norm, eps), steps=5, step_size=eps / 2)
    torch.testing.assert_close(x + delta, x_pgd, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize(("steps", "random_start"), [(1, False), (1, True), (7, True)])
def test_perturbation_respects_the_ball_and_the_activation_shape(
    norm: str, steps: int, random_start: bool
) -> None:
    """δ on a conv layer's (B, C, H, W) output: its shape, ‖δ‖_p ≤ ε per example, and it raises the loss."""
    torch.manual_seed(0)
    model, x, y = _CNN(), torch.rand(6, 1, 5, 5), torch.randint(0, 4, (6,))
    eps = 0.4
    delta = hidden_perturbation(
        model, x, y, "features.0", _ball(norm, eps), steps=steps, random_start=random_start,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert delta.shape == (6, 3, 5, 5)
    norms = al.ThreatModel(norm, eps).norm(delta)
    assert bool((norms <= eps * (1 + 1e-6)).all()), norms
    if not random_start:  # FGSM from 0 lands on the sphere (ℓ1: one coordinate of size ε)
        torch.testing.assert_close(norms, torch.full((6,), eps))
    clean = F.cross_entropy(model(x), y, reduction="sum")
    perturbed = F.cross_entropy(forward_with_perturbation(model, x, "features.0", delta), y, reduction="sum")
    assert float(perturbed.detach()) > float(clean.detach())


def test_unknown_layer_lists_the_valid_names() -> None:
    """A layer name the model lacks raises a ValueError naming it and every valid choice."""
    model = _CNN()
    x, y = torch.rand(2, 1, 5, 5), torch.tensor([0, 1])
    with pytest.raises(
        ValueError, match=r"layer='features\.9'.*'features', 'features\.0', 'features\.1', 'head'"
    ):
        HiddenAT(_ball(), "features.9", eps=0.1)(model, x, y)
    with pytest.raises(ValueError, match="layer must name a submodule"):
        HiddenAT(_ball(), "", eps=0.1)
    assert isinstance(resolve_layer(model, "features.1"), nn.ReLU)


class _Exploding(nn.Module):
    """Raises after its first layer ran, when armed."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 2)
        self.armed = False

    def forward(self, x: Tensor) -> Tensor:
        h = self.first(x)
        if self.armed:
            raise RuntimeError("boom")
        return self.second(h)


def test_hook_is_removed_even_when_the_forward_pass_raises() -> None:
    """No forward hook is left on the layer after a normal call, nor after an exception inside forward."""
    model, x, y = _Exploding(), torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    HiddenAT(_ball(), "first", eps=0.1)(model, x, y)
    assert len(model.first._forward_hooks) == 0
    model.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        HiddenAT(_ball(), "first", eps=0.1)(model, x, y)
    assert len(model.first._forward_hooks) == 0
    with pytest.raises(RuntimeError, match="boom"):
        forward_with_perturbation(model, x, "first", torch.zeros(4, 3))
    assert len(model.first._forward_hooks) == 0
    model.armed = False
    torch.testing.assert_close(model(x), forward_with_perturbation(model, x, "first", torch.zeros(4, 3)))


def test_layers_that_cannot_be_perturbed_are_refused() -> None:
    """A layer run twice per forward, or never, or with a non-tensor output: ValueErrors that say so."""
    shared = nn.Linear(3, 3)
    twice = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(3, 2))
    x, y = torch.rand(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="more than once"):
        HiddenAT(_ball(), "0", eps=0.1)(twice, x, y)

    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unused, self.used = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.used(x)

    with pytest.raises(ValueError, match="did not run"):
        HiddenAT(_ball(), "unused", eps=0.1)(Skips(), x, y)

    class Pair(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return x, x

    class UsesPair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair, self.head = Pair(), nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.pair(x)[0])

    with pytest.raises(ValueError, match="not a tensor"):
        HiddenAT(_ball(), "pair", eps=0.1)(UsesPair(), x, y)
    assert len(twice[0]._forward_hooks) == 0


def test_attack_leaves_parameter_grads_and_modes_alone() -> None:
    """Finding δ touches no parameter .grad and no module's mode; the objective's loss then backpropagates."""
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
    hidden_perturbation(model, x, y, "2", _ball("linf", 0.2), steps=3)
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())
    model.eval()
    with torch.no_grad():  # works under no_grad too (as an evaluation-time probe)
        delta = hidden_perturbation(model, x, y, "2", _ball("l2", 0.2))
    assert delta.shape == (8, 8)
    assert not any(m.training for m in model.modules())
    HiddenAT(_ball(), "2", eps=0.2)(model, x, y).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registered_buildable_and_trains() -> None:
    """'hidden_at' builds from a config (layer and eps as options) and runs under the Trainer."""
    assert OBJECTIVES["hidden_at"] is HiddenAT
    objective = build_objective("hidden_at", al.ThreatModel("linf", 0.3), layer="1", eps=0.5, steps=2)
    assert objective == HiddenAT(_ball("linf", 0.5), "1", eps=0.5, steps=2)
    torch.manual_seed(0)
    x, y = torch.rand(32, 4), torch.randint(0, 2, (32,))
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    history = Trainer(
        model, objective, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", quiet=True
    ).fit(loader, epochs=2)
    assert len(history.records) == 2
    assert len(model[1]._forward_hooks) == 0
    for bad, match in [
        ({"eps": -0.1}, "eps"),
        ({"eps": 0.1, "norm": "l3"}, "norm"),
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "alpha": 1.5}, "alpha"),
        ({"eps": 0.1, "step_size": -1.0}, "step_size"),
    ]:
        norm = bad.pop("norm", "linf")
        with pytest.raises(ValueError, match=match):
            HiddenAT(_ball(norm), "1", **bad)  # type: ignore[arg-type]
