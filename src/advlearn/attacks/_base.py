"""What every attack shares: the result type, the config base class, the one
mechanism that derives a config from its function (:func:`attack_config`), the
registry, and the two model calls an attack makes (a loss gradient w.r.t. the
input, and a plain evaluation)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover
    from typing_extensions import dataclass_transform

import torch
from torch import Tensor, nn

from advlearn import _keyed_random as keyed
from advlearn._checks import LOW_PRECISION, as_labels, check_logits, check_model_dtype, untouched_batchnorm
from advlearn._precision import attack_gradients
from advlearn._registry import Registry
from advlearn.losses import LOSSES, LossFn, get_loss
from advlearn.threat import NORMS, ThreatModel, per_example


@dataclass(frozen=True)
class AttackResult:
    """The outcome of one attack on a batch.

    Attributes:
        x_adv: the adversarial inputs, shape of ``x``; each inside the threat model's set.
        success: ``(B,)`` bool; untargeted: the model misclassifies ``x_adv``;
            targeted: the model predicts the target class at ``x_adv``.
        loss: ``(B,)`` the attack loss at ``x_adv`` w.r.t. the labels (targets, if targeted).
        num_grads: forward+backward passes spent, counted per example (a batch
            of 256 attacked for 10 steps costs 2,560).
        num_forwards: forward-only passes spent, counted per example.
    """

    x_adv: Tensor
    success: Tensor
    loss: Tensor
    num_grads: int = 0
    num_forwards: int = 0

    @property
    def success_rate(self) -> float:
        """The fraction of examples on which the attack succeeded."""
        return float(self.success.float().mean()) if self.success.numel() else 0.0


class Attack:
    """Base of the frozen-dataclass attack configs.

    A config holds hyper-parameters and the threat model, never a model or a
    device. Call it as ``attack(model, x, y) -> x_adv`` (the cheapest path, no
    bookkeeping beyond what the attack needs) or ``attack.run(model, x, y) ->
    AttackResult``. Attacks never change ``model.training`` or the parameters
    and work under ``torch.no_grad()``; they are deterministic given
    ``torch.manual_seed`` or an explicit ``generator``.

    ``targeted`` means one thing in every attack that takes it: ``y`` holds the
    target classes, the attack descends the loss towards them, and success is
    predicting them. An attack that picks its own targets (APGD-T) takes the true
    labels, counts success as misclassification, and has no ``targeted`` flag.
    """

    name: ClassVar[str] = ""
    #: the norms the attack supports; constructing it with another norm raises a ValueError.
    norms: ClassVar[tuple[str, ...]] = NORMS
    #: the attack function the config was derived from (:func:`attack_config`) and its option names
    function: ClassVar[Callable[..., Any]]
    option_names: ClassVar[tuple[str, ...]] = ()
    threat: ThreatModel

    def options(self) -> dict[str, Any]:
        """The config's keyword options for :attr:`function` (every field but ``threat``)."""
        return {name: getattr(self, name) for name in self.option_names}

    def _check_norm(self) -> None:
        """Raise a ValueError unless ``threat.norm`` is in :attr:`norms`; call it in ``__post_init__``."""
        if self.threat.norm not in self.norms:
            supported = ", ".join(map(repr, self.norms))
            raise ValueError(
                f"{type(self).__name__} supports norm {supported}, not threat.norm={str(self.threat.norm)!r}"
            )

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> AttackResult:
        raise NotImplementedError

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """The adversarial inputs only; subclasses override it when that is cheaper than :meth:`run`."""
        return self.run(model, x, y, generator=generator).x_adv

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.perturb(model, x, y, generator=generator)


# ----------------------------------------------------------------------------- configs from functions


class _Derived:
    def __repr__(self) -> str:
        return "DERIVED"


#: The default of a config field: "the default of the attack function's keyword of this name".
DERIVED: Any = _Derived()

