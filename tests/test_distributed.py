"""DDP training under torchrun (gloo, 2 CPU processes spawned by the test, each launch bounded in time).

The same file is the program torchrun starts: ``python -m torch.distributed.run ... test_distributed.py
MODE OUT`` runs :func:`_worker` on every rank. The tests compare what two ranks train with what one
process trains on the same global batches, and a run killed on one rank mid-epoch and resumed
with an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import advlearn
from advlearn.attacks import PGD
from advlearn.threat import ThreatModel
from advlearn.training import AWP, MART, PGDAT, TRADES, FreeAT, Objective, Standard, Trainer

LAUNCH_TIMEOUT_S = 90
EPOCHS = 2


def _loader() -> DataLoader[tuple[Tensor, ...]]:
    """64 examples, global batch 16, shuffled by a DistributedSampler's ``seed + epoch``."""
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.rand(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g))
    return DataLoader(data, batch_size=16, sampler=DistributedSampler(data, num_replicas=1, rank=0, seed=0))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))  # no BatchNorm


THREAT = ThreatModel("linf", 0.1, bounds=(0.0, 1.0))
ZERO = ThreatModel("linf", 0.0, bounds=(0.0, 1.0))  # ε = 0: the random starts are the point itself


@dataclass(frozen=True)
class _PGDATNoStart(Objective):
    """PGD-AT with PGD from x itself: deterministic, so any number of ranks finds the same points."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x_adv = PGD(THREAT, steps=3, random_start=False)(model, x, y)
        return F.cross_entropy(model(x_adv), y)


def _objectives() -> dict[str, Objective]:
    return {
        "standard": Standard(),
        "pgd_at": _PGDATNoStart(),
        "free_at": FreeAT(THREAT, replays=2),  # owns its optimizer steps (one per replay)
        "trades": TRADES(ZERO, steps=2),  # two forward passes per loss
        "mart": MART(ZERO, steps=2),
        "awp": AWP(ZERO, steps=2, gamma=0.01),  # the weight ascent and the step at w + v
    }


def _train(objective: Objective, run_dir: Path | None = None, resume: bool = False) -> nn.Module:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    trainer = Trainer(model, objective, optimizer, device="cpu", seed=0, quiet=True, run_dir=run_dir)
    trainer.fit(_loader(), epochs=EPOCHS + (run_dir is not None), resume=resume)
    return trainer.model


_steps = 0


@dataclass(frozen=True)
class _DiesOnRank1(PGDAT):
    """PGD-AT (random starts) whose rank 1 dies at the 6th step (in the second epoch)."""

    def train_step(self, model: nn.Module, x: Tensor, y: Tensor, optimizer, **kw) -> float:  # type: ignore[no-untyped-def]
        global _steps
        _steps += 1
        if _steps == 6 and os.environ.get("RANK") == "1":
            os._exit(3)
        return super().train_step(model, x, y, optimizer, **kw)


def _evaluation() -> dict[str, Tensor]:
    """Per-example flags of evaluate (FGSM, PGD from x and from keyed random starts, AutoAttack) and an
    ε sweep, on 70 examples in 5 batches."""
    from advlearn import _distributed as dist
    from advlearn.attacks import FGSM, AutoAttack
    from advlearn.evaluation import accuracy_vs_eps, evaluate

    model = _model().eval()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(70, 16, generator=g), torch.randint(0, 4, (70,), generator=g)
    attacks = {
        "fgsm": FGSM(THREAT),
        "pgd": PGD(THREAT, steps=5, random_start=False),
        "pgd_random": PGD(THREAT, steps=3, restarts=2, early_stop=True),  # keyed random starts
        # one call over the rank's shard, in chunks of 16
        "autoattack": AutoAttack(
            THREAT,
            version="custom",
            attacks=({"name": "apgd", "steps": 3}, {"name": "square", "queries": 30}),
        ),
    }
    ev = evaluate(model, (x, y), attacks=attacks, batch_size=16, quiet=True)
    sweep = accuracy_vs_eps(model, (x, y), THREAT, [0.0, 0.05, 0.2], attacks, batch_size=16, quiet=True)
    out = {**ev.correct, "sweep": torch.tensor(sweep.accuracy), "n": torch.tensor(ev.num_examples)}
    # smoothing noise keyed per example: the same certificates on 2 ranks (chunks of 2) and in one
    # process (one chunk, other batches)
    from advlearn.certify import Smooth, certify_dataset

    keyed = certify_dataset(
        Smooth(model, num_classes=4, sigma=0.5), x[:6], y[:6], n0=10, n=50, quiet=True,
        batch_size=50 if dist.active() else 33, chunk=2 if dist.active() else 6,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    out |= {"keyed_smooth_predictions": keyed.predictions, "keyed_smooth_radii": keyed.radii}
    if dist.active():  # smoothing's chunks (3 of them, uneven across 2 ranks), gathered in order
        from advlearn.certify import Smooth, certify_dataset

        # σ so small that every noisy copy gets the model's label: the order of the gathered chunks shows
        smooth = Smooth(model, num_classes=4, sigma=1e-6)
        certified = certify_dataset(smooth, x[:6], y[:6], n0=10, n=50, batch_size=50, chunk=2, quiet=True)
        out |= {"smooth_predictions": certified.predictions, "smooth_radii": certified.radii}
    return out


def _worker(mode: str, out: Path) -> None:
    from advlearn import _distributed as dist

    if mode == "equal":
        weights = {name: _train(objective).state_dict() for name, objective in _objectives().items()}
        weights["evaluation"] = _evaluation()
    elif mode == "killed":  # an uninterrupted run, then one whose rank 1 dies mid-epoch
        weights = {"uninterrupted": _train(PGDAT(THREAT, steps=2), out / "a").state_dict()}
        if dist.is_main():
            torch.save(weights, out / "uninterrupted.pt")
        _train(_DiesOnRank1(THREAT, steps=2), out / "b")
        return
    else:
        weights = {"resumed": _train(PGDAT(THREAT, steps=2), out / "b", resume=True).state_dict()}
    if dist.is_main():
        torch.save(weights, out / f"{mode}.pt")


def _torchrun(mode: str, out: Path) -> tuple[int, str]:
    """Run this file on 2 gloo ranks; kill the whole process group if it outlives the timeout."""
    src = str(Path(advlearn.__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVLEARN_DIST_TIMEOUT": "60"}
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["--monitor-interval=0.2", __file__, mode, str(out)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun {mode} did not finish in {LAUNCH_TIMEOUT_S} s:\n{output[-3000:]}")
    return proc.returncode, output


def test_two_ranks_train_the_weights_of_one_process(tmp_path: Path) -> None:
    rc, output = _torchrun("equal", tmp_path)
    assert rc == 0, output[-3000:]
    ranks = torch.load(tmp_path / "equal.pt")
    for name, objective in _objectives().items():
        one = _train(objective).state_dict()
        for key, value in one.items():
            torch.testing.assert_close(ranks[name][key], value, atol=1e-5, rtol=0, msg=f"{name} {key}")
    # and training moved the weights, so the comparison means something
    assert not torch.equal(ranks["pgd_at"]["0.weight"], _model().state_dict()["0.weight"])
    # sharded evaluation: each example's flags, and the sweep, as in one process
    one = _evaluation()
    sharded = ranks["evaluation"]
    with torch.no_grad():
        labels = _model()(torch.rand(70, 16, generator=torch.Generator().manual_seed(2))[:6]).argmax(1)
    assert torch.equal(sharded.pop("smooth_predictions"), labels)
    assert bool((sharded.pop("smooth_radii") > 0).all())
    assert set(sharded) == set(one)
    for key, value in one.items():
        assert torch.equal(sharded[key], value), key
    assert 0 < int(one["pgd"].sum()) < int(one["clean"].sum())  # the attack fools some, not all
    assert len(set(one["keyed_smooth_radii"].tolist())) > 1  # the noise moves the certificates


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    rc, output = _torchrun("killed", tmp_path)
    assert rc != 0, "rank 1 was meant to die"
    assert torch.load(tmp_path / "b" / Trainer.STATE_FILE, weights_only=False)["epochs_done"] == 1
    rc, output = _torchrun("resumed", tmp_path)
    assert rc == 0, output[-3000:]
    uninterrupted = torch.load(tmp_path / "uninterrupted.pt")["uninterrupted"]
    resumed = torch.load(tmp_path / "resumed.pt")["resumed"]
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key


def test_nproc_beyond_the_machine_and_an_unsplittable_batch_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from advlearn.cli import main

    config = tmp_path / "c.toml"
    config.write_text(
        'name = "d"\ndevice = "cpu"\n[data]\nname = "digits"\n[model]\nname = "mlp"\n'
        '[threat]\nnorm = "linf"\neps = 0.1\n[[train]]\nlabel = "s"\nbatch_size = 127\n'
    )
    common = [str(config), "--out-dir", str(tmp_path / "runs")]
    assert main(["train", *common, "--nproc", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--nproc 100000 is more than the" in err
    assert "\n" not in err
    assert main(["train", *common, "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "batch_size 127 cannot be split evenly across --nproc 2" in err
    assert "\n" not in err
    assert not (tmp_path / "runs").exists()


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
