"""Scaling on one device: PGD-10 throughput and PGD-AT epoch time in fp32, bf16, channels_last and compiled.

What it measures
    Table 1 (attack throughput): PGD-10 l-inf (eps 8/255, step 2/255, one random start) on a PreAct
    ResNet-18 (advlearn's ``preact_resnet18``; ``--width``, 64 is the paper's) in eval mode, on
    CIFAR-shaped synthetic inputs (uniform in [0, 1], 3x32x32, ``--batch`` per call), images/s and
    time as a ratio to the K-pass limit (10 forward passes, summed cross-entropy and
    ``torch.autograd.grad`` w.r.t. the input only, eager fp32) measured in the same run. Rows:
    the limit; advlearn ``PGD`` eager fp32; the same model behind ``advlearn._precision.FastModel``
    in bf16, in channels_last, in bf16 + channels_last, and compiled (``torch.compile(dynamic=True)``,
    its compile time excluded and reported apart); torchattacks' ``PGD`` (eager fp32) when installed.
    Every cell of a round gets the same seed; rounds rotate the order; medians of ``--reps`` rounds
    after one warm-up round.
    Table 2 (training): ``--train-steps`` optimizer steps of the ``Trainer`` (SGD, batch ``--batch``)
    with ``Standard`` and with ``PGDAT(steps=10)``, in fp32 and bf16 (train mode, BatchNorm on), as
    seconds per step and the ratio PGD-AT / standard (the limit is K + 1 = 11; the goal <= 1.05 * 11).
    Table 3 (``--compile-shapes``): an early-exit PGD-10 (``--shape-eps``) on small_cnn, ``--shape-batch``
    examples labelled by the model, through ``FastModel(compile=True)`` (``dynamic=True``: one graph
    for every batch size) and through static graphs with the batch padded up to a power of two
    (:class:`Bucketed`: one graph per bucket), and eagerly: the first call (it compiles), the median
    of later calls, the graphs built, and whether the results equal the eager attack's.
    Table 4 (``--ddp``, CPU): PGD-AT on small_cnn, the same global batches on 1 and 2 gloo ranks
    (torchrun, one torch thread each), wall clock, images/s.

Hardware and versions of the run below
    CPU only (no GPU was lent, so nothing here ran on CUDA): 2 vCPUs of an AMD EPYC shared with other
    agents (load average 5-9), one torch thread, --clock thread, Python 3.11.7, torch 2.13.0+cpu,
    torchattacks 3.5.1 (installed with --no-deps into a separate folder), branch s4-13; the command:
    TORCHINDUCTOR_COMPILE_THREADS=1 python bench/scale.py --width 4 --batch 16 --reps 2 --train-steps 2
    --threads 1 --clock thread --compile-shapes --shape-batch 64 --ddp --ddp-batch 32 --ddp-steps 4
    --ddp-pgd-steps 5 (561 s). Only the ratios within one run mean anything.

Run
    pip install torchattacks --no-deps                      # optional: the torchattacks row
    python bench/scale.py                                   # CPU defaults: width 16, batch 32
    python bench/scale.py --width 64 --batch 256 --train-steps 20 --compile-shapes   # a GPU
    python bench/scale.py --quick                           # smoke run: 1 round, 2 training steps
    python bench/scale.py --threads 1 --clock thread --compile-shapes --ddp   # shared CPU, all tables
    Options: --reps, --threads, --clock, --device, --no-compile, --shape-batch, --shape-eps, --ddp-batch,
    --ddp-steps, --ddp-pgd-steps, --out (JSON, default bench/results/scale.json).

Evidence: see bench/README.md ("Session 4 (issue 13)") for the tables this script printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advlearn as al
from advlearn._precision import FastModel
from advlearn.models import build_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from attack_overhead import CLOCKS, Timing, round_robin  # noqa: E402

EPS, STEP, STEPS = 8 / 255, 2 / 255, 10


def preact(width: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return build_model("preact_resnet18", in_shape=(3, 32, 32), num_classes=10, width=width).to(device)


def limit_fn(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    def run() -> Tensor:
        for _ in range(STEPS):
            xg = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xg), y, reduction="sum")
            torch.autograd.grad(loss, xg)
        return x

    return run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def attack_rows(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    threat = al.ThreatModel("linf", EPS)
    attack = al.attacks.PGD(threat, steps=STEPS, step_size=STEP)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    model = preact(args.width, device).eval()
    fns: dict[str, Callable[[], Tensor]] = {"limit (eager fp32)": limit_fn(model, x, y)}
    fns["advlearn eager fp32"] = lambda: attack(model, x, y)
    variants = {
        "advlearn bf16": {"precision": "bf16"},
        "advlearn channels_last": {"memory_format": "channels_last"},
        "advlearn bf16 + channels_last": {"precision": "bf16", "memory_format": "channels_last"},
    }
    for name, options in variants.items():
        net = FastModel(preact(args.width, device).eval(), **options)  # type: ignore[arg-type]
        xin = x.contiguous(memory_format=torch.channels_last) if "memory_format" in options else x
        fns[name] = (lambda n, xi: lambda: attack(n, xi, y))(net, xin)
    compile_seconds = None
    if not args.no_compile:
        net = FastModel(preact(args.width, device).eval(), compile=True)
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            attack(net, x, y)  # compiles (forward and backward) here, outside the timed rounds
        compile_seconds = time.perf_counter() - started
        if net.compiled:
            fns["advlearn compile"] = lambda: attack(net, x, y)
        else:
            print("compile fell back to eager:", "; ".join(str(w.message) for w in caught))
    try:
        sys.path.insert(0, os.environ.get("TORCHATTACKS_PATH", "/tmp/bench13-pkgs"))
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)
        fns["torchattacks PGD"] = lambda: ta(x, y)
    except ImportError:
        print("torchattacks not installed: no torchattacks row")
    times, _ = round_robin(fns, Timing(args.reps, 1, args.clock), sync=lambda: sync(device))
    limit = statistics.median(times["limit (eager fp32)"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "variant": name,
                "median_s": med,
                "images_per_s": args.batch / med,
                "x_limit": med / limit,
                "spread_s": [min(ts), max(ts)],
                **({"compile_s": compile_seconds} if name == "advlearn compile" else {}),
            }
        )
    return rows


class _Steps(list):  # type: ignore[type-arg]
    """A fixed list of batches with a length, for the Trainer."""


def training_rows(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    threat = al.ThreatModel("linf", EPS)
    g = torch.Generator().manual_seed(1)
    batches = _Steps(
        (
            torch.rand(args.batch, 3, 32, 32, generator=g).to(device),
            torch.randint(0, 10, (args.batch,), generator=g).to(device),
        )
        for _ in range(args.train_steps)
    )
    rows = []
    cells = [(p, o) for p in ("32", "bf16") for o in ("standard", "pgd_at")]
    times: dict[tuple[str, str], list[float]] = {c: [] for c in cells}
    for rnd in range(args.reps + 1):
        shift = rnd % len(cells)
        for precision, objective_name in cells[shift:] + cells[:shift]:
            model = preact(args.width, device)
            objective = (
                al.training.Standard()
                if objective_name == "standard"
                else al.training.PGDAT(threat, steps=STEPS, step_size=STEP)
            )
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            trainer = al.training.Trainer(
                model, objective, opt, device=device, quiet=True, precision=precision
            )
            clock = CLOCKS[args.clock]
            sync(device)
            t0 = clock()
            trainer.fit(batches, epochs=1)
            sync(device)
            if rnd:
                times[(precision, objective_name)].append((clock() - t0) / args.train_steps)
    for precision in ("32", "bf16"):
        std = statistics.median(times[(precision, "standard")])
        at = statistics.median(times[(precision, "pgd_at")])
        rows.append(
            {"precision": precision, "standard_s_per_step": std, "pgd10_at_s_per_step": at, "ratio": at / std}
        )
    return rows


class Bucketed(nn.Module):
    """``model`` compiled with static shapes, every batch padded with zero rows up to a power of two
    (at least ``minimum``): one graph per bucket; the padded rows' outputs are cut off (eval mode only:
    padding would move BatchNorm's batch statistics in train mode)."""

    def __init__(self, model: nn.Module, minimum: int = 8) -> None:
        super().__init__()
        self.module, self.minimum = model, minimum
        self.compiled = torch.compile(model, dynamic=False)
        self.buckets: set[int] = set()

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        size = max(self.minimum, 1 << (n - 1).bit_length())
        self.buckets.add(size)
        if size != n:
            x = torch.cat([x, x.new_zeros(size - n, *x.shape[1:])])
        out: Tensor = self.compiled(x)
        return out[:n]


