"""Conformance over the attack registry: every registered attack, in every norm, keeps the same contract."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import ATTACKS, Attack, AttackResult, build_attack, fgsm, pgd, register
from advlearn.attacks._base import DERIVED, attack_config
from advlearn.threat import NORMS

EPS = {"linf": 0.1, "l2": 0.5, "l1": 2.0}
# Each attack in each norm it declares (``Attack.norms``); test_refuses_other_norms covers the rest.
CASES = [(name, norm) for name in sorted(ATTACKS) for norm in NORMS if norm in ATTACKS[name].norms]
UNSUPPORTED = [(name, norm) for name in sorted(ATTACKS) for norm in NORMS if norm not in ATTACKS[name].norms]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def attack_for(name: str, norm: str, **options: object) -> Attack:
    return build_attack(name, al.ThreatModel(norm, EPS[norm]), **options)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_works_under_no_grad(name: str, norm: str, cnn: nn.Module, images: tuple[Tensor, Tensor]) -> None:
    """Called inside torch.no_grad(), an attack still perturbs x and stays in the threat set."""
    x, y = images
    attack = attack_for(name, norm)
    with torch.no_grad():
        x_adv = attack(cnn, x, y, generator=seeded(0))
        result = attack.run(cnn, x, y, generator=seeded(0))
    for out in (x_adv, result.x_adv):
        assert not torch.equal(out, x)
        assert attack.threat.contains(out, x).all()


@pytest.mark.parametrize(("name", "norm"), CASES)
@pytest.mark.parametrize("training", [False, True])
def test_leaves_model_and_inputs_alone(
    name: str, norm: str, training: bool, cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    """An attack leaves every module's .training, the parameters (bitwise), their .grad, x and y unchanged."""
    x, y = images
    cnn.train(training)
    params = snapshot(cnn)
    x_copy, y_copy = x.clone(), y.clone()
    attack = attack_for(name, norm)
    attack(cnn, x, y)
    attack.run(cnn, x, y)
    assert all(module.training == training for module in cnn.modules())
    for key, value in cnn.named_parameters():
        assert torch.equal(value, params[key]), key
        assert value.grad is None, key
    assert torch.equal(x, x_copy)
    assert torch.equal(y, y_copy)


