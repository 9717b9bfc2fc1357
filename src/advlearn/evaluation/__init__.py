"""Honest measurement: clean and robust accuracy, the per-example worst case over
several attacks, confidence on errors, and accuracy-vs-ε sweeps.

Robust accuracy here counts an example only if the model classifies it
correctly clean *and* under the attack; the worst case counts it only if it
survives every attack. Every number comes with the count it was measured on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlearn import _distributed as dist
from advlearn._checks import check_batch, check_logits, untouched_batchnorm
from advlearn._keyed_random import KeyedGenerator
from advlearn._precision import check_precision, fast_model, to_memory_format
from advlearn.attacks import APGD, APGDT, FGSM, PGD, Attack, AttackResult, AutoAttack
from advlearn.attacks._progress import silenced
from advlearn.data import Data, batches  # re-exported: `from advlearn.evaluation import batches` still works
from advlearn.diagnostics import CHECKS, MaskingCheck, MaskingDiagnosis, diagnose_masking
from advlearn.evaluation._progress import count_examples, counted, example_bar, summary
from advlearn.threat import Norm, ThreatModel


def default_attacks(threat: ThreatModel) -> dict[str, Attack]:
    """FGSM, PGD-40 with 5 restarts and early exit, and the AutoAttack ensemble (the strongest).

    FGSM and PGD stay beside the ensemble so that a report shows how much the stronger
    attack adds (a large gap between FGSM and the rest hints at gradient masking).
    """
    return {
        "FGSM": FGSM(threat),
        "PGD-40x5": PGD(threat, steps=40, restarts=5, early_stop=True),
        "AutoAttack": AutoAttack(threat),
    }


@dataclass(frozen=True)
class Evaluation:
    """Accuracy of one model on one dataset under one threat model.

    Attributes:
        threat: the threat model every attack ran under.
        num_examples: how many examples every figure is measured on.
        clean_accuracy: fraction classified correctly without attack.
        robust_accuracy: per attack, the fraction correct clean and under that attack.
        worst_case_accuracy: the fraction correct clean and under every attack.
        confidence_on_errors: mean softmax probability the model gives its
            (wrong) prediction on the examples it gets wrong, clean and per
            attack; NaN where there are no errors.
        correct: per-example correctness, clean and per attack, ``(N,)`` bool tensors on the CPU.
        certified: certified (provable, lower-bound) accuracy under the same threat model by
            method, e.g. ``{"IBP": 0.42}``; filled in by :mod:`advlearn.certify` callers, empty
            when not measured. The true robust accuracy lies between the best of these and
            ``worst_case_accuracy`` (an upper bound, since attacks can miss); see :attr:`gap`.
        max_perturbation: per attack, the largest ``‖x_adv − x‖`` in the threat's norm over every
            point scored (each was checked to lie in the threat set); empty when not measured.
        nan_count: clean and per attack, how many examples got a NaN or Inf logit (such an
            example is counted wrong); empty when not measured.
    """

    threat: ThreatModel
    num_examples: int
    clean_accuracy: float
    robust_accuracy: dict[str, float]
    worst_case_accuracy: float
    confidence_on_errors: dict[str, float]
    correct: dict[str, Tensor] = field(repr=False)
    certified: dict[str, float] = field(default_factory=dict)
    max_perturbation: dict[str, float] = field(default_factory=dict)
    nan_count: dict[str, int] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Empirical robust accuracy (worst case over the attacks) minus the best certified accuracy.

        The width of the interval known to hold the true robust accuracy; NaN without a certificate.
        (A randomized-smoothing entry certifies the smoothed classifier rather than the model the
        attacks ran on, so with one the interval is a comparison of two related classifiers.)
        """
        if not self.certified:
            return float("nan")
        return self.worst_case_accuracy - max(self.certified.values())

    def table(self) -> list[dict[str, Any]]:
        """One row per line of the results table: clean, each attack, the worst case, each certificate.

        Each row is ``{"attack", "accuracy", "error", "confidence_on_errors", "max_perturbation",
        "nan_count"}`` (the last two NaN and 0 where not measured: clean, worst case, certificates).
        """
        rows = [("clean", self.clean_accuracy), *self.robust_accuracy.items()]
        if len(self.robust_accuracy) > 1:
            rows.append(("worst case", self.worst_case_accuracy))
        rows += [(f"certified ({name})", acc) for name, acc in self.certified.items()]
        return [
            {
                "attack": name,
                "accuracy": acc,
                "error": 1.0 - acc,
                "confidence_on_errors": self.confidence_on_errors.get(name, float("nan")),
                "max_perturbation": self.max_perturbation.get(name, float("nan")),
                "nan_count": self.nan_count.get(name, 0),
            }
            for name, acc in rows
        ]


