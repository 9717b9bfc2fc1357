"""advlearn's AutoAttack against the original AutoAttack (fra31/auto-attack) and torchattacks'.

What it measures
    Robust accuracy and wall time of an AutoAttack evaluation of the 1,000 MNIST-5k test digits the
    main job (``advlearn run``) evaluates, l-inf eps 0.3, for its standard and its PGD-AT small_cnn.
    The models are the main job's own: ``--run-dir`` points at a finished run (its ``standard/`` and
    ``pgd-at/`` folders); without it they are trained once with the main job's config (``advlearn
    train``, a few minutes) into bench/.cache/ and loaded from there afterwards.
    advlearn: ``AutoAttack(threat, version="standard")``: APGD-CE (100 steps), APGD-T (100 steps, 4
    targets, targeted DLR) and FAB-T (100 steps, 4 targets), both on the clean ranking interleaved
    with the one at APGD-CE's point, then Square (5,000 queries), each run only on the examples still
    standing, every example leaving an attack at its first fooling iterate.
    torchattacks: ``AutoAttack(model, norm="Linf", eps=0.3, version="standard", n_classes=10, seed=0)``
    with ``steps = 100`` set on its APGD, APGDT and FAB members (its defaults are 10; the original
    AutoAttack uses 100): APGD-CE, APGD-T, FAB-T, Square (5,000 queries); its MultiAttack passes
    only the examples every earlier member failed on to the next one.
    original (issue 14): the reference code of Croce & Hein, ``autoattack.AutoAttack(model,
    norm=..., eps=..., version="standard", seed=0)``: APGD-CE, APGD-T, FAB-T, Square (5,000
    queries), with its own per-norm settings; ``--norm``/``--eps`` choose the threat model for all.
    All see the same batches (``--batch-size``, default 500), in turns, with torch.set_num_threads(2).
    Per-example agreement: for each pair of libraries, how many examples only one of them breaks.
    Robust = classified correctly clean and at the returned point; every returned point is checked
    to lie in the eps-ball and the box. "grad+fwd/example" counts the passes through the model
    (a forward hook on its first layer; a pass with a graph counts as a grad).

Goal (issue 5)
    advlearn's robust accuracy <= torchattacks' + 0.3 points, at <= 0.5x its wall time.

Hardware and versions
    Written to the results JSON (bench/results/evaluation.json) with the git commit of the checkout.

Run
    pip install git+https://github.com/fra31/auto-attack --no-deps   # the original (or PYTHONPATH)
    pip install torchattacks --no-deps           # its dependencies pull torchvision and a CUDA torch
    python bench/evaluation.py --run-dir runs/mnist5k-linf-0.3     # or without --run-dir: trains first
    python bench/evaluation.py --quick           # smoke run: 16 digits, both models, same settings
    Options: --n (test digits, default 1000), --batch-size, --threads, --versions (advlearn versions
    to run, default "standard"; "standard,fast" adds the cheaper one), --norm, --eps, --out (JSON),
    --state-dict FILE (instead of the main job's models: a tensors-only torch file {"state", "xte",
    "yte", "label"} of the small CNN defined below, e.g. one trained outside the project; repeatable),
    --offset K (with --state-dict: start at held-out digit K, for a slice not compared before),
    --clock thread (time each library by the thread's CPU time, with --threads 1 on a shared machine),
    --square-queries Q (also Square alone against the original's SquareAttack, Q queries, both on the
    reference's un-rescaled schedule: ms per query and robust counts; needs the original).

Evidence
    Not yet run at full size; the lead engineer runs the timed comparison (see bench/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.checkpoint import load_model
from advlearn.experiments.main_job import default_config, load_data, run_experiment

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "evaluation"
DEFAULT_OUT = HERE / "results" / "evaluation.json"
LABELS = ("standard", "pgd-at")
SEED = 0
NORM_NAMES = {"linf": "Linf", "l2": "L2", "l1": "L1"}  # the original's spelling
CLOCKS = {
    "wall": time.perf_counter,
    "thread": time.thread_time,
}  # --clock thread: CPU time, for a shared machine
ORIGINAL_INSTALL = "pip install git+https://github.com/fra31/auto-attack --no-deps"

# (model, x, y) -> adversarial inputs, plus a dict the library may fill with details
EvalFn = Callable[[nn.Module, Tensor, Tensor, dict[str, Any]], Tensor]


# ----------------------------------------------------------------------------- models and data


def main_job_models(run_dir: Path | None) -> tuple[dict[str, nn.Module], Path]:
    """The main job's standard and PGD-AT models, from ``run_dir`` or trained into the cache once."""
    if run_dir is None:
        cfg = default_config()
        run_dir = CACHE / cfg.name
        if not all((run_dir / label / "model.safetensors").exists() for label in LABELS):
            print(f"training the main job's models into {run_dir} (once; a few minutes)")
            shutil.rmtree(run_dir, ignore_errors=True)
            run_experiment(dataclasses.replace(cfg, out_dir=str(CACHE)), quiet=True, evaluate_models=False)
    models = {}
    for label in LABELS:
        model, _ = load_model(run_dir / label)
        models[label] = model.eval()
    return models, run_dir


