"""VAT: the power iteration against known Hessians, the loss by hand, semi-supervised runs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlearn.threat import ThreatModel
from advlearn.training import OBJECTIVES, Trainer, build_objective
from advlearn.training.vat import VAT, kl_divergence, power_iteration, virtual_adversarial_perturbation


def _ball(eps: float, norm: str = "l2") -> ThreatModel:
    """VAT's ball: ``norm`` (ℓ2 in the paper), radius ``eps``, no box."""
    return ThreatModel(norm, eps, bounds=None)


def _spd(batch: int, dim: int, seed: int) -> Tensor:
    """Random symmetric positive semi-definite matrices ``(B, D, D)`` with a clear top eigenvalue."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, dim, dim, generator=g, dtype=torch.float64))
    eigenvalues = torch.linspace(0.1, 1.0, dim, dtype=torch.float64).repeat(batch, 1)
    eigenvalues[:, -1] = 2.0  # gap: top 2.0, next 1.0
    return q @ torch.diag_embed(eigenvalues) @ q.transpose(1, 2)


def _abs_cos(a: Tensor, b: Tensor) -> Tensor:
    """|cos(a_i, b_i)| per row, with 0 for a row where either vector is exactly zero.

    A zero row is a direction that was not found at all (in float32 a finite difference can round
    to nothing), so it agrees with no reference: 0, not the 0/0 = NaN that would make every
    comparison false and a test's outcome depend on the CPU's rounding.
    """
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, (a * b).sum(1).abs() / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)


def test_kl_divergence_matches_its_definition() -> None:
    """KL(p‖q) = Σ p (log p − log q), zero for equal logits, invariant to shifting either side's logits."""
    g = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    p, q = p_logits.softmax(1), q_logits.softmax(1)
    torch.testing.assert_close(kl_divergence(p_logits, q_logits), (p * (p.log() - q.log())).sum(1))
    torch.testing.assert_close(kl_divergence(p_logits, p_logits + 3.0), torch.zeros(5), atol=1e-6, rtol=0)
    assert bool((kl_divergence(p_logits, q_logits) > 0).all())


def test_power_iteration_finds_the_top_eigenvector_of_a_quadratic() -> None:
    """On D(r) = ½ rᵀHr (a different H per example) the iteration converges to H's top eigenvector."""
    h = _spd(batch=4, dim=6, seed=1)

    def quadratic(r: Tensor) -> Tensor:
        return 0.5 * torch.einsum("bi,bij,bj->b", r, h, r)

    top = torch.linalg.eigh(h).eigenvectors[:, :, -1]  # (B, D), eigenvalues ascending
    d0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    found = power_iteration(quadratic, d0, xi=1e-6, iterations=60)
    torch.testing.assert_close(_abs_cos(found, top), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(found.norm(dim=1), torch.ones(4, dtype=torch.float64))
    # a single iteration is exactly one power step, H d / ‖H d‖
    one = power_iteration(quadratic, d0, xi=1e-6, iterations=1)
    step = torch.einsum("bij,bj->bi", h, d0)
    torch.testing.assert_close(one, step / step.norm(dim=1, keepdim=True))
    # and 0 iterations returns the start, normalized
    torch.testing.assert_close(power_iteration(quadratic, d0, xi=1e-6, iterations=0), F.normalize(d0, dim=1))


def test_vat_direction_is_the_top_eigenvector_of_the_kl_hessian_of_a_linear_model() -> None:
    """logits = A x + c: KL(p(x) ‖ p(x + r)) ≈ ½ rᵀ Aᵀ(diag p − p pᵀ)A r; r_vadv follows its top eigenvector.

    And the divergence it reaches at radius ε is ½ ε² λ_max to second order.
    """
    g = torch.Generator().manual_seed(3)
    model = nn.Linear(7, 4).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 7, generator=g, dtype=torch.float64))
    x = torch.rand(5, 7, generator=g, dtype=torch.float64)
    p = model(x).softmax(1).detach()  # (B, C)
    a = model.weight.detach()
    fisher = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (B, C, C)
    hessian = a.T @ fisher @ a  # (B, D, D)
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
    eps = 1e-3
    r = virtual_adversarial_perturbation(
        model, x, _ball(eps), xi=1e-6, power_iterations=40, generator=torch.Generator().manual_seed(4)
    )
    assert float(_abs_cos(r, eigenvectors[:, :, -1]).min()) > 1 - 1e-9
    torch.testing.assert_close(r.norm(dim=1), torch.full((5,), eps, dtype=torch.float64))
    reached = kl_divergence(model(x), model(x + r)).detach()
    torch.testing.assert_close(reached, 0.5 * eps**2 * eigenvalues[:, -1], rtol=1e-2, atol=0)
    # it beats every other direction of the same length: the other eigenvectors give less
    for k in range(eigenvalues.shape[1] - 1):
        other = eps * eigenvectors[:, :, k]
        assert bool((kl_divergence(model(x), model(x + other)).detach() <= reached * (1 + 1e-6)).all())