def named_attacks(attacks: dict[str, Attack] | Sequence[Attack]) -> dict[str, Attack]:
    """The attacks by name: a dict as given, a sequence named by class, made unique by configuration.

    Two attacks of one class in a list are named by the options in which they differ,
    ``PGD(steps=40, restarts=3)`` and ``PGD(steps=1, step_size=0.001)``, so neither
    overwrites the other's figure.

    Raises:
        ValueError: for an item that is not an :class:`~advlearn.attacks.Attack`, or the
            same attack (equal configs) listed twice.

    Example:
        >>> threat = ThreatModel("linf", 0.1)
        >>> list(named_attacks([FGSM(threat), PGD(threat, steps=40, restarts=3), PGD(threat, steps=1)]))
        ['FGSM', 'PGD(steps=40, restarts=3)', 'PGD(steps=1, restarts=1)']
    """
    if isinstance(attacks, dict):
        for name, attack in attacks.items():
            if not isinstance(attack, Attack):
                raise ValueError(f"attacks[{name!r}] must be an advlearn Attack, got {type(attack).__name__}")
        return dict(attacks)
    if isinstance(attacks, (str, bytes)) or not isinstance(attacks, Sequence):
        raise ValueError(f"attacks must be a dict of name -> Attack or a list of Attacks, got {attacks!r}")
    items = list(attacks)
    for i, attack in enumerate(items):
        if not isinstance(attack, Attack):
            raise ValueError(f"attacks[{i}] must be an advlearn Attack, got {type(attack).__name__}")
        for j in range(i):
            if items[j] == attack:
                raise ValueError(
                    f"attacks[{j}] and attacks[{i}] are the same attack ({attack}); list each attack once"
                )
    by_class: dict[str, list[Attack]] = {}
    for attack in items:
        by_class.setdefault(type(attack).__name__, []).append(attack)
    names = {}
    for attack in items:
        cls = type(attack).__name__
        same = by_class[cls]
        if len(same) == 1:
            names[id(attack)] = cls
            continue
        fields: list[str] = (
            [f.name for f in dataclasses.fields(attack)] if dataclasses.is_dataclass(attack) else []
        )
        differ = [f for f in fields if any(getattr(other, f) != getattr(attack, f) for other in same)]
        shown = ", ".join(f"{f}={_short(getattr(attack, f))}" for f in differ)
        names[id(attack)] = f"{cls}({shown})" if shown else f"{cls}#{same.index(attack)}"
    out = {names[id(a)]: a for a in items}
    if len(out) != len(items):  # two configs that differ only in ways that print alike
        out = {f"{names[id(a)]}#{i}": a for i, a in enumerate(items)}
    return out


def _short(value: object) -> str:
    if isinstance(value, ThreatModel):
        return value.label
    return repr(value)


def _confidence_of_errors(logits: Tensor, y: Tensor) -> tuple[float, int]:
    """Sum of the predicted class's probability over wrong predictions, and their count."""
    probs = logits.softmax(dim=1)
    conf, pred = probs.max(dim=1)
    wrong = pred != y
    return float(conf[wrong].sum()), int(wrong.sum())