def small_cnn() -> nn.Module:
    """The small MNIST CNN of the ``--state-dict`` files (two stride-2 convolutions, two linear layers)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip


def state_dict_models(
    paths: list[Path], n: int, offset: int = 0
) -> tuple[dict[str, nn.Module], Tensor, Tensor]:
    """Models and held-out digits ``offset … offset + n − 1`` from tensors-only files (``weights_only=True``:
    nothing is unpickled)."""
    models, data = {}, None
    for path in paths:
        blob = torch.load(path, weights_only=True)
        model = small_cnn()
        model.load_state_dict(blob["state"])
        models[str(blob.get("label", path.stem))] = model.eval().requires_grad_(False)
        if data is None:
            data = (blob["xte"][offset : offset + n], blob["yte"][offset : offset + n])
        elif not torch.equal(data[0], blob["xte"][offset : offset + n]):
            raise ValueError(f"{path}: its held-out digits differ from the first file's")
    assert data is not None
    return models, data[0], data[1]


def main_job_test_set(n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` of the main job's test digits (the main job evaluates all 1,000)."""
    test = load_data(default_config()).test
    return test.x[:n], test.y[:n]


@torch.no_grad()
def predict(model: nn.Module, x: Tensor) -> Tensor:
    logits: Tensor = model(x)
    return logits.argmax(dim=1)


