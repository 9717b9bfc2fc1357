"""IBP and CROWN-IBP training (issue 17, part 1): the per-step ramp, the loss, the state, the init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advlearn as al
from advlearn.attacks import PGD
from advlearn.training import CROWNIBPTraining, IBPTraining, Trainer, build_objective, certified_loss
from advlearn.training.certified import ibp_init

THREAT = al.ThreatModel("linf", 0.3)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


def test_the_ramp_is_per_step_with_kappa_one_to_half_and_beta_one_to_zero():
    objective = IBPTraining(THREAT, kappa=0.5, warmup_steps=10, ramp_steps=40)
    eps = [float(objective.at_step(s).threat.eps) for s in (0, 9, 10, 30, 50, 1000)]
    assert eps == pytest.approx([0.0, 0.0, 0.0, 0.15, 0.3, 0.3])
    kappas = [objective.at_step(s).kappa for s in (0, 30, 50)]
    assert kappas == pytest.approx([1.0, 0.75, 0.5])
    crown = CROWNIBPTraining(THREAT, warmup_steps=0, ramp_steps=10)
    assert [crown.at_step(s).beta for s in (0, 5, 10, 99)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert crown.at_epoch(0, 3) is crown  # a per-step schedule does not move per epoch
    with pytest.raises(ValueError, match="either in epochs"):
        IBPTraining(THREAT, ramp_epochs=2, ramp_steps=10)
    with pytest.raises(ValueError, match="beta_start"):
        CROWNIBPTraining(THREAT, beta_start=2.0)
    assert isinstance(build_objective("crown_ibp", THREAT, ramp_steps=5), CROWNIBPTraining)
    above = IBPTraining(THREAT, train_eps=0.4, ramp_steps=10)  # train above the test eps (Gowal et al.)
    assert [float(above.at_step(s).threat.eps) for s in (5, 10)] == pytest.approx([0.2, 0.4])
    assert float(above.target.eps) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="train_eps"):
        IBPTraining(THREAT, train_eps=-0.1)


def test_train_step_advances_the_counter_in_run_state_and_uses_that_steps_eps():
    objective = IBPTraining(THREAT, warmup_steps=1, ramp_steps=2)
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay, the loss is comparable
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 3, (6,))
    state: dict[str, torch.Tensor] = {}
    losses = [objective.train_step(model, x, y, optimizer, state=state) for _ in range(4)]
    assert int(state[IBPTraining.STEP_KEY]) == 4
    for step, loss in enumerate(losses):
        expected = objective.at_step(step)(model, x, y)
        assert loss == pytest.approx(float(expected.detach()), rel=1e-5)
    nominal = float(F.cross_entropy(model(x), y).detach())
    assert losses[0] == pytest.approx(nominal, rel=1e-5)  # warm-up: nominal
    assert losses[3] > losses[0]  # the verified term at full eps


def test_the_trainer_carries_the_step_counter_across_epochs_and_resume(tmp_path):
    x, y = torch.rand(24, 1, 8, 8), torch.randint(0, 3, (24,))
    loader = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    objective = CROWNIBPTraining(THREAT, warmup_steps=2, ramp_steps=4)
    model = _net()
    trainer = Trainer(
        model, objective, torch.optim.Adam(model.parameters(), 1e-3), run_dir=tmp_path, quiet=True
    )
    trainer.fit(loader, epochs=1)
    assert int(trainer.run_state[IBPTraining.STEP_KEY]) == 3
    model2 = _net()
    resumed = Trainer(
        model2, objective, torch.optim.Adam(model2.parameters(), 1e-3), run_dir=tmp_path, quiet=True
    )
    resumed.fit(loader, epochs=2, resume=True)
    assert int(resumed.run_state[IBPTraining.STEP_KEY]) == 6


def test_the_verified_loss_bounds_the_loss_of_every_point_and_crown_ibp_tightens_it():
    model = _net()
    torch.manual_seed(1)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    threat = al.ThreatModel("linf", 0.05)
    ibp = certified_loss(model, x, y, threat, kappa=0.0, beta=0.0)
    crown = certified_loss(model, x, y, threat, kappa=0.0, beta=1.0)
    assert float(crown.detach()) <= float(ibp.detach()) + 1e-6
    x_adv = PGD(threat, steps=20)(model, x, y)
    worst_seen = F.cross_entropy(model(x_adv), y).detach()
    assert float(worst_seen) <= float(crown.detach()) + 1e-6
    half = certified_loss(model, x, y, threat, kappa=0.5, beta=0.0).detach()
    nominal = F.cross_entropy(model(x), y).detach()
    assert float(half) == pytest.approx(0.5 * float(nominal) + 0.5 * float(ibp.detach()), rel=1e-5)
    crown.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_training_models_without_batchnorm_pass_and_batchnorm_in_training_mode_is_refused():
    model = al.models.build_model("ibp_cnn", in_shape=(1, 28, 28), num_classes=10).train()
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    assert torch.isfinite(CROWNIBPTraining(THREAT, beta_end=1.0)(model, x, y))
    with_bn = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)
    ).train()
    with pytest.raises(ValueError, match="batch statistics"):
        IBPTraining(THREAT)(with_bn, x, y)


def test_ibp_init_keeps_the_bound_width_from_exploding_with_depth():
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(6):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    deep = nn.Sequential(*layers, nn.Linear(256, 10))
    x = torch.rand(16, 1, 16, 16)
    threat = al.ThreatModel("linf", 0.01)

    def width(net: nn.Module) -> float:
        with torch.no_grad():
            lower, upper = al.certify.ibp_bounds(net, x, threat)
        return float((upper - lower).mean())

    default = width(deep)
    ibp_init(deep, torch.Generator().manual_seed(0))
    assert all(float(m.bias.detach().abs().max()) == 0 for m in deep if isinstance(m, nn.Linear))
    std = float(deep[1].weight.detach().std())
    assert std == pytest.approx(math.sqrt(2 * math.pi) / 256, rel=0.02)
    assert width(deep) < default


def test_the_main_job_flag_adds_an_ibp_model_and_is_off_by_default():
    from advlearn.config import dumps, parse_config, parse_toml
    from advlearn.experiments.main_job import default_config

    assert [t.label for t in default_config().train] == ["standard", "pgd-at"]
    for quick in (False, True):
        cfg = default_config(quick=quick, certified=True)
        assert [t.label for t in cfg.train] == ["standard", "pgd-at", "ibp"]
        ibp = cfg.train[2]
        objective = build_objective(ibp.objective.name, cfg.threat, **ibp.objective.options)
        assert isinstance(objective, IBPTraining)
        assert float(objective.target.eps) == pytest.approx(0.4)  # trained above the test eps 0.3
        assert parse_config(parse_toml(dumps(cfg))) == cfg  # the config round-trips through TOML
