"""The main job: train models, attack them, write a report.

``advlearn run`` trains a standard and a PGD-AT ``small_cnn`` on MNIST-5k at
ε = 0.3 (ℓ∞), evaluates both under FGSM, PGD-40 with restarts and the AutoAttack
ensemble (its fast version), sweeps ε, runs the gradient-masking checks on each model
(:func:`~advlearn.evaluation.diagnose_masking`), certifies 200 test examples in ℓ2 by randomized
smoothing (:func:`smooth_one`), runs the transfer matrix between them,
and writes everything into ``runs/<name>/``:

- ``config.toml``: the config as resolved (defaults filled in);
- ``<label>/model.safetensors`` and ``<label>/model.json``: each model's weights and metadata;
- ``<label>/metrics.jsonl``, ``<label>/train_state.pt``: per-epoch metrics and the resumable training state;
- ``metrics.jsonl``: every epoch record and every evaluation row, tagged by model;
- ``results.json``, ``report.html``, ``report.md`` and the PNGs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import advlearn
from advlearn import _distributed as dist
from advlearn._io import atomic_write_text, first_line
from advlearn.attacks import PGD, Attack, build_attack
from advlearn.attacks._progress import silenced
from advlearn.certify.smoothing import SmoothingCertificates
from advlearn.checkpoint import save_model
from advlearn.config import (
    ConfigError,
    DataConfig,
    EvaluateConfig,
    ExperimentConfig,
    Named,
    TrainConfig,
    dumps,
    parse_config,
    parse_toml,
    to_dict,
    with_key,
)
from advlearn.data import Dataset, DataSplit, load_dataset
from advlearn.evaluation import (
    Evaluation,
    TransferMatrix,
    accuracy_vs_eps,
    adversarial_examples,
    diagnose_masking,
    evaluate,
    transfer_matrix,
)
from advlearn.experiments._run_folder import claim_run_folder, folder_lock, make_folder
from advlearn.models import build_model
from advlearn.report import ModelReport, format_table, write_report
from advlearn.threat import ThreatModel
from advlearn.training import History, Trainer, build_objective, lr_schedule, resolve_device, seed_everything
from advlearn.training.optim import OPTIMIZERS, build_optimizer

logger = logging.getLogger(__name__)


# A token ensemble for the smoke run: the same code path as the real one at a tiny budget.
_QUICK_ENSEMBLE = [
    {"name": "apgd", "steps": 5, "early_stop": True},
    {"name": "apgd_t", "steps": 5, "num_targets": 2, "early_stop": True},
    {"name": "square", "queries": 20},
]


def default_config(quick: bool = False, certified: bool = False) -> ExperimentConfig:
    """The main job's config: standard vs PGD-AT ``small_cnn`` on MNIST-5k at ℓ∞ ε = 0.3.

    ``quick`` shrinks everything to a smoke run of well under a minute (the
    tests use it); its figures mean nothing. ``certified`` adds a third model, an ``ibp_cnn``
    (Gowal et al.'s "small" net, IBP init; its own ``train[2].model``) trained with IBP (Gowal et al.:
    per-step ε ramp to ``train_eps = 0.4``, κ 1 → 0.5, 7,600 steps of batch 50; ``advlearn run
    --certified``), with ``bench/certified_training.py``'s settings, so the report's certified column
    and its verified-vs-ε figure have a non-trivial row; off by default (about three forward and
    backward passes of a smaller net a step).
    """
    model = Named("small_cnn", {"channels": [16, 32], "hidden": 256})
    standard = TrainConfig(label="standard", epochs=4, lr=2e-3, schedule=Named("onecycle"))
    robust = TrainConfig(
        label="pgd-at",
        objective=Named("pgd_at", {"steps": 5, "step_size": 0.1, "eps_warmup": 5}),
        epochs=36,
        lr=2e-3,
        schedule=Named("onecycle"),
    )
    evaluation = EvaluateConfig(
        # FGSM and PGD show what a weak and a standard attack find; the AutoAttack ensemble is the
        # figure to trust. Its "fast" version (APGD-T on 3 targets, 1,000 Square queries) keeps the CI
        # run short; `advlearn evaluate` defaults to the standard version.
        attacks=(
            Named("fgsm"),
            Named("pgd", {"steps": 40, "restarts": 3, "early_stop": True}),
            Named("autoattack", {"version": "fast"}),
        ),
        eps_sweep=(0.0, 0.1, 0.2, 0.25, 0.3, 0.4),
        sweep_attack=Named("pgd", {"steps": 20, "early_stop": True}),
        smoothing_examples=200,  # ℓ2 certificates by randomized smoothing: about 30 s a model (smooth_one)
    )
    trainings: tuple[TrainConfig, ...] = (standard, robust)
    if certified:
        # bench/certified_training.py's schedule: 3,800 digits / 50 = 76 steps an epoch, 5 nominal
        # epochs, a 40-epoch ramp, 55 at the full ε (ibp_cnn there: 92% verified at ε = 0.1).
        ibp = Named("ibp", {"train_eps": 0.4, "kappa": 0.5, "warmup_steps": 380, "ramp_steps": 3040})
        trainings += (
            TrainConfig(
                label="ibp",
                model=Named("ibp_cnn", {"channels": [16, 32], "hidden": 100, "init": "ibp"}),
                objective=ibp,
                epochs=100,
                batch_size=50,
                lr=1e-3,
                schedule=Named("piecewise", {"milestones": [0.8, 0.9]}),
            ),
        )
    cfg = ExperimentConfig(
        name="mnist5k-linf-0.3",
        data=DataConfig(val_size=200),
        model=model,
        train=trainings,
        evaluate=evaluation,
    )
    if quick:
        cfg = dataclasses.replace(
            cfg,
            name="mnist5k-linf-0.3-quick",
            data=DataConfig(val_size=100),
            train=tuple(
                dataclasses.replace(t, epochs=1, val_attack=Named("pgd", {"steps": 2, "early_stop": True}))
                for t in (
                    standard,
                    dataclasses.replace(robust, objective=Named("pgd_at", {"steps": 2})),
                    *trainings[2:],
                )
            ),
            evaluate=EvaluateConfig(
                attacks=(
                    Named("fgsm"),
                    Named("pgd", {"steps": 5, "restarts": 2, "early_stop": True}),
                    Named("autoattack", {"version": "custom", "attacks": _QUICK_ENSEMBLE}),
                ),
                eps_sweep=(0.0, 0.15, 0.3),
                sweep_attack=Named("pgd", {"steps": 3, "early_stop": True}),
                num_examples=200,
            ),
        )
    return cfg


@dataclass(frozen=True)
class RunResult:
    """What a run produced: where, the evaluations by model label, and how long it took."""

    run_dir: Path
    evaluations: dict[str, Evaluation]
    seconds: float
    html: Path | None = None


def _split_validation(train: Dataset, val_size: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """Hold out ``val_size`` random training examples for validation (never the test split)."""
    if val_size == 0:
        return train, None
    if val_size >= len(train):
        raise ConfigError(f"data.val_size: {val_size} leaves no training data ({len(train)} examples)")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:]), train.subset(order[:val_size])


def _attack(key: str, spec: Named, threat: ThreatModel) -> Attack:
    attack: Attack = with_key(key, build_attack, spec.name, threat, **spec.options)
    return attack


def _describe(spec: Named) -> str:
    """A short display name: ``pgd`` with steps 40 and restarts 3 → ``PGD-40x3``."""
    if spec.name == "autoattack":
        version = spec.options.get("version", "standard")
        return "AutoAttack" if version == "standard" else f"AutoAttack-{version}"
    steps, restarts = spec.options.get("steps"), spec.options.get("restarts", 1)
    name = spec.name.upper() if spec.name in ("fgsm", "pgd") else spec.name
    if steps is not None:
        name += f"-{steps}"
        if restarts and restarts > 1:
            name += f"x{restarts}"
    return name


def load_data(cfg: ExperimentConfig) -> DataSplit:
    """The configured dataset, with registry errors named by their config key."""
    split: DataSplit = with_key("data", load_dataset, cfg.data.name, **cfg.data.options)
    return split


def model_spec(cfg: ExperimentConfig, index: int | None = None) -> tuple[str, Named]:
    """Training ``index``'s architecture and its config key: ``train[i].model``, else the run's ``model``.

    Example:
        >>> cfg = default_config(quick=True, certified=True)
        >>> [(key, spec.name) for key, spec in (model_spec(cfg, i) for i in range(3))]
        [('model', 'small_cnn'), ('model', 'small_cnn'), ('train[2].model', 'ibp_cnn')]
    """
    spec = None if index is None else cfg.train[index].model
    return ("model", cfg.model) if spec is None else (f"train[{index}].model", spec)


def build_configured_model(cfg: ExperimentConfig, data: Dataset, index: int | None = None) -> nn.Module:
    """The model of training ``index`` (:func:`model_spec`) for ``data``'s input shape and classes."""
    key, spec = model_spec(cfg, index)
    in_shape = tuple(data.x.shape[1:])
    model: nn.Module = with_key(
        key,
        build_model,
        spec.name,
        in_shape=in_shape,
        num_classes=data.num_classes,
        **spec.options,
    )
    return model


