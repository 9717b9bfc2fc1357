"""The Trainer and the objectives: schedules, early stopping, exact resume after a SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import advlearn as al
from advlearn.training import (
    PGDAT,
    Objective,
    Standard,
    Trainer,
    build_objective,
    lr_schedule,
)


def _blobs(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (0.5 + 0.2 * (2 * y.float() - 1)).reshape(-1, 1).repeat(1, 4) + 0.05 * torch.randn(n, 4, generator=g)
    return x.clamp(0, 1), y


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 32, shuffle: bool = True):
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle
    )


@pytest.mark.parametrize(
    ("name", "options", "points"),
    [
        ("constant", {}, {0.0: 1.0, 0.9: 1.0}),
        ("piecewise", {}, {0.0: 1.0, 0.49: 1.0, 0.5: 0.1, 0.8: 0.01}),
        ("piecewise", {"milestones": [0.3], "gamma": 0.5}, {0.29: 1.0, 0.3: 0.5}),
        ("cosine", {}, {0.0: 1.0, 0.5: 0.5, 1.0: 0.0}),
        ("onecycle", {"peak": 0.25}, {0.0: 0.0, 0.125: 0.5, 0.25: 1.0, 0.625: 0.5}),
    ],
)
def test_lr_schedule_closed_forms(name, options, points):
    """Each schedule's multiplier matches its formula at chosen points of training progress."""
    f = lr_schedule(name, **options)
    for p, expected in points.items():
        assert f(p) == pytest.approx(expected, abs=1e-12)


def test_lr_schedule_rejects_unknown_names_and_options():
    """Unknown schedules and options raise ValueErrors that name them."""
    with pytest.raises(ValueError, match="'warm'"):
        lr_schedule("warm")
    with pytest.raises(ValueError, match="'peak'"):
        lr_schedule("cosine", peak=0.3)


def test_trainer_learns_and_sets_the_scheduled_lr():
    """Standard training drives the loss down; the optimizer's lr follows base·schedule(progress)."""
    torch.manual_seed(0)
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, Standard(), opt, schedule="cosine", quiet=True, device="cpu")
    history = trainer.fit(_loader(x, y), _loader(x, y, shuffle=False), epochs=5)
    losses = history.column("train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert history.records[-1]["val_clean_acc"] > 0.95
    steps = 5 * len(_loader(x, y))
    assert opt.param_groups[0]["lr"] == pytest.approx(
        0.5 * 0.5 * (1 + math.cos(math.pi * (steps - 1) / steps))
    )


class _Sabotage(Objective):
    """Learns for one epoch, then trains on flipped labels, so validation accuracy falls."""

    def __init__(self) -> None:
        self.flip = False

    def __call__(self, model, x, y):
        return nn.functional.cross_entropy(model(x), 1 - y if self.flip else y)

    def at_epoch(self, epoch, epochs, records=()):
        self.flip = epoch >= 2
        return self


def test_early_stopping_restores_the_best_weights():
    """With patience, training stops once validation stalls, and the best epoch's weights come back."""
    torch.manual_seed(0)
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = Trainer(
        model,
        _Sabotage(),
        torch.optim.SGD(model.parameters(), lr=0.5),
        early_stopping=2,
        quiet=True,
        device="cpu",
    )
    history = trainer.fit(_loader(x, y), _loader(x, y, shuffle=False), epochs=10)
    assert history.stopped_early
    assert len(history.records) < 10
    assert history.best_epoch is not None
    assert history.best_epoch <= 3
    with torch.no_grad():
        restored = float((model(x).argmax(1) == y).float().mean())
    assert restored == pytest.approx(history.best_metric)
    assert history.records[-1]["val_clean_acc"] < history.best_metric


def test_pgdat_warmup_ramps_eps_linearly():
    """PGDAT.at_epoch scales ε by (epoch+1)/eps_warmup, then keeps it."""
    threat = al.ThreatModel("linf", 0.3)
    objective = PGDAT(threat, steps=3, eps_warmup=3)
    eps = [objective.at_epoch(e, 10).threat.eps for e in range(5)]  # type: ignore[attr-defined]
    assert eps == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])


def test_pgdat_trains_on_adversarial_points_without_touching_them_as_parameters():
    """One PGD-AT step leaves no gradient on the input and a finite loss at least the clean loss."""
    torch.manual_seed(0)
    x, y = _blobs(64)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    threat = al.ThreatModel("linf", 0.1)
    adv = PGDAT(threat, steps=5)(model, x, y)
    clean = Standard()(model, x, y)
    assert torch.isfinite(adv)
    assert adv >= clean - 1e-6


def test_build_objective_validates_names_and_options():
    """build_objective names unknown objectives and options, and asks for a threat where one is needed."""
    threat = al.ThreatModel("linf", 0.1)
    assert isinstance(build_objective("pgd_at", threat, steps=3), PGDAT)
    with pytest.raises(ValueError, match="'nope'"):
        build_objective("nope", threat)
    with pytest.raises(ValueError, match="'stpes'"):
        build_objective("pgd_at", threat, stpes=3)
    with pytest.raises(ValueError, match="threat"):
        build_objective("pgd_at")
    with pytest.raises(ValueError, match="steps"):
        PGDAT(threat, steps=0)


