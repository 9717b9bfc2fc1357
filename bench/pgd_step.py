"""PGD-10's per-step overhead in every norm: advlearn against the K-pass limit and torchattacks, one run.

What it measures
    PGD-10 (one random start, step 2.5*eps/10) in l-inf (eps 0.1), l2 (eps 2) and l1 (eps 10), box
    [0, 1], on one batch of ``--batch`` (256) uniform 1x28x28 inputs, for the CNN of
    bench/attack_overhead.py (conv 32, conv 64, linear 128, linear 10) with its initial weights: without
    early exit PGD's cost does not depend on the weights, so no training (and no data) is needed. The
    limit is 10 forward passes, summed cross-entropy and ``torch.autograd.grad`` w.r.t. the input, eager
    fp32. torchattacks' PGD (l-inf) and PGDL2 (l2; it has no l1 PGD) run in the same rounds when
    installed. The opt-in fast path rows run advlearn's l-inf PGD through
    ``advlearn._precision.FastModel`` (bf16, channels_last, both; ``--compile`` adds a compiled row,
    its compile time excluded) and are reported against the same eager fp32 limit. A second table times
    ``ThreatModel.ascent_step_`` alone (ten steps from a random start along fixed random gradients,
    ``--step-repeats`` runs, median) against one forward+backward pass of the limit: the step's own
    share of a PGD step, free of the model's timing noise. The timing block is
    bench/attack_overhead.py's (``round_robin``): rounds rotate the order, every cell of a round gets
    the same seed, medians of ``--reps`` rounds after ``--warmup`` dropped ones, on the wall clock or
    (``--clock thread --threads 1``) the main thread's CPU time. bench/attack_overhead.py measures the
    same PGD-10 cells on trained models with MNIST digits, and more; this script is the quick check of
    the step alone.

Run
    pip install torchattacks --no-deps --target /tmp/bench13-pkgs   # or into any path; optional
    python bench/pgd_step.py --reps 3          # TORCHATTACKS_PATH=/tmp/bench13-pkgs by default
    python bench/pgd_step.py --threads 1 --clock thread --reps 5   # on a machine others are using
    Options: --batch, --threads (2), --warmup (1), --norms, --no-fast, --only-step, --step-repeats,
    --compile, --device, --out (JSON,
    default bench/results/pgd_step.json).

Evidence: see bench/README.md ("PGD's step") for the table this script printed, hardware and versions.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import advlearn as al
from advlearn._precision import FastModel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from attack_overhead import CLOCKS, Timing, git_state, make_cnn, round_robin  # noqa: E402

RADII = {"linf": 0.1, "l2": 2.0, "l1": 10.0}


def step_alone(norm: str, x0: Tensor, repeats: int, clock: Callable[[], float]) -> float:
    """Seconds per ``ThreatModel.ascent_step_`` of PGD-10 in ``norm`` without the model: ten steps
    from a random start along fixed random gradients (box [0, 1]), minus the copies of the scratch
    gradients, median of ``repeats`` runs."""
    eps = RADII[norm]
    threat = al.ThreatModel(norm, eps)
    g = torch.Generator(device=x0.device).manual_seed(1)
    grads = [torch.randn(x0.shape, generator=g, device=x0.device) for _ in range(10)]
    step = torch.full((x0.shape[0],), 0.25 * eps, device=x0.device)
    box = (lambda b: (b[0], b[1]))(threat.enclosing_box(x0)) if threat.norm.ball_is_box else None
    start = threat.random_init(x0, torch.Generator(device=x0.device).manual_seed(0))
    runs = []
    for _ in range(repeats):
        x = start.clone()
        t0 = clock()
        for grad in grads:
            x = threat.ascent_step_(x, x0, grad.clone(), step, box)
        steps_s = clock() - t0
        t0 = clock()
        for grad in grads:
            grad.clone()
        runs.append((steps_s - (clock() - t0)) / len(grads))
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="thread: needs --threads 1")
    p.add_argument("--norms", nargs="+", choices=sorted(RADII), default=list(RADII))
    p.add_argument("--no-fast", action="store_true", help="skip the bf16 / channels_last rows")
    p.add_argument("--compile", action="store_true", help="add a compiled l-inf row")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--step-repeats", type=int, default=20, help="runs of the step-alone table")
    p.add_argument("--only-step", action="store_true", help="the limit and the step-alone table only")
    p.add_argument("--out", type=Path, default=HERE / "results" / "pgd_step.json")
    args = p.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        p.error("--clock thread counts the main thread only; use it with --threads 1")
    torch.set_num_threads(args.threads)
    device = al.training.resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = make_cnn().to(device).eval()
    x = torch.rand(args.batch, 1, 28, 28).to(device)
    y = torch.randint(0, 10, (args.batch,)).to(device)

    def limit() -> Tensor:
        for _ in range(10):
            xg = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
        return x

    fns: dict[str, Callable[[], Tensor]] = {"limit": limit}
    for norm in [] if args.only_step else args.norms:
        eps = RADII[norm]
        attack = al.attacks.PGD(al.ThreatModel(norm, eps), steps=10, step_size=0.25 * eps)
        fns[f"advlearn {norm}"] = (lambda a: lambda: a(model, x, y))(attack)
    linf = al.attacks.PGD(al.ThreatModel("linf", 0.1), steps=10, step_size=0.025)
    cl = x.contiguous(memory_format=torch.channels_last)
    fast: dict[str, tuple[dict[str, object], Tensor]] = {}
    if not (args.no_fast or args.only_step):
        fast["advlearn linf bf16"] = ({"precision": "bf16"}, x)
        fast["advlearn linf channels_last"] = ({"memory_format": "channels_last"}, cl)
        both = {"precision": "bf16", "memory_format": "channels_last"}
        fast["advlearn linf bf16 + channels_last"] = (both, cl)
    if args.compile:
        fast["advlearn linf compile"] = ({"compile": True}, x)
    compile_s = None
    for name, (options, xin) in fast.items():
        net = FastModel(copy.deepcopy(model), **options)  # type: ignore[arg-type]  # its own weights' layout
        if "compile" in options:
            t0 = time.perf_counter()
            linf(net, xin, y)
            compile_s = time.perf_counter() - t0
        fns[name] = (lambda n, xi: lambda: linf(n, xi, y))(net, xin)
    sys.path.insert(0, os.environ.get("TORCHATTACKS_PATH", "/tmp/bench13-pkgs"))
    try:
        if args.only_step:
            raise ImportError("--only-step")
        import torchattacks

        ta = {"linf": torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10)}
        ta["l2"] = torchattacks.PGDL2(model, eps=2.0, alpha=0.5, steps=10)
        for norm, attack in ta.items():
            if norm in args.norms:
                fns[f"torchattacks {norm}"] = (lambda a: lambda: a(x, y))(attack)
        ta_version = torchattacks.__version__
    except ImportError:
        ta_version = None
        print("torchattacks not installed: no torchattacks rows")
    times, _ = round_robin(fns, Timing(args.reps, args.warmup, args.clock), sync=sync)
    lim = statistics.median(times["limit"])
    rows = [
        {"cell": n, "median_ms": 1e3 * statistics.median(t), "x_limit": statistics.median(t) / lim,
         "times_s": t}
        for n, t in times.items()
    ]  # fmt: skip
    print(f"| cell | median ms | x limit |  ({args.clock} clock, {args.threads} thread(s), {device})")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['cell']} | {r['median_ms']:.1f} | {r['x_limit']:.3f} |")
    if compile_s is not None:
        print(f"(compile: {compile_s:.0f} s, excluded)")
    # The step alone, against one forward+backward pass of the limit: what the step adds per step.
    pass_s = lim / 10
    steps = []
    for norm in args.norms:
        seconds = step_alone(norm, x, args.step_repeats, CLOCKS[args.clock])
        steps.append({"norm": norm, "step_ms": 1e3 * seconds, "x_pass": seconds / pass_s})
    print(f"\n| norm | ascent_step_ ms | / one fwd+bwd pass ({1e3 * pass_s:.1f} ms) |\n|---|---|---|")
    for r in steps:
        print(f"| {r['norm']} | {r['step_ms']:.3f} | {r['x_pass']:.4f} |")
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchattacks": ta_version,
        "threads": args.threads,
        "clock": args.clock,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "git": git_state(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "rows": rows, "step_alone": steps}, indent=1) + "\n")


if __name__ == "__main__":
    main()