def train_one(
    cfg: ExperimentConfig,
    tcfg: TrainConfig,
    index: int,
    split: DataSplit,
    run_dir: Path,
    *,
    quiet: bool = False,
    resume: bool = False,
) -> tuple[nn.Module, History]:
    """Train the model described by ``tcfg`` and save it into ``run_dir/<label>/``."""
    key = f"train[{index}]"
    threat = cfg.threat  # parsed once, by the config
    device = resolve_device(cfg.device)
    train, val = _split_validation(split.train, cfg.data.val_size, cfg.seed)
    seed_everything(cfg.seed)
    model = build_configured_model(cfg, split.train, index).to(device)
    objective = with_key(
        f"{key}.objective", build_objective, tcfg.objective.name, threat, **tcfg.objective.options
    )
    # The config's shared hyperparameters, as far as the optimizer takes them (momentum is SGD's alone).
    hyper = {"lr": tcfg.lr, "momentum": tcfg.momentum, "weight_decay": tcfg.weight_decay}
    optimizer_options = {k: v for k, v in hyper.items() if k in OPTIMIZERS.fields(tcfg.optimizer)}
    optimizer = build_optimizer(tcfg.optimizer, model.parameters(), **optimizer_options)
    schedule = with_key(f"{key}.schedule", lr_schedule, tcfg.schedule.name, **tcfg.schedule.options)
    val_attack = _attack(f"{key}.val_attack", tcfg.val_attack, threat) if val is not None else None
    model_dir = run_dir / tcfg.label
    trainer = Trainer(
        model,
        objective,
        optimizer,
        schedule=schedule,
        val_attack=val_attack,
        early_stopping=tcfg.early_stopping or None,
        run_dir=model_dir,
        device=device,
        seed=cfg.seed,
        quiet=quiet,
        precision=cfg.precision,
        memory_format=cfg.memory_format,
        compile=cfg.compile,
    )
    if not quiet:
        print(
            f"training {tcfg.label!r}: {model_spec(cfg, index)[1].name}, {tcfg.objective.name}, "
            f"{tcfg.epochs} epochs, {len(train)} examples"
        )
    pin = device.type == "cuda"  # page-locked batches: the Trainer's non_blocking copies overlap compute
    # The loader shuffles with torch's global RNG, which the Trainer seeds and checkpoints: exact resume.
    history = trainer.fit(
        train.loader(tcfg.batch_size, shuffle=True, num_workers=cfg.num_workers, pin_memory=pin),
        val.loader(500, num_workers=cfg.num_workers, pin_memory=pin) if val is not None else None,
        epochs=tcfg.epochs,
        resume=resume,
    )
    model.eval()
    if not dist.is_main():  # under torchrun rank 0 alone writes the run folder
        return model, history
    _, spec = model_spec(cfg, index)
    save_model(
        model_dir,
        model,
        name=spec.name,
        options={
            "in_shape": list(split.train.x.shape[1:]),
            "num_classes": split.train.num_classes,
            **spec.options,
        },
        metadata={
            "label": tcfg.label,
            "objective": tcfg.objective.to_toml(),
            "threat": to_dict(cfg.threat),
            "data": {"name": cfg.data.name, **cfg.data.options},
            "epochs": len(history.records),
            "best_epoch": history.best_epoch,
        },
    )
    return model, history