def test_float32_default_xi_agrees_with_the_float64_direction_and_the_paper_xi_does_not() -> None:
    """Why xi defaults to 1e-3: in float32 with inputs in [0, 1], xi = 1e-6 is lost to rounding in x + ξd.

    The reference is the same single power step computed in float64 (where ξ = 1e-7 is resolved).
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    x, d = torch.rand(16, 64), torch.randn(16, 64)
    model64, x64 = copy.deepcopy(model).double(), x.double()
    clean64, clean32 = model64(x64).detach(), model(x).detach()
    reference = power_iteration(
        lambda r: kl_divergence(clean64, model64(x64 + r)), d.double(), xi=1e-7, iterations=1
    )

    assert bool((reference.norm(dim=1) > 0.99).all())  # the float64 reference resolves every row

    def cosine(xi: float) -> Tensor:
        found = power_iteration(lambda r: kl_divergence(clean32, model(x + r)), d, xi=xi, iterations=1)
        return _abs_cos(found.double(), reference)

    # At the default every row is found (a zero row would count as cosine 0 and fail this).
    assert float(cosine(VAT().xi).min()) > 0.999
    # At the paper's 1e-6, x + ξd rounds back to x on many coordinates: the direction is mostly
    # noise (mean cosine measured 0.2), and on some CPUs a row's gradient rounds to exactly zero,
    # which counts as no agreement (cosine 0) rather than NaN.
    assert float(cosine(1e-6).mean()) < 0.9


def test_vat_loss_is_ce_plus_alpha_times_lds_by_hand() -> None:
    """VAT(...)(model, x, y) = CE + α·mean KL(p(x) ‖ p(x + r_vadv)), r_vadv from the same random start."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    x, y = torch.rand(10, 6), torch.randint(0, 3, (10,))
    objective = VAT(eps=0.5, xi=1e-3, power_iterations=2, alpha=0.7)
    torch.manual_seed(6)
    loss = objective(model, x, y)
    torch.manual_seed(6)
    logits = model(x)
    r = virtual_adversarial_perturbation(model, x, _ball(0.5), xi=1e-3, power_iterations=2)
    expected = F.cross_entropy(logits, y) + 0.7 * kl_divergence(logits.detach(), model(x + r)).mean()
    torch.testing.assert_close(loss, expected)
    # gradients flow only through the perturbed prediction and the CE, never through p(x) or r
    loss.backward()
    assert all(param.grad is not None for param in model.parameters())