def _one_threat(attacks: dict[str, Attack], threat: ThreatModel | None) -> ThreatModel:
    """The threat model every attack runs under: ``threat`` if given, else the attacks' shared one.

    Raises:
        ValueError: naming the first attack whose threat model differs.
    """
    if threat is None:
        if not attacks:
            raise ValueError("evaluate needs a threat model or at least one attack that carries one")
        threat = next(iter(attacks.values())).threat
        source = f"attack {next(iter(attacks))!r}"
    else:
        source = "the threat argument"
    for name, attack in attacks.items():
        if attack.threat != threat:
            raise ValueError(
                f"attack {name!r} runs under {attack.threat}, not {threat} (from {source}); "
                "an evaluation measures one threat model, so build every attack from the same one"
            )
    return threat


def evaluate(
    model: nn.Module,
    data: Data,
    threat: ThreatModel | None = None,
    attacks: dict[str, Attack] | Sequence[Attack] | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    quiet: bool = False,
    precision: str = "32",
    memory_format: str = "contiguous",
    compile: bool = False,
) -> Evaluation:
    """Clean accuracy, robust accuracy per attack, the per-example worst case and confidence on errors.

    Args:
        model: the classifier; evaluated in the mode it is in (put it in ``eval()`` first).
        data: a DataLoader (or any iterable of ``(x, y)``), an ``(x, y)`` pair,
            or a dataset with ``.x``/``.y``.
        threat: the threat model; ``None`` takes it from the attacks, which carry it (the
            single source: every attack's own threat must equal it either way).
        attacks: named attacks (a dict) or a sequence (named by class, two of one class by
            the options they differ in: :func:`named_attacks`); ``None`` means
            :func:`default_attacks` of ``threat``.
        batch_size: batch size when ``data`` is tensors; an :class:`~advlearn.attacks.AutoAttack`
            whose own ``batch_size`` is ``None`` runs in chunks of it. Every other attack runs
            batch by batch; an AutoAttack runs once, after them, over every example (this rank's
            under torchrun), so that its members get full chunks of the examples still standing:
            the examples are then held on ``device`` (with its points, about three copies).
        device: where to run; default: the model's device.
        seed: keys the attacks' random draws (with each example's index in ``data`` and the
            attack's place in ``attacks``), so the figures are reproducible and the same
            whatever ``batch_size``, the early exit or the number of torchrun ranks.
        quiet: no progress bars: the one over the batches and, for an AutoAttack, its bar per member.
        precision: ``"32"``, ``"bf16"`` or ``"fp16"``: the model's forward passes run under
            ``torch.autocast`` (:class:`~advlearn._precision.FastModel`); the inputs, the attacks'
            perturbations and the ε-ball checks stay float32, so every scored point is in the set.
        memory_format: ``"channels_last"`` for the model and each 4-D batch.
        compile: run the model through ``torch.compile`` (eager, with a warning, where it fails).

    Returns:
        An :class:`Evaluation`.

    Raises:
        ValueError: for attacks under different threat models (or another than ``threat``),
            neither a threat nor an attack, data without examples, a bad batch (the attacks'
            checks, the model's dtype, its output's shape), the same attack listed twice, or an
            attack returning a point outside the threat set or holding NaN (every scored point is
            checked: :func:`check_attack_output`).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        >>> x, y = torch.rand(32, 1, 2, 2), torch.randint(0, 3, (32,))
        >>> threat = ThreatModel("linf", 0.1)
        >>> ev = evaluate(model, (x, y), threat, [FGSM(threat), PGD(threat, steps=10)], quiet=True)
        >>> ev.worst_case_accuracy <= min(ev.robust_accuracy.values()) <= ev.clean_accuracy
        True
    """
    if attacks is None:
        if threat is None:
            raise ValueError("evaluate needs a threat model or attacks that carry one")
        attacks = default_attacks(threat)
    attacks = named_attacks(attacks)
    threat = _one_threat(attacks, threat)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    check_precision(precision, device)
    model = fast_model(model, precision=precision, memory_format=memory_format, compile=compile)

    correct: dict[str, list[Tensor]] = {name: [] for name in ["clean", *attacks]}
    conf_sum = dict.fromkeys(correct, 0.0)
    conf_count = dict.fromkeys(correct, 0)
    biggest = dict.fromkeys(attacks, 0.0)
    nan_count = dict.fromkeys(correct, 0)
    started = time.perf_counter()
    quiet = quiet or not dist.is_main()
    bar = example_bar(count_examples(data), "evaluate", quiet)
    own: list[int] = []  # under torchrun, the batches this rank evaluates: b ≡ rank (mod world size)
    offset = 0  # the index in data of the batch's first example: what the attacks' random draws are keyed by
    # AutoAttack runs once over every batch of this rank, after the others: its members then get full
    # chunks of the examples still standing instead of a batch's few survivors.
    whole = {
        name: (stream, a) for stream, (name, a) in enumerate(attacks.items()) if isinstance(a, AutoAttack)
    }
    held: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # (x, y, keys, clean_ok) of each own batch

    def score(name: str, x: Tensor, y: Tensor, clean_ok: Tensor, x_adv: Tensor) -> None:
        biggest[name] = max(biggest[name], check_attack_output(name, x_adv, x, threat))
        with torch.no_grad():
            adv_logits = check_logits(model(x_adv), y)
        finite = adv_logits.isfinite().all(dim=1)
        nan_count[name] += int((~finite).sum())
        # A NaN/Inf logit has no argmax worth trusting: such an example is not counted robust.
        correct[name].append((clean_ok & finite & (adv_logits.argmax(1) == y)).cpu())
        s, c = _confidence_of_errors(adv_logits, y)
        conf_sum[name], conf_count[name] = conf_sum[name] + s, conf_count[name] + c

    # Train-mode BatchNorm normalizes by the batch but keeps its running statistics (untouched_batchnorm).
    # quiet also silences the bars drawn inside attacks (AutoAttack's bar per member).
    with untouched_batchnorm(model, "evaluate"), silenced(quiet):
        for index, (x, y) in enumerate(batches(data, batch_size)):
            keys = torch.arange(offset, offset + int(y.shape[0]), device=device)
            offset += int(y.shape[0])
            if index % dist.world_size() != dist.rank():
                bar.update(int(y.shape[0]))
                continue
            own.append(index)
            x, y = check_batch(
                model, x.to(device, non_blocking=True), y.to(device, non_blocking=True), threat
            )
            x = to_memory_format(x, model)
            with torch.no_grad():
                logits = check_logits(model(x), y)
            finite = logits.isfinite().all(dim=1)
            nan_count["clean"] += int((~finite).sum())
            clean_ok = finite & (logits.argmax(1) == y)
            correct["clean"].append(clean_ok.cpu())
            s, c = _confidence_of_errors(logits, y)
            conf_sum["clean"], conf_count["clean"] = conf_sum["clean"] + s, conf_count["clean"] + c
            if whole:
                held.append((x, y, keys, clean_ok))
            for stream, (name, attack) in enumerate(attacks.items()):
                if name in whole:
                    continue
                bar.set_postfix_str(name)  # which attack the examples of this batch are under now
                # keyed by (seed, attack, example): the same draws whatever the batching or rank count
                generator = KeyedGenerator(seed, keys, stream, device)
                out = attack.run(model, x, y, generator=generator)
                score(name, x, y, clean_ok, out.x_adv if isinstance(out, AttackResult) else out)
            bar.update(int(y.shape[0]))
        bar.close()
        for name, (stream, attack) in whole.items() if held else ():
            # One call over the rank's examples, in chunks of the caller's batch size (unless the
            # attack sets its own), keyed by the same (seed, attack, example) as a call per batch.
            xs, ys, keys = (torch.cat([h[i] for h in held]) for i in range(3))
            generator = KeyedGenerator(seed, keys, stream, device)
            found = attack.evaluate(
                model, xs, ys, generator=generator, batch_size=attack.batch_size or batch_size
            ).x_adv
            for (x, y, _, clean_ok), x_adv in zip(held, found.split([len(h[1]) for h in held]), strict=True):
                score(name, x, y, clean_ok, x_adv)
    if dist.active():  # every rank's per-example flags, back in batch order, and the sums
        correct, conf_sum, conf_count, biggest, nan_count = _gather_shards(
            own, correct, conf_sum, conf_count, biggest, nan_count
        )

    flags = {name: torch.cat(v) if v else torch.zeros(0, dtype=torch.bool) for name, v in correct.items()}
    n = int(flags["clean"].numel())
    if n == 0:
        raise ValueError("data yielded no examples")
    worst = flags["clean"].clone()
    for name in attacks:
        worst &= flags[name]
    per_attack = "".join(f", {name} {float(flags[name].float().mean()):.1%}" for name in attacks)
    summary(
        f"evaluate: {n} examples, clean {float(flags['clean'].float().mean()):.1%}{per_attack}"
        + (f", worst case {float(worst.float().mean()):.1%}" if len(attacks) > 1 else "")
        + f" ({time.perf_counter() - started:.0f} s)",
        quiet,
    )
    return Evaluation(
        threat=threat,
        num_examples=n,
        clean_accuracy=float(flags["clean"].float().mean()),
        robust_accuracy={name: float(flags[name].float().mean()) for name in attacks},
        worst_case_accuracy=float(worst.float().mean()),
        confidence_on_errors={
            name: conf_sum[name] / conf_count[name] if conf_count[name] else float("nan") for name in flags
        },
        correct=flags,
        max_perturbation=biggest,
        nan_count=nan_count,
    )