A = TypeVar("A", bound=Attack)
# The positional parameters every attack function takes, in order; ``generator`` is a call-time argument.
_POSITIONAL = ("model", "x", "y", "threat")


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def attack_config(
    function: Callable[..., Any], *, check: Callable[..., None] | None = None
) -> Callable[[type[A]], type[A]]:
    """Class decorator: make the class the frozen-dataclass config of the attack ``function``.

    The function is the one place an attack's options and defaults are written:
    ``pgd(model, x, y, threat, *, steps=10, ...)``. The class lists ``threat`` and
    each keyword option with its type and ``= DERIVED`` (so that type checkers see
    the fields), in the function's order; the decorator

    - checks at import time that the names, order and annotations agree with the
      function's keyword options (all but ``generator``) and that no default is
      written twice (a field with a default of its own is refused);
    - sets every ``DERIVED`` default to the function's default, so ``repr``, ``==``
      and :meth:`Registry.fields` come from the dataclass as usual;
    - generates ``run(model, x, y, *, generator=None)`` calling ``function`` with
      every field (and the generator when the function takes one), unless the class
      writes its own ``run``;
    - generates ``__post_init__``, which checks the norm (:meth:`Attack._check_norm`) and
      calls ``check`` with the fields it names (the function calls the same ``check``),
      unless the class writes its own.

    Example:
        >>> def noop(model, x, y, threat, *, scale: float = 1.0):
        ...     return AttackResult(x, torch.zeros(len(y), dtype=torch.bool), torch.zeros(len(y)))
        >>> @attack_config(noop)
        ... class Noop(Attack):
        ...     threat: ThreatModel
        ...     scale: float = DERIVED
        >>> Noop(ThreatModel("linf", eps=0.1))
        Noop(threat=ThreatModel(norm='linf', eps=0.1, bounds=(0.0, 1.0)), scale=1.0)
    """
    signature = inspect.signature(function)
    params = list(signature.parameters.values())
    positional = tuple(p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY)
    keywords = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "generator"]
    takes_generator = "generator" in signature.parameters
    check_names = tuple(inspect.signature(check).parameters) if check is not None else ()

    def wrap(cls: type[A]) -> type[A]:
        where = f"{cls.__name__} (the config of {function.__name__})"
        if positional != _POSITIONAL:
            raise TypeError(f"{where}: the function must take {_POSITIONAL} positionally, not {positional}")
        own = {k: v for k, v in inspect.get_annotations(cls).items() if "ClassVar" not in str(v)}
        if list(own) != ["threat", *(p.name for p in keywords)]:
            raise TypeError(
                f"{where}: fields {list(own)} must be threat then the function's keyword options "
                f"{[p.name for p in keywords]}, in order"
            )
        for p in keywords:
            if str(own[p.name]).replace(" ", "") != str(p.annotation).replace(" ", ""):
                raise TypeError(f"{where}: {p.name} is {own[p.name]} here but {p.annotation} in the function")
            declared = cls.__dict__.get(p.name, dataclasses.MISSING)
            default = p.default if p.default is not inspect.Parameter.empty else dataclasses.MISSING
            if isinstance(declared, dataclasses.Field):
                if declared.default is DERIVED:
                    declared.default = default
                elif declared.default is not dataclasses.MISSING:
                    raise TypeError(f"{where}: {p.name}'s default is written twice; use DERIVED")
            elif declared is DERIVED:
                if default is dataclasses.MISSING:
                    raise TypeError(f"{where}: {p.name} has no default in the function")
                setattr(cls, p.name, default)
            elif declared is not dataclasses.MISSING or default is not dataclasses.MISSING:
                raise TypeError(f"{where}: write {p.name} = DERIVED; its default lives in the function")
        cls.function = staticmethod(function)  # type: ignore[assignment]
        cls.option_names = tuple(p.name for p in keywords)
        if "run" not in cls.__dict__:

            def run(
                self: Attack,
                model: nn.Module,
                x: Tensor,
                y: Tensor,
                *,
                generator: torch.Generator | None = None,
            ) -> AttackResult:
                extra = {"generator": generator} if takes_generator else {}
                result: AttackResult = function(model, x, y, self.threat, **self.options(), **extra)
                return result

            run.__doc__ = f"``{function.__name__}(model, x, y, self.threat, **self.options())``."
            cls.run = run  # type: ignore[method-assign]
        for entry in ("run", "perturb", "evaluate"):
            current = getattr(cls, entry, None)
            if callable(current) and current is not getattr(Attack, entry, None):
                setattr(cls, entry, _guarded(current))
        if "__post_init__" not in cls.__dict__:

            def __post_init__(self: Attack) -> None:
                self._check_norm()
                if check is not None:
                    check(**{name: getattr(self, name) for name in check_names})

            cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
        if not cls.__doc__:
            cls.__doc__ = f"Config for :func:`{function.__name__}`."
        return dataclasses.dataclass(frozen=True)(cls)

    return wrap


