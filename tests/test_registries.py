"""Conformance over every registry: one ``Registry`` type, one contract, for everything a config names.

Each registry (attacks, objectives, models, datasets, losses, schedules, optimizers) is tested
for the shared mechanism: its options are the entry's keyword parameters (a dataclass's init
fields), unknown names and options are refused by name with the known ones listed, missing
required options are named, and duplicates are refused. Each entry then does its basic job
through the public helper: losses, schedules and optimizers here; models in ``test_models.py``,
datasets in ``test_data.py``, attacks in ``test_conformance.py`` and objectives in
``test_defenses.py`` (all parametrized over the same registries).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import advlearn as al
from advlearn._registry import Registry, Wording
from advlearn.attacks import ATTACKS, build_attack
from advlearn.data import DATASETS, load_dataset
from advlearn.losses import LOSSES, get_loss
from advlearn.models import MODELS, build_model
from advlearn.training import OBJECTIVES, build_objective
from advlearn.training.optim import OPTIMIZERS, SCHEDULES, build_optimizer, lr_schedule

THREAT = al.ThreatModel("linf", 0.1)


def _linear_params() -> Any:
    return nn.Linear(2, 1).parameters()


# registry, what the library supplies, and the public helper that builds from (name, options)
REGISTRIES: dict[str, tuple[Registry[Any], dict[str, Any], Callable[[str, dict[str, Any]], Any]]] = {
    "attack": (ATTACKS, {"threat": THREAT}, lambda n, o: build_attack(n, THREAT, **o)),
    "objective": (OBJECTIVES, {"threat": THREAT}, lambda n, o: build_objective(n, THREAT, **o)),
    "model": (MODELS, {}, lambda n, o: build_model(n, **o)),
    "dataset": (DATASETS, {}, lambda n, o: load_dataset(n, **o)),
    "schedule": (SCHEDULES, {}, lambda n, o: lr_schedule(n, **o)),
    "optimizer": (OPTIMIZERS, {"params": None}, lambda n, o: build_optimizer(n, _linear_params(), **o)),
}
ALL = {**REGISTRIES, "loss": (LOSSES, {}, lambda n, o: get_loss(n))}
ENTRIES = [(kind, name) for kind, (registry, _, _) in REGISTRIES.items() for name in sorted(registry)]


def _supplied(kind: str, name: str) -> dict[str, Any]:
    registry, supplied, _ = REGISTRIES[kind]
    return {k: v for k, v in supplied.items() if k in registry.options(name)}


@pytest.mark.parametrize("kind", sorted(ALL))
def test_every_registry_is_a_registry_with_entries(kind: str) -> None:
    registry = ALL[kind][0]
    assert isinstance(registry, Registry)
    assert registry.kind == kind
    assert len(registry) >= 2


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_options_are_the_entrys_keyword_parameters(kind: str, name: str) -> None:
    """options() lists the keyword parameters in order (a dataclass's init fields).

    required() lists those without defaults.
    """
    registry = REGISTRIES[kind][0]
    entry = registry[name]
    parameters = inspect.signature(entry).parameters
    keyword = [p for p, s in parameters.items() if s.kind in (s.POSITIONAL_OR_KEYWORD, s.KEYWORD_ONLY)]
    assert registry.options(name) == tuple(keyword)
    assert registry.fields(name) == set(keyword)
    if dataclasses.is_dataclass(entry):
        assert registry.fields(name) == {f.name for f in dataclasses.fields(entry) if f.init}
        missing = dataclasses.MISSING
        no_default = {
            f.name
            for f in dataclasses.fields(entry)
            if f.init and f.default is missing and f.default_factory is missing
        }
        assert set(registry.required(name)) == no_default
    assert set(registry.required(name)) <= set(registry.options(name))


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_unknown_option_is_refused_by_name(kind: str, name: str) -> None:
    """Every entry, through its public helper, names an unknown option (before building anything)."""
    registry, _, helper = REGISTRIES[kind]
    with pytest.raises(ValueError, match="'bogus_option'"):
        helper(name, {"bogus_option": 1})
    with pytest.raises(ValueError, match="'bogus_option'"):
        registry.check(name, {"bogus_option": 1}, **_supplied(kind, name))


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_missing_required_option_is_named(kind: str, name: str) -> None:
    registry = REGISTRIES[kind][0]
    supplied = _supplied(kind, name)
    required = [p for p in registry.required(name) if p not in supplied]
    if not required:
        assert registry.check(name, {}, **supplied) is registry[name]
        return
    with pytest.raises(ValueError, match=required[0]):
        registry.check(name, {}, **supplied)


@pytest.mark.parametrize("kind", sorted(ALL))
def test_unknown_name_is_refused_and_the_known_ones_listed(kind: str) -> None:
    registry, _, helper = ALL[kind]
    known = sorted(registry)[0]
    for call in (lambda: registry.lookup("no_such_entry"), lambda: helper("no_such_entry", {})):
        with pytest.raises(ValueError, match="'no_such_entry'") as info:
            call()
        assert known in str(info.value)


@pytest.mark.parametrize("kind", sorted(ALL))
def test_duplicate_names_are_refused(kind: str) -> None:
    registry = ALL[kind][0]
    name = sorted(registry)[0]
    with pytest.raises(ValueError, match=f"{name!r} is already registered"):
        registry.register(name)(lambda: None)


# ----------------------------------------------------------------------------- the mechanism itself


def test_class_and_function_entries_build_the_same_way() -> None:
    """A dataclass and a function register, check and build alike; classes get ``.name``."""
    things: Registry[Any] = Registry("thing")

    @things.register("box")
    @dataclasses.dataclass(frozen=True)
    class Box:
        side: int
        colour: str = "red"

    @things.register("pair")
    def pair(first: int, second: int = 2) -> tuple[int, int]:
        return (first, second)

    assert Box.name == "box"  # type: ignore[attr-defined]
    assert things.build("box", {"side": 3}) == Box(3)
    assert things.build("pair", {"second": 5}, first=1) == (1, 5)
    assert things.options("box") == ("side", "colour")
    assert things.required("pair") == ("first",)
    with pytest.raises(
        ValueError, match=r"unknown option 'size' for thing 'box'; known options: side, colour"
    ):
        things.build("box", {"size": 3})
    with pytest.raises(ValueError, match=r"unknown option 'first' for thing 'pair'; known options: second"):
        things.build("pair", {"first": 3}, first=1)  # a supplied option is not the user's to set
    with pytest.raises(ValueError, match=r"thing 'pair' needs option 'first' \(no default\)"):
        things.build("pair", {})
    with pytest.raises(ValueError, match=r"thing 'cube' is not registered; known: box, pair"):
        things.build("cube", {})


def test_wording_keeps_each_registrys_messages() -> None:
    """A registry's Wording changes how errors read, not what they say."""
    things: Registry[Any] = Registry(
        "thing",
        wording=Wording(
            unknown_name="no {kind} called {name!r}; try {choices}",
            unknown_option="{kind} {name!r} takes {accepted}, not {options}",
            missing_option="{kind} {name!r} wants {missing}",
            no_options="nothing",
        ),
    )
    things.register("one")(lambda: 1)
    things.register("two")(lambda a, b: a + b)
    with pytest.raises(ValueError, match=r"no thing called 'three'; try 'one', 'two'"):
        things.lookup("three")
    with pytest.raises(ValueError, match=r"thing 'one' takes nothing, not 'x', 'y'"):
        things.check("one", {"x": 1, "y": 2})
    with pytest.raises(ValueError, match=r"thing 'two' wants a, b"):
        things.check("two", {})


# ----------------------------------------------------------------------------- basic jobs


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_per_example_and_finite(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    out = get_loss(name)(logits, y)
    assert out.shape == (6,)
    assert torch.isfinite(out).all()
    assert get_loss(name) is LOSSES[name]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_with_its_defaults_is_a_multiplier_in_0_1(name: str) -> None:
    schedule = lr_schedule(name)
    values = [schedule(k / 20) for k in range(20)]
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values)
    assert max(values) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_descends_a_quadratic(name: str) -> None:
    """Built by name with its one required option (lr), each optimizer lowers ‖w − 1‖²."""
    assert OPTIMIZERS.required(name) == ("params", "lr")
    w = nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer(name, [w], lr=0.1)
    assert isinstance(optimizer, torch.optim.Optimizer)
    start = float(((w.detach() - 1) ** 2).sum())
    for _ in range(5):
        optimizer.zero_grad()
        ((w - 1) ** 2).sum().backward()
        optimizer.step()
    assert float(((w.detach() - 1) ** 2).sum()) < start


def test_optimizer_options_reach_torch() -> None:
    w = nn.Parameter(torch.zeros(3))
    sgd = build_optimizer("sgd", [w], lr=0.5, momentum=0.9, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == 0.5
    assert sgd.param_groups[0]["momentum"] == 0.9
    assert sgd.param_groups[0]["weight_decay"] == 1e-4
    adam = build_optimizer("adam", [w], lr=0.01)
    assert isinstance(adam, torch.optim.Adam)
    assert "momentum" not in OPTIMIZERS.options("adam")


def test_schedules_keep_their_closed_forms() -> None:
    assert lr_schedule("constant")(0.9) == 1.0
    assert lr_schedule("piecewise")(0.8) == pytest.approx(0.01)
    assert lr_schedule("cosine")(0.5) == pytest.approx(0.5)
    assert lr_schedule("onecycle", peak=0.5)(0.25) == pytest.approx(0.5)
    assert math.isclose(lr_schedule("onecycle")(0.4), 1.0)
    with pytest.raises(ValueError, match="peak"):
        lr_schedule("onecycle", peak=1.5)
