"""Which targets of APGD-T and FAB-T break the examples APGD-CE leaves standing (issue 14 item 6).

For each model and the threat given: APGD-CE (AutoAttack's first member, the standard version's
options for the norm) runs on the correctly classified digits; on every digit it leaves standing,
APGD-T and FAB-T (the standard version's options, with the reference's 9 targets, 5 for APGD-T at
ℓ1) then run **on each wrong class separately** (``targets=`` one column, ``num_targets=1``), so
every (digit, class) pair is tried whatever the others did. Each pair is recorded with the class's
rank by the clean logits (the reference's order), its rank by the logits at APGD-CE's point (its
highest-loss point), the margin ``z_y − z_t`` there, and whether the run broke the digit. APGD-T
is also run as the reference runs it (its 9 or 5 best classes by the clean logits, one call);
FAB-T with one restart starts at ``x`` and draws nothing, so its reference run breaks exactly the
union of its per-class runs over the top 9 clean classes, which is what is reported for it. The
summary scores three rankings (clean, at APGD-CE's point, the two interleaved as AutoAttack now
does): how many of each one's first places keep every digit a per-class run breaks.

    PYTHONPATH=src python bench/targets.py --state-dict std.pt --state-dict at3.pt \\
        --norm linf --eps 0.2 --offset 0 --n 300 --threads 1 --out targets_linf.json

One thread; the JSON holds every pair, so any rule ("the top k by the logits at APGD-CE's point")
can be scored on it afterwards (``--summary FILE`` prints the table for a saved JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlearn import ThreatModel
from advlearn.attacks import AutoAttack
from advlearn.attacks._base import Attack
from advlearn.attacks.apgd import target_ranking

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluation import state_dict_models

SEED = 0


def ranks(ranking: Tensor, num_classes: int) -> Tensor:
    """``(B, C)``: each class's place in ``ranking`` (``(B, C − 1)``), 0 best; −1 for the label."""
    out = torch.full((ranking.shape[0], num_classes), -1, dtype=torch.int64)
    places = torch.arange(ranking.shape[1]).expand_as(ranking)
    return out.scatter(1, ranking, places)


