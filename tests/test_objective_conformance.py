"""Conformance of every registered training objective (parametrized over ``OBJECTIVES``).

What each objective promises, whatever its method: it builds by name and holds
hyper-parameters only (per-run state lives in the Trainer's ``RunState``); its loss
leaves the model's mode, parameters and parameter gradients alone until the outer
backward; ``train_step`` takes a finite step from any stale gradients; everything is
deterministic under a seed; a resumed run is exact; bad options are refused by name.
A new objective gets these tests for free.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.training import OBJECTIVES, Objective, RunState, Trainer, build_objective

NAMES = sorted(OBJECTIVES)
THREAT = al.ThreatModel("linf", 0.1)
# Small where an objective has them, so the suite stays fast.
FAST: dict[str, Any] = {"steps": 2, "replays": 2, "guard_steps": 2}
# Options without defaults, for the tiny network below (the Sequential's "2" is its hidden ReLU).
REQUIRED_OPTIONS: dict[str, dict[str, Any]] = {"hidden_at": {"layer": "2"}}


def _required(name: str) -> set[str]:
    fields = dataclasses.fields(OBJECTIVES[name])  # type: ignore[arg-type]
    missing = dataclasses.MISSING
    return {f.name for f in fields if f.init and f.default is missing and f.default_factory is missing}


def _options(name: str) -> dict[str, Any]:
    fields = OBJECTIVES.fields(name)
    options = {k: v for k, v in FAST.items() if k in fields}
    options.update(REQUIRED_OPTIONS.get(name, {}))
    if "eps" in _required(name):  # a radius of its own rather than a threat model
        options["eps"] = 0.1
    unknown = _required(name) - {"threat"} - set(options)
    assert not unknown, f"add options {sorted(unknown)} for {name!r} to REQUIRED_OPTIONS"
    return options


def _build(name: str, **overrides: Any) -> Objective:
    return build_objective(name, THREAT, **{**_options(name), **overrides})


def _net(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _batch(n: int = 8, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _weights(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _unlabeled(objective: Objective) -> Tensor | None:
    return (
        torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(2))
        if objective.uses_unlabeled
        else None
    )


def _steps(name: str, seed: int, steps: int = 2) -> tuple[list[float], list[Tensor], RunState]:
    """``steps`` train_steps of a fresh objective and network from ``seed``, sharing one run state."""
    torch.manual_seed(seed)
    objective, model, (x, y) = _build(name), _net(), _batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state: RunState = {}
    unlabeled = _unlabeled(objective)
    losses = [
        objective.train_step(model, x, y, optimizer, unlabeled=unlabeled, state=state) for _ in range(steps)
    ]
    return losses, _weights(model), state


# ----------------------------------------------------------------------------- building


@pytest.mark.parametrize("name", NAMES)
def test_builds_by_name_as_a_frozen_dataclass_of_hyper_parameters(name: str) -> None:
    objective = _build(name)
    assert type(objective) is OBJECTIVES[name]
    assert dataclasses.is_dataclass(objective)
    assert type(objective).__dataclass_params__.frozen  # type: ignore[attr-defined]
    hidden = [f.name for f in dataclasses.fields(objective) if not f.init]
    assert not hidden, f"{name} keeps fields the constructor does not set (state?): {hidden}"
    assert set(vars(objective)) == {f.name for f in dataclasses.fields(objective)}
    assert objective == _build(name)


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_option_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError, match="'bogus_option'"):
        _build(name, bogus_option=1)


def _bad_values() -> list[tuple[str, str]]:
    """(objective, option) for every numeric hyper-parameter (and ``step_size``): -1 is out of range."""
    cases = []
    for name in NAMES:
        for f in dataclasses.fields(OBJECTIVES[name]):  # type: ignore[arg-type]
            numeric = isinstance(f.default, (int, float)) and not isinstance(f.default, bool)
            if numeric or f.name == "step_size":
                cases.append((name, f.name))
    return cases


@pytest.mark.parametrize(("name", "option"), _bad_values())
def test_an_out_of_range_option_is_refused_by_name(name: str, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        _build(name, **{option: -1})


# ----------------------------------------------------------------------------- mode, parameters, gradients


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_the_loss_leaves_mode_parameters_and_gradients_to_the_outer_backward(
    name: str, training: bool
) -> None:
    """The inner maximization keeps ``model.training``, changes no parameter and accumulates no
    parameter ``.grad``: the only gradients are those of the outer backward, which reaches the weights."""
    objective, model, (x, y) = _build(name), _net(), _batch()
    model.train(training)
    before, x_before = _weights(model), x.clone()
    torch.manual_seed(0)
    unlabeled = _unlabeled(objective)
    loss = objective(model, x, y) if unlabeled is None else objective.semi_supervised(model, x, y, unlabeled)
    assert model.training is training
    assert all(p.grad is None for p in model.parameters()), "the inner attack touched a parameter's .grad"
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert torch.equal(x, x_before)
    assert x.grad is None
    assert loss.shape == ()
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_train_step_takes_a_finite_step_and_keeps_the_mode(name: str, training: bool) -> None:
    """train_step moves the weights, reports a finite loss and leaves ``model.training`` as it was."""
    objective, model, (x, y) = _build(name), _net(), _batch()
    model.train(training)
    before = _weights(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = objective.train_step(model, x, y, optimizer, unlabeled=_unlabeled(objective), state={})
    assert isinstance(loss, float)
    assert torch.isfinite(torch.tensor(loss))
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert model.training is training


@pytest.mark.parametrize("name", NAMES)
def test_train_step_starts_from_zero_gradients(name: str) -> None:
    """Stale parameter gradients left by the caller do not leak into the step."""
    results = []
    for stale in (False, True):
        objective, model, (x, y) = _build(name), _net(), _batch()
        if stale:
            for p in model.parameters():
                p.grad = torch.full_like(p, 1e3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(0)
        objective.train_step(model, x, y, optimizer, unlabeled=_unlabeled(objective), state={})
        results.append(_weights(model))
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


# ----------------------------------------------------------------------------- no state, determinism


@pytest.mark.parametrize("name", NAMES)
def test_the_objective_holds_no_state(name: str) -> None:
    """After training steps the objective equals a fresh one field for field; what carries over
    between batches is in the run state, tensors only (what the weights-only loader reads back)."""
    objective, model, (x, y) = _build(name), _net(), _batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state: RunState = {}
    for _ in range(2):
        objective.train_step(model, x, y, optimizer, unlabeled=_unlabeled(objective), state=state)
    fresh = _build(name)
    assert vars(objective).keys() == vars(fresh).keys()
    assert all(vars(objective)[k] == vars(fresh)[k] for k in vars(fresh))
    assert all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_seed(name: str) -> None:
    losses_a, weights_a, state_a = _steps(name, seed=7)
    losses_b, weights_b, state_b = _steps(name, seed=7)
    assert losses_a == losses_b
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.parametrize("name", NAMES)
def test_at_epoch_is_a_pure_function_of_its_arguments(name: str) -> None:
    objective = _build(name, **({"eps_warmup": 2} if "eps_warmup" in OBJECTIVES.fields(name) else {}))
    records: list[dict[str, float]] = [{"epoch": 1.0, "train_loss": 1.0}]
    for epoch in range(4):
        first, second = objective.at_epoch(epoch, 4, records), objective.at_epoch(epoch, 4, records)
        assert type(first) is type(objective)
        assert first == second
    assert objective == _build(name, **({"eps_warmup": 2} if "eps_warmup" in OBJECTIVES.fields(name) else {}))


@pytest.mark.parametrize("name", NAMES)
def test_end_epoch_reports_floats_and_keeps_the_mode(name: str) -> None:
    objective, model, (x, y) = _build(name), _net().eval(), _batch()
    metrics = objective.end_epoch(model, x, y, [])
    assert model.training is False
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in metrics.items())


@pytest.mark.parametrize("name", NAMES)
def test_semi_supervised_only_where_declared(name: str) -> None:
    objective, model, (x, y) = _build(name), _net(), _batch()
    if objective.uses_unlabeled:
        assert torch.isfinite(objective.semi_supervised(model, x, y, x))
    else:
        with pytest.raises(NotImplementedError):
            objective.semi_supervised(model, x, y, x)


# ----------------------------------------------------------------------------- resume


class _Interrupted(Exception):
    pass


class _DiesAt:
    """A loader that raises at batch ``at`` of the run, as a killed process stops."""

    def __init__(self, loader: torch.utils.data.DataLoader[Any], at: int | None) -> None:
        self.loader, self.at, self.served = loader, at, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        for batch in self.loader:
            if self.served == self.at:
                raise _Interrupted
            self.served += 1
            yield batch


def _fit(name: str, run_dir: Path, *, dies_at: int | None = None, resume: bool = False) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    data = torch.utils.data.TensorDataset(
        torch.rand(32, 1, 4, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    )
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    objective = _build(name)
    unlabeled = [torch.rand(8, 1, 4, 4, generator=g)] if objective.uses_unlabeled else None
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(model, objective, optimizer, run_dir=run_dir, quiet=True, device="cpu", seed=11)
    trainer.fit(_DiesAt(loader, dies_at), loader, epochs=3, unlabeled_loader=unlabeled, resume=resume)
    return model


@pytest.mark.parametrize("name", NAMES)
def test_an_interrupted_and_resumed_run_ends_with_the_weights_of_an_unbroken_one(
    name: str, tmp_path: Path
) -> None:
    unbroken = _fit(name, tmp_path / "unbroken")
    with pytest.raises(_Interrupted):
        _fit(name, tmp_path / "broken", dies_at=4 + 2)  # in the middle of epoch 2
    resumed = _fit(name, tmp_path / "broken", resume=True)
    for key, value in unbroken.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
