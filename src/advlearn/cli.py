"""The ``advlearn`` command line. Thin: it parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import advlearn


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


def _fraction(text: str) -> float:
    """Parse ``"8/255"`` or ``"0.03"`` exactly, without eval."""
    from fractions import Fraction

    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or fraction like 8/255") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advlearn",
        description="Adversarial learning on PyTorch: attacks, defenses, honest evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"advlearn {advlearn.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train an MLP on the 8x8 digits and print clean vs noise vs FGSM vs PGD accuracy",
        description="Train a small MLP on scikit-learn's 8x8 digits (no download) and attack it.",
    )
    demo.add_argument(
        "--eps", type=_fraction, default=0.1, help="L-inf radius, e.g. 0.1 or 8/255 (default 0.1)"
    )
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
    if args.eps < 0:
        parser.error(f"--eps must be >= 0, got {args.eps:g}")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
