"""Sparse APGD-ℓ1 against the one-coordinate ℓ1 step it replaced and against the original APGD-CE ℓ1.

What it measures
    Robust counts of APGD-CE (100 steps, one run) at ℓ1 ε on the first ``--n`` held-out digits of a
    small MNIST CNN given as a tensors-only file (``--state-dict``, the format of bench/evaluation.py),
    for two seeds: advlearn's sparse APGD-ℓ1 (Croce & Hein 2021), the same on the 3ε→2ε→ε schedule
    (``eps_schedule=True``), advlearn's former one-coordinate step (Algorithm 1 with the ℓ1 steepest
    ascent), and the original ``autoattack.autopgd_base.APGDAttack(norm="L1", n_iter=100)``.

Run
    pip install git+https://github.com/fra31/auto-attack --no-deps   # or put it on PYTHONPATH
    python bench/apgd_l1.py --state-dict model.pt --eps 10 --n 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import advlearn as al
from advlearn.threat import L1
from evaluation import ORIGINAL_INSTALL, state_dict_models

APGD = sys.modules["advlearn.attacks.apgd"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--state-dict", type=Path, required=True)
    p.add_argument("--eps", type=float, default=10.0)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models, x, y = state_dict_models([args.state_dict], args.n)
    (model,) = models.values()
    threat = al.ThreatModel("l1", args.eps)
    try:
        from autoattack.autopgd_base import APGDAttack
    except ImportError:
        APGDAttack = None
        print(f"the original AutoAttack is not installed ({ORIGINAL_INSTALL}); skipping it")
    with torch.no_grad():
        print(f"clean {(model(x).argmax(1) == y).sum().item()} of {len(y)}; {threat.label}")
    for seed in (0, 1):
        row = {}
        for name, options in (("sparse", {}), ("sparse+schedule", {"eps_schedule": True})):
            start = time.perf_counter()
            out = APGD.apgd(
                model, x, y, threat, steps=100, generator=torch.Generator().manual_seed(seed), **options
            )
            assert threat.contains(out.x_adv, x).all()
            row[name] = (int((~out.success).sum()), time.perf_counter() - start)
        runs = dict(APGD._RUNS)
        APGD._RUNS.pop(L1)  # back to Algorithm 1 with the one-coordinate ℓ1 steepest ascent
        start = time.perf_counter()
        out = APGD.apgd(model, x, y, threat, steps=100, generator=torch.Generator().manual_seed(seed))
        row["one-coordinate"] = (int((~out.success).sum()), time.perf_counter() - start)
        APGD._RUNS.update(runs)
        if APGDAttack is not None:
            start = time.perf_counter()
            adv = APGDAttack(model, n_iter=100, norm="L1", eps=args.eps, seed=seed, device="cpu").perturb(
                x, y
            )
            with torch.no_grad():
                row["original"] = (int((model(adv).argmax(1) == y).sum()), time.perf_counter() - start)
        print(f"seed {seed}: " + ", ".join(f"{k} {v[0]} robust ({v[1]:.0f} s)" for k, v in row.items()))


if __name__ == "__main__":
    main()