def _gather_shards(
    own: list[int],
    correct: dict[str, list[Tensor]],
    conf_sum: dict[str, float],
    conf_count: dict[str, int],
    biggest: dict[str, float],
    nan_count: dict[str, int],
) -> tuple[dict[str, list[Tensor]], dict[str, float], dict[str, int], dict[str, float], dict[str, int]]:
    """Merge what each rank of a sharded :func:`evaluate` measured: flags in batch order, sums, maxima."""
    shards = dist.gather((own, correct, conf_sum, conf_count, nan_count, biggest))
    order = sorted((index, r, i) for r, shard in enumerate(shards) for i, index in enumerate(shard[0]))
    return (
        {name: [shards[r][1][name][i] for _, r, i in order] for name in correct},
        {k: sum(shard[2][k] for shard in shards) for k in conf_sum},
        {k: sum(shard[3][k] for shard in shards) for k in conf_count},
        {k: max(shard[5][k] for shard in shards) for k in biggest},
        {k: sum(shard[4][k] for shard in shards) for k in nan_count},
    )


def check_attack_output(name: str, x_adv: object, x: Tensor, threat: ThreatModel) -> float:
    """The largest ``‖x_adv − x‖`` (in the threat's norm), after checking every point lies in ``S(x)``.

    Every point that counts toward a robust-accuracy figure passes through here.

    Raises:
        ValueError: naming the attack ``name``, when ``x_adv`` is not a tensor shaped like
            ``x``, holds NaN, or has a point outside the threat set (with the largest distance).
    """
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
        shape = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
        raise ValueError(f"attack {name!r} returned {shape}, not points shaped like x {tuple(x.shape)}")
    if x_adv.numel() == 0:
        return 0.0
    nan = int(x_adv.isnan().reshape(x_adv.shape[0], -1).any(dim=1).sum())
    if nan:
        raise ValueError(f"attack {name!r} returned {nan} point(s) holding NaN; they cannot be scored")
    inside = threat.contains(x_adv, x)
    dist = threat.norm(x_adv.float() - x.float())  # in float32, like threat.contains
    if not bool(inside.all()):
        lo, hi = threat.bounds if threat.bounds is not None else (float("-inf"), float("inf"))
        raise ValueError(
            f"attack {name!r} returned {int((~inside).sum())} point(s) outside the threat set "
            f"({threat.label}, bounds ({lo:g}, {hi:g})): the largest {threat.norm.symbol} distance is "
            f"{float(dist.max()):.6g}, the box [{float(x_adv.min()):.6g}, {float(x_adv.max()):.6g}]; "
            "an attack must return points of S(x) (project with threat.project(x_adv, x))"
        )
    return float(dist.max())