def test_perturbation_leaves_parameters_grad_and_mode_alone() -> None:
    """Computing r_vadv touches no parameter .grad, keeps every module's mode, and works under no_grad."""
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.0), nn.Linear(8, 3)).train()
    x = torch.rand(4, 6)
    with torch.no_grad():
        r = virtual_adversarial_perturbation(model, x, _ball(1.0), generator=torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(r.norm(dim=1), torch.ones(4))
    again = virtual_adversarial_perturbation(model, x, _ball(1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(r, again)  # deterministic given the generator


@pytest.mark.parametrize(("norm", "expected"), [("linf", 0.3), ("l1", 0.3), ("l2", 0.3)])
def test_other_norms_give_a_perturbation_of_radius_eps(norm: str, expected: float) -> None:
    """With norm="linf" or "l1" r is ε times the steepest ascent of that norm: ‖r‖_p = ε."""
    from advlearn import ThreatModel

    model = nn.Linear(5, 3)
    x = torch.rand(6, 5)
    r = virtual_adversarial_perturbation(model, x, _ball(0.3, norm))
    torch.testing.assert_close(ThreatModel(norm, 0.3).norm(r), torch.full((6,), expected))


@dataclass(frozen=True)
class RecordingVAT(VAT):
    """VAT that records each unlabeled batch it is handed (a class-level log: the dataclass is frozen)."""

    seen: ClassVar[list[Tensor]] = []

    def semi_supervised(self, model: nn.Module, x: Tensor, y: Tensor, unlabeled: Tensor) -> Tensor:
        RecordingVAT.seen.append(unlabeled.detach().clone())
        return super().semi_supervised(model, x, y, unlabeled)


def test_semi_supervised_run_reaches_the_unlabeled_batches() -> None:
    """Trainer.fit(..., unlabeled_loader=...) hands one unlabeled batch to every step, cycling the loader."""
    torch.manual_seed(0)
    x, y = torch.rand(24, 5), torch.randint(0, 2, (24,))
    unlabeled = torch.rand(20, 5)
    labeled_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    unlabeled_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(unlabeled), batch_size=10)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    RecordingVAT.seen.clear()
    trainer = Trainer(
        model, RecordingVAT(eps=0.5), torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", quiet=True
    )
    history = trainer.fit(labeled_loader, epochs=2, unlabeled_loader=unlabeled_loader)
    assert len(history.records) == 2
    assert len(RecordingVAT.seen) == 6  # 3 labeled batches per epoch, 2 epochs
    for step, batch in enumerate(RecordingVAT.seen):  # 2 unlabeled batches, cycled
        assert torch.equal(batch, unlabeled[10 * (step % 2) : 10 * (step % 2) + 10])


def test_unlabeled_batch_enters_the_loss() -> None:
    """The semi-supervised loss depends on the unlabeled inputs, through their smoothness term only."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.rand(6, 5), torch.randint(0, 3, (6,))
    objective = VAT(eps=1.0, alpha=1.0)
    u1, u2 = torch.rand(4, 5), 3.0 * torch.rand(4, 5)
    losses = []
    for u in (u1, u2):
        torch.manual_seed(2)
        losses.append(float(objective.semi_supervised(model, x, y, u).detach()))
    assert losses[0] != losses[1]
    # with alpha = 0 the unlabeled data has no say
    zero = VAT(eps=1.0, alpha=0.0)
    assert float(zero.semi_supervised(model, x, y, u1).detach()) == pytest.approx(
        float(F.cross_entropy(model(x), y).detach())
    )
    with pytest.raises(ValueError, match="unlabeled inputs have shape"):
        objective.semi_supervised(model, x, y, torch.rand(4, 7))


def test_registered_and_validated() -> None:
    """'vat' builds from a config without a threat model; bad options are ValueErrors naming them."""
    assert OBJECTIVES["vat"] is VAT
    assert build_objective("vat", eps=1.5) == VAT(eps=1.5)
    assert VAT.uses_unlabeled
    for bad, match in [
        ({"eps": -1.0}, "eps"),
        ({"xi": 0.0}, "xi"),
        ({"power_iterations": -1}, "power_iterations"),
        ({"alpha": -0.5}, "alpha"),
        ({"norm": "l3"}, "norm"),
    ]:
        with pytest.raises(ValueError, match=match):
            VAT(_ball(1.0, bad["norm"])) if "norm" in bad else VAT(**bad)  # type: ignore[arg-type]


def test_abs_cos_counts_a_vanished_direction_as_no_agreement() -> None:
    """The helper above: a zero row gives 0 (not NaN), so thresholds on it mean the same on any CPU."""
    a = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [-3.0, 0.0], [1.0, -1.0]])
    torch.testing.assert_close(_abs_cos(a, b), torch.tensor([0.0, 1.0, 0.0]))
