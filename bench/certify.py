"""Certification cost against its physical limit, and certified accuracy of noise-trained MNIST-5k models.

What it measures
    Table 1 (smoothing throughput): Smooth.sample_counts on one held-out MNIST-5k digit, N noise samples
    in batches of B (N = 10,000, B = 1,000), in noise samples per second, against the physical limit:
    the same number of batched forward passes of the same model on the same noisy batches, drawn
    beforehand (no sampling, no argmax, no counting). "x limit" = limit time / smoothing time (goal
    >= 0.9). "batched": Smooth.sample_counts_many on 20 inputs (--examples) with N/20 copies each, the
    same total, batched across examples (what certify_dataset uses). Models: small_cnn (16, 32, 256)
    trained below, and an MLP 784-256-256-10 (untrained; the
    cost does not depend on the weights). The two are interleaved round-robin; medians of R rounds
    after W warm-up rounds.
    Table 2 (IBP cost): ibp_bounds (logit bounds) and ibp_margin_bounds (the margins through the last
    layer, what verified_accuracy uses) on one batch of 256 digits at l-inf eps = 0.1, as a multiple
    of one forward pass of the same batch (goal <= 3x), all under torch.no_grad().
    Table 4 (bound tightness): mean width of the logit bounds of IBP, CROWN-IBP (IBP pre-activation
    bounds) and CROWN on 8 digits at l-inf eps 0.01, 0.05, 0.1, ibp_cnn and the MLP (untrained), and
    each one's time as a multiple of a forward pass; auto_LiRPA's CROWN beside them when it imports
    (PyPI's auto-lirpa 0.3 pins torch < 1.13 and fails to import on numpy 2: skipped, reason recorded).
    Table 3 (certified accuracy, not a timing): small_cnn (16, 32, 256) trained with
    advlearn.training.GaussianAugment at sigma = 0.25 and at 0.5 (E epochs of Adam, lr 1e-3, batch 128,
    on the 4,000 training digits; weights cached in bench/.cache/ under a hash of the settings), then
    Smooth.certify with n0 = 100, n = 10,000, alpha = 0.001 on the first 500 test digits; certified
    accuracy (correct and radius >= r) at l2 radii r = 0, 0.5, 1.0, 1.5, and the abstention rate.

Hardware and versions of the run below
    Not yet run in full on a quiet machine: the lead runs the timed tables. The figures under Evidence
    are from `python bench/certify.py --skip-timing` (table 3 only) on 2 shared vCPUs; see there.

Run
    python bench/certify.py                   # all three tables; table 3 is about 5.5M forward passes of
                                              # small_cnn per sigma (~10-20 min per sigma on 2 CPU cores,
                                              # seconds on a GPU), training adds ~2 min per sigma on CPU
    python bench/certify.py --quick           # smoke run (~1 min): 1 round, 2 epochs, 10 digits, n = 200
    python bench/certify.py --skip-timing     # table 3 only (accuracy, not a timing)
    python bench/certify.py --skip-accuracy   # tables 1 and 2 only (the timings)
    Options: --reps, --warmup, --num-examples, --n, --epochs, --device, --threads, --out, and
    --threads 1 --clock thread to time CPU time of the main thread on a machine others are using.

Evidence
    See bench/results/certify.json (written by the last run) for the tables and the environment.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.certify import Smooth, certify_dataset, ibp_bounds, ibp_margin_bounds
from advlearn.data import load_dataset
from advlearn.models import build_model
from advlearn.training import GaussianAugment

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
DEFAULT_OUT = HERE / "results" / "certify.json"
SEED = 0
CNN_OPTIONS: dict[str, Any] = {"channels": (16, 32), "hidden": 256}
SIGMAS = (0.25, 0.5)
RADII = (0.0, 0.5, 1.0, 1.5)
PACKAGES = ("advlearn", "torch", "numpy", "scipy", "mlxtend")
# "thread": CPU time of the main thread; with --threads 1 it leaves out time other processes hold the CPU.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


# ----------------------------------------------------------------------------- models


def make_cnn() -> nn.Module:
    return build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10, **CNN_OPTIONS)


def make_mlp() -> nn.Module:
    return build_model("mlp", in_shape=(1, 28, 28), num_classes=10, hidden=(256, 256))


def train_noise_model(sigma: float, epochs: int, x: Tensor, y: Tensor, device: torch.device) -> nn.Module:
    """small_cnn trained with GaussianAugment(sigma); cached in bench/.cache under a hash of the settings."""
    settings = {"sigma": sigma, "epochs": epochs, "lr": 1e-3, "batch": 128, "seed": SEED, **CNN_OPTIONS}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE / f"certify-cnn-{key}.pt"
    torch.manual_seed(SEED)
    model = make_cnn().to(device)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model.eval()
    objective = GaussianAugment(sigma=sigma)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = x.to(device), y.to(device)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), device=device).split(128):
            objective.train_step(model, x[idx], y[idx], optimizer)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


# ----------------------------------------------------------------------------- timing


def median_times(
    fns: Mapping[str, Callable[[], object]],
    reps: int,
    warmup: int,
    sync: Callable[[], None],
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Each round calls every function once, the order rotating; the median over the kept rounds."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(warmup + reps):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            sync()
            t0 = clock()
            fns[name]()
            sync()
            if rnd >= warmup:
                times[name].append(clock() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def smoothing_throughput(
    label: str, model: nn.Module, x: Tensor, args: argparse.Namespace, sync: Callable[[], None]
) -> dict[str, Any]:
    device = next(model.parameters()).device
    sigma, num, batch = 0.25, args.n, args.batch_size
    smooth = Smooth(model, num_classes=10, sigma=sigma)
    generator = torch.Generator(device=device).manual_seed(SEED)
    # The limit: the forward passes alone, on noisy batches drawn before the clock starts.
    noisy = [x.to(device) + sigma * torch.randn((min(batch, num - s), *x.shape), device=device)
             for s in range(0, num, batch)]  # fmt: skip

    def limit() -> None:
        with torch.no_grad():
            for b in noisy:
                model(b)

    def smoothing() -> None:
        smooth.sample_counts(x, num, batch, generator)

    # Batched across examples: `examples` digits, num / examples copies each, the same total.
    xs = x.unsqueeze(0).repeat(args.examples, *([1] * x.dim()))
    per = num // args.examples

    def batched() -> None:
        smooth.sample_counts_many(xs, per, batch, generator)

    fns = {"limit": limit, "smoothing": smoothing, "batched": batched}
    t = median_times(fns, args.reps, args.warmup, sync, CLOCKS[args.clock])
    return {
        "model": label, "samples": num, "batch_size": batch, "examples_batched": args.examples,
        "limit_s": t["limit"], "smoothing_s": t["smoothing"], "batched_s": t["batched"],
        "limit_samples_per_s": num / t["limit"], "smoothing_samples_per_s": num / t["smoothing"],
        "batched_samples_per_s": per * args.examples / t["batched"],
        "x_limit": t["limit"] / t["smoothing"],
        "batched_x_limit": t["limit"] / t["batched"] * per * args.examples / num,
    }  # fmt: skip


def ibp_cost(
    label: str, model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace, sync: Callable[[], None]
) -> dict[str, Any]:
    threat = al.ThreatModel("linf", 0.1)
    with torch.no_grad():
        t = median_times(
            {
                "forward": lambda: model(x),
                "ibp_bounds": lambda: ibp_bounds(model, x, threat),
                "ibp_margin_bounds": lambda: ibp_margin_bounds(model, x, y, threat),
            },
            args.reps * 5,
            args.warmup,
            sync,
            CLOCKS[args.clock],
        )
    return {
        "model": label, "batch": len(x), "forward_ms": 1e3 * t["forward"],
        "ibp_bounds_ms": 1e3 * t["ibp_bounds"], "ibp_margin_bounds_ms": 1e3 * t["ibp_margin_bounds"],
        "ibp_bounds_x_forward": t["ibp_bounds"] / t["forward"],
        "ibp_margin_bounds_x_forward": t["ibp_margin_bounds"] / t["forward"],
    }  # fmt: skip


def auto_lirpa_status() -> tuple[Any, str]:
    """auto_LiRPA's module, or None and why not (PyPI's 0.3 pins torch < 1.13 and imports
    numpy.lib.arraysetops, which numpy 2 removed)."""
    try:
        import auto_LiRPA  # type: ignore[import-not-found]
    except Exception as err:  # any import failure means: skip the peer
        return None, f"skipped: auto_LiRPA does not import here ({type(err).__name__}: {err})"
    return auto_LiRPA, f"auto_LiRPA {getattr(auto_LiRPA, '__version__', '?')}"


def _lirpa_crown(lirpa: Any, model: nn.Module, x: Tensor, threat: al.ThreatModel) -> Callable[[], Any]:
    bounded = lirpa.BoundedModule(model, torch.empty_like(x))
    low, high = threat.enclosing_box(x)
    bx = lirpa.BoundedTensor(x, lirpa.PerturbationLpNorm(norm=float("inf"), x_L=low, x_U=high))
    return partial(bounded.compute_bounds, x=(bx,), method="CROWN")


def crown_tightness(
    label: str, model: nn.Module, x: Tensor, args: argparse.Namespace, sync: Callable[[], None]
) -> list[dict[str, Any]]:
    """Mean logit-bound width and time of IBP, CROWN-IBP and CROWN (and auto_LiRPA's CROWN if it imports)."""
    from advlearn.certify import crown_bounds

    rows = []
    lirpa, status = auto_lirpa_status()
    for eps in (0.01, 0.05, 0.1):
        threat = al.ThreatModel("linf", eps)
        methods: dict[str, Callable[[], Any]] = {
            "ibp": partial(ibp_bounds, model, x, threat),
            "crown-ibp": partial(crown_bounds, model, x, threat, intermediate="ibp"),
            "crown": partial(crown_bounds, model, x, threat, intermediate="crown"),
        }
        if lirpa is not None:
            methods["auto_LiRPA crown"] = _lirpa_crown(lirpa, model, x, threat)
        with torch.no_grad():
            widths = {name: float((fn()[1] - fn()[0]).mean()) for name, fn in methods.items()}
            timed = {"forward": partial(model, x), **methods}
            times = median_times(timed, args.reps, 1, sync, CLOCKS[args.clock])
        for name in methods:
            rows.append({
                "model": label, "eps": eps, "method": name, "mean_width": widths[name],
                "width_x_ibp": widths[name] / widths["ibp"], "ms": 1e3 * times[name],
                "x_forward": times[name] / times["forward"], "peer": status,
            })  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- accuracy


def certified_accuracy_rows(
    x_train: Tensor, y_train: Tensor, x: Tensor, y: Tensor, args: argparse.Namespace, device: torch.device
) -> list[dict[str, Any]]:
    rows = []
    for sigma in SIGMAS:
        t0 = time.perf_counter()
        model = train_noise_model(sigma, args.epochs, x_train, y_train, device)
        trained_s = time.perf_counter() - t0
        with torch.no_grad():
            clean = float((model(x.to(device)).argmax(1).cpu() == y).float().mean())
        smooth = Smooth(model, num_classes=10, sigma=sigma)
        t0 = time.perf_counter()
        result = certify_dataset(
            smooth, x, y, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
            generator=torch.Generator(device=device).manual_seed(SEED), quiet=args.quiet,
        )  # fmt: skip
        accuracy = result.certified_accuracy(RADII).tolist()
        rows.append({
            "sigma": sigma, "epochs": args.epochs, "num_examples": len(y), "n0": args.n0, "n": args.n,
            "alpha": args.alpha, "base_clean_accuracy": clean,
            "abstained": float((result.predictions == -1).double().mean()),
            "certified_accuracy": dict(zip([str(r) for r in RADII], accuracy, strict=True)),
            "median_radius_of_correct": float(result.radii[result.correct].median())
            if result.correct.any() else 0.0,
            "train_s": trained_s, "certify_s": time.perf_counter() - t0,
        })  # fmt: skip
        print(
            f"  sigma {sigma}: "
            + ", ".join(f"r={r}: {100 * a:.1f}%" for r, a in zip(RADII, accuracy, strict=True))
            + f" (abstained {100 * rows[-1]['abstained']:.1f}%, {rows[-1]['certify_s']:.0f} s)"
        )
    return rows


# ----------------------------------------------------------------------------- tables and environment


def _accuracy_at(radius: float) -> Callable[[dict[str, Any]], str]:
    return lambda row: f"{100 * row['certified_accuracy'][str(radius)]:.1f}%"


def table(rows: list[dict[str, Any]], columns: Mapping[str, Callable[[dict[str, Any]], str]]) -> str:
    body = [[fmt(row) for fmt in columns.values()] for row in rows]
    widths = [max(len(c) for c in col) for col in zip(columns, *body, strict=True)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join(
        [line(list(columns)), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]
    )


def git_state() -> str | None:
    """The commit of the checkout, with ``+dirty`` when tracked files differ from it; None outside git."""
    try:
        run = partial(subprocess.run, cwd=HERE, capture_output=True, text=True, check=True)
        commit = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def version_of(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except (ImportError, AttributeError):
        return None


def environment(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "git": git_state(),
        "load_average_at_start": os.getloadavg()[0],
        "versions": {m: version_of(m) for m in PACKAGES},
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 epochs, 10 digits, n = 200")
    p.add_argument("--skip-timing", action="store_true", help="table 3 only (certified accuracy)")
    p.add_argument("--skip-accuracy", action="store_true", help="tables 1 and 2 only (the timings)")
    p.add_argument("--reps", type=int, default=None, help="timed rounds per cell (default 7; quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2; quick 1)")
    p.add_argument("--num-examples", type=int, default=None, help="test digits certified (500; quick 10)")
    p.add_argument("--n", type=int, default=None, help="estimation samples (10000; quick 200)")
    p.add_argument("--n0", type=int, default=100, help="selection samples (default 100)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--batch-size", type=int, default=1000, help="noisy copies per forward pass (1000)")
    p.add_argument("--examples", type=int, default=20, help="inputs certify_many batches together (20)")
    p.add_argument("--epochs", type=int, default=None, help="noise-training epochs (default 10; quick 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU (default 2)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall (default) or thread")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.num_examples = args.num_examples or (10 if args.quick else 500)
    args.n = args.n or (200 if args.quick else 10_000)
    args.epochs = args.epochs or (2 if args.quick else 10)
    if args.clock == "thread" and args.threads != 1:
        p.error("--clock thread counts the main thread only; use it with --threads 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = al.training.resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: 1-minute load average is {load:.2f} before starting; timings will be noisy")
    split = load_dataset("mnist5k")
    x_train, y_train = split.train.x, split.train.y
    x_test, y_test = split.test.x[: args.num_examples], split.test.y[: args.num_examples]
    report: dict[str, Any] = {"environment": environment(args, device), "tables": {}}

    if not args.skip_timing:
        print(
            f"\nTable 1: smoothing throughput, {args.n:,} samples in batches of {args.batch_size}, {device}"
        )
        cnn = train_noise_model(0.25, args.epochs, x_train, y_train, device)
        torch.manual_seed(SEED)
        mlp = make_mlp().to(device).eval()
        digit = split.test.x[0].to(device)
        rows1 = [
            smoothing_throughput(name, m, digit, args, sync) for name, m in (("small_cnn", cnn), ("mlp", mlp))
        ]
        report["smoothing_throughput"] = rows1
        report["tables"]["smoothing_throughput"] = table(rows1, {
            "model": lambda r: r["model"],
            "limit samples/s": lambda r: f"{r['limit_samples_per_s']:,.0f}",
            "smoothing samples/s": lambda r: f"{r['smoothing_samples_per_s']:,.0f}",
            "x limit": lambda r: f"{r['x_limit']:.3f}",
            "batched samples/s": lambda r: f"{r['batched_samples_per_s']:,.0f}",
            "batched x limit": lambda r: f"{r['batched_x_limit']:.3f}",
        })  # fmt: skip
        print(report["tables"]["smoothing_throughput"])

        print("\nTable 2: IBP on a batch of 256 digits, l-inf eps 0.1, as a multiple of one forward pass")
        xb, yb = split.test.x[:256].to(device), split.test.y[:256].to(device)
        rows2 = [ibp_cost(name, m, xb, yb, args, sync) for name, m in (("small_cnn", cnn), ("mlp", mlp))]
        report["ibp_cost"] = rows2
        report["tables"]["ibp_cost"] = table(rows2, {
            "model": lambda r: r["model"],
            "forward ms": lambda r: f"{r['forward_ms']:.2f}",
            "ibp_bounds ms": lambda r: f"{r['ibp_bounds_ms']:.2f}",
            "x forward": lambda r: f"{r['ibp_bounds_x_forward']:.2f}",
            "ibp_margin_bounds ms": lambda r: f"{r['ibp_margin_bounds_ms']:.2f}",
            "x forward ": lambda r: f"{r['ibp_margin_bounds_x_forward']:.2f}",
        })  # fmt: skip
        print(report["tables"]["ibp_cost"])

    if not args.skip_timing:
        print("\nTable 4: bound tightness and time, IBP vs CROWN-IBP vs CROWN, 8 digits, untrained nets")
        xb = split.test.x[:8].to(device)
        torch.manual_seed(SEED)
        nets = {
            "ibp_cnn": build_model("ibp_cnn", in_shape=(1, 28, 28), num_classes=10).to(device).eval(),
            "mlp": make_mlp().to(device).eval(),
        }
        rows4 = [row for name, m in nets.items() for row in crown_tightness(name, m, xb, args, sync)]
        report["crown_tightness"] = rows4
        print(f"  peer: {rows4[0]['peer']}")
        report["tables"]["crown_tightness"] = table(rows4, {
            "model": lambda r: r["model"], "eps": lambda r: f"{r['eps']}", "method": lambda r: r["method"],
            "mean width": lambda r: f"{r['mean_width']:.4g}",
            "x IBP width": lambda r: f"{r['width_x_ibp']:.3f}",
            "ms": lambda r: f"{r['ms']:.1f}", "x forward": lambda r: f"{r['x_forward']:.1f}",
        })  # fmt: skip
        print(report["tables"]["crown_tightness"])

    if not args.skip_accuracy:
        print(
            f"\nTable 3: certified accuracy of noise-trained small_cnn, {len(y_test)} test digits, "
            f"n0 = {args.n0}, n = {args.n:,}, alpha = {args.alpha}, {args.epochs} training epochs"
        )
        rows3 = certified_accuracy_rows(x_train, y_train, x_test, y_test, args, device)
        report["certified_accuracy"] = rows3
        report["tables"]["certified_accuracy"] = table(rows3, {
            "sigma": lambda r: f"{r['sigma']}",
            "clean (base)": lambda r: f"{100 * r['base_clean_accuracy']:.1f}%",
            **{f"r = {rad}": _accuracy_at(rad) for rad in RADII},
            "abstained": lambda r: f"{100 * r['abstained']:.1f}%",
        })  # fmt: skip
        print(report["tables"]["certified_accuracy"])

    report["runtime_s"] = time.perf_counter() - start
    print(f"\ntotal runtime {report['runtime_s']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
