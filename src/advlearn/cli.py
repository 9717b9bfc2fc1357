"""The ``advlearn`` command line. Thin: it parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import advlearn
from advlearn.threat import NORMS, Linf


def _fraction(text: str) -> float:
    """Parse ``"8/255"`` or ``"0.03"`` exactly, without eval."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number or fraction like 8/255") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["steps=40", "loss=dlr"]`` → ``{"steps": 40, "loss": "dlr"}``, values read as TOML scalars."""
    from advlearn.config import TOMLDecodeError, parse_toml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"option {pair!r} must look like key=value (e.g. -o steps=40)")
        try:
            out[key] = parse_toml(f"v = {value}")["v"]
        except TOMLDecodeError:
            out[key] = value  # a bare word: a string
    return out


# ----------------------------------------------------------------------------- commands


def _demo(args: argparse.Namespace) -> int:
    from advlearn.experiments.digits_demo import run_demo

    result = run_demo(eps=args.eps, seed=args.seed, quiet=args.quiet)
    print(f"8x8 digits, MLP 64-128-10, {result.num_test} held-out images, L-inf eps = {result.eps:g}")
    print()
    width = max(map(len, result.accuracy))
    print(f"| {'attack':<{width}} | accuracy |")
    print(f"|{'-' * (width + 2)}|----------|")
    for name, acc in result.accuracy.items():
        print(f"| {name:<{width}} | {acc:8.1%} |")
    return 0


def _load_config(args: argparse.Namespace) -> Any:
    import dataclasses

    from advlearn.config import check_config, load_config
    from advlearn.experiments.main_job import default_config

    for flag in ("quick", "certified"):
        if args.config and getattr(args, flag, False):
            # both shape the built-in main job only; they have no meaning for a user's config
            raise ValueError(
                f"--{flag} changes the built-in main job only; drop CONFIG to use it, or edit CONFIG "
                "(lower epochs and evaluate.num_examples for a smoke run; configs/digits_quick.toml is small)"
            )
    cfg = (
        load_config(args.config)
        if args.config
        else default_config(quick=getattr(args, "quick", False), certified=getattr(args, "certified", False))
    )
    if getattr(args, "name", None) is not None:
        cfg = dataclasses.replace(cfg, name=args.name)
    if getattr(args, "out_dir", None) is not None:
        cfg = dataclasses.replace(cfg, out_dir=args.out_dir)
    if getattr(args, "precision", None) is not None:
        cfg = dataclasses.replace(cfg, precision=args.precision)
    return check_config(cfg)


def _resume_hint(args: argparse.Namespace, cfg: Any) -> str:
    """The command that continues an interrupted run."""
    import shlex

    parts = ["advlearn", args.command]
    if args.config:
        parts.append(args.config)
    elif getattr(args, "quick", False):
        parts.append("--quick")
    parts += ["--name", cfg.name, "--out-dir", cfg.out_dir, "--resume"]
    return " ".join(shlex.quote(p) for p in parts)


def _interrupted(args: argparse.Namespace, cfg: Any) -> int:
    run_dir = Path(cfg.out_dir) / cfg.name
    print(
        f"advlearn {args.command}: interrupted; {run_dir} keeps every finished epoch; "
        f"continue with: {_resume_hint(args, cfg)}",
        file=sys.stderr,
    )
    return 130


def _run(args: argparse.Namespace) -> int:
    from advlearn.experiments.main_job import run_experiment
    from advlearn.report import format_table

    cfg = _load_config(args)
    try:
        result = run_experiment(cfg, quiet=args.quiet, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        return _interrupted(args, cfg)
    print()
    print(format_table(result.evaluations))
    print()
    print(f"wrote {result.run_dir}/ in {result.seconds:.0f} s; open {result.html}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from advlearn import _distributed as dist
    from advlearn.experiments.main_job import run_experiment

    cfg = _load_config(args)
    if args.nproc is not None and not dist.launched():  # run this very command on N ranks
        from advlearn.training.distributed import launch, torchrun_command

        torchrun_command(args.nproc, [], device=cfg.device)  # refuses more ranks than the machine has
        for i, tcfg in enumerate(cfg.train):
            if tcfg.batch_size % args.nproc:
                raise ValueError(
                    f"train[{i}].batch_size {tcfg.batch_size} cannot be split evenly across --nproc "
                    f"{args.nproc} ranks (it is the global batch); use a multiple of {args.nproc}"
                )
        argv = [a for i, a in enumerate(args.argv) if not _is_nproc(args.argv, i)]
        return launch(args.nproc, argv, device=cfg.device)
    dist.init_from_env(cfg.device)
    try:
        result = run_experiment(
            cfg, quiet=args.quiet, resume=args.resume, overwrite=args.overwrite, evaluate_models=False
        )
    except KeyboardInterrupt:
        return _interrupted(args, cfg)
    labels = ", ".join(t.label for t in cfg.train)
    if not dist.is_main():
        return 0
    print(f"trained {labels} into {result.run_dir}/ in {result.seconds:.0f} s")
    return 0


def _is_nproc(argv: Sequence[str], i: int) -> bool:
    """Whether ``argv[i]`` is ``--nproc``, its value, or ``--nproc=N`` (dropped when launching torchrun)."""
    return argv[i] == "--nproc" or argv[i].startswith("--nproc=") or (i > 0 and argv[i - 1] == "--nproc")


def _threat_from_args(args: argparse.Namespace) -> Any:
    """``--norm``, ``--eps``, ``--lower``, ``--upper`` as a ThreatModel; an absurd radius is refused."""
    from advlearn.config import MAX_EPS_RATIO
    from advlearn.threat import ThreatModel

    threat = ThreatModel(args.norm, args.eps, (args.lower, args.upper))
    if args.eps > MAX_EPS_RATIO * (args.upper - args.lower):
        raise ValueError(
            f"--eps {args.eps:g} is over {MAX_EPS_RATIO:g} times the width of the bounds "
            f"[{args.lower:g}, {args.upper:g}]; a radius that large is a typo"
        )
    return threat


def _attack_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    from advlearn.attacks import build_attack

    threat = _threat_from_args(args)
    return threat, build_attack(args.attack, threat, **_options(args.option))


def _data_spec(args: argparse.Namespace) -> Any:
    """The dataset from ``--data`` (``NAME`` or ``NAME:PATH``) and ``--data-option``; ``None`` if not given
    (then a run folder's model.json says which data its model saw)."""
    from advlearn.config import Named
    from advlearn.data.registry import parse_data_spec

    if not args.data:
        return None
    name, options = parse_data_spec(args.data)
    return Named(name, {**options, **_options(args.data_option)})


def _model_spec(args: argparse.Namespace) -> Any:
    """``--model``, ``--arch``, ``--arch-option``, ``--model-factory`` and ``--normalize`` as a ModelSpec."""
    from advlearn.experiments.saved_model import ModelSpec
    from advlearn.models.loading import parse_normalize

    if args.model is None and args.model_factory is None:
        raise ValueError(
            "pass --model PATH (a run folder, weights file, TorchScript or .pt2) or --model-factory"
        )
    if args.arch and args.model_factory:
        raise ValueError("--arch and --model-factory both say how to build the model; pass one")
    return ModelSpec(
        path=args.model,
        arch=args.arch,
        arch_options=_options(args.arch_option),
        factory=args.model_factory,
        normalize=parse_normalize(args.normalize) if args.normalize else None,
    )


def _evaluate(args: argparse.Namespace) -> int:
    from advlearn import _distributed as dist
    from advlearn.experiments.saved_model import evaluate_saved
    from advlearn.report import format_table

    threat, attack = _attack_from_args(args)
    spec = _model_spec(args)
    if dist.init_from_env(args.device) and args.report:
        raise ValueError("--report runs in one process; drop torchrun (or --report) to write a report")
    if args.report and args.precision != "32":
        raise ValueError(
            f"--report runs in float32 (its IBP bounds need it); "
            f"drop --precision {args.precision} or --report"
        )
    if args.report:
        from advlearn.experiments.saved_model import benchmark_saved

        out = benchmark_saved(
            spec,
            _data_spec(args),
            threat,
            {args.attack: attack},
            args.report,
            split=args.split,
            num_examples=args.num_examples,
            batch_size=args.batch_size,
            device=args.device,
            seed=args.seed,
            quiet=args.quiet,
            smooth_sigma=args.smooth_sigma,
        )
        print(f"wrote {out}/report.html, report.md and results.json")
        return 0
    evaluation = evaluate_saved(
        spec,
        _data_spec(args),
        threat,
        {args.attack: attack},
        split=args.split,
        num_examples=args.num_examples,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        quiet=args.quiet,
        smooth_sigma=args.smooth_sigma,
        smooth_n=args.smooth_n,
        precision=args.precision,
    )
    if not dist.is_main():  # under torchrun every rank evaluated its shard; rank 0 prints the whole
        return 0
    print(format_table({spec.label: evaluation}))
    if evaluation.certified:
        best = max(evaluation.certified, key=lambda k: evaluation.certified[k])
        print(
            f"robust accuracy lies in [{evaluation.certified[best]:.1%} certified ({best}), "
            f"{evaluation.worst_case_accuracy:.1%} empirical]: a gap of {100 * evaluation.gap:.1f} points"
        )
        if best.startswith("smoothing"):
            print("(randomized smoothing certifies the smoothed classifier, not the model the attack ran on)")
    return 0


def _attack(args: argparse.Namespace) -> int:
    from advlearn.experiments.saved_model import write_adversarial_examples

    _, attack = _attack_from_args(args)
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name such as {args.out}/adversarial.npz")
    examples, png = write_adversarial_examples(
        _model_spec(args),
        _data_spec(args),
        attack,
        args.out,
        split=args.split,
        num_examples=args.num_examples,
        name=args.attack,
        device=args.device,
        seed=args.seed,
        precision=args.precision,
    )
    fooled = float((examples.pred_adv != examples.y).float().mean())
    n = examples.y.shape[0]
    print(f"wrote {n} adversarial examples to {args.out} and a grid to {png}; {fooled:.1%} misclassified")
    return 0


def _certify(args: argparse.Namespace) -> int:
    from advlearn.experiments.certify_job import certify_saved

    if args.method == "ibp" and args.eps is None:
        raise ValueError("--method ibp needs --eps, the radius to report verified accuracy at")
    threat = _threat_from_args(args) if args.eps is not None else None
    run = certify_saved(
        _model_spec(args),
        _data_spec(args),
        split=args.split,
        device=args.device,
        method=args.method,
        sigma=args.sigma,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch_size=args.batch_size,
        threat=threat,
        num_examples=args.num_examples,
        seed=args.seed,
        out=args.out,
        quiet=args.quiet,
    )
    s = run.summary
    if args.method == "smoothing":
        print(
            f"randomized smoothing, sigma = {s['sigma']:g}, n0 = {s['n0']}, n = {s['n']:,}, "
            f"alpha = {s['alpha']:g}, {s['num_examples']} examples, {s['abstained']:.1%} abstained, "
            f"{s['seconds']:.1f} s"
        )
    else:
        print(
            f"IBP, {s['norm']} eps = {s['eps']:g} (through the l-inf box), {s['num_examples']} examples: "
            f"verified accuracy {s['verified_accuracy']:.1%} (clean {s['clean_accuracy']:.1%}), "
            f"{s['seconds']:.1f} s"
        )
    print("| radius | certified accuracy |")
    print("|-------:|-------------------:|")
    for radius, accuracy in run.curve[:: max(1, len(run.curve) // 8)]:
        print(f"| {radius:6.3f} | {accuracy:18.1%} |")
    print(f"wrote {run.out}/certify.tsv, certified_accuracy.png and summary.json")
    return 0


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch CPU threads (``None``: unchanged), then restore the count."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _gan(args: argparse.Namespace) -> int:
    from advlearn.experiments.games import run_gan
    from advlearn.games.gan import GANConfig

    config = GANConfig(
        loss=args.loss,
        arch=args.arch,
        steps=args.steps,
        d_steps=args.d_steps,
        batch_size=args.batch_size,
        latent_dim=args.latent_dim,
        lr=args.lr,
        eval_every=args.eval_every or max(1, args.steps // 4),
        seed=args.seed,
    )
    with _torch_threads(args.threads):
        run = run_gan(
            config, data=args.data, name=args.name, out_dir=args.out_dir, quiet=args.quiet, device=args.device
        )
    result, k = run.result, run.result.coverage.num_classes
    head = f"GAN on {args.data}, {config.loss} loss, {config.arch}, {config.steps} steps"
    print(f"{head} ({result.seconds:.0f} s)")
    print("| step | classes covered | Fréchet distance |")
    print("|------|-----------------|------------------|")
    for r in result.evaluations:
        print(f"| {r['step']:>4} | {r['covered']:>12}/{k} | {r['frechet']:>16.3g} |")
    print(f"(real training vs real test images: Fréchet distance {run.real_frechet:.3g})")
    print(f"wrote {run.run_dir}/; open {run.html}")
    return 0


def _dann(args: argparse.Namespace) -> int:
    from advlearn.experiments.games import PAPER_DANN, PAPER_SOURCE_ONLY, DANNConfig, run_dann

    config = DANNConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_examples=args.max_examples,
    )
    with _torch_threads(args.threads):
        run = run_dann(config, name=args.name, out_dir=args.out_dir, quiet=args.quiet, device=args.device)
    print(f"MNIST-5k -> MNIST-M style, {config.epochs} epochs, seed {config.seed}, {run.seconds:.0f} s")
    print("| model       | source acc | target acc | domain separability |")
    print("|-------------|------------|------------|---------------------|")
    for label, m in (("source only", run.source_only), ("DANN", run.dann)):
        print(
            f"| {label:<11} | {m['source_acc']:>10.1%} | {m['target_acc']:>10.1%} "
            f"| {m['domain_separability']:>19.1%} |"
        )
    print(f"(Ganin et al. 2016 on real MNIST-M: {PAPER_SOURCE_ONLY:.2%} -> {PAPER_DANN:.2%})")
    print(f"wrote {run.run_dir}/; open {run.html}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from advlearn.experiments.reproduce import EXPERIMENTS, check_data_dir, reproduce

    if args.list or args.name is None:
        if not args.list:
            raise ValueError("name an experiment, 'all', or pass --list to see them")
        width = max(map(len, EXPERIMENTS)) + 1
        for experiment in EXPERIMENTS.values():
            print(f"{experiment.name:<{width}} {experiment.source}")
            print(f"{'':<{width}} checks: {experiment.claim}")
            print(f"{'':<{width}} time: {experiment.cost}")
        return 0
    names = list(EXPERIMENTS) if args.name == "all" else [EXPERIMENTS.lookup(args.name).name]
    if args.data_dir is not None:
        check_data_dir(args.data_dir)  # before any experiment runs (``all`` reaches the readers late)
    for name in names:
        reads = EXPERIMENTS[name].reads_data_dir
        with _torch_threads(args.threads):
            experiment, outcome, run_dir = reproduce(
                name,
                quick=args.quick,
                seeds=args.seeds,
                data_dir=args.data_dir if (reads or args.name != "all") else None,
                out_dir=args.out_dir,
                quiet=args.quiet,
            )
        print(f"== {name}: {experiment.source}")
        print(outcome.header)
        print("| quantity | published | ours | interval over seeds | verdict |")
        print("|---|---|---|---|---|")
        for comparison in outcome.comparisons:
            print("| " + " | ".join(comparison.row()) + " |")
        failed = [c.quantity for c in outcome.checks if not c.passed]
        if outcome.checks:
            passed = len(outcome.checks) - len(failed)
            print(f"checks against independent computations: {passed}/{len(outcome.checks)} pass")
        for quantity in failed:
            print(f"CHECK FAILED: {quantity}")
        print(f"wrote {run_dir}/; open {run_dir / 'report.html'}")
        print()
    return 0


# ----------------------------------------------------------------------------- parser

_NORM_NAMES = [norm.name for norm in NORMS]
_PRECISIONS = ["32", "bf16", "fp16"]  # advlearn._precision.PRECISIONS, without importing torch at parse time


_DATA_HELP = (
    "mnist5k, digits, cifar10:DIR, cifar100:DIR, mnist:DIR, npz:PATH or folder:DIR "
    "(default: the data in a run folder's model.json)"
)


def _add_model_arguments(
    p: argparse.ArgumentParser, *, batch_size: int, batch_help: str = "examples"
) -> None:
    """The model, data and device arguments that evaluate, attack and certify share."""
    p.add_argument(
        "--model",
        help="an advlearn run folder, a state dict (.safetensors, or .pt/.pth read with weights_only=True; "
        "needs --arch or --model-factory), a TorchScript archive, or a torch.export program (.pt2)",
    )
    p.add_argument(
        "--arch", help="for a state dict: a registered architecture (small_cnn, preact_resnet18, ...)"
    )
    p.add_argument(
        "--arch-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder option, e.g. width=10 (in_shape and num_classes default to the data's)",
    )
    p.add_argument(
        "--model-factory",
        metavar="PKG.MOD:FN",
        help="build the model by calling this function of your own code (it IS imported and run), "
        "with --arch-option as keyword arguments; with --model, its weights are then loaded",
    )
    p.add_argument(
        "--normalize",
        metavar="MEAN,STD",
        help="the model expects (x - mean) / std: wrap it so inputs and eps stay in pixels "
        "(per channel: m1,m2,m3,s1,s2,s3)",
    )
    p.add_argument("--data", help=_DATA_HELP)
    p.add_argument(
        "--data-option", action="append", default=[], metavar="KEY=VALUE", help="e.g. test_fraction=0.1"
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "train", "all"],
        help="which split (default test; all: every example, in file order, e.g. a test file of yours)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (default: CUDA if present), cpu, cuda, cuda:N or mps"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=batch_size,
        help=f"{batch_help} per pass (default {batch_size})",
    )


def _add_attack_arguments(p: argparse.ArgumentParser, default_attack: str = "pgd") -> None:
    _add_model_arguments(p, batch_size=500)
    p.add_argument(
        "--attack",
        default=default_attack,
        help=f"a registered attack: autoattack, pgd, fgsm, apgd, square, ... (default {default_attack})",
    )
    p.add_argument("--norm", default=Linf.name, choices=_NORM_NAMES)
    p.add_argument("--eps", type=_fraction, required=True, help="radius, e.g. 0.3 or 8/255")
    p.add_argument("--lower", type=float, default=0.0, help="lower input bound (default 0)")
    p.add_argument("--upper", type=float, default=1.0, help="upper input bound (default 1)")
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attack option, e.g. steps=40",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advlearn",
        description="Adversarial learning on PyTorch: attacks, defenses, honest evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"advlearn {advlearn.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="the main job: train a standard and a PGD-AT model, attack both, write a report",
        description="Train, evaluate and report. Without CONFIG: standard vs PGD-AT small_cnn on MNIST-5k, "
        "L-inf eps 0.3. Writes runs/<name>/.",
    )
    train = commands.add_parser(
        "train",
        help="train the models of a config (no evaluation)",
        description="Train the [[train]] models.",
    )
    for p in (run, train):
        p.add_argument("config", nargs="?", help="a TOML config (see configs/); default: the main job")
        p.add_argument("--name", help="run name (folder under out_dir), overriding the config's")
        p.add_argument("--out-dir", help="where run folders go (default runs/)")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run where it stopped")
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="delete the run folder's old contents and start over (else an existing run is refused)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--precision", choices=_PRECISIONS, help="override the config's precision")
    run.add_argument(
        "--quick", action="store_true", help="a sub-minute smoke run of the main job (not with CONFIG)"
    )
    run.add_argument(
        "--certified", action="store_true", help="also train an IBP model: a certified row (not with CONFIG)"
    )
    train.add_argument(
        "--nproc",
        type=_positive_int,
        help="train on N processes of this machine (DDP: runs torchrun --nproc_per_node N for you)",
    )
    run.set_defaults(func=_run)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a saved model under an attack")
    _add_attack_arguments(evaluate, default_attack="autoattack")
    evaluate.add_argument("--num-examples", type=int, default=0, help="test examples (default: all)")
    evaluate.add_argument(
        "--smooth-sigma",
        type=_fraction,
        help="with --norm l2: also certify by randomized smoothing at this sigma (IBP runs when it can)",
    )
    evaluate.add_argument("--smooth-n", type=int, default=1000, help="smoothing samples per example")
    evaluate.add_argument(
        "--precision",
        choices=_PRECISIONS,
        default="32",
        help="the model's forward passes: 32 (default), bf16 or fp16 (autocast; points stay float32)",
    )
    evaluate.add_argument(
        "--report",
        metavar="DIR",
        help="the full benchmark into DIR: the attack, certified bounds, eps sweep, masking checks and "
        "an example grid, as report.html (like advlearn run) and results.json",
    )
    evaluate.set_defaults(func=_evaluate)

    attack = commands.add_parser("attack", help="write adversarial examples (.npz) and a PNG grid")
    _add_attack_arguments(attack)
    attack.add_argument("--num-examples", type=int, default=16, help="how many test examples (default 16)")
    attack.add_argument("--out", default="adversarial.npz", help="output .npz (a .png grid goes beside it)")
    attack.add_argument(
        "--precision",
        choices=_PRECISIONS,
        default="32",
        help="the model's forward passes: 32 (default), bf16 or fp16 (autocast; points stay float32)",
    )
    attack.set_defaults(func=_attack)

    certify = commands.add_parser(
        "certify",
        help="certify a saved model: randomized smoothing (l2 radii) or IBP (verified accuracy)",
        description="Per-example certificates (certify.tsv), the certified-accuracy-vs-radius curve "
        "(certified_accuracy.png) and summary.json, written to --out.",
    )
    _add_model_arguments(certify, batch_size=1000, batch_help="noisy copies (or IBP inputs)")
    certify.add_argument("--method", default="smoothing", choices=["smoothing", "ibp"])
    certify.add_argument("--sigma", type=_fraction, default=0.25, help="smoothing noise level (default 0.25)")
    certify.add_argument("--n0", type=int, default=100, help="smoothing: selection samples (default 100)")
    certify.add_argument("--n", type=int, default=10_000, help="smoothing: estimation samples (default 10k)")
    certify.add_argument("--alpha", type=float, default=0.001, help="smoothing: failure probability")
    certify.add_argument("--norm", default=Linf.name, choices=_NORM_NAMES, help="IBP: the norm")
    certify.add_argument(
        "--eps",
        type=_fraction,
        help="IBP: radius for the verified accuracy; smoothing: an l2 radius to report certified accuracy at",
    )
    certify.add_argument("--lower", type=float, default=0.0, help="lower input bound (default 0)")
    certify.add_argument("--upper", type=float, default=1.0, help="upper input bound (default 1)")
    certify.add_argument("--num-examples", type=int, default=100, help="test examples (default 100; 0: all)")
    certify.add_argument("--out", help="output folder (default <model>/certify-<method>)")
    certify.add_argument("--seed", type=int, default=0, help="seeds the smoothing noise")
    certify.add_argument("--quiet", action="store_true", help="no progress bars")
    certify.set_defaults(func=_certify)

    demo = commands.add_parser(
        "demo",
        help="train an MLP on the 8x8 digits and print clean vs noise vs FGSM vs PGD accuracy",
        description="Train a small MLP on scikit-learn's 8x8 digits (no download) and attack it.",
    )
    demo.add_argument("--eps", type=_fraction, default=0.1, help="L-inf radius, e.g. 0.1 or 8/255")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    gan = commands.add_parser(
        "gan",
        help="train a GAN on the 8x8 digits or MNIST-5k; samples, curves, mode coverage, Frechet distance",
        description="Train a GAN (no download) and write samples, D(x)/D(G(z)) curves, mode coverage and "
        "a Frechet distance into runs/<name>/.",
    )
    gan.add_argument("--data", default="digits", help="digits (8x8, default) or mnist5k (28x28)")
    gan.add_argument("--loss", default="nonsaturating", help="minimax, nonsaturating (default) or wgan-gp")
    gan.add_argument("--arch", default="mlp", help="mlp (default) or dcgan")
    gan.add_argument("--steps", type=int, default=2000, help="generator steps (default 2000)")
    gan.add_argument("--d-steps", type=int, help="D steps per G step (default 1; 5 for wgan-gp)")
    gan.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    gan.add_argument("--latent-dim", type=int, default=32, help="size of z (default 32)")
    gan.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4; 1e-4 for wgan-gp)")
    gan.add_argument("--eval-every", type=int, help="steps between sample grids/metrics (default steps/4)")
    gan.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gan.add_argument("--name", help="run folder name (default gan-<data>-<loss>)")
    gan.add_argument("--out-dir", default="runs", help="where run folders go (default runs/)")
    gan.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads (default 1)")
    gan.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")
    gan.add_argument("--quiet", action="store_true", help="no progress bars")
    gan.set_defaults(func=_gan)

    dann = commands.add_parser(
        "dann",
        help="domain-adversarial training, MNIST-5k -> MNIST-M style: source only vs DANN",
        description="Train a source-only and a DANN network on MNIST-5k -> MNIST-M style (built offline "
        "from scikit-image photos) and write accuracies, curves and feature embeddings into runs/<name>/.",
    )
    dann.add_argument("--epochs", type=int, default=10, help="epochs per model (default 10)")
    dann.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    dann.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    dann.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    dann.add_argument("--max-examples", type=int, help="at most this many train and test images per domain")
    dann.add_argument("--name", help="run folder name (default dann-seed<seed>)")
    dann.add_argument("--out-dir", default="runs", help="where run folders go (default runs/)")
    dann.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")
    dann.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")
    dann.add_argument("--quiet", action="store_true", help="no progress bars")
    dann.set_defaults(func=_dann)

    reproduce = commands.add_parser(
        "reproduce",
        help="re-run a classic published result beside the published figure (--list shows them)",
        description="Re-run one published result (or 'all') and write OUT/reproduce-NAME/ with "
        "results.json, report.md, report.html and the PNGs: published | ours | interval | verdict.",
    )
    reproduce.add_argument("name", nargs="?", metavar="NAME", help="an experiment from --list, or 'all'")
    reproduce.add_argument("--list", action="store_true", help="list the experiments and exit")
    reproduce.add_argument("--quick", action="store_true", help="the smoke-sized budget (under 2 min each)")
    reproduce.add_argument("--seeds", type=_positive_int, help="how many seeds (default: per experiment)")
    reproduce.add_argument("--data-dir", help="a folder with the full MNIST IDX files (MNIST experiments)")
    reproduce.add_argument("--out-dir", default="runs", help="where run folders go (default runs/)")
    reproduce.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads (default 1)")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")
    reproduce.set_defaults(func=_reproduce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc relaunches under torchrun
    try:
        if getattr(args, "quiet", False):  # --quiet also silences the bars drawn inside attacks
            from advlearn.attacks._progress import silenced

            with silenced():
                return int(args.func(args))
        return int(args.func(args))
    except (ValueError, OSError) as err:
        # User mistakes (bad configs, options, paths, permissions, checkpoints): one line naming what
        # is wrong, no traceback. Anything else (TypeError, RuntimeError, ...) is a bug and shows one.
        print(f"advlearn {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"advlearn {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    """The error as one line: an OSError as ``path: reason``, anything else its text joined."""
    if isinstance(err, OSError) and err.strerror:  # raised by the OS: name the file it was about
        return f"{err.filename}: {err.strerror}" if err.filename is not None else err.strerror
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
