"""The ``advlearn`` command line. Thin: it parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import advlearn


def _fraction(text: str) -> float:
    """Parse ``"8/255"`` or ``"0.03"`` exactly, without eval."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or fraction like 8/255") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["steps=40", "loss=dlr"]`` → ``{"steps": 40, "loss": "dlr"}``, values read as TOML scalars."""
    from advlearn.config import TOMLDecodeError, parse_toml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"option {pair!r} must look like key=value")
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

    from advlearn.config import load_config
    from advlearn.experiments.main_job import default_config

    cfg = load_config(args.config) if args.config else default_config(quick=getattr(args, "quick", False))
    if getattr(args, "name", None):
        cfg = dataclasses.replace(cfg, name=args.name)
    if getattr(args, "out_dir", None):
        cfg = dataclasses.replace(cfg, out_dir=args.out_dir)
    return cfg


def _run(args: argparse.Namespace) -> int:
    from advlearn.experiments.main_job import run_experiment
    from advlearn.report import format_table

    cfg = _load_config(args)
    result = run_experiment(cfg, quiet=args.quiet, resume=args.resume)
    print()
    print(format_table(result.evaluations))
    print()
    print(f"wrote {result.run_dir}/ in {result.seconds:.0f} s; open {result.html}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from advlearn.experiments.main_job import run_experiment

    cfg = _load_config(args)
    result = run_experiment(cfg, quiet=args.quiet, resume=args.resume, evaluate_models=False)
    labels = ", ".join(t.label for t in cfg.train)
    print(f"trained {labels} into {result.run_dir}/ in {result.seconds:.0f} s")
    return 0


def _attack_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    from advlearn.attacks import build_attack
    from advlearn.threat import ThreatModel

    threat = ThreatModel(args.norm, args.eps, (args.lower, args.upper))
    return threat, build_attack(args.attack, threat, **_options(args.option))


def _data_spec(args: argparse.Namespace, model_dir: Path) -> Any:
    """The dataset to use: ``--data`` if given, else what the model was trained on (its model.json)."""
    import json

    from advlearn.config import Named

    if args.data:
        return Named(args.data, _options(args.data_option))
    try:
        meta = json.loads((model_dir / "model.json").read_text())["metadata"]["data"]
    except (OSError, KeyError, ValueError, TypeError):
        raise ValueError(
            f"{model_dir}/model.json does not say which data the model saw; pass --data"
        ) from None
    return Named(meta.pop("name"), meta)


def _evaluate(args: argparse.Namespace) -> int:
    from advlearn.experiments.main_job import evaluate_saved
    from advlearn.report import format_table

    threat, attack = _attack_from_args(args)
    evaluation = evaluate_saved(
        args.model,
        _data_spec(args, Path(args.model)),
        threat,
        {args.attack: attack},
        num_examples=args.num_examples,
        seed=args.seed,
        quiet=args.quiet,
    )
    print(format_table({Path(args.model).name: evaluation}))
    return 0


def _attack(args: argparse.Namespace) -> int:
    from advlearn.experiments.main_job import write_adversarial_examples

    _, attack = _attack_from_args(args)
    examples, png = write_adversarial_examples(
        args.model,
        _data_spec(args, Path(args.model)),
        attack,
        args.out,
        num_examples=args.num_examples,
        name=args.attack,
        seed=args.seed,
    )
    fooled = float((examples.pred_adv != examples.y).float().mean())
    n = examples.y.shape[0]
    print(f"wrote {n} adversarial examples to {args.out} and a grid to {png}; {fooled:.1%} misclassified")
    return 0


# ----------------------------------------------------------------------------- parser


def _add_attack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a folder holding model.safetensors and model.json")
    p.add_argument("--attack", default="pgd", help="a registered attack: fgsm, pgd, sign_noise, ...")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
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
    p.add_argument("--data", help="dataset name (default: the one in the model's model.json)")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE", help="e.g. path=/data")
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
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--quick", action="store_true", help="a sub-minute smoke run of the main job")
    run.set_defaults(func=_run)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a saved model under an attack")
    _add_attack_arguments(evaluate)
    evaluate.add_argument("--num-examples", type=int, default=0, help="test examples (default: all)")
    evaluate.set_defaults(func=_evaluate)

    attack = commands.add_parser("attack", help="write adversarial examples (.npz) and a PNG grid")
    _add_attack_arguments(attack)
    attack.add_argument("--num-examples", type=int, default=16, help="how many test examples (default 16)")
    attack.add_argument("--out", default="adversarial.npz", help="output .npz (a .png grid goes beside it)")
    attack.set_defaults(func=_attack)

    demo = commands.add_parser(
        "demo",
        help="train an MLP on the 8x8 digits and print clean vs noise vs FGSM vs PGD accuracy",
        description="Train a small MLP on scikit-learn's 8x8 digits (no download) and attack it.",
    )
    demo.add_argument("--eps", type=_fraction, default=0.1, help="L-inf radius, e.g. 0.1 or 8/255")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as err:
        # Bad configs, paths and checkpoints: one line naming what is wrong, no traceback.
        print(f"advlearn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
