"""Gradient-masking diagnostics: the signs that a robustness figure comes from a broken attack.

A defense can make gradient attacks fail without making the model robust: by
flattening, shattering or randomizing the gradients the attacks follow
(Papernot et al. 2017; Athalye, Carlini & Wagner 2018). Athalye et al. (§3.1)
list the symptoms, and :func:`diagnose_masking` runs one cheap check for each:

(a) **zero gradients**: ``∇ₓL`` vanishes on correctly classified inputs, so a
    gradient attack has no direction to follow;
(b) **iterative no better than single-step**: PGD should fool strictly more
    examples than FGSM at the same ε; on a masked model it does not;
(c) **unbounded attack fails**: with ε as wide as the input box every input
    can be reached, so accuracy must fall to about 0;
(d) **black-box beats white-box**: the score-based Square attack (or a
    transfer from a surrogate model) fools examples that white-box PGD could
    not, although it knows less;
(e) **randomized outputs**: two forward passes on the same input disagree, so
    a single-sample gradient is noise (use expectation over transformation).

Each check passes or fails with its figure and one sentence on what it means.
A failed check does not prove masking, and passing them all proves no
robustness: they are the minimum an evaluation must survive before anyone
believes it.

(About 560 lines: the five checks and the driver that shares their attack runs stay
in one file, since each check's verdict, figure and sentence are read against the
others'.)

References:
    Athalye, Carlini & Wagner. Obfuscated gradients give a false sense of
    security: circumventing defenses to adversarial examples. ICML 2018, §3.1.
    Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry &
    Kurakin. On evaluating adversarial robustness. arXiv:1902.06705, 2019, §5.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_logits, check_nonnegative, check_positive_int
from advlearn.attacks import ATTACKS, FGSM, PGD, Attack, Transfer, build_attack
from advlearn.attacks.adaptive import RandomizedOutputsWarning, outputs_differ
from advlearn.losses import cross_entropy
from advlearn.threat import Linf, ThreatModel

Status = Literal["pass", "fail", "not run"]

#: The checks in the order :func:`diagnose_masking` reports them.
CHECKS: tuple[str, ...] = (
    "zero_gradients",
    "iterative_vs_single_step",
    "unbounded_attack",
    "black_box_vs_white_box",
    "randomized_outputs",
)


@dataclass(frozen=True)
class MaskingCheck:
    """One diagnostic: whether it passed, its figure, and what it means.

    Attributes:
        name: one of :data:`CHECKS`.
        title: a short human title, e.g. ``"zero gradients"``.
        status: ``"pass"``, ``"fail"`` (a symptom of gradient masking) or
            ``"not run"`` (it does not apply, e.g. no score-based attack for the norm and no surrogate).
        figure: the number the decision rests on (NaN when not run).
        detail: the figure in words, with the counts it was measured on.
        meaning: one sentence on what the outcome means.
    """

    name: str
    title: str
    status: Status
    figure: float
    detail: str
    meaning: str

    @property
    def flagged(self) -> bool:
        """Whether the check found a symptom of gradient masking."""
        return self.status == "fail"


@dataclass(frozen=True)
class MaskingDiagnosis:
    """The outcome of :func:`diagnose_masking` on one model.

    Attributes:
        threat: the threat model the checks ran under.
        num_examples: how many examples the checks used.
        clean_accuracy: the model's accuracy on them.
        checks: one :class:`MaskingCheck` per entry of :data:`CHECKS`, in that order.
        figures: the raw measurements (accuracies, counts), by name.
    """

    threat: ThreatModel
    num_examples: int
    clean_accuracy: float
    checks: tuple[MaskingCheck, ...]
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def masked(self) -> bool:
        """Whether any check failed: the robustness figures of this model should not be trusted as is."""
        return any(c.flagged for c in self.checks)

    @property
    def flagged(self) -> list[str]:
        """The names of the failed checks."""
        return [c.name for c in self.checks if c.flagged]

    def __getitem__(self, name: str) -> MaskingCheck:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; the checks are {', '.join(CHECKS)}")

    def table(self) -> list[dict[str, Any]]:
        """One row per check: ``{"check", "title", "status", "figure", "detail", "meaning"}``."""
        return [
            {
                "check": c.name,
                "title": c.title,
                "status": c.status,
                "figure": c.figure,
                "detail": c.detail,
                "meaning": c.meaning,
            }
            for c in self.checks
        ]


# ----------------------------------------------------------------------------- helpers


def _collect(data: Any, num_examples: int, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The first ``num_examples`` examples of ``data`` as two tensors on ``device``."""
    from advlearn.data import batches

    xs, ys, count = [], [], 0
    for x, y in batches(data, batch_size):
        xs.append(x)
        ys.append(y)
        count += x.shape[0]
        if count >= num_examples:
            break
    if count == 0:
        raise ValueError("data yielded no examples")
    return torch.cat(xs)[:num_examples].to(device), torch.cat(ys)[:num_examples].to(device)