def run(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor:
    """The examples ``attack`` fools (a fresh generator seeded ``seed``)."""
    success: Tensor = attack.run(model, x, y, generator=torch.Generator().manual_seed(seed)).success
    return success


def cell(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, offset: int) -> dict[str, Any]:
    members = dict(AutoAttack(threat, version="standard").members())
    # The standard version's members with the reference's target counts (9; 5 for APGD-T at ℓ1).
    apgd_ce = members["APGD-CE"]
    apgd_t = dataclasses.replace(members["APGD-T"], num_targets=5 if threat.norm == "l1" else 9)  # type: ignore[type-var]
    fab_t = dataclasses.replace(members["FAB-T"], num_targets=9)  # type: ignore[type-var]
    with torch.no_grad():
        logits = model(x)
    num_classes = logits.shape[1]
    correct = logits.argmax(dim=1) == y
    idx = correct.nonzero().squeeze(1)
    started = time.thread_time()
    ce = apgd_ce.run(model, x[idx], y[idx], generator=torch.Generator().manual_seed(SEED))
    stand = idx[~ce.success]
    point = ce.x_adv[~ce.success]
    xs, ys = x[stand], y[stand]
    with torch.no_grad():
        at_point = model(point)
    clean_rank = ranks(target_ranking(logits[stand], ys), num_classes)
    point_rank = ranks(target_ranking(at_point, ys), num_classes)
    margin = at_point.gather(1, ys.unsqueeze(1)) - at_point
    broke: dict[str, Tensor] = {}
    for label, member in (("APGD-T", apgd_t), ("FAB-T", fab_t)):
        table = torch.zeros(len(stand), num_classes, dtype=torch.bool)
        for c in range(num_classes):
            rows = (ys != c).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            one = dataclasses.replace(member, num_targets=1, targets=torch.full((len(rows), 1), c))  # type: ignore[type-var]
            table[rows, c] = run(one, model, xs[rows], ys[rows], SEED + 1 + c)
        broke[label] = table
    full_t = run(apgd_t, model, xs, ys, SEED + 100) if len(stand) else torch.zeros(0, dtype=torch.bool)
    k_fab = fab_t.num_targets  # type: ignore[attr-defined]
    full_fab = (broke["FAB-T"] & (clean_rank >= 0) & (clean_rank < k_fab)).any(dim=1)
    seconds = time.thread_time() - started
    pairs = [
        {
            "digit": offset + int(stand[i]),
            "label": int(ys[i]),
            "target": c,
            "rank_clean": int(clean_rank[i, c]),
            "rank_point": int(point_rank[i, c]),
            "margin_point": float(margin[i, c]),
            "apgd_t": bool(broke["APGD-T"][i, c]),
            "fab_t": bool(broke["FAB-T"][i, c]),
        }
        for i in range(len(stand))
        for c in range(num_classes)
        if c != int(ys[i])
    ]
    return {
        "digits": [offset, offset + len(y) - 1],
        "correct": int(correct.sum()),
        "standing_after_apgd_ce": len(stand),
        "apgd_t_num_targets": apgd_t.num_targets,  # type: ignore[attr-defined]
        "fab_t_num_targets": k_fab,
        "full_apgd_t_breaks": [offset + int(stand[i]) for i in full_t.nonzero().squeeze(1).tolist()],
        "full_fab_t_breaks": [offset + int(stand[i]) for i in full_fab.nonzero().squeeze(1).tolist()],
        "cpu_seconds": seconds,
        "pairs": pairs,
    }


def interleaved(pairs: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """Each (digit, class)'s place in the clean ranking interleaved with the one at APGD-CE's point
    (``c₀, p₀, c₁, p₁, …``, each class once: what the ensemble's ``target_ranking`` gives)."""
    first = {(p["digit"], p["target"]): min(2 * p["rank_clean"], 2 * p["rank_point"] + 1) for p in pairs}
    out = {}
    for digit in {d for d, _ in first}:
        mine = sorted((place, c) for (d, c), place in first.items() if d == digit)
        out.update({(digit, c): i for i, (_, c) in enumerate(mine)})
    return out


def summary(results: dict[str, Any]) -> None:
    """Per cell and targeted member: the breaks, and for each ranking the least k whose top k keep
    every digit that a per-class run breaks among those the standard run needs to break."""
    for name, c in results["cells"].items():
        pairs = c["pairs"]
        mixed = interleaved(pairs)
        for p in pairs:
            p["rank_interleaved"] = mixed[p["digit"], p["target"]]
        print(f"{name}: {c['correct']} correct, {c['standing_after_apgd_ce']} standing after APGD-CE")
        for attack, k_full, full in (
            ("apgd_t", c["apgd_t_num_targets"], c["full_apgd_t_breaks"]),
            ("fab_t", c["fab_t_num_targets"], c["full_fab_t_breaks"]),
        ):
            hits = [p for p in pairs if p[attack]]
            # the standard run's breaks, and those of a per-class run on one of its (top k_full clean) classes
            needed = set(full) | {p["digit"] for p in hits if p["rank_clean"] < k_full}
            any_class = {p["digit"] for p in hits}
            found = [
                (p["digit"], p["target"], p["rank_clean"], p["rank_point"], round(p["margin_point"], 2))
                for p in hits
            ]
            print(f"  {attack}: full run breaks {sorted(full)}; any class breaks {sorted(any_class)}")
            print(f"    per class (digit, class, clean rank, rank at APGD-CE's point, margin there): {found}")
            lost = sorted(needed - any_class)
            print(f"    needed, broken by no per-class run (random starts): {lost}")
            for key in ("rank_clean", "rank_point", "rank_interleaved"):
                best = {d: min(p[key] for p in hits if p["digit"] == d) for d in needed & any_class}
                least, places = max(best.values(), default=-1) + 1, sorted(best.values())
                print(
                    f"    {key}: top {least} keep every needed digit a per-class run breaks; places {places}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dict", type=Path, action="append", default=[])
    parser.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    parser.add_argument("--eps", type=float, default=0.2)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path, help="print the summary of a saved JSON and stop")
    args = parser.parse_args()
    if args.summary is not None:
        summary(json.loads(args.summary.read_text()))
        return
    torch.set_num_threads(args.threads)
    models, x, y = state_dict_models(args.state_dict, args.n, args.offset)
    threat = ThreatModel(args.norm, args.eps, bounds=(0.0, 1.0))
    results: dict[str, Any] = {"norm": args.norm, "eps": args.eps, "cells": {}}
    for name, model in models.items():
        results["cells"][name] = cell(model, x, y, threat, args.offset)
        print(f"{name}: {results['cells'][name]['cpu_seconds']:.1f} CPU s", file=sys.stderr)
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=1))
    summary(results)


if __name__ == "__main__":
    main()