class PassCounter:
    """Counts forward passes through a model's first layer, with and without a graph, per example."""

    def __init__(self, model: nn.Module) -> None:
        first = next(m for m in model.modules() if not list(m.children()))
        self.handle = first.register_forward_hook(self.hook)
        self.grads = self.forwards = 0

    def hook(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        n = args[0].shape[0]
        if torch.is_grad_enabled() and output.requires_grad:
            self.grads += n
        else:
            self.forwards += n

    def remove(self) -> None:
        self.handle.remove()


# ----------------------------------------------------------------------------- the two libraries


def advlearn_autoattack(version: str, threat: al.ThreatModel) -> EvalFn:
    attack = al.attacks.AutoAttack(threat, version=version)

    def run(model: nn.Module, x: Tensor, y: Tensor, details: dict[str, Any]) -> Tensor:
        generator = torch.Generator().manual_seed(SEED + details.setdefault("batches", 0))
        details["batches"] += 1
        out = attack.evaluate(model, x, y, generator=generator)
        for name, seconds in zip(out.members, out.seconds, strict=True):
            details.setdefault("seconds", {}).setdefault(name, 0.0)
            details["seconds"][name] += seconds
        for i, name in enumerate(out.members):
            details.setdefault("broken_by", {}).setdefault(name, 0)
            details["broken_by"][name] += int((out.broken_by == i).sum())
        return out.x_adv

    return run


def original_autoattack(threat: al.ThreatModel) -> EvalFn:
    """The reference code, as its README runs it; each batch gets the same seed, as advlearn's batches do."""
    from autoattack import AutoAttack

    def run(model: nn.Module, x: Tensor, y: Tensor, details: dict[str, Any]) -> Tensor:
        attack = AutoAttack(
            model, norm=NORM_NAMES[str(threat.norm)], eps=float(threat.eps), version="standard",
            seed=SEED, device=str(x.device), verbose=False,
        )  # fmt: skip
        details["members"] = list(attack.attacks_to_run)
        adv: Tensor = attack.run_standard_evaluation(x, y, bs=len(y))
        return adv

    return run


def torchattacks_autoattack(threat: al.ThreatModel) -> EvalFn:
    import torchattacks

    def run(model: nn.Module, x: Tensor, y: Tensor, details: dict[str, Any]) -> Tensor:
        attack = torchattacks.AutoAttack(
            model, norm=NORM_NAMES[str(threat.norm)], eps=float(threat.eps), version="standard",
            n_classes=10, seed=SEED,
        )  # fmt: skip
        for member in attack._autoattack.attacks:
            if hasattr(member, "steps"):
                member.steps = 100  # the original AutoAttack's iterations (torchattacks defaults to 10)
        details["members"] = [type(m).__name__ for m in attack._autoattack.attacks]
        adv: Tensor = attack(x, y)
        return adv

    return run


def libraries(versions: list[str], threat: al.ThreatModel) -> dict[str, EvalFn]:
    libs = {f"advlearn {v}": advlearn_autoattack(v, threat) for v in versions}
    try:
        libs["original standard"] = original_autoattack(threat)
    except ImportError:
        print(f"the original AutoAttack is not installed ({ORIGINAL_INSTALL}); skipping it")
    try:
        libs["torchattacks standard"] = torchattacks_autoattack(threat)
    except ImportError:
        print("torchattacks is not installed (pip install torchattacks --no-deps); skipping it")
    return libs


def evaluate_library(
    name: str,
    fn: EvalFn,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    threat: al.ThreatModel,
    clock: str = "wall",
) -> dict[str, Any]:
    counter = PassCounter(model)
    details: dict[str, Any] = {}
    robust = []
    feasible = True
    torch.manual_seed(SEED)
    start = CLOCKS[clock]()
    try:
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            x_adv = fn(model, xb, yb, details)
            feasible &= bool(threat.contains(x_adv, xb).all())
            robust.append((predict(model, xb) == yb) & (predict(model, x_adv) == yb))
    finally:
        counter.remove()
    seconds = CLOCKS[clock]() - start
    flags = torch.cat(robust)
    details.pop("batches", None)
    return {
        "library": name,
        "robust_acc": float(flags.float().mean()),
        "robust_count": int(flags.sum()),
        "seconds": seconds,
        "feasible": feasible,
        "grads_per_example": counter.grads / len(y),
        # less the two bookkeeping predictions above (clean and at x_adv), which are not the attack's
        "forwards_per_example": counter.forwards / len(y) - 2,
        "details": details,
        "robust_flags": flags.int().tolist(),
    }


def square_per_query(
    models: dict[str, nn.Module], x: Tensor, y: Tensor, threat: al.ThreatModel, queries: int, clock: str
) -> list[dict[str, Any]]:
    """Square alone, advlearn's against the original's ``SquareAttack``, on the same digits and budget.

    Both run the reference's un-rescaled window schedule (``rescale=False``, ``resc_schedule=False``),
    one after the other on each model; the cost per query is the clock's seconds over the forward
    passes (examples) through the model, counted by :class:`PassCounter`.
    """
    from autoattack.square import SquareAttack

    def advlearn_square(model: nn.Module) -> Tensor:
        generator = torch.Generator().manual_seed(SEED)
        out = al.attacks.square(model, x, y, threat, queries=queries, rescale=False, generator=generator)
        return out.x_adv

    def original_square(model: nn.Module) -> Tensor:
        attack = SquareAttack(
            model, norm=NORM_NAMES[str(threat.norm)], eps=float(threat.eps), n_queries=queries,
            p_init=0.8, seed=SEED, resc_schedule=False, device=str(x.device),
        )  # fmt: skip
        adv: Tensor = attack.perturb(x, y)
        return adv

    rows = []
    for label, model in models.items():
        for name, fn in (("advlearn", advlearn_square), ("original", original_square)):
            counter = PassCounter(model)
            start = CLOCKS[clock]()
            try:
                with torch.no_grad():
                    x_adv = fn(model)
            finally:
                counter.remove()
            seconds = CLOCKS[clock]() - start
            robust = int(((predict(model, x) == y) & (predict(model, x_adv) == y)).sum())
            rows.append({
                "model": label, "library": name, "queries": queries, "seconds": seconds,
                "forwards": counter.forwards, "ms_per_query": 1e3 * seconds / max(counter.forwards, 1),
                "robust_count": robust, "feasible": bool(threat.contains(x_adv, x).all()),
            })  # fmt: skip
    return rows


def square_table(rows: list[dict[str, Any]]) -> str:
    """Table of :func:`square_per_query`: ms per query and × the original's, per model."""
    original = {r["model"]: r["ms_per_query"] for r in rows if r["library"] == "original"}
    lines = []
    for r in rows:
        ratio = r["ms_per_query"] / original[r["model"]]
        cells = (r["queries"], r["robust_count"], r["forwards"], f"{r['seconds']:.2f}")
        lines.append(
            [
                r["model"],
                f"Square {r['library']}",
                *map(str, cells),
                f"{r['ms_per_query']:.4f}",
                f"{ratio:.2f}x",
            ]
        )
    headers = ["model", "attack", "queries", "robust", "queries spent", "time s", "ms/query", "x original"]
    return markdown_table(headers, lines)


# ----------------------------------------------------------------------------- report


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def reference_of(cell: dict[str, Any]) -> dict[str, Any] | None:
    """The peer times are compared with: the original AutoAttack when it ran, else torchattacks'."""
    results = cell["results"]
    found: dict[str, Any] | None = results.get("original standard", results.get("torchattacks standard"))
    return found


def table(cells: list[dict[str, Any]]) -> str:
    rows = []
    for cell in cells:
        reference = reference_of(cell)
        for res in cell["results"].values():
            ratio = f"{res['seconds'] / reference['seconds']:.2f}x" if reference else "-"
            rows.append([
                cell["model"], res["library"], f"{100 * res['robust_acc']:.1f}", f"{res['seconds']:.1f}",
                ratio, f"{res['grads_per_example']:.1f}+{res['forwards_per_example']:.1f}",
            ])  # fmt: skip
    headers = ["model", "library", "robust %", "time s", "x reference time", "grad+fwd/example"]
    return markdown_table(headers, rows)


def agreement(cells: list[dict[str, Any]]) -> list[str]:
    """Per pair of libraries: how many examples only the first breaks, only the second, and both keep."""
    notes = []
    for cell in cells:
        names = list(cell["results"])
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                ra, rb = cell["results"][a]["robust_flags"], cell["results"][b]["robust_flags"]
                only_a = sum(1 for p, q in zip(ra, rb, strict=True) if not p and q)
                only_b = sum(1 for p, q in zip(ra, rb, strict=True) if p and not q)
                notes.append(
                    f"{cell['model']}: {a} vs {b}: only {a} breaks {only_a}, only {b} breaks {only_b}, "
                    f"agreement {100 * (1 - (only_a + only_b) / max(len(ra), 1)):.1f}%"
                )
    return notes


def goal_notes(cells: list[dict[str, Any]]) -> list[str]:
    """Whether advlearn standard met the goal: robust <= the reference's + 0.3 points at <= 0.5x the time."""
    notes = []
    for cell in cells:
        ours, ref = cell["results"].get("advlearn standard"), reference_of(cell)
        if ours is None or ref is None:
            continue
        gap = 100 * (ours["robust_acc"] - ref["robust_acc"])
        ratio = ours["seconds"] / ref["seconds"]
        met = gap <= 0.3 and ratio <= 0.5
        notes.append(
            f"{cell['model']}: advlearn robust {gap:+.1f} points vs {ref['library']}, {ratio:.2f}x its time: "
            f"goal {'met' if met else 'NOT met'}"
        )
        if not (ours["feasible"] and ref["feasible"]):
            notes.append(f"WARNING: {cell['model']}: a library returned points outside the eps-ball or box")
    return notes


def git_state() -> str | None:
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
    except Exception:
        return None


def environment(args: argparse.Namespace) -> dict[str, Any]:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "python": platform.python_version(), "platform": platform.platform(), "processor": cpu,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "git": git_state(),
        "load_average_at_start": os.getloadavg()[0],
        "versions": {m: version_of(m) for m in ("advlearn", "torch", "numpy", "torchattacks", "autoattack")},
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run on 16 digits")
    p.add_argument("--n", type=int, default=None, help="test digits (default 1000; quick 64)")
    p.add_argument("--run-dir", type=Path, default=None, help="a finished main-job run (standard/, pgd-at/)")
    p.add_argument("--batch-size", type=int, default=500, help="examples per attack call (default 500)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument(
        "--versions", default="standard", help="advlearn versions, comma-separated (default standard)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    p.add_argument("--norm", default="linf", choices=sorted(NORM_NAMES), help="threat norm (default linf)")
    p.add_argument("--eps", type=float, default=0.3, help="threat radius (default 0.3)")
    p.add_argument(
        "--state-dict",
        type=Path,
        action="append",
        default=[],
        help="a small-CNN file instead of the main job",
    )
    p.add_argument(
        "--offset", type=int, default=0, help="with --state-dict: skip this many held-out digits first"
    )
    p.add_argument(
        "--clock",
        default="wall",
        choices=sorted(CLOCKS),
        help="wall time, or the thread's CPU time (with --threads 1, on a shared machine)",
    )
    p.add_argument(
        "--square-queries",
        type=int,
        default=0,
        help="also time Square alone against the original's SquareAttack at this budget (default 0: off)",
    )
    args = p.parse_args(argv)
    args.n = args.n or (16 if args.quick else 1000)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: 1-minute load average is {load:.2f}; other processes will add noise to the times")
    threat = al.ThreatModel(args.norm, args.eps)
    if args.state_dict:
        models, x, y = state_dict_models(args.state_dict, args.n, args.offset)
        run_dir: Path | None = None
    else:
        models, run_dir = main_job_models(args.run_dir)
        x, y = main_job_test_set(args.n)
    libs = libraries([v.strip() for v in args.versions.split(",") if v.strip()], threat)
    cells = []
    for label, model in models.items():
        clean = float((predict(model, x) == y).float().mean())
        print(f"{label}: clean accuracy {100 * clean:.1f}% on {len(y)} test digits")
        results = {}
        for name, fn in libs.items():
            res = evaluate_library(name, fn, model, x, y, args.batch_size, threat, args.clock)
            print(f"  {name}: robust {100 * res['robust_acc']:.1f}% in {res['seconds']:.1f} s")
            results[name] = res
        cells.append({"model": label, "clean_acc": clean, "results": results})
    text = table(cells)
    notes = goal_notes(cells) + agreement(cells)
    print()
    print(text)
    print("\n".join(notes))
    square_rows: list[dict[str, Any]] = []
    if args.square_queries > 0 and "original standard" in libs:
        square_rows = square_per_query(models, x, y, threat, args.square_queries, args.clock)
        print()
        print(square_table(square_rows))
    runtime = time.perf_counter() - start
    print(f"\ntotal runtime {runtime:.0f} s")
    report = {
        "environment": environment(args), "run_dir": str(run_dir), "threat": threat.label,
        "runtime_s": runtime, "cells": cells, "table": text, "notes": notes, "square_per_query": square_rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
