"""Issue 15 item 7: every objective resumes bit-exactly after an interruption mid-epoch.

An interruption at a batch boundary inside epoch 3 loses that epoch (the Trainer checkpoints at
epoch ends); a fresh model, optimizer and objective, as a new process would build, then resume
from the checkpoint. The weights, and every metric but the wall time, must equal an unbroken
run's, bit for bit: for Free-AT that needs its δ (run state), for Fast-AT the guard's monitor
batch and records, for warm-ups the epoch. The SIGKILL version is tests/test_training.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import advlearn as al
from advlearn.training import OBJECTIVES, Trainer, build_objective

SMALL = {"steps": 2, "replays": 2, "layer": "2", "guard_steps": 2, "eps_warmup": 2, "eps": 0.5}


class _Interrupted(Exception):
    pass


class _InterruptingLoader:
    """Dies when asked for batch ``at`` of the run (counting from 0), as a killed process would."""

    def __init__(self, loader: torch.utils.data.DataLoader, at: int | None) -> None:
        self.loader, self.at, self.served = loader, at, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for batch in self.loader:
            if self.served == self.at:
                raise _Interrupted
            self.served += 1
            yield batch


def _run(name: str, run_dir: Path, *, interrupt_at: int | None = None, resume: bool = False) -> Trainer:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(48, 1, 4, 4, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    # Shuffled by the global RNG, which the checkpoint restores.
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    torch.manual_seed(0)
    # Dropout exercises the RNG streams; IBP cannot bound it in training mode, so it gets none.
    dropout = 0.0 if name in ("ibp", "crown_ibp") else 0.2
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fields = OBJECTIVES.fields(name)
    objective = build_objective(
        name, al.ThreatModel("linf", 0.1), **{k: v for k, v in SMALL.items() if k in fields}
    )
    trainer = Trainer(model, objective, optimizer, run_dir=run_dir, quiet=True, device="cpu", seed=5)
    trainer.fit(_InterruptingLoader(loader, interrupt_at), epochs=4, resume=resume)
    return trainer


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    lines = (run_dir / Trainer.METRICS_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


#: the objectives that carry something across batches or epochs (δ, the guard, a warm-up) run by default
STATEFUL = ("free_at", "fast_at", "pgd_at")


@pytest.mark.parametrize(
    "name", [n if n in STATEFUL else pytest.param(n, marks=pytest.mark.slow) for n in sorted(OBJECTIVES)]
)
def test_every_objective_interrupted_mid_epoch_resumes_to_the_unbroken_weights(
    name: str, tmp_path: Path
) -> None:
    unbroken = _run(name, tmp_path / "unbroken")
    with pytest.raises(_Interrupted):
        _run(name, tmp_path / "broken", interrupt_at=2 * 3 + 1)  # batch 2 of epoch 3
    assert torch.load(tmp_path / "broken" / Trainer.STATE_FILE, weights_only=True)["epochs_done"] == 2
    resumed = _run(name, tmp_path / "broken", resume=True)
    a, b = unbroken.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert set(unbroken.run_state) == set(resumed.run_state)
    for key in unbroken.run_state:
        assert torch.equal(unbroken.run_state[key], resumed.run_state[key]), key
    assert _metrics(tmp_path / "unbroken") == _metrics(tmp_path / "broken")