# ----------------------------------------------------------------------------- the guard on every call

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _guarded(method: _Method) -> _Method:
    """Wrap a config's ``run`` or ``perturb`` in the checks and guarantees every attack shares.

    Before the attack: the model's dtype against ``x``'s
    (:func:`~advlearn._checks.check_model_dtype`), labels of any integer dtype converted to
    int64 (the attack function runs :func:`~advlearn._checks.check_inputs` itself). During it:
    train-mode BatchNorm keeps its running statistics (:func:`~advlearn._checks.untouched_batchnorm`).
    After it: :func:`_repair`, so no returned point holds NaN and, for float16/bfloat16
    inputs, every one satisfies ``threat.contains`` (tested in float32). For float32 inputs
    whose points are all finite the result is returned untouched, bit for bit. Inside it,
    :func:`~advlearn._precision.attack_gradients` lets an fp16 model scale its input gradients.
    """
    if getattr(method, "_guarded", False):
        return method

    @functools.wraps(method)
    def guarded(self: Attack, model: nn.Module, x: Tensor, y: Tensor, **options: Any) -> Any:
        # The attack function runs check_inputs itself; here only what it cannot know or do.
        if isinstance(x, Tensor):
            check_model_dtype(model, x)
        if isinstance(y, Tensor) and not (
            y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool
        ):
            y = as_labels(y)  # any integer width, exactly; float/bool labels are refused by check_inputs
        with untouched_batchnorm(model, type(self).__name__), attack_gradients():
            out = method(self, model, x, y, **options)
            if isinstance(out, AttackResult):
                return _repair(self, model, x, y, out)
            if isinstance(out, Tensor):
                return _repair(self, model, x, y, AttackResult(out, _NO_FLAGS, _NO_FLAGS)).x_adv
            return out  # AutoAttack.evaluate's result: its members' points were repaired already

    guarded._guarded = True  # type: ignore[attr-defined]
    return guarded  # type: ignore[return-value]


_NO_FLAGS = torch.zeros(0)


def _repair(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, result: AttackResult) -> AttackResult:
    """``result`` with every NaN point replaced by ``x`` and, in float16/bfloat16, every point
    outside ``S(x)`` (rounding) projected back; success and loss are recomputed where a point moved.

    A replaced NaN point is reported in a warning naming the attack (it found nothing there).
    """
    x_adv = result.x_adv
    low = x_adv.dtype in LOW_PRECISION
    if not low and bool(x_adv.sum().isfinite()):  # one cheap reduction: no NaN anywhere
        return result
    nan = x_adv.isnan().reshape(x_adv.shape[0], -1).any(dim=1)
    if not low and not bool(nan.any()):
        return result
    fixed = torch.where(per_example(nan, x_adv), x, x_adv).to(x.dtype)
    if low:
        fixed = attack.threat.project(fixed, x)
    moved = nan | (fixed != x_adv).reshape(x_adv.shape[0], -1).any(dim=1)
    if bool(nan.any()):
        warnings.warn(
            f"{type(attack).__name__} produced {int(nan.sum())} NaN point(s) (an infinite gradient "
            "or a float overflow?); the clean input is returned for them",
            RuntimeWarning,
            stacklevel=3,
        )
    if not bool(moved.any()) or result.success.shape != nan.shape:
        return dataclasses.replace(result, x_adv=fixed)
    success, loss = result.success.clone(), result.loss.clone()
    targeted = bool(getattr(attack, "targeted", False))
    name = getattr(attack, "loss", "ce")
    loss_fn = get_loss(name if isinstance(name, str) and name in LOSSES else "ce")
    losses, hit = evaluate(model, fixed[moved], y[moved], loss_fn, targeted)
    success[moved] = hit
    if loss.shape == success.shape:
        loss[moved] = losses.to(loss.dtype)
    return dataclasses.replace(result, x_adv=fixed, success=success, loss=loss)


# ----------------------------------------------------------------------------- registry

ATTACKS: Registry[Attack] = Registry("attack")
register = ATTACKS.register


