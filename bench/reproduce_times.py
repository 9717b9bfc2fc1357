"""The time of each ``advlearn reproduce`` experiment: wall seconds, process CPU seconds and the load.

Runs the named experiments (default: every one, ``--quick``) one after another in this process
and prints, per experiment, the wall time, the process CPU time (user + system, all threads,
from ``resource.getrusage``) and the 1-minute load average before and after, then the totals.
On a machine shared with other jobs the wall time measures the load as much as the code; the
CPU time is the better figure of the work done (it still grows somewhat under contention, as
idle threads spin). ``--threads`` fixes torch's intra-op threads (the CI machine has 2 cores).

Usage:
    python bench/reproduce_times.py --quick                    # every experiment, as CI runs them
    python bench/reproduce_times.py goodfellow madry-mnist     # full runs
    python bench/reproduce_times.py --quick --json times.json claim-head
    python bench/reproduce_times.py claim-overfitting --threads 1 --out-dir /tmp/runs   # keep the run folder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time

import torch

from advlearn.experiments.reproduce import EXPERIMENTS, reproduce


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiments (default: all)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--out-dir", default=None, help="keep the run folders here (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.names or list(EXPERIMENTS)
    for name in names:
        EXPERIMENTS.lookup(name)  # an unknown name fails here, listing the known ones
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, {args.threads} torch threads"
    )
    print(f"{'experiment':18} {'wall s':>8} {'CPU s':>8} {'load before':>12} {'load after':>11}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = args.out_dir or scratch
        for name in names:
            load_before = os.getloadavg()[0]
            wall, cpu = time.perf_counter(), _cpu_seconds()
            reproduce(name, quick=args.quick, seeds=args.seeds, out_dir=out_dir)
            row = {
                "experiment": name,
                "quick": args.quick,
                "wall_s": time.perf_counter() - wall,
                "cpu_s": _cpu_seconds() - cpu,
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
            rows.append(row)
            print(
                f"{name:18} {row['wall_s']:8.1f} {row['cpu_s']:8.1f} "
                f"{row['load_before']:12.1f} {row['load_after']:11.1f}",
                flush=True,
            )
    print(f"{'total':18} {sum(r['wall_s'] for r in rows):8.1f} {sum(r['cpu_s'] for r in rows):8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
