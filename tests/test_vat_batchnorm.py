"""VAT's power iteration and perturbed forwards leave BatchNorm's running statistics alone.

Miyato et al.'s code (vat_tf) runs every forward pass but the labeled clean one with
``update_batch_stats=False``: the perturbed inputs ``x + ξd`` and ``x + r_vadv`` and the unlabeled
batch normalize with their batch statistics but do not move the running averages.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from advlearn.training.vat import VAT, paper_ball, virtual_adversarial_perturbation


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()


def _stats(model: nn.Module) -> list[torch.Tensor]:
    bn = model[1]
    return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_power_iteration_leaves_running_stats_unchanged() -> None:
    model = _bn_net()
    x = torch.rand(16, 6)
    before = _stats(model)
    logits = model(x).detach()  # the clean forward: the one that may update the statistics
    after_clean = _stats(model)
    assert not _same(before, after_clean)  # the probe can fail: this model's statistics do move
    r = virtual_adversarial_perturbation(model, x, paper_ball(), power_iterations=3, logits=logits)
    assert _same(_stats(model), after_clean)
    assert model.training
    assert model[1].training
    assert torch.isfinite(r).all()
    assert float(r.norm(dim=1).min()) > 0
    # Without logits the clean forward inside is frozen too.
    virtual_adversarial_perturbation(model, x, paper_ball(), power_iterations=2)
    assert _same(_stats(model), after_clean)


def test_vat_loss_moves_the_statistics_exactly_as_one_clean_forward() -> None:
    model = _bn_net()
    reference = copy.deepcopy(model)
    x, y = torch.rand(16, 6), torch.randint(0, 3, (16,))
    VAT(eps=1.0, power_iterations=2)(model, x, y)
    reference(x)  # the labeled clean forward alone
    assert _same(_stats(model), _stats(reference))


def test_semi_supervised_moves_the_statistics_by_the_labeled_batch_only() -> None:
    model = _bn_net()
    reference = copy.deepcopy(model)
    x, y, unlabeled = torch.rand(16, 6), torch.randint(0, 3, (16,)), torch.rand(24, 6) + 1.0
    VAT(eps=1.0).semi_supervised(model, x, y, unlabeled)
    reference(x)
    assert _same(_stats(model), _stats(reference))