def _shape_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10).to(device).eval()


def compile_shape_rows(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """An early-exit PGD's shrinking batches through torch.compile: a dynamic batch dimension
    (advlearn's FastModel) against static graphs on power-of-two buckets (:class:`Bucketed`)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(args.shape_batch, 1, 28, 28, generator=g).to(device)
    eager = _shape_model(device)
    with torch.no_grad():
        y = eager(x).argmax(1)  # every example starts correct, so none leaves before the first step
    # small ε: the untrained net's examples fall one by one over the steps, not all at the first
    attack = al.attacks.PGD(al.ThreatModel("linf", args.shape_eps), steps=STEPS, early_stop=True)
    torch.manual_seed(0)
    sizes: list[int] = []
    hook = eager.register_forward_pre_hook(lambda module, inputs: sizes.append(inputs[0].shape[0]))
    result = attack.run(eager, x, y, generator=torch.Generator().manual_seed(0))
    hook.remove()
    rows = []
    clock = CLOCKS[args.clock]
    for mode in ("dynamic", "bucketed"):
        torch._dynamo.reset()
        net: nn.Module = (
            FastModel(_shape_model(device), compile=True)
            if mode == "dynamic"
            else Bucketed(_shape_model(device))
        )
        run = lambda net=net: attack.run(net, x, y, generator=torch.Generator().manual_seed(0))  # noqa: E731
        sync(device)
        t0 = clock()
        first = run()  # compiles every graph the sequence of batch sizes needs
        sync(device)
        first_s = clock() - t0
        times, _ = round_robin({mode: lambda run=run: run().x_adv}, Timing(args.reps, 0, args.clock),
                               sync=lambda: sync(device))  # fmt: skip
        graphs = len(net.buckets) if isinstance(net, Bucketed) else None
        rows.append({
            "mode": mode, "first_call_s": first_s, "median_s": statistics.median(times[mode]),
            "graphs": graphs, "same_success": bool(torch.equal(first.success, result.success)),
        })  # fmt: skip
    eager_times, _ = round_robin(
        {"eager": lambda: attack.run(eager, x, y, generator=torch.Generator().manual_seed(0)).x_adv},
        Timing(args.reps, 1, args.clock), sync=lambda: sync(device),
    )  # fmt: skip
    rows.append({"mode": "eager", "first_call_s": None, "median_s": statistics.median(eager_times["eager"]),
                 "graphs": None, "same_success": True})  # fmt: skip
    for row in rows:
        row["batch_sizes"] = sizes
        row["robust"] = int((~result.success).sum())
    return rows


def _ddp_worker(args: argparse.Namespace) -> None:
    """One rank of the DDP table (started by torchrun): PGD-AT epochs on the global batch, rank 0 times."""
    from torch.utils.data import DataLoader, TensorDataset

    from advlearn import _distributed as dist

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(4)
    n = args.ddp_batch * args.ddp_steps
    data = TensorDataset(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    loader = DataLoader(data, batch_size=args.ddp_batch, shuffle=False)
    torch.manual_seed(0)
    model = build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10)
    objective = al.training.PGDAT(al.ThreatModel("linf", 0.1), steps=args.ddp_pgd_steps)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = al.training.Trainer(model, objective, opt, device="cpu", quiet=True, seed=0)
    trainer.fit(loader, epochs=1)  # warm-up epoch
    dist.barrier()
    t0 = time.perf_counter()
    trainer.fit(loader, epochs=1)
    dist.barrier()
    seconds = time.perf_counter() - t0
    if dist.is_main():
        out = {"ranks": dist.world_size(), "seconds": seconds, "examples": n, "images_per_s": n / seconds}
        Path(args.ddp_out).write_text(json.dumps(out))


def ddp_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The DDP table: the same global batches on 1 and on 2 gloo ranks (one torch thread each), wall clock."""
    import tempfile

    rows = []
    for ranks in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ddp.json"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += [f"--nproc_per_node={ranks}", str(Path(__file__).resolve()), "--ddp-worker"]
            command += ["--ddp-out", str(out), "--ddp-batch", str(args.ddp_batch)]
            command += ["--ddp-steps", str(args.ddp_steps), "--ddp-pgd-steps", str(args.ddp_pgd_steps)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"the {ranks}-rank DDP run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
                )
            rows.append(json.loads(out.read_text()) | {"load_average": os.getloadavg()[0]})
    for row in rows:
        row["x_one_rank"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument(
        "--width", type=int, default=16, help="PreAct ResNet-18 width (64 = the paper's; CPU default 16)"
    )
    p.add_argument("--batch", type=int, default=32, help="images per attack call and per training step")
    p.add_argument("--reps", type=int, default=3, help="timed rounds (after one warm-up round)")
    p.add_argument("--train-steps", type=int, default=4, help="training steps per timed epoch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="thread: needs --threads 1")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled row")
    p.add_argument("--compile-shapes", action="store_true", help="table 3: dynamic batch dim vs bucketing")
    p.add_argument("--only-compile-shapes", action="store_true", help="table 3 alone")
    p.add_argument("--shape-batch", type=int, default=256, help="table 3: examples of the early-exit PGD")
    p.add_argument("--shape-eps", type=float, default=0.02, help="table 3: its l-inf radius")
    p.add_argument("--ddp", action="store_true", help="table 4: PGD-AT on 2 gloo ranks vs 1 (CPU)")
    p.add_argument("--only-ddp", action="store_true", help="table 4 alone")
    p.add_argument("--ddp-batch", type=int, default=64, help="table 4: global batch")
    p.add_argument("--ddp-steps", type=int, default=6, help="table 4: steps per timed epoch")
    p.add_argument("--ddp-pgd-steps", type=int, default=10, help="table 4: PGD steps of PGD-AT")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ddp-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 training steps, no compile")
    p.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    args = p.parse_args(argv)
    if args.ddp_worker:
        _ddp_worker(args)
        return
    if args.clock == "thread" and args.threads != 1:
        p.error("--clock thread counts the main thread only; use it with --threads 1")
    if args.quick:
        args.reps, args.train_steps, args.no_compile = 1, 2, True
    torch.set_num_threads(args.threads)
    device = al.training.resolve_device(args.device)
    started = time.perf_counter()
    result: dict[str, Any] = {"environment": environment(args, device)}
    if not (args.only_compile_shapes or args.only_ddp):
        tables_1_and_2(args, device, result)
    if args.compile_shapes or args.only_compile_shapes:
        result["compile_shapes"] = rows = compile_shape_rows(args, device)
        print(f"\nEarly-exit PGD-10 (small_cnn, batch {args.shape_batch}) through torch.compile; "
              f"batch sizes {rows[0]['batch_sizes']}:")  # fmt: skip
        print(
            table(
                ["mode", "first call s (compiles)", "median s after", "graphs", "same results"],
                [
                    [
                        r["mode"],
                        "-" if r["first_call_s"] is None else f"{r['first_call_s']:.1f}",
                        f"{r['median_s']:.3f}",
                        "-" if r["graphs"] is None else str(r["graphs"]),
                        str(r["same_success"]),
                    ]
                    for r in rows
                ],
            )
        )
    if (args.ddp or args.only_ddp) and device.type == "cpu":
        result["ddp"] = rows = ddp_rows(args)
        print(f"\nPGD-{args.ddp_pgd_steps} AT, small_cnn, global batch {args.ddp_batch}, gloo, wall clock:")
        print(
            table(
                ["ranks", "s per epoch", "images/s", "x one rank"],
                [
                    [
                        str(r["ranks"]),
                        f"{r['seconds']:.2f}",
                        f"{r['images_per_s']:.1f}",
                        f"{r['x_one_rank']:.2f}",
                    ]
                    for r in rows
                ],
            )
        )
    result["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{result['seconds']:.0f} s; wrote {args.out}")


def tables_1_and_2(args: argparse.Namespace, device: torch.device, result: dict[str, Any]) -> None:
    result["attack"] = attack_rows(args, device)
    print(f"\nPGD-10 l-inf on PreAct ResNet-18 (width {args.width}), batch {args.batch}, {device}:")
    print(
        table(
            ["variant", "median s", "images/s", "x limit"],
            [
                [r["variant"], f"{r['median_s']:.2f}", f"{r['images_per_s']:.1f}", f"{r['x_limit']:.3f}"]
                for r in result["attack"]
            ],
        )
    )
    compiled = [r for r in result["attack"] if "compile_s" in r]
    if compiled:
        print(f"(compile row: {compiled[0]['compile_s']:.0f} s to compile, excluded)")
    result["training"] = training_rows(args, device)
    print(f"\nTrainer steps, batch {args.batch} (PGD-10 AT vs standard; limit 11, goal <= 11.55):")
    print(
        table(
            ["precision", "standard s/step", "PGD-10 AT s/step", "ratio"],
            [
                [
                    r["precision"],
                    f"{r['standard_s_per_step']:.3f}",
                    f"{r['pgd10_at_s_per_step']:.3f}",
                    f"{r['ratio']:.2f}",
                ]
                for r in result["training"]
            ],
        )
    )


def environment(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE, check=False
        ).stdout.strip()
    except OSError:
        commit = None
    try:
        import torchattacks

        ta_version = torchattacks.__version__
    except ImportError:
        ta_version = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchattacks": ta_version,
        "threads": args.threads,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "commit": commit,
        "args": {k: str(v) for k, v in vars(args).items()},
    }


if __name__ == "__main__":
    main()