def evaluate_one(
    cfg: ExperimentConfig, label: str, model: nn.Module, test: Dataset, *, quiet: bool = False
) -> ModelReport:
    """Evaluate one trained model as the config says: attacks, ε sweep, example grid."""
    threat = cfg.threat  # parsed once, by the config
    ev_cfg = cfg.evaluate
    if ev_cfg.num_examples:
        test = test.subset(min(ev_cfg.num_examples, len(test)))
    attacks = {
        _describe(spec): _attack(f"evaluate.attacks[{i}]", spec, threat)
        for i, spec in enumerate(ev_cfg.attacks)
    }
    model.eval()
    # The attacks carry the threat model: evaluate takes it from them.
    evaluation = evaluate(
        model, (test.x, test.y), attacks=attacks, batch_size=ev_cfg.batch_size, seed=cfg.seed, quiet=quiet
    )
    # The provable lower bound beside the attacks' upper bound: IBP costs about two forward passes.
    from advlearn.certify import certified_accuracies

    certified = certified_accuracies(
        model, (test.x, test.y), threat, batch_size=ev_cfg.batch_size, quiet=quiet
    )
    evaluation = dataclasses.replace(evaluation, certified=certified)
    sweep = None
    if ev_cfg.eps_sweep:
        sweep_attack = _attack("evaluate.sweep_attack", ev_cfg.sweep_attack, threat)
        sweep = accuracy_vs_eps(
            model,
            (test.x, test.y),
            threat,
            ev_cfg.eps_sweep,
            {_describe(ev_cfg.sweep_attack): sweep_attack},
            batch_size=ev_cfg.batch_size,
            seed=cfg.seed,
            quiet=quiet,
        )
    # The verified curve beside the empirical one: IBP at every radius of the sweep (two forwards each).
    certified_sweep: list[tuple[float, float]] = []
    if sweep is not None and "IBP" in certified:
        from advlearn.certify import verified_accuracy

        data = (test.x, test.y)
        certified_sweep = [
            (
                float(e),
                verified_accuracy(model, data, threat.with_eps(float(e)), batch_size=ev_cfg.batch_size),
            )
            for e in ev_cfg.eps_sweep
        ]
    examples = None
    if ev_cfg.examples:
        strongest_name, strongest = list(attacks.items())[-1]
        n = min(ev_cfg.examples, len(test))
        with silenced(quiet):  # a grid of a few examples: no bars inside its attack under --quiet
            examples = adversarial_examples(
                model, test.x[:n], test.y[:n], strongest, name=strongest_name, seed=cfg.seed
            )
    # The gradient-masking checks (Athalye et al. 2018) on at most 500 of the same examples: seconds.
    diagnosis = diagnose_masking(
        model,
        (test.x, test.y),
        threat,
        num_examples=min(len(test), DIAGNOSIS_EXAMPLES),
        batch_size=ev_cfg.batch_size,
        seed=cfg.seed,
    )
    smoothing = None
    if ev_cfg.smoothing_examples:
        smoothing = smooth_one(model, test, ev_cfg.smoothing_examples, seed=cfg.seed, quiet=quiet)
    return ModelReport(
        label=label,
        evaluation=evaluation,
        sweep=sweep,
        examples=examples,
        diagnosis=diagnosis,
        certified_sweep=certified_sweep,
        smoothing=smoothing,
    )


