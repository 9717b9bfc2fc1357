"""Issue 17 part 3, session 4: the options behind the longer DANN runs of ``bench/games.py``.

AdaBN gives the source-only network with domain batch norms the exact target statistics (and
touches nothing else), the fair baseline for that network; Ganin et al.'s SGD schedule anneals
the learning rate as ``lr/(1 + 10p)^0.75``; the run and its config refuse what they cannot do.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlearn.data import Dataset
from advlearn.experiments.dann_job import DANNConfig
from advlearn.games.dann import DANN, DomainBatchNorm2d, adapt_batchnorm, train_dann


def _images(mean: float, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (mean + 0.2 * torch.randn(n, 3, 28, 28, generator=g)).clamp(0, 1)


def test_adabn_sets_the_exact_target_statistics_and_nothing_else() -> None:
    torch.manual_seed(0)
    net = DANN(batchnorm=True)
    net.train()
    with torch.no_grad(), net.in_domain("source"):
        net.features(_images(0.3, 32, 0))  # some source statistics to keep
    layers = [m for m in net.feature_extractor if isinstance(m, DomainBatchNorm2d)]
    source_before = [(m.norms[0].running_mean.clone(), m.norms[0].running_var.clone()) for m in layers]  # type: ignore[union-attr]
    weights_before = {
        k: v.clone() for k, v in net.state_dict().items() if "norms" not in k and "target_seen" not in k
    }
    target = _images(0.7, 30, 1)
    assert adapt_batchnorm(net, target, batch_size=7) == 2  # 7 does not divide 30: a ragged last batch
    assert not net.training
    # each layer's running statistics are the exact mean and (unbiased) variance of the inputs it
    # gets in eval mode, over all 30 images (the earlier layer normalizing by its new statistics)
    seen: list[torch.Tensor] = []
    hooks = [m.norms[1].register_forward_pre_hook(lambda _, i: seen.append(i[0])) for m in layers]
    with torch.no_grad(), net.in_domain("target"):
        net.features(target)
    for h in hooks:
        h.remove()
    for m, pre in zip(layers, seen, strict=True):
        norm = m.norms[1]
        assert torch.allclose(norm.running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-5)  # type: ignore[arg-type]
        assert torch.allclose(norm.running_var, pre.var(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6)  # type: ignore[arg-type]
    assert all(bool(m.target_seen) for m in layers)
    for m, (mean, var) in zip(layers, source_before, strict=True):
        assert torch.equal(m.norms[0].running_mean, mean)  # type: ignore[arg-type]
        assert torch.equal(m.norms[0].running_var, var)  # type: ignore[arg-type]
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights_before.items())


def test_adabn_changes_nothing_without_domain_batch_norms_and_refuses_other_models() -> None:
    net = DANN()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert adapt_batchnorm(net, _images(0.5, 8, 0)) == 0
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(ValueError, match="model must be a DANN"):
        adapt_batchnorm(nn.Linear(2, 2), _images(0.5, 8, 0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        adapt_batchnorm(net, _images(0.5, 8, 0), batch_size=0)


def test_sgd_follows_ganins_annealing_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    step = torch.optim.SGD.step

    def recording(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        seen.append(self.param_groups[0]["lr"])
        assert self.param_groups[0]["momentum"] == 0.9
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    g = torch.Generator().manual_seed(0)
    source = Dataset(
        torch.rand(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g), 10, "toy"
    )
    torch.manual_seed(0)
    train_dann(
        DANN(), source, _images(0.5, 32, 1), epochs=2, batch_size=8, lr=0.01, optimizer="sgd", quiet=True
    )
    total = 2 * (32 // 8)
    assert seen == pytest.approx([0.01 / (1 + 10 * i / total) ** 0.75 for i in range(total)])


def test_bad_optimizer_is_refused_by_name() -> None:
    source = Dataset(torch.rand(16, 1, 28, 28), torch.zeros(16, dtype=torch.long), 10, "toy")
    with pytest.raises(ValueError, match="optimizer"):
        train_dann(DANN(), source, torch.rand(16, 3, 28, 28), batch_size=8, optimizer="rmsprop", quiet=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="optimizer"):
        DANNConfig(optimizer="rmsprop")