def _in_batches(fn: Any, batch_size: int, *tensors: Tensor) -> Tensor:
    """Apply ``fn`` to slices of ``tensors`` of ``batch_size`` rows and concatenate the outputs."""
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[i : i + batch_size] for t in tensors)) for i in range(0, n, batch_size)])


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    def logits(xb: Tensor) -> Tensor:
        with torch.no_grad():
            out: Tensor = model(xb)
        return out

    return _in_batches(logits, batch_size, x)


def _fooled_by(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> Tensor:
    """``(N,)`` bool: the model misclassifies the attack's output (re-checked with a forward pass)."""

    def run(xb: Tensor, yb: Tensor) -> Tensor:
        x_adv = attack.run(model, xb, yb, generator=generator).x_adv
        with torch.no_grad():
            wrong: Tensor = model(x_adv).argmax(1) != yb
        return wrong

    return _in_batches(run, batch_size, x, y)


class _Connected(nn.Module):
    """``model(x) + 0·Σx``: the same logits, and a gradient w.r.t. ``x`` even when the model cuts its graph.

    A defense that detaches its input or runs it under ``torch.no_grad()`` would make every gradient
    attack raise; through this wrapper they see what such a model really offers them: a zero gradient.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x)
        if not isinstance(out, Tensor) or out.dim() != 2:
            return out  # let the attacks' checks name the problem
        return out + 0.0 * x.reshape(x.shape[0], -1).sum(dim=1, keepdim=True)


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100.0 * value:.1f}%"


# ----------------------------------------------------------------------------- the checks


def _check_randomness(model: nn.Module, x: Tensor, batch_size: int) -> tuple[MaskingCheck, Tensor]:
    first, second = _predict(model, x, batch_size), _predict(model, x, batch_size)
    differ = outputs_differ(first, second)  # (N,) beyond float rounding
    flips = first.argmax(1) != second.argmax(1)
    n = x.shape[0]
    fraction = float(differ.float().mean())
    detail = (
        f"two forward passes give different logits on {int(differ.sum())} of {n} inputs "
        f"({_pct(fraction)}) and different labels on {int(flips.sum())}"
    )
    if fraction > 0:
        meaning = (
            "The model is randomized (or left in train mode): one-sample gradients are noise, so attack it "
            "with expectation over transformation (average gradients over many passes) before trusting "
            "its robust accuracy."
        )
        status: Status = "fail"
    else:
        meaning = "The model is deterministic, so its gradients are not randomized away."
        status = "pass"
    check = MaskingCheck("randomized_outputs", "randomized outputs", status, fraction, detail, meaning)
    return check, first


def _check_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    threat: ThreatModel,
    batch_size: int,
    grad_tol: float,
    grad_fraction: float,
) -> tuple[MaskingCheck, Tensor]:
    def dual_norms(xb: Tensor, yb: Tensor) -> Tensor:
        with torch.enable_grad():
            xg = xb.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(cross_entropy(model(xg), yb).sum(), xg)
        return threat.dual_norm(grad)

    norms = _in_batches(dual_norms, batch_size, x, y)  # (N,)
    # ε·‖∇‖_q is the most the loss can rise inside the ball to first order (Hölder).
    gain = norms * threat.eps_for(x)
    # NaN/Inf gradients carry no direction (NaN ≤ tol is False, so test them apart): they fail the
    # check wherever they occur, and count in its figure beside the vanishing ones.
    nonfinite = ~torch.isfinite(gain)
    vanishing = (gain <= grad_tol) & correct
    flagged, examined = vanishing | nonfinite, correct | nonfinite
    m, bad = int(examined.sum()), int(nonfinite.sum())
    fraction = float(flagged.sum()) / m if m else math.nan
    q = threat.norm.dual_symbol[1:]  # "ℓ₁" → "₁"
    finite_correct = gain[correct & ~nonfinite]
    median = float(finite_correct.median()) if finite_correct.numel() else math.nan
    correct_count = int(correct.sum())
    detail = (
        f"{int(vanishing.sum())} of {correct_count} correctly classified inputs "
        f"({_pct(int(vanishing.sum()) / correct_count if correct_count else math.nan)}) have "
        f"ε·‖∇ₓL‖{q} ≤ {grad_tol:g} (median {median:.3g})"
    )
    if bad:
        detail += (
            f"; {bad} of {len(gain)} inputs ({_pct(bad / len(gain))}) have NaN or Inf gradients "
            f"({_pct(fraction)} of the {m} inputs examined flagged)"
        )
    if m == 0:
        status: Status = "not run"
        meaning = "No input is classified correctly, so there is no gradient to inspect."
    elif bad:
        status = "fail"
        meaning = (
            "The loss has NaN or Inf gradients (an overflowing log-softmax, a division by zero): gradient "
            "attacks take no step there, so their robust accuracy is an artefact; compute the loss stably "
            "(log_softmax of the logits), attack the logits (CW/DLR loss) or use a black-box attack."
        )
    elif fraction > grad_fraction:
        status = "fail"
        meaning = (
            "The loss is flat around many correctly classified inputs (saturated softmax, quantized or "
            "non-differentiable input processing): gradient attacks cannot move there, so their robust "
            "accuracy is an artefact; attack the logits (CW/DLR loss), a differentiable approximation "
            "(BPDA) or use a black-box attack."
        )
    else:
        status = "pass"
        meaning = "Gradients are informative on the correctly classified inputs."
    return MaskingCheck("zero_gradients", "zero gradients", status, fraction, detail, meaning), norms


def _check_iterative(
    acc_fgsm: float, acc_pgd: float, clean: float, n: int, steps: int, tolerance: float
) -> MaskingCheck:
    """``acc_pgd``: the worst case over the iterative attacks (PGD on the CE and margin losses)."""
    gain = acc_fgsm - acc_pgd
    detail = (
        f"FGSM leaves {_pct(acc_fgsm)}, PGD-{steps} (CE and margin losses) leaves {_pct(acc_pgd)} "
        f"(clean {_pct(clean)})"
    )
    # FGSM must fool at least 1 % of the inputs (and 1 input) for the comparison to say anything.
    progress = clean - acc_fgsm >= max(0.01, 1.0 / n) - 1e-12
    if acc_fgsm <= 0.0 or not progress:
        status: Status = "pass"
        meaning = (
            "FGSM already fools every input, so PGD has nothing left to improve on."
            if acc_fgsm <= 0.0
            else "FGSM barely changes the accuracy at this ε, so this comparison cannot tell a robust model "
            "from a masked one; the other checks decide."
        )
    elif gain <= tolerance:
        status = "fail"
        meaning = (
            "Many steps of PGD do no better than one FGSM step although FGSM does find errors: the "
            "gradient stops being a useful direction after the first step (shattered, saturated or "
            "randomized gradients), so the PGD figure overstates robustness."
        )
    else:
        status = "pass"
        meaning = "Iterating helps, as it should on a model whose gradients can be followed."
    title = "iterative no better than single-step"
    return MaskingCheck("iterative_vs_single_step", title, status, gain, detail, meaning)


def _check_unbounded(acc: float, steps: int, tolerance: float) -> MaskingCheck:
    detail = f"PGD-{steps} started at x, free to reach any input of the box, leaves {_pct(acc)}"
    if acc > tolerance:
        status: Status = "fail"
        meaning = (
            "An attacker who may reach any input still fails, so the attack, not the model, is what "
            "stops: gradients do not lead anywhere (unless the model ignores its input)."
        )
    else:
        status = "pass"
        meaning = "With an unbounded budget the attack drives accuracy to about 0, as it must."
    return MaskingCheck("unbounded_attack", "unbounded ε does not reach 0%", status, acc, detail, meaning)


@dataclass(frozen=True)
class _BlackBox:
    """A black-box attack's outcome beside white-box PGD's, on the correctly classified inputs."""

    name: str
    accuracy: float
    only_black_box: int  # inputs it fools and PGD does not
    only_white_box: int  # inputs PGD fools and it does not


def _check_black_box(results: list[_BlackBox], acc_white: float, tol: float, white: str) -> MaskingCheck:
    if not results:
        return MaskingCheck(
            "black_box_vs_white_box",
            "black-box beats white-box",
            "not run",
            math.nan,
            "no black-box attack applies (Square supports ℓ∞ and ℓ2; pass a surrogate for a transfer attack)",
            "Not checked.",
        )
    advantage = max(acc_white - r.accuracy for r in results)
    parts = [
        f"{r.name} leaves {_pct(r.accuracy)} (it fools {r.only_black_box} inputs the white-box attacks do "
        f"not, they fool {r.only_white_box} it does not)"
        for r in results
    ]
    detail = f"white-box {white} together leave {_pct(acc_white)}; " + "; ".join(parts)
    if advantage > tol:
        status: Status = "fail"
        meaning = (
            "An attack that knows less than the white-box attacks (scores only, or another model's "
            "gradients) does better: the model's own gradients mislead them, so the white-box figure is "
            "not a robustness figure."
        )
    else:
        status = "pass"
        meaning = "The white-box attacks are at least as strong as the black-box one, as they should be."
    title = "black-box beats white-box"
    return MaskingCheck("black_box_vs_white_box", title, status, advantage, detail, meaning)


# ----------------------------------------------------------------------------- entry point


def diagnose_masking(
    model: nn.Module,
    data: Any,
    threat: ThreatModel,
    *,
    num_examples: int = 500,
    steps: int = 20,
    square_queries: int = 300,
    surrogate: nn.Module | None = None,
    grad_tol: float = 1e-8,
    grad_fraction: float = 0.1,
    iterative_tol: float = 0.0,
    unbounded_tol: float = 0.05,
    black_box_tol: float = 0.02,
    batch_size: int = 250,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> MaskingDiagnosis:
    """Run the five gradient-masking checks of Athalye et al. (2018, §3.1) on ``model``.

    With ``N`` the examples used and accuracies counting an example only if it
    is classified correctly clean and under the attack:

    - **zero gradients** fails when more than ``grad_fraction`` of the correctly
      classified inputs have ``ε·‖∇ₓ CE‖_q ≤ grad_tol`` (``q`` the dual norm: the
      first-order rise of the loss the ball allows).
    - **iterative vs single-step** fails when FGSM fools at least 1 % of the
      inputs and leaves some standing, yet PGD-``steps`` (random start; the worst
      case of its cross-entropy and margin-loss runs) gains no more than
      ``iterative_tol`` accuracy over it.
    - **unbounded attack** fails when PGD-``steps`` started at ``x`` with a radius
      holding the whole input box leaves more than ``unbounded_tol`` accuracy. In
      every norm that ball is the box itself, so the attack takes ℓ∞ steps
      (``ε = hi − lo``), which move every coordinate at once.
    - **black-box vs white-box** runs Square (``square_queries`` queries, in every
      norm) and, with a ``surrogate``, PGD transferred from it; it fails when
      either leaves less accuracy than the white-box attacks (the worst case over
      FGSM, PGD and PGD on the margin loss Square uses; at ℓ1 also APGD, whose sparse
      steps are stronger than PGD's one-coordinate ones) by more than ``black_box_tol``.
    - **randomized outputs** fails when two forward passes differ beyond float
      rounding on any input.

    The defaults keep the cost to about ``3·steps`` forward and backward passes and
    ``square_queries`` forward passes per example, a few seconds for a small CNN on a few hundred examples.

    Args:
        model: the classifier, in the mode it will be evaluated in (``eval()``).
        data: a DataLoader or iterable of ``(x, y)``, an ``(x, y)`` pair, or a dataset with ``.x``/``.y``.
        threat: the threat model of the evaluation being diagnosed.
        num_examples: how many examples (the first ones of ``data``) to use.
        steps: PGD steps for checks (b)-(d).
        square_queries: Square's query budget per example in check (d).
        surrogate: optional second model for a transfer attack in check (d).
        grad_tol: the first-order loss rise below which a gradient counts as vanishing.
        grad_fraction: the share of vanishing gradients that fails check (a).
        iterative_tol: the accuracy gain over FGSM at or below which PGD fails check (b).
        unbounded_tol: the accuracy an unbounded attack may leave in check (c).
        black_box_tol: how much lower than PGD's a black-box accuracy may be in check (d).
        batch_size: examples per forward pass.
        seed: seeds the random starts and Square, so the diagnosis is reproducible.
        device: where to run; default: the model's device.

    Returns:
        A :class:`MaskingDiagnosis`; ``.masked`` is True when any check failed.

    Raises:
        ValueError: for bad options, inputs outside ``threat.bounds``, or a model
            that does not return ``(B, C)`` logits.

    References:
        Athalye, Carlini & Wagner. ICML 2018, §3.1 (the symptoms) and §4 (BPDA, EOT).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> class Rounded(torch.nn.Module):  # quantizes its input: zero gradients everywhere
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.linear = torch.nn.Linear(8, 3)
        ...     def forward(self, x):
        ...         return self.linear(torch.round(x))
        >>> x = torch.rand(64, 8)
        >>> model = Rounded().eval()
        >>> y = model(x).argmax(1)
        >>> diag = diagnose_masking(model, (x, y), ThreatModel("linf", 0.3))
        >>> diag.masked, diag["zero_gradients"].status
        (True, 'fail')
    """
    check_positive_int("num_examples", num_examples)
    check_positive_int("steps", steps)
    check_positive_int("square_queries", square_queries)
    check_positive_int("batch_size", batch_size)
    for name, value in [
        ("grad_tol", grad_tol),
        ("grad_fraction", grad_fraction),
        ("iterative_tol", iterative_tol),
        ("unbounded_tol", unbounded_tol),
        ("black_box_tol", black_box_tol),
    ]:
        check_nonnegative(name, value)
    if surrogate is not None and not isinstance(surrogate, nn.Module):
        raise ValueError(f"surrogate must be a torch.nn.Module or None, got {type(surrogate).__name__}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    x, y = _collect(data, num_examples, batch_size, device)
    check_inputs(x, y, threat)
    if isinstance(threat.eps, Tensor):
        raise ValueError("diagnose_masking needs a threat model with one float eps, not per-example radii")
    n = x.shape[0]
    generator = torch.Generator(device=device).manual_seed(seed)

    with torch.no_grad():
        check_logits(model(x[:batch_size]), y[:batch_size])  # name a bad output before anything else
    model = _Connected(model)
    randomness, logits = _check_randomness(model, x, batch_size)
    correct = logits.argmax(1) == y
    clean = float(correct.float().mean())
    gradients, _ = _check_gradients(model, x, y, correct, threat, batch_size, grad_tol, grad_fraction)

    # Attacks run only on the correctly classified inputs; the others count as fooled already.
    idx = correct.nonzero().squeeze(1)
    xc, yc = x[idx], y[idx]

    def accuracy(fooled: Tensor) -> float:
        return float((~fooled).sum()) / n  # inputs misclassified clean count as fooled

    def fooled(attack: Attack) -> Tensor:
        if xc.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=device)
        return _fooled_by(model, attack, xc, yc, batch_size, generator)

    pgd = PGD(threat, steps=steps, early_stop=True)
    fooled_fgsm, fooled_pgd = fooled(FGSM(threat)), fooled(pgd)
    # PGD on the margin loss Square climbs too: the iterative side of (b), and the white-box side of (d)
    # without a loss that saturates (checks (a) and (c) catch that one).
    fooled_margin = fooled(PGD(threat, steps=steps, loss="cw", early_stop=True))
    acc_fgsm, acc_pgd = accuracy(fooled_fgsm), accuracy(fooled_pgd)
    acc_iterative = accuracy(fooled_pgd | fooled_margin)
    iterative = _check_iterative(acc_fgsm, acc_iterative, clean, n, steps, iterative_tol)

    # A ball holding the whole box is the box itself in every norm, so the unbounded attack takes ℓ∞
    # steps, the ones that move every pixel (an ℓ1 step moves a single one).
    lo, hi = threat.box
    whole_box = ThreatModel(Linf(), hi - lo, bounds=threat.bounds)
    unbounded = PGD(whole_box, steps=steps, random_start=False, early_stop=True)
    acc_unbounded = accuracy(fooled(unbounded))
    unbounded_check = _check_unbounded(acc_unbounded, steps, unbounded_tol)

    # White-box: the worst case over FGSM and both PGDs. At ℓ1 a PGD step moves one coordinate, so
    # PGD is weaker than Square-ℓ1 even on a model whose gradients are honest (on the 8×8-digits MLP
    # of the tests Square fooled 14–16 inputs PGD missed); the sparse ℓ1-APGD of "Mind the box" joins
    # the white-box side there, so check (d) compares Square with the strong white-box attack.
    fooled_white = fooled_fgsm | fooled_pgd | fooled_margin
    white = "FGSM and PGD (CE and margin losses)"
    if threat.norm == "l1":
        fooled_white = fooled_white | fooled(build_attack("apgd", threat, steps=steps, early_stop=True))
        white = f"FGSM, PGD (CE and margin losses) and APGD-{steps}"
    acc_white = accuracy(fooled_white)
    results: list[_BlackBox] = []
    black_box: list[tuple[str, Attack]] = []
    if "square" in ATTACKS and threat.norm in ATTACKS["square"].norms:
        black_box.append((f"Square-{square_queries}", build_attack("square", threat, queries=square_queries)))
    if surrogate is not None:
        black_box.append((f"PGD-{steps} transferred from the surrogate", Transfer(threat, surrogate, pgd)))
    for name, attack in black_box:
        fooled_bb = fooled(attack)
        results.append(
            _BlackBox(
                name=name,
                accuracy=accuracy(fooled_bb),
                only_black_box=int((fooled_bb & ~fooled_white).sum()),
                only_white_box=int((fooled_white & ~fooled_bb).sum()),
            )
        )
    black_box_check = _check_black_box(results, acc_white, black_box_tol, white)

    figures = {
        "clean_accuracy": clean,
        "fgsm_accuracy": acc_fgsm,
        "pgd_accuracy": acc_pgd,
        "unbounded_accuracy": acc_unbounded,
        **{f"accuracy[{r.name}]": r.accuracy for r in results},
        "pgd_margin_accuracy": accuracy(fooled_margin),
        "iterative_accuracy": acc_iterative,
        "white_box_accuracy": acc_white,
    }
    return MaskingDiagnosis(
        threat=threat,
        num_examples=n,
        clean_accuracy=clean,
        checks=(gradients, iterative, unbounded_check, black_box_check, randomness),
        figures=figures,
    )


# ----------------------------------------------------------------------------- AutoAttack's own checks
# The checks the reference AutoAttack (fra31/auto-attack, ``checks.py``) runs around its evaluation, each
# as a MaskingCheck to be shown beside the robust accuracy it qualifies (issue 14).

#: The checks of :func:`autoattack_checks`, in the order it reports them.
AUTOATTACK_CHECKS: tuple[str, ...] = (
    "randomized_outputs",
    "probability_outputs",
    "square_vs_gradient_members",
    "eps_and_bounds",
)


def check_randomized_outputs(model: nn.Module, x: Tensor, *, batch_size: int = 250) -> MaskingCheck:
    """Two forward passes on ``x`` that disagree mean a randomized model: warn, naming ``version="rand"``.

    Costs two forward passes per example. When the check fails it also raises a
    :class:`~advlearn.attacks.adaptive.RandomizedOutputsWarning` (a ``UserWarning``) naming the
    fix, ``AutoAttack(threat, version="rand")`` (APGD on
    ``EOT(model, 20)``), or ``advlearn.attacks.EOT`` around the model for any attack.

    Example:
        >>> check_randomized_outputs(torch.nn.Linear(4, 3).eval(), torch.rand(8, 4)).status
        'pass'
    """
    check_positive_int("batch_size", batch_size)
    found, _ = _check_randomness(model, x, batch_size)
    if found.flagged:
        warnings.warn(
            f"the model looks randomized ({found.detail}): its robust accuracy under AutoAttack's "
            "standard version is not reliable; use AutoAttack(threat, version='rand') (APGD on "
            "EOT(model, 20)) or wrap the model in advlearn.attacks.EOT",
            RandomizedOutputsWarning,
            stacklevel=2,
        )
    return found


def check_probability_outputs(
    model: nn.Module, x: Tensor, *, batch_size: int = 250, tolerance: float = 1e-5
) -> MaskingCheck:
    """Fails when the model's outputs look like probabilities (in [0, 1], rows summing to 1), not logits.

    The attacks' losses (cross-entropy, DLR, margins) expect logits: on probabilities a
    softmax is applied twice and the gradients nearly vanish where the model is confident,
    which makes the model look robust. The rule is the reference's. One forward pass per example.

    Example:
        >>> probs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).eval()
        >>> check_probability_outputs(probs, torch.rand(8, 4)).status
        'fail'
    """
    check_positive_int("batch_size", batch_size)
    out = _predict(model, x, batch_size)
    rows_sum_to_one = (out.sum(dim=1) - 1.0).abs() < tolerance
    in_unit = bool((out.min() > -tolerance) & (out.max() < 1.0 + tolerance))
    fraction = float(rows_sum_to_one.float().mean()) if in_unit else 0.0
    detail = (
        f"outputs in [{float(out.min()):.3g}, {float(out.max()):.3g}]; rows summing to 1 (±{tolerance:g}): "
        f"{int(rows_sum_to_one.sum())} of {out.shape[0]}"
    )
    if in_unit and bool(rows_sum_to_one.all()):
        meaning = (
            "The model returns probabilities, not logits: the attacks' losses are computed on a second "
            "softmax and their gradients nearly vanish; evaluate the model without its final softmax."
        )
        status: Status = "fail"
    else:
        meaning = "The outputs are not a probability distribution, so they are taken as logits."
        status = "pass"
    return MaskingCheck(
        "probability_outputs", "probabilities instead of logits", status, fraction, detail, meaning
    )


def check_square_vs_gradient_members(result: Any, *, tolerance: float = 0.002) -> MaskingCheck:
    """Fails when Square, run after the gradient members, still lowers the robust accuracy by more than
    ``tolerance`` (0.2 %, the reference's): a score-based attack should not find what white-box ones missed.

    ``result`` is an :class:`~advlearn.attacks.AutoAttackResult` with a member named ``"Square"``
    (or ``"square"``) after at least one other; the check is "not run" otherwise. Free: it reads the result.
    """
    after = result.accuracy_after()
    names = list(after)
    square = next((i for i, name in enumerate(names) if name.lower().startswith("square")), None)
    title = "Square beats the gradient members"
    if square is None or square == 0:
        return MaskingCheck(
            "square_vs_gradient_members",
            title,
            "not run",
            math.nan,
            "no Square member after a gradient member in this ensemble",
            "Nothing to compare: the check needs Square to run after the gradient attacks.",
        )
    before = min(after[name] for name in names[:square])
    gain = before - after[names[square]]
    detail = (
        f"robust accuracy {_pct(before)} after the gradient members, {_pct(after[names[square]])} after "
        f"Square: Square broke {round(gain * result.robust.numel())} more of {result.robust.numel()}"
    )
    if gain > tolerance:
        meaning = (
            "Square, which only reads scores, broke examples the gradient attacks could not: their gradients "
            "are likely masked; run Square with more queries and restarts, or an adaptive attack (BPDA, EOT)."
        )
        status: Status = "fail"
    else:
        meaning = (
            "Square found (almost) nothing the gradient members missed, as on a model with useful gradients."
        )
        status = "pass"
    return MaskingCheck("square_vs_gradient_members", title, status, gain, detail, meaning)


def check_eps_and_bounds(result: Any, x: Tensor, threat: ThreatModel, *, atol: float = 1e-5) -> MaskingCheck:
    """Fails when a returned point is NaN, outside the ε-ball or outside the box, or when ε holds the whole
    box (ℓ∞ with ``2ε ≥ hi − lo``: every input is reachable, so the figure is no robustness measure).

    ``result`` is anything with ``x_adv`` (an :class:`~advlearn.attacks.AutoAttackResult` or
    :class:`~advlearn.attacks.AttackResult`); ``x`` the clean inputs. The reference prints the same
    figures (largest perturbation, NaNs, range) after its evaluation. Free: no model call.

    Example:
        >>> from types import SimpleNamespace
        >>> x = torch.full((2, 3), 0.5)
        >>> check_eps_and_bounds(SimpleNamespace(x_adv=x + 0.2), x, ThreatModel("linf", 0.1)).status
        'fail'
    """
    x_adv = result.x_adv
    delta = (x_adv - x).reshape(x.shape[0], -1)
    nans = int(torch.isnan(x_adv.reshape(x.shape[0], -1)).any(dim=1).sum())
    norms = threat.norm(delta)
    eps = threat.eps_for(x)
    outside = ~threat.contains(torch.nan_to_num(x_adv, nan=math.inf), x, atol=atol)
    largest = float(norms.max()) if norms.numel() else 0.0
    covers_box = False
    box = ""
    if threat.bounds is not None:
        lo, hi = threat.bounds
        covers_box = threat.norm.ball_is_box and bool((2 * eps >= hi - lo).any())
        box = f", inputs in [{float(x_adv.min()):.4g}, {float(x_adv.max()):.4g}] for the box [{lo:g}, {hi:g}]"
    detail = (
        f"largest {threat.norm.symbol} perturbation {largest:.5g} for ε up to {float(eps.max()):.5g}{box}; "
        f"{int(outside.sum())} points outside the threat set, {nans} with NaN"
    )
    if nans or bool(outside.any()):
        meaning = (
            "Some points are not valid adversarial examples (NaN, or outside ball ∩ box): the robust "
            "accuracy does not measure robustness at this ε; check the attack."
        )
        status: Status = "fail"
    elif covers_box:
        meaning = (
            "ε is half the box or more: every input lies in the ball, so no model can be robust at this ε."
        )
        status = "fail"
    else:
        meaning = "Every point lies in the ε-ball and the box, and ε leaves part of the box out of reach."
        status = "pass"
    figure = float(largest - float(eps.max())) if norms.numel() else 0.0
    return MaskingCheck("eps_and_bounds", "ε and bounds sanity", status, figure, detail, meaning)


def autoattack_checks(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, result: Any, *, batch_size: int = 250
) -> tuple[MaskingCheck, ...]:
    """AutoAttack's own checks on its own result, in the order of :data:`AUTOATTACK_CHECKS`.

    ``result`` is the :class:`~advlearn.attacks.AutoAttackResult` of ``AutoAttack(threat).evaluate(model, x,
    y)``. Costs three forward passes per example (two for the randomized check, one for the
    probabilities); the other two read the result. Show them beside its robust accuracy.

    Raises:
        ValueError: for inputs outside ``threat.bounds`` or a model that does not return logits.
    """
    check_inputs(x, y, threat)
    return (
        check_randomized_outputs(model, x, batch_size=batch_size),
        check_probability_outputs(model, x, batch_size=batch_size),
        check_square_vs_gradient_members(result),
        check_eps_and_bounds(result, x, threat),
    )


__all__ = [
    "AUTOATTACK_CHECKS",
    "CHECKS",
    "MaskingCheck",
    "MaskingDiagnosis",
    "autoattack_checks",
    "check_eps_and_bounds",
    "check_probability_outputs",
    "check_randomized_outputs",
    "check_square_vs_gradient_members",
    "diagnose_masking",
]