@dataclass(frozen=True)
class EpsSweep:
    """Accuracy against the radius: ``accuracy[i]`` is the worst case over the attacks at ``eps[i]``.

    Attributes:
        threat: the threat model swept (its norm and box); the ball at ``eps[i]`` is
            ``threats[i] = threat.with_eps(eps[i])``.
        eps: the radii, in the order measured.
        accuracy: the worst-case accuracy at each radius.
        num_examples: how many examples each accuracy is measured on.
    """

    threat: ThreatModel
    eps: list[float]
    accuracy: list[float]
    num_examples: int

    @property
    def threats(self) -> list[ThreatModel]:
        """The threat model of every point of the sweep."""
        return [self.threat.with_eps(e) for e in self.eps]

    @property
    def norm(self) -> Norm:
        """The norm swept."""
        return self.threat.norm

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``results.json``: ``{"norm", "eps", "accuracy", "num_examples"}``."""
        return {
            "norm": self.norm.name,
            "eps": list(self.eps),
            "accuracy": list(self.accuracy),
            "num_examples": self.num_examples,
        }


def sweep_attacks(threat: ThreatModel) -> dict[str, Attack]:
    """The attacks :func:`accuracy_vs_eps` runs at every radius by default: APGD-CE and APGD-T.

    Sized for a sweep: per example and radius, APGD-CE costs 100 forward-backward passes and
    APGD-T 9 × 100 (one run per target class, at most ``C − 1``), both with early exit on
    examples already fooled (``early_stop=True``, as in AutoAttack), so a sweep of ``k`` radii
    costs about ``k`` AutoAttack evaluations without Square's 5,000 queries. Run the full
    ensemble (:func:`default_attacks`) at the evaluation ε only; the sweep checks
    (:func:`advlearn.diagnostics.check_sweep`) flag a sweep point weaker than that table.
    """
    return {"APGD-CE": APGD(threat, early_stop=True), "APGD-T": APGDT(threat, early_stop=True)}


def accuracy_vs_eps(
    model: nn.Module,
    data: Data,
    threat: ThreatModel,
    eps_values: Iterable[float],
    attacks: dict[str, Attack] | Sequence[Attack] | None = None,
    *,
    batch_size: int = 256,
    seed: int = 0,
    quiet: bool = False,
) -> EpsSweep:
    """Worst-case accuracy over ``attacks`` at each radius in ``eps_values``.

    Each attack is rebuilt at every radius with its threat's ε replaced, so its
    other settings (steps, restarts, loss) stay as given. At ε = 0 no attack runs: the
    answer is the clean accuracy (one forward pass per example).

    Cost: ``attacks=None`` means :func:`sweep_attacks` (APGD-CE + APGD-T): about
    1,000 forward-backward passes per example and nonzero radius before early exit. One
    progress bar counts examples over all nonzero radii (total and ETA); a summary line
    with every point is left when the sweep ends.
    """
    if attacks is None:
        attacks = sweep_attacks(threat)
    attacks = named_attacks(attacks)
    quiet = quiet or not dist.is_main()  # under torchrun: one bar and one summary, rank 0's
    eps_list = [float(e) for e in eps_values]
    accuracy = []
    n = 0
    started = time.perf_counter()
    per_pass = count_examples(data)
    attacked = sum(1 for e in eps_list if e != 0.0)
    bar = example_bar(per_pass * attacked if per_pass is not None else None, "eps sweep", quiet)
    for eps in eps_list:
        at_eps = threat.with_eps(eps)
        if eps == 0.0:  # the ball is the point itself: clean accuracy, no attack to run
            ev = evaluate(model, data, at_eps, {}, batch_size=batch_size, seed=seed, quiet=True)
        else:
            rebuilt = {name: dataclasses.replace(a, threat=at_eps) for name, a in attacks.items()}  # type: ignore[type-var]
            bar.set_postfix_str(f"eps={eps:g}")
            ev = evaluate(
                model,
                counted(data, batch_size, bar),
                at_eps,
                rebuilt,
                batch_size=batch_size,
                seed=seed,
                quiet=True,
            )
        accuracy.append(ev.worst_case_accuracy)
        n = ev.num_examples
    bar.close()
    points = ", ".join(f"{e:g}: {a:.1%}" for e, a in zip(eps_list, accuracy, strict=True))
    summary(
        f"eps sweep ({threat.norm.name}, {', '.join(attacks)}), {n} examples: {points} "
        f"({time.perf_counter() - started:.0f} s)",
        quiet,
    )
    return EpsSweep(threat=threat, eps=eps_list, accuracy=accuracy, num_examples=n)


@dataclass(frozen=True)
class Examples:
    """Clean inputs beside their adversarial versions, with what the model says about each.

    Tensors are on the CPU; ``x`` and ``x_adv`` have shape ``(N, C, H, W)``,
    the rest ``(N,)``. ``conf_*`` is the softmax probability of the predicted class.
    """

    x: Tensor
    x_adv: Tensor
    y: Tensor
    pred_clean: Tensor
    conf_clean: Tensor
    pred_adv: Tensor
    conf_adv: Tensor
    attack: str


def adversarial_examples(
    model: nn.Module, x: Tensor, y: Tensor, attack: Attack, *, name: str = "", seed: int = 0
) -> Examples:
    """Attack ``(x, y)``; record predictions and confidences before and after ("panda → gibbon")."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, y = x.to(device), y.to(device)
    x_adv = attack.run(model, x, y, generator=torch.Generator(device=device).manual_seed(seed)).x_adv
    with torch.no_grad():
        conf_clean, pred_clean = model(x).softmax(1).max(1)
        conf_adv, pred_adv = model(x_adv).softmax(1).max(1)
    return Examples(
        x=x.cpu(),
        x_adv=x_adv.cpu(),
        y=y.cpu(),
        pred_clean=pred_clean.cpu(),
        conf_clean=conf_clean.cpu(),
        pred_adv=pred_adv.cpu(),
        conf_adv=conf_adv.cpu(),
        attack=name or type(attack).__name__,
    )