#: Randomized smoothing in the report: σ, selection and estimation samples, failure probability, batch.
SMOOTHING = {"sigma": 0.25, "n0": 32, "n": 500, "alpha": 0.001, "batch_size": 1000}


def smooth_one(
    model: nn.Module, test: Dataset, num_examples: int, *, seed: int = 0, quiet: bool = False
) -> SmoothingCertificates:
    """Randomized-smoothing certificates (Cohen et al. 2019) of ``model`` on the first test examples.

    At :data:`SMOOTHING`'s settings (σ = 0.25, n0 = 32, n = 500, α = 0.001) each
    example costs 532 forward passes of noisy copies, batched across examples
    (:func:`~advlearn.certify.certify_dataset`); the main job's 200 examples per
    model are 106,400 forwards of its small CNN: 57 s of CPU time measured for one
    model (2 threads, on a machine shared by others), i.e. about 30 s on 2 CPU cores,
    about a minute for the main job's two models. With
    n = 500 no radius beyond σ·Φ⁻¹(α^(1/n)) ≈ 0.55 can be certified. The noise has
    its own seeded generator, so the rest of the evaluation's draws do not change.
    """
    from advlearn.certify import Smooth, certify_dataset

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    test = test.subset(min(num_examples, len(test)))
    settings = dict(SMOOTHING)
    smooth = Smooth(model, test.num_classes, float(settings.pop("sigma")))
    generator = torch.Generator(device=device).manual_seed(seed)
    return certify_dataset(
        smooth,
        test.x,
        test.y,
        n0=int(settings["n0"]),
        n=int(settings["n"]),
        alpha=float(settings["alpha"]),
        batch_size=int(settings["batch_size"]),
        generator=generator,
        quiet=quiet,
    )