def build_attack(name: str, threat: ThreatModel, **options: Any) -> Attack:
    """Build the registered attack ``name`` with ``options``, rejecting unknown keys.

    Example:
        >>> threat = ThreatModel("linf", eps=0.1)
        >>> build_attack("pgd", threat, steps=20)
        PGD(threat=ThreatModel(norm='linf', eps=0.1, bounds=(0.0, 1.0)), steps=20, ...)
    """
    return ATTACKS.build(name, options, threat=threat)


# ----------------------------------------------------------------------------- model calls


def is_success(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """``(B,)`` bool: the prediction hits the target (targeted) or misses the label (untargeted)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def loss_and_grad(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, *, check: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and one backward pass: ``(logits, per-example loss, ∇ₓ Σ loss)``.

    Only the gradient w.r.t. ``x`` is computed (``torch.autograd.grad``), so no
    parameter's ``.grad`` is touched, and it works inside ``torch.no_grad()``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        if check:
            check_logits(logits, y)
        losses = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return logits.detach(), losses.detach(), grad


def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, targeted: bool, *, check: bool = False
) -> tuple[Tensor, Tensor]:
    """One forward pass without a graph: ``(per-example loss, success)``."""
    with torch.no_grad():
        logits = model(x)
        if check:
            check_logits(logits, y)
        return loss_fn(logits, y), is_success(logits, y, targeted)


# ----------------------------------------------------------------------------- the two shared rules


def is_better(hit: Tensor, objective: Tensor, best_hit: Tensor, best_objective: Tensor) -> Tensor:
    """``(B,)`` bool: a candidate beats the point kept so far, the one rule every attack keeps points by.

    Fooling the model comes first; between two points that both fool it or both
    do not, the higher objective wins (a tie keeps the old point).

    Example:
        >>> hit, best_hit = torch.tensor([True, False, True]), torch.tensor([False, True, True])
        >>> is_better(hit, torch.tensor([0.0, 9.0, 2.0]), best_hit, torch.tensor([5.0, 0.0, 1.0]))
        tensor([ True, False,  True])
    """
    return (hit & ~best_hit) | ((hit == best_hit) & (objective > best_objective))


class ActiveSet:
    """The examples of a batch an attack is still working on, for early exit.

    Holds their positions in the batch (:attr:`index`) and the threat model
    restricted to them (:attr:`threat`, which matters for a per-example ε). An
    attack gathers its per-example tensors with :meth:`gather` and, when some
    examples are done, compacts them all at once with :meth:`drop`, so the
    remaining work runs on a smaller batch.

    Example:
        >>> threat = ThreatModel("linf", eps=torch.tensor([0.1, 0.2, 0.3]))
        >>> active = ActiveSet.where(torch.tensor([True, False, True]), threat)
        >>> (x,) = active.drop(torch.tensor([True, False]), torch.tensor([[1.0], [3.0]]))
        >>> active.index, active.threat.eps, x
        (tensor([2]), tensor([0.3000]), tensor([[3.]]))
    """

    def __init__(self, index: Tensor, threat: ThreatModel) -> None:
        self.index = index  # (A,) positions in the batch
        self.threat = threat

    @classmethod
    def where(cls, mask: Tensor, threat: ThreatModel) -> ActiveSet:
        """The examples where ``mask`` ``(B,)`` holds."""
        index = mask.nonzero().squeeze(1)
        return cls(index, threat.select(index))

    @classmethod
    def all(cls, n: int, threat: ThreatModel, device: torch.device) -> ActiveSet:
        """Every example of a batch of ``n``."""
        return cls(torch.arange(n, device=device), threat)

    def __len__(self) -> int:
        return int(self.index.numel())

    def gather(self, batch: Tensor) -> Tensor:
        """The rows of the full-batch tensor ``batch`` that belong to the active examples."""
        return batch[self.index]

    def draws(self, generator: torch.Generator | None) -> torch.Generator | None:
        """``generator`` for the active examples: with a :class:`~advlearn._keyed_random.KeyedGenerator`
        (keyed by example, as :func:`~advlearn.evaluation.evaluate` passes) the view keyed by theirs,
        so an example's random draws do not depend on which others are still active."""
        return keyed.rows(generator, self.index)

    def drop(self, leave: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Drop the examples where ``leave`` ``(A,)`` holds; return ``tensors`` ``(A, ...)`` compacted."""
        keep = ~leave
        self.index, self.threat = self.index[keep], self.threat.select(keep)
        return tuple(t[keep] for t in tensors)