@dataclass(frozen=True)
class TransferMatrix:
    """Accuracy of every model on adversarial examples crafted on every model (Goodfellow's table).

    Row ``i`` is the source the examples were crafted on, column ``j`` the target
    that classifies them; the diagonal is each model's white-box robust accuracy.
    An entry counts an example only if the target classifies it correctly both
    clean and after the transfer (the convention of :class:`Evaluation`).

    Attributes:
        names: the models' names, in row and column order.
        accuracy: ``accuracy[i][j]``, the target ``names[j]``'s accuracy on examples from ``names[i]``.
        correct: the counts behind ``accuracy`` (out of ``num_examples``).
        clean_accuracy: each model's clean accuracy on the same examples.
        num_examples: how many examples every entry is measured on.
        attack: the name of the attack run on each source.
    """

    names: list[str]
    accuracy: list[list[float]]
    correct: list[list[int]]
    clean_accuracy: dict[str, float]
    num_examples: int
    attack: str

    def __getitem__(self, pair: tuple[str, str]) -> float:
        """``matrix["standard", "pgd-at"]``: ``pgd-at``'s accuracy on the examples crafted on ``standard``."""
        source, target = pair
        try:
            return self.accuracy[self.names.index(source)][self.names.index(target)]
        except ValueError:
            raise KeyError(f"no model named {source!r} or {target!r}; the models are {self.names}") from None

    def table(self) -> list[dict[str, Any]]:
        """One row per (source, target): ``{"source", "target", "accuracy", "correct", "num_examples"}``."""
        return [
            {
                "source": source,
                "target": target,
                "accuracy": self.accuracy[i][j],
                "correct": self.correct[i][j],
                "num_examples": self.num_examples,
            }
            for i, source in enumerate(self.names)
            for j, target in enumerate(self.names)
        ]


