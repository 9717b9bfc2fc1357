"""GPU checks of issue 13 beyond test_precision's (marked ``gpu``: they run where CUDA exists, e.g. by
bench/gpu_check.sh, and skip cleanly elsewhere): keyed smoothing noise and keyed PGD starts on the
device, and the compile path attacking and training on the GPU."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn._keyed_random import KeyedGenerator
from advlearn._precision import FastModel
from advlearn.certify import Smooth
from advlearn.training import PGDAT, Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


class _Recorder(nn.Module):
    """Records every noisy copy it is given; predicts class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # puts the model, and so the noise, on the device
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return torch.zeros(x.shape[0], 2, device=x.device)


def test_keyed_smoothing_noise_on_the_gpu_does_not_depend_on_the_batches() -> None:
    xs = torch.rand(5, 3, 4, device="cuda")
    runs = []
    for batch in (1000, 77):
        model = _Recorder().cuda()
        smooth = Smooth(model, num_classes=2, sigma=0.5)
        smooth.sample_counts_many(xs, 300, batch, KeyedGenerator(1, torch.arange(5, device="cuda")))
        runs.append(torch.cat(model.seen))
    assert runs[0].device.type == "cuda"
    assert torch.equal(runs[0], runs[1])
    noise = runs[0].reshape(5, 300, -1) - xs.reshape(5, 1, -1)
    assert abs(float(noise.std()) - 0.5) < 0.02


def test_keyed_pgd_starts_on_the_gpu_do_not_depend_on_the_batch() -> None:
    threat = al.ThreatModel("linf", 0.1)
    x0 = torch.rand(64, 1, 6, 6, device="cuda")
    whole = threat.random_init(x0, KeyedGenerator(2, torch.arange(64, device="cuda")))
    part = threat.random_init(x0[10:20], KeyedGenerator(2, torch.arange(10, 20, device="cuda")))
    assert torch.equal(whole[10:20], part)


def test_compiled_model_attacks_and_trains_on_the_gpu() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)
    ).cuda()
    net = FastModel(model, compile=True)
    x, y = torch.rand(48, 3, 8, 8, device="cuda"), torch.randint(0, 4, (48,), device="cuda")
    threat = al.ThreatModel("linf", 8 / 255)
    result = al.attacks.PGD(threat, steps=5, early_stop=True).run(net, x, y)  # shrinking batches
    assert net.compiled
    assert result.x_adv.device.type == "cuda"
    assert bool(threat.contains(result.x_adv, x).all())
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]

    class Sized(list):  # type: ignore[type-arg]  # the Trainer needs a length
        pass

    trainer = Trainer(
        model, PGDAT(threat, steps=2), torch.optim.Adam(model.parameters(), lr=3e-3),
        device="cuda", compile=True, quiet=True,
    )  # fmt: skip
    history = trainer.fit(Sized(data), epochs=5)
    assert history.column("train_loss")[-1] < history.column("train_loss")[0]