#: How many test examples the gradient-masking checks and the transfer matrix use at most.
DIAGNOSIS_EXAMPLES = 500


def transfer_between(
    cfg: ExperimentConfig, models: dict[str, nn.Module], test: Dataset, *, quiet: bool = False
) -> TransferMatrix:
    """Goodfellow's table between the trained models: PGD-20 examples from each, evaluated on each.

    PGD runs without early exit, so each example is the highest-loss point found,
    the kind that transfers best; at most :data:`DIAGNOSIS_EXAMPLES` test examples.
    """
    threat = cfg.threat  # parsed once, by the config
    test = test.subset(min(len(test), cfg.evaluate.num_examples or len(test), DIAGNOSIS_EXAMPLES))
    for model in models.values():
        model.eval()
    return transfer_matrix(
        models,
        (test.x, test.y),
        PGD(threat, steps=20),
        batch_size=cfg.evaluate.batch_size,
        seed=cfg.seed,
        quiet=quiet,
    )


def _check_bounds(cfg: ExperimentConfig, split: DataSplit) -> None:
    """Refuse a threat model whose box is narrower than the data: no clean input would be a valid point."""
    lo, hi = cfg.threat.bounds if cfg.threat.bounds is not None else (-math.inf, math.inf)
    xs = [d.x for d in (split.train, split.test) if d.x.numel()]
    if not xs:
        return
    xmin, xmax = min(float(x.min()) for x in xs), max(float(x.max()) for x in xs)
    if xmin < lo or xmax > hi:
        raise ConfigError(
            f"threat.bounds: the data's inputs span [{xmin:g}, {xmax:g}], outside the bounds "
            f"[{lo:g}, {hi:g}]; set threat.bounds to cover the data"
        )


def _check_schedule(key: str, spec: Named) -> None:
    schedule = with_key(key, lr_schedule, spec.name, **spec.options)
    for progress in (0.0, 0.5, 0.999):
        factor = with_key(key, schedule, progress)
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
            raise ConfigError(f"{key}: the schedule gives the factor {factor!r} at progress {progress}")