@pytest.mark.parametrize(("name", "norm"), CASES)
@pytest.mark.parametrize("training", [False, True])
def test_deterministic_given_manual_seed(
    name: str, norm: str, training: bool, cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    """Two calls after the same torch.manual_seed give identical outputs (dropout in train mode included)."""
    x, y = images
    cnn.train(training)
    attack = attack_for(name, norm)
    outputs = []
    for _ in range(2):
        torch.manual_seed(11)
        outputs.append((attack(cnn, x, y), attack.run(cnn, x, y).x_adv))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_deterministic_given_generator(
    name: str, norm: str, cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    """Equal generator seeds give identical outputs whatever the global RNG state."""
    x, y = images
    attack = attack_for(name, norm)
    torch.manual_seed(1)
    first = attack.run(cnn, x, y, generator=seeded(5))
    torch.manual_seed(2)
    second = attack.run(cnn, x, y, generator=seeded(5))
    assert torch.equal(first.x_adv, second.x_adv)
    assert torch.equal(first.success, second.success)
    torch.manual_seed(3)
    assert torch.equal(attack(cnn, x, y, generator=seeded(5)), first.x_adv)


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_run_and_call_agree(name: str, norm: str, cnn: nn.Module, images: tuple[Tensor, Tensor]) -> None:
    """attack(model, x, y) and attack.run(model, x, y).x_adv agree given the same generator seed."""
    x, y = images
    attack = attack_for(name, norm)
    assert torch.equal(
        attack(cnn, x, y, generator=seeded(9)), attack.run(cnn, x, y, generator=seeded(9)).x_adv
    )


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_result_matches_model(name: str, norm: str, cnn: nn.Module, images: tuple[Tensor, Tensor]) -> None:
    """AttackResult.success is 'prediction at x_adv ≠ y' and .loss the attack's loss at x_adv, per example."""
    x, y = images
    attack = attack_for(name, norm)
    result = attack.run(cnn, x, y, generator=seeded(0))
    assert isinstance(result, AttackResult)
    with torch.no_grad():
        logits = cnn(result.x_adv)
    assert result.success.dtype == torch.bool
    assert result.success.shape == y.shape
    assert torch.equal(result.success, logits.argmax(1) != y)
    torch.testing.assert_close(result.loss, al.losses.get_loss(attack.loss)(logits, y))
    assert result.success_rate == pytest.approx(result.success.float().mean().item())
    # Only the score-based attacks (and Rotation's grid, by default) spend no gradient.
    assert (result.num_grads == 0) == (name in GRADIENT_FREE), result.num_grads
    assert result.num_forwards >= len(y)


GRADIENT_FREE = {"rotation", "sign_noise", "square", "uniform_noise"}


class Unfoolable(nn.Module):
    """Predicts class 0 whatever the input, with a zero (but existing) input gradient: nothing fools it."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.register_buffer("bias", torch.arange(num_classes, 0, -1, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.bias + 0.0 * x.flatten(1).sum(1, keepdim=True)


# Per attack: options, and the (num_grads, num_forwards) its docstring promises per example on a model
# it cannot fool (C = 4 classes), as a function of the built config. Every registered attack needs one.
BUDGETS: dict[str, tuple[dict[str, object], Callable[[Attack], tuple[int, int]]]] = {
    "fgsm": ({}, lambda a: (1, 1)),
    "pgd": ({"steps": 3, "restarts": 2}, lambda a: (3 * 2, 2)),
    "apgd": ({"steps": 4, "restarts": 2}, lambda a: (4 * 2, 2)),
    "apgd_t": ({"steps": 4, "num_targets": 9}, lambda a: (4 * 3, 1 + 3)),  # min(9, C − 1) = 3 targets
    "square": ({"queries": 7}, lambda a: (0, 7)),
    "rotation": ({"num_angles": 5, "angle_steps": 2}, lambda a: (2, 5 + 1 + 1)),
    "sign_noise": ({}, lambda a: (0, 1)),
    "uniform_noise": ({}, lambda a: (0, 1)),
    "cw": ({"steps": 3, "search_steps": 2, "abort_early": False}, lambda a: (3 * 2, 1 + 1)),
    "deepfool": ({"steps": 3}, lambda a: (3 * 3, 1 + 1)),  # one backward pass per candidate class
    # FAB: C = 4 backward passes per step; clean pass, one per step, the scoring pass
    "fab": ({"steps": 3}, lambda a: (3 * 4, 1 + 3 + 1)),
    "fab_t": ({"steps": 3, "num_targets": 9}, lambda a: (3 * 3, 1 + 3 * 3 + 1)),  # min(9, C − 1) = 3 targets
    # L-BFGS-B decides how often it evaluates; the forward passes are fixed: clean, one per c, the result.
    "lbfgs": ({"search_steps": 2}, lambda a: (-1, 1 + 2 + 1)),
    # clean pass, the randomized-outputs check's second pass, APGD (early stop: clean + last iterate),
    # Square's queries, run()'s scoring pass
    "autoattack": (
        {"version": "custom", "attacks": ({"name": "apgd", "steps": 3, "early_stop": True}, "square")},
        lambda a: (3, 1 + 1 + 2 + 5000 + 1),
    ),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_budget_on_a_model_it_cannot_fool(name: str) -> None:
    """On a model nothing fools, every attack spends exactly the budget its docstring states, and fails."""
    assert name in BUDGETS, f"document {name}'s budget (num_grads, num_forwards) in BUDGETS"
    options, budget = BUDGETS[name]
    norm = ATTACKS[name].norms[0]
    x = torch.rand(5, 1, 6, 6, generator=seeded(0))
    y = torch.zeros(5, dtype=torch.long)
    attack = attack_for(name, norm, **options)
    result = attack.run(Unfoolable(), x, y, generator=seeded(1))
    grads, forwards = budget(attack)
    assert not result.success.any()
    assert result.num_forwards == forwards * len(y)
    if grads >= 0:
        assert result.num_grads == grads * len(y)
    else:
        assert result.num_grads >= len(y)
        assert result.num_grads % len(y) == 0


# ----------------------------------------------------------------------------- bad input

Batch = tuple[nn.Module, Tensor, Tensor]


def _set(t: Tensor, value: float) -> Tensor:
    t = t.clone()
    t.view(-1)[5] = value
    return t


class Reshaped(nn.Module):
    """Wraps a model and reshapes (or replaces) its logits, to feed attacks a wrong output shape."""

    def __init__(self, model: nn.Module, fn: Callable[[Tensor], object]) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x: Tensor) -> object:
        return self.fn(self.model(x))


INPUT_ERRORS: dict[str, tuple[Callable[[Batch], Batch], str]] = {
    "x above bounds": (lambda b: (b[0], _set(b[1], 1.5), b[2]), r"\bx\b"),
    "x below bounds": (lambda b: (b[0], _set(b[1], -1e-3), b[2]), r"\bx\b"),
    "x has NaN": (lambda b: (b[0], _set(b[1], float("nan")), b[2]), r"\bx\b"),
    "x has +Inf": (lambda b: (b[0], _set(b[1], float("inf")), b[2]), r"\bx\b"),
    "x has -Inf": (lambda b: (b[0], _set(b[1], float("-inf")), b[2]), r"\bx\b"),
    "x is an integer tensor": (lambda b: (b[0], b[1].round().long(), b[2]), r"\bx\b"),
    "batch sizes differ": (lambda b: (b[0], b[1], b[2][:-1]), r"\by\b"),
    "negative label": (lambda b: (b[0], b[1], _set(b[2], -1)), r"\by\b"),
    "float labels": (lambda b: (b[0], b[1], b[2].float()), r"\by\b"),
    "labels of shape (B, 1)": (lambda b: (b[0], b[1], b[2][:, None]), r"\by\b"),
}
MODEL_ERRORS: dict[str, tuple[Callable[[Batch], Batch], str]] = {
    "label >= num_logits": (lambda b: (b[0], b[1], _set(b[2], 3)), r"\by\b"),
    "model returns (B,)": (lambda b: (Reshaped(b[0], lambda z: z[:, 0]), b[1], b[2]), "model"),
    "model returns (B, C, 1)": (lambda b: (Reshaped(b[0], lambda z: z[..., None]), b[1], b[2]), "model"),
    "model returns (B - 1, C)": (lambda b: (Reshaped(b[0], lambda z: z[:-1]), b[1], b[2]), "model"),
    "model returns a tuple": (lambda b: (Reshaped(b[0], lambda z: (z,)), b[1], b[2]), "model"),
}


@pytest.mark.parametrize(("name", "norm"), CASES)
@pytest.mark.parametrize("case", sorted(INPUT_ERRORS))
@pytest.mark.parametrize("entry", ["run", "call"])
def test_rejects_bad_input(
    name: str, norm: str, case: str, entry: str, cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    """Bad x or y raises a ValueError naming the argument, through .run() and through __call__."""
    mutate, argument = INPUT_ERRORS[case]
    model, x, y = mutate((cnn, *images))
    attack = attack_for(name, norm)
    with pytest.raises(ValueError, match=argument):
        (attack.run if entry == "run" else attack)(model, x, y)


@pytest.mark.parametrize(("name", "norm"), CASES)
@pytest.mark.parametrize("case", sorted(MODEL_ERRORS))
def test_rejects_labels_the_model_cannot_score(
    name: str, norm: str, case: str, cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    """A model output that is not (B, C) logits, or labels beyond C, raise a ValueError in .run()."""
    mutate, argument = MODEL_ERRORS[case]
    model, x, y = mutate((cnn, *images))
    with pytest.raises(ValueError, match=argument):
        attack_for(name, norm).run(model, x, y)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize("case", sorted(MODEL_ERRORS))
def test_gradient_attacks_check_the_model_when_called(
    name: str, case: str, cnn: nn.Module, images: tuple[Tensor, Tensor]
) -> None:
    """The gradient attacks, which call the model, check its output on the __call__ path too."""
    mutate, argument = MODEL_ERRORS[case]
    model, x, y = mutate((cnn, *images))
    with pytest.raises(ValueError, match=argument):
        attack_for(name, "linf")(model, x, y)


def test_per_example_eps_must_match_batch(cnn: nn.Module, images: tuple[Tensor, Tensor]) -> None:
    """A (B,) eps of the wrong length raises a ValueError naming eps, for every attack."""
    x, y = images
    for name in ATTACKS:
        threat = al.ThreatModel(ATTACKS[name].norms[0], torch.full((len(y) + 1,), 0.1))
        with pytest.raises(ValueError, match="eps"):
            build_attack(name, threat).run(cnn, x, y)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_build_attack_rejects_unknown_option(name: str) -> None:
    """build_attack raises a ValueError naming the unknown option."""
    with pytest.raises(ValueError, match="stepz"):
        build_attack(name, al.ThreatModel("linf", 0.1), stepz=3)


def test_build_attack_unknown_name() -> None:
    """An unregistered attack name raises a ValueError listing the known ones."""
    with pytest.raises(ValueError, match="pgd"):
        build_attack("no_such_attack", al.ThreatModel("linf", 0.1))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_unknown_loss(name: str) -> None:
    """Every attack rejects an unknown loss name when built."""
    with pytest.raises(ValueError, match="loss"):
        build_attack(name, al.ThreatModel("l2", 0.1), loss="hinge")


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": -1}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"step_size": -0.1}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
        ({"loss": "hinge"}, "loss"),
    ],
)
def test_pgd_rejects_bad_options(
    options: dict, argument: str, mlp: nn.Module, vectors: tuple[Tensor, Tensor]
) -> None:
    """PGD's config and function reject bad steps, restarts, step_size and loss, naming them."""
    threat = al.ThreatModel("linf", 0.1)
    with pytest.raises(ValueError, match=argument):
        al.attacks.PGD(threat, **options)
    with pytest.raises(ValueError, match=argument):
        pgd(mlp, *vectors, threat, **options)


def test_fgsm_rejects_unknown_loss(mlp: nn.Module, vectors: tuple[Tensor, Tensor]) -> None:
    """fgsm(loss=...) rejects an unknown loss name."""
    with pytest.raises(ValueError, match="loss"):
        fgsm(mlp, *vectors, al.ThreatModel("linf", 0.1), loss="hinge")


# ----------------------------------------------------------------------------- API contract


def test_api_contract() -> None:
    """The documented names and keyword arguments exist; configs are frozen, comparable dataclasses."""
    threat = al.ThreatModel("linf", 8 / 255)
    attack = al.attacks.PGD(
        threat,
        steps=40,
        step_size=None,
        restarts=1,
        random_start=True,
        targeted=False,
        loss="ce",
        early_stop=False,
    )
    assert attack == build_attack("pgd", threat, steps=40)
    assert attack.name == "pgd"
    with pytest.raises(dataclasses.FrozenInstanceError):
        attack.steps = 5  # type: ignore[misc]
    assert al.attacks.FGSM(threat, loss="cw", targeted=True).targeted
    assert al.attacks.SignNoise(threat).loss == al.attacks.UniformNoise(threat).loss == "ce"
    for key, cls in ATTACKS.items():
        assert cls.name == key
        assert issubclass(cls, Attack)
        assert dataclasses.is_dataclass(cls)
    assert {f.name for f in dataclasses.fields(AttackResult)} == {
        "x_adv",
        "success",
        "loss",
        "num_grads",
        "num_forwards",
    }
    for fn, cls in [
        (al.attacks.fgsm, al.attacks.FGSM),
        (al.attacks.pgd, al.attacks.PGD),
        (al.attacks.random_sign_noise, al.attacks.SignNoise),
        (al.attacks.uniform_noise, al.attacks.UniformNoise),
    ]:
        # The config calls exactly this function, with its defaults.
        assert cls.function is fn
        assert cls(threat).options() == keyword_defaults(fn)


def keyword_defaults(fn: Callable[..., object]) -> dict[str, object]:
    """The keyword options of an attack function and their defaults (``generator`` is a call argument)."""
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name != "generator"}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_config_and_function_agree(name: str) -> None:
    """Every registered config has the function's keyword options as fields, in order, with its defaults."""
    cls = ATTACKS[name]
    defaults = keyword_defaults(cls.function)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    assert [f.name for f in fields] == ["threat", *defaults]
    assert {f.name: f.default for f in fields[1:]} == defaults
    assert cls.option_names == tuple(defaults)
    assert ATTACKS.fields(name) == {"threat", *defaults}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_run_calls_the_function(name: str, cnn: nn.Module, images: tuple[Tensor, Tensor]) -> None:
    """config.run(model, x, y) is the function called with the config's fields, bit for bit."""
    x, y = images
    small = {"steps": 2, "queries": 20, "search_steps": 1, "num_angles": 3, "num_targets": 2}
    cls = ATTACKS[name]
    options = {k: v for k, v in small.items() if k in ATTACKS.fields(name)}
    if name == "autoattack":
        options = {
            "version": "custom",
            "attacks": ({"name": "apgd", "steps": 2}, {"name": "square", "queries": 20}),
        }
    attack = attack_for(name, cls.norms[0], **options)
    result = attack.run(cnn, x, y, generator=seeded(3))
    takes_generator = "generator" in inspect.signature(cls.function).parameters
    extra = {"generator": seeded(3)} if takes_generator else {}
    direct = cls.function(cnn, x, y, attack.threat, **attack.options(), **extra)
    x_direct = direct.x_adv
    assert torch.equal(result.x_adv, x_direct)


def test_attack_config_refuses_a_config_that_restates_its_function() -> None:
    """The mechanism refuses a default written twice, a missing or extra field, and a type that differs."""

    def toy(
        model: nn.Module, x: Tensor, y: Tensor, threat: al.ThreatModel, *, steps: int = 3
    ) -> AttackResult:
        raise NotImplementedError

    with pytest.raises(TypeError, match="DERIVED"):

        @attack_config(toy)
        class Twice(Attack):
            threat: al.ThreatModel
            steps: int = 3

    with pytest.raises(TypeError, match="fields"):

        @attack_config(toy)
        class Missing(Attack):
            threat: al.ThreatModel

    with pytest.raises(TypeError, match="steps"):

        @attack_config(toy)
        class Retyped(Attack):
            threat: al.ThreatModel
            steps: float = DERIVED

    @attack_config(toy)
    class Toy(Attack):
        threat: al.ThreatModel
        steps: int = DERIVED

    assert Toy(al.ThreatModel("linf", 0.1)).steps == 3


def test_register_rejects_duplicate_names() -> None:
    """Registering a second attack under a taken name raises a ValueError and leaves the registry alone."""
    before = dict(ATTACKS)
    with pytest.raises(ValueError, match="pgd"):

        @register("pgd")
        @dataclasses.dataclass(frozen=True)
        class Impostor(Attack):
            threat: al.ThreatModel

    assert before == ATTACKS


NO_UNSUPPORTED = [pytest.param("", "", marks=pytest.mark.skip("every attack supports every norm"))]


@pytest.mark.parametrize(("name", "norm"), UNSUPPORTED or NO_UNSUPPORTED)
def test_refuses_other_norms(name: str, norm: str) -> None:
    """An attack built for a norm it does not support raises a ValueError naming the norm."""
    with pytest.raises(ValueError, match=norm):
        attack_for(name, norm)