def test_resume_without_run_dir_is_an_error():
    """resume=True needs a run_dir."""
    model = nn.Linear(4, 2)
    trainer = Trainer(
        model, Standard(), torch.optim.SGD(model.parameters(), lr=0.1), quiet=True, device="cpu"
    )
    x, y = _blobs(32)
    with pytest.raises(ValueError, match="run_dir"):
        trainer.fit(_loader(x, y), epochs=1, resume=True)


def test_corrupt_training_state_gives_a_clear_error(tmp_path):
    """A truncated train_state.pt is reported with its path, not unpickled."""
    (tmp_path / Trainer.STATE_FILE).write_bytes(b"not a checkpoint")
    model = nn.Linear(4, 2)
    trainer = Trainer(
        model,
        Standard(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        run_dir=tmp_path,
        quiet=True,
        device="cpu",
    )
    x, y = _blobs(32)
    with pytest.raises(ValueError, match=str(Trainer.STATE_FILE)):
        trainer.fit(_loader(x, y), epochs=1, resume=True)


class _Interrupted(Exception):
    pass


class _InterruptingLoader:
    """A loader that dies at batch ``at`` of the whole run (counting from 0), as a killed process would."""

    def __init__(self, loader: torch.utils.data.DataLoader, at: int | None) -> None:
        self.loader, self.at, self.served = loader, at, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if self.served == self.at:
                raise _Interrupted
            self.served += 1
            yield batch


def _free_at_run(run_dir: Path, *, interrupt_at: int | None = None, resume: bool = False):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 4, 4, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    loader = _loader(x, y, batch_size=16)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    objective = build_objective("free_at", al.ThreatModel("linf", 0.1), replays=3)
    trainer = Trainer(model, objective, optimizer, run_dir=run_dir, quiet=True, device="cpu", seed=5)
    trainer.fit(_InterruptingLoader(loader, interrupt_at), epochs=4, resume=resume)
    return model


def test_free_at_interrupted_and_resumed_gives_the_weights_of_an_unbroken_run(tmp_path):
    """Free-AT's δ is per-run state the Trainer checkpoints, so resume is exact for it too."""
    unbroken = _free_at_run(tmp_path / "unbroken")
    with pytest.raises(_Interrupted):
        _free_at_run(tmp_path / "broken", interrupt_at=2 * 4 + 1)  # in the middle of epoch 3
    state = torch.load(tmp_path / "broken" / Trainer.STATE_FILE, weights_only=True)
    assert state["epochs_done"] == 2
    resumed = _free_at_run(tmp_path / "broken", resume=True)
    a, b = unbroken.state_dict(), resumed.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- kill and resume

_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from torch import nn
    import advlearn as al
    from advlearn.training import PGDAT, Trainer

    torch.set_num_threads(1)
    run_dir, mid_marker = Path(sys.argv[1]), Path(sys.argv[2])
    resume = sys.argv[3] == "resume"

    class Marked(PGDAT):
        # Writes a marker in the middle of epoch 3, then slows down so the test can kill it there.
        def train_step(self, model, x, y, optimizer, *, unlabeled=None, state=None):
            loss = super().train_step(model, x, y, optimizer, unlabeled=unlabeled, state=state)
            Marked.step = getattr(Marked, "step", 0) + 1
            if Marked.step == 2 * 8 + 4 and not resume:
                mid_marker.write_text("mid-epoch 3")
                time.sleep(60)
            return loss

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(256, 1, 6, 6, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    data = torch.utils.data.TensorDataset(x, y)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
    threat = al.ThreatModel("linf", 0.05)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = Trainer(
        model, Marked(threat, steps=2), optimizer, schedule="onecycle", run_dir=run_dir, device="cpu",
        val_attack=al.attacks.PGD(threat, steps=2), quiet=True, seed=3,
    )
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)
    trainer.fit(loader, torch.utils.data.DataLoader(data, batch_size=128), epochs=5, resume=resume)
    torch.save(model.state_dict(), run_dir / "final.pt")
    """
)


def _train_in_subprocess(script: Path, run_dir: Path, marker: Path, mode: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(marker), mode], env=env, stderr=subprocess.PIPE
    )


def test_training_killed_mid_epoch_resumes_to_identical_weights(tmp_path):
    """SIGKILL in the middle of epoch 3, resume: final weights equal an uninterrupted run's, bit for bit.

    The script uses dropout, shuffling, PGD random starts and a one-cycle
    schedule, so every RNG stream and the step count must be restored exactly.
    """
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    reference = _train_in_subprocess(
        script, straight, tmp_path / "unused", "resume"
    )  # no state: starts fresh
    victim = _train_in_subprocess(script, killed, tmp_path / "mid", "fresh")
    deadline = time.monotonic() + 120
    while not (tmp_path / "mid").exists():
        assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else "training died"
        assert time.monotonic() < deadline, "training never reached the middle of epoch 3"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "final.pt").exists()
    state = torch.load(killed / Trainer.STATE_FILE, weights_only=True)
    assert state["epochs_done"] == 2  # epoch 3 was under way and is lost; epochs 1-2 are on disk

    resumed = _train_in_subprocess(script, killed, tmp_path / "unused", "resume")
    for proc in (reference, resumed):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()

    a = torch.load(straight / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    metrics = [json.loads(line) for line in (killed / Trainer.METRICS_FILE).read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5]