def validate(cfg: ExperimentConfig) -> DataSplit:
    """Check the whole resolved config before any work, and return the loaded data.

    Beyond what :func:`~advlearn.config.parse_config` checks (types, ranges, names), every
    registry entry is built as the run will build it: the device, the dataset (and that
    ``threat.bounds`` cover its inputs), the model (on the meta device: no memory, and its size
    bounded by :func:`~advlearn.models.registry.max_parameters`), and for every ``[[train]]``
    table the objective, optimizer, schedule and validation attack, then the ``[evaluate]``
    attacks and sweep attack. Costs one dataset load (seconds for the embedded sets).

    Raises:
        ConfigError: the first problem found, naming its key.
    """
    with_key("device", resolve_device, cfg.device)
    split = load_data(cfg)
    _check_bounds(cfg, split)
    _split_validation(split.train, cfg.data.val_size, cfg.seed)
    for index in (None, *range(len(cfg.train))):  # the run's model, then each training's own
        with torch.random.fork_rng(devices=[]):
            try:
                with torch.device("meta"):
                    build_configured_model(cfg, split.train, index)
            except (NotImplementedError, RuntimeError):  # a builder that cannot build on the meta device
                build_configured_model(cfg, split.train, index)
    for i, tcfg in enumerate(cfg.train):
        key = f"train[{i}]"
        with_key(
            f"{key}.objective", build_objective, tcfg.objective.name, cfg.threat, **tcfg.objective.options
        )
        hyper = {"lr": tcfg.lr, "momentum": tcfg.momentum, "weight_decay": tcfg.weight_decay}
        options = {k: v for k, v in hyper.items() if k in OPTIMIZERS.fields(tcfg.optimizer)}
        probe = [nn.Parameter(torch.zeros(1))]
        with_key(f"{key}.optimizer", build_optimizer, tcfg.optimizer, probe, **options)
        _check_schedule(f"{key}.schedule", tcfg.schedule)
        _attack(f"{key}.val_attack", tcfg.val_attack, cfg.threat)  # checked even when val_size is 0
    ev = cfg.evaluate
    for i, spec in enumerate(ev.attacks):
        _attack(f"evaluate.attacks[{i}]", spec, cfg.threat)
    if ev.eps_sweep:
        _attack("evaluate.sweep_attack", ev.sweep_attack, cfg.threat)
    return split