def transfer_matrix(
    models: dict[str, nn.Module],
    data: Data,
    attack: Attack,
    *,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
    quiet: bool = False,
) -> TransferMatrix:
    """Craft adversarial examples on each model and measure every model's accuracy on them.

    The table of Goodfellow et al. (2015, §8 and Table 1 of Kurakin et al.
    2017): examples from a standard model evaluated on an adversarially trained
    one and the reverse. Each source model is attacked once per batch (with its
    own random stream, seeded by ``seed``, so the diagonal equals
    :func:`evaluate` of that model under ``attack`` with the same seed); every
    target then classifies the result with one forward pass.

    Args:
        models: the models by name; they play both roles, and should all be in
            ``eval()`` mode and on one device.
        data: a DataLoader or iterable of ``(x, y)``, an ``(x, y)`` pair, or a dataset with ``.x``/``.y``.
        attack: the attack run on each source, e.g. ``PGD(threat, steps=20)``.
        batch_size: batch size when ``data`` is tensors.
        seed: seeds each source's random stream.
        device: where to run; default: the first model's device.
        quiet: no progress bar.

    Returns:
        A :class:`TransferMatrix`.

    Raises:
        ValueError: for no models, a value that is not a module, or an ``attack``
            that is not an :class:`~advlearn.attacks.Attack`.

    References:
        Goodfellow, Shlens & Szegedy. Explaining and harnessing adversarial
        examples. ICLR 2015, §8. Papernot, McDaniel & Goodfellow. Transferability
        in machine learning. arXiv:1605.07277, 2016.

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> models = {name: torch.nn.Linear(4, 3).eval() for name in ("a", "b")}
        >>> x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
        >>> matrix = transfer_matrix(models, (x, y), FGSM(ThreatModel("linf", 0.1)), quiet=True)
        >>> matrix.names, len(matrix.accuracy), matrix.num_examples
        (['a', 'b'], 2, 16)
    """
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict of name -> torch.nn.Module")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise ValueError(f"models[{name!r}] must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(attack, Attack):
        raise ValueError(f"attack must be an advlearn Attack config, got {type(attack).__name__}")
    names = list(models)
    if device is None:
        first = models[names[0]]
        device = next((p.device for p in first.parameters()), torch.device("cpu"))
    correct = [[0] * len(names) for _ in names]
    clean = dict.fromkeys(names, 0)
    n = 0
    for x, y in tqdm(batches(data, batch_size), desc="transfer", disable=quiet, leave=False):
        x, y = x.to(device), y.to(device)
        # the draws evaluate() makes for its first attack on these examples: keyed by (seed, 0, index)
        keys = torch.arange(n, n + int(x.shape[0]), device=device)
        n += x.shape[0]
        with torch.no_grad():
            clean_ok = {name: models[name](x).argmax(1) == y for name in names}
        for name in names:
            clean[name] += int(clean_ok[name].sum())
        for i, source in enumerate(names):
            generator = KeyedGenerator(seed, keys, 0, device)
            x_adv = attack.run(models[source], x, y, generator=generator).x_adv
            check_attack_output(type(attack).__name__, x_adv, x, attack.threat)
            for j, target in enumerate(names):
                with torch.no_grad():
                    ok = clean_ok[target] & (models[target](x_adv).argmax(1) == y)
                correct[i][j] += int(ok.sum())
    if n == 0:
        raise ValueError("data yielded no examples")
    return TransferMatrix(
        names=names,
        accuracy=[[c / n for c in row] for row in correct],
        correct=correct,
        clean_accuracy={name: clean[name] / n for name in names},
        num_examples=n,
        attack=type(attack).__name__,
    )


from advlearn.evaluation.benchmark import benchmark  # noqa: E402  (it uses the functions above)

__all__ = [
    "CHECKS",
    "EpsSweep",
    "Evaluation",
    "Examples",
    "MaskingCheck",
    "MaskingDiagnosis",
    "TransferMatrix",
    "accuracy_vs_eps",
    "adversarial_examples",
    "batches",
    "benchmark",
    "check_attack_output",
    "default_attacks",
    "diagnose_masking",
    "evaluate",
    "named_attacks",
    "sweep_attacks",
    "transfer_matrix",
]
