"""TRADES, MART and AWP attack in eval mode and update BatchNorm only in the outer loss (issue 17, part 0).

Before the fix TRADES and MART updated BatchNorm 13 and 12 times per step (every PGD iterate);
the reference repositories call ``model.eval()`` for the attack and ``model.train()`` for the loss.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.training import AWP, MART, PGDAT, TRADES, Trainer
from advlearn.training.modes import eval_mode, frozen_batchnorm_stats

THREAT = al.ThreatModel("linf", 0.1)
STEPS = 5


class ModeRecorder(nn.Module):
    """Records the mode of every forward pass (True = train)."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return x


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        ModeRecorder(), nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3)
    )


def _step(objective: al.training.Objective, model: nn.Sequential) -> None:
    torch.manual_seed(1)
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    objective.train_step(model, x, y, optimizer)


@pytest.mark.parametrize(
    ("objective", "outer"),
    [
        (TRADES(THREAT, steps=STEPS), 2),
        (MART(THREAT, steps=STEPS), 2),
        (AWP(THREAT, steps=STEPS), 1),
        (AWP(THREAT, steps=STEPS, inner="trades"), 2),
    ],
    ids=["trades", "mart", "awp-pgd_at", "awp-trades"],
)
def test_batchnorm_is_updated_once_per_outer_forward(objective, outer):
    model = _net().train()
    bn = model[3]
    _step(objective, model)
    assert int(bn.num_batches_tracked) == outer
    recorder = model[0]
    train_passes = sum(recorder.modes)
    # AWP's weight step is one more train-mode pass (its statistics restored), the reference's proxy.
    proxy = outer if isinstance(objective, AWP) else 0
    assert train_passes == outer + proxy
    assert recorder.modes[-outer:] == [True] * outer  # the outer loss in train mode, last
    attack_passes = [m for m in recorder.modes if not m]
    assert len(attack_passes) >= STEPS  # every PGD iterate in eval mode
    assert model.training
    assert all(m.training for m in model.modules())


def test_pgd_at_attacks_in_the_mode_the_trainer_set_as_madry_and_rice_do():
    model = _net().train()
    _step(PGDAT(THREAT, steps=STEPS), model)
    # every PGD iterate runs in train mode (batch statistics), as Madry's and Rice's code do ...
    assert model[0].modes == [True] * (STEPS + 1)
    # ... but an attack leaves the running statistics as it found them (issue 15, item 16), so
    # only the outer forward updates them
    assert int(model[3].num_batches_tracked) == 1


def test_an_eval_mode_model_stays_in_eval_mode_and_mixed_modes_are_restored():
    model = _net().eval()
    _step(TRADES(THREAT, steps=2), model)
    assert not any(m.training for m in model.modules())
    assert int(model[3].num_batches_tracked) == 0
    model.train()
    model[3].eval()  # a frozen BatchNorm inside a training model keeps its own mode
    _step(MART(THREAT, steps=2), model)
    assert model.training
    assert not model[3].training


def test_awp_warmup_skips_the_weight_step_and_the_objective_ramps_in():
    objective = AWP(THREAT, steps=2, awp_warmup=2)
    assert objective.at_epoch(0, 4).gamma == 0.0
    assert objective.at_epoch(1, 4).gamma == 0.0
    assert objective.at_epoch(2, 4).gamma == objective.gamma
    with pytest.raises(ValueError, match="awp_warmup"):
        AWP(THREAT, awp_warmup=-1)
    # in warm-up an AWP step is exactly PGD-AT's step (compared without BatchNorm, where the
    # attack's mode does not matter: PGD-AT attacks in train mode, AWP in eval mode)
    torch.manual_seed(0)
    plain_a = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    plain_b = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    plain_b.load_state_dict(plain_a.state_dict())
    _step(objective.at_epoch(0, 4), plain_a)
    _step(PGDAT(THREAT, steps=2), plain_b)
    for p, q in zip(plain_a.parameters(), plain_b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_trainer_fit_with_trades_counts_outer_updates_only():
    model = _net()
    x, y = torch.rand(16, 1, 4, 4), torch.randint(0, 3, (16,))
    loader = [(x[:8], y[:8]), (x[8:], y[8:])]
    trainer = Trainer(
        model, TRADES(THREAT, steps=STEPS), torch.optim.SGD(model.parameters(), lr=0.05), quiet=True
    )
    trainer.fit(loader, epochs=1)
    assert int(model[3].num_batches_tracked) == 2 * len(loader)


def test_the_mode_helpers_restore_on_error():
    model = _net().train()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError
    assert all(m.training for m in model.modules())
    before = model[3].running_mean.clone()

    def fails() -> None:
        with frozen_batchnorm_stats(model):
            model(torch.rand(8, 1, 4, 4))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fails()
    assert torch.equal(model[3].running_mean, before)
    assert int(model[3].num_batches_tracked) == 0