def _check_same_config(config_file: Path, cfg: ExperimentConfig) -> None:
    """Refuse to resume a run started with another config; where the folder lives does not count."""
    try:
        stored = parse_config(parse_toml(config_file.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{config_file}: cannot read the run's config ({first_line(err)}); "
            "start over with --overwrite or pick a new --name"
        ) from None
    if dataclasses.replace(stored, name=cfg.name, out_dir=cfg.out_dir) != cfg:
        old, new = to_dict(stored), to_dict(cfg)
        changed = sorted(k for k in new if k not in ("name", "out_dir") and old.get(k) != new[k])
        raise ConfigError(
            f"{config_file}: the run was started with another config (differs in: {', '.join(changed)}); "
            "resume it with that one, or pass --overwrite or a new --name"
        )


def run_experiment(
    cfg: ExperimentConfig,
    *,
    quiet: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    evaluate_models: bool = True,
) -> RunResult:
    """Train every model of ``cfg``; unless ``evaluate_models`` is off, evaluate them and write the report.

    The whole config is checked first (:func:`validate`); only then is the run folder
    ``out_dir/name`` touched. A folder holding a run is refused unless ``resume`` (with the
    same config; ``name`` and ``out_dir`` may differ, the folder may have moved) or
    ``overwrite`` (its contents are deleted first) is given; the folder is locked while the run
    writes (:func:`~advlearn.experiments._run_folder.folder_lock`), and ``config.toml`` is
    written once the run really starts.

    Raises:
        ConfigError: a bad config or a run folder that cannot be used, in one line.
    """
    started = time.perf_counter()
    split = validate(cfg)
    run_dir = make_folder(Path(cfg.out_dir) / cfg.name)
    if not dist.is_main():  # the other ranks of a torchrun job: rank 0 claims the folder, they follow it
        resuming = dist.broadcast(False)
        return _run(
            cfg, split, run_dir, started, quiet=True, resume=resuming, evaluate_models=evaluate_models
        )
    with folder_lock(run_dir):
        resuming = claim_run_folder(run_dir, resume=resume, overwrite=overwrite)
        config_file = run_dir / "config.toml"
        if resuming:
            _check_same_config(config_file, cfg)
        else:
            atomic_write_text(config_file, dumps(cfg))
        dist.broadcast(resuming)
        return _run(
            cfg, split, run_dir, started, quiet=quiet, resume=resuming, evaluate_models=evaluate_models
        )


def _smoothing_dict(certificates: SmoothingCertificates) -> dict[str, object]:
    c = certificates
    settings = {"sigma": c.sigma, "n0": c.n0, "n": c.n, "alpha": c.alpha, "num_examples": c.num_examples}
    radii = [c.sigma * k for k in (0.0, 0.5, 1.0, 1.5, 2.0)]
    curve = dict(zip((f"{r:g}" for r in radii), c.certified_accuracy(radii).tolist(), strict=True))
    abstained = float((c.predictions < 0).double().mean())
    return {**settings, "certified_accuracy": curve, "abstained": abstained, "radii": c.radii.tolist()}


def _run(
    cfg: ExperimentConfig,
    split: DataSplit,
    run_dir: Path,
    started: float,
    *,
    quiet: bool,
    resume: bool,
    evaluate_models: bool,
) -> RunResult:
    reports: list[ModelReport] = []
    lines: list[str] = []
    trained: dict[str, nn.Module] = {}
    for i, tcfg in enumerate(cfg.train):
        try:
            model, history = train_one(cfg, tcfg, i, split, run_dir, quiet=quiet, resume=resume)
        except FloatingPointError as err:  # a diverging loss: the last finished epoch stays on disk
            state = run_dir / tcfg.label / Trainer.STATE_FILE
            kept = (
                f"the last finished epoch is kept in {state}" if state.exists() else "no epoch had finished"
            )
            raise ConfigError(
                f"train[{i}] ({tcfg.label!r}): {err}; {kept}; "
                f"lower train[{i}].lr and start over with --overwrite"
            ) from None
        lines += [json.dumps({"model": tcfg.label, **r}) for r in history.records]
        if evaluate_models:
            trained[tcfg.label] = model
            report = evaluate_one(cfg, tcfg.label, model, split.test, quiet=quiet)
            reports.append(dataclasses.replace(report, history=list(history.records)))
            lines += [json.dumps({"model": tcfg.label, **row}) for row in report.evaluation.table()]
    transfer = transfer_between(cfg, trained, split.test, quiet=quiet) if len(trained) > 1 else None
    if not dist.is_main():
        return RunResult(run_dir=run_dir, evaluations={}, seconds=time.perf_counter() - started, html=None)
    atomic_write_text(run_dir / "metrics.jsonl", "".join(line + "\n" for line in lines))
    seconds = time.perf_counter() - started
    evaluations = {r.label: r.evaluation for r in reports}
    html = None
    if evaluate_models:
        # each training's own model (train[i].model) or the run's: named in results.json and the report
        architectures = {t.label: model_spec(cfg, i)[1].to_toml() for i, t in enumerate(cfg.train)}
        results = {
            "advlearn_version": advlearn.__version__,
            "torch_version": torch.__version__,
            "seconds": seconds,
            "models": {label: ev.table() for label, ev in evaluations.items()},
            "architectures": architectures,
            "eps_sweeps": {r.label: r.sweep.to_dict() for r in reports if r.sweep is not None},
            "verified_sweeps": {r.label: r.certified_sweep for r in reports if r.certified_sweep},
            "masking_diagnostics": {r.label: r.diagnosis.table() for r in reports if r.diagnosis is not None},
            "transfer": dataclasses.asdict(transfer) if transfer is not None else None,
            "smoothing": {r.label: _smoothing_dict(r.smoothing) for r in reports if r.smoothing is not None},
        }
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2, allow_nan=True) + "\n")
        html, _ = write_report(
            run_dir,
            title=f"advlearn run: {cfg.name}",
            models=reports,
            config_text=dumps(cfg),
            notes=[
                f"Wall time {seconds:.0f} s on {resolve_device(cfg.device)} with torch {torch.__version__}.",
                "Architectures: "
                + "; ".join(f"{t.label}: {model_spec(cfg, i)[1].name}" for i, t in enumerate(cfg.train))
                + ".",
            ],
            class_names=split.test.class_names,
            transfer=transfer,
        )
    return RunResult(run_dir=run_dir, evaluations=evaluations, seconds=seconds, html=html)


__all__ = [
    "RunResult",
    "default_config",
    "evaluate_one",
    "format_table",
    "run_experiment",
    "train_one",
    "validate",
]
