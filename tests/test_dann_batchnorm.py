"""Issue 17 part 3: DANN with domain-specific batch normalization.

Each domain is normalized by its own statistics and shares one affine map; a network that never
saw a target batch scores the target through its source statistics (the honest source-only
baseline); the domain is a scoped setting that is always restored; checkpoints rebuild it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advlearn.checkpoint import load_model, save_model
from advlearn.data import Dataset
from advlearn.games.dann import DANN, DomainBatchNorm2d, accuracy, features, train_dann


def _shifted(mean: float, n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return mean + 2.0 * torch.randn(n, 3, 6, 6, generator=g)


def test_each_domain_is_normalized_by_its_own_statistics() -> None:
    bn = DomainBatchNorm2d(3, momentum=None)  # type: ignore[arg-type]  # cumulative averages
    source, target = _shifted(5.0), _shifted(-3.0, seed=1)
    for _ in range(3):
        bn.domain = "source"
        bn(source)
        bn.domain = "target"
        bn(target)
    bn.eval()
    for domain, x in (("source", source), ("target", target)):
        bn.domain = domain  # type: ignore[assignment]
        with torch.no_grad():
            out = bn(x)
        assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4, domain
        assert (out.std(dim=(0, 2, 3)) - 1).abs().max() < 0.02, domain
    # one shared affine map: the statistics are per domain, the learned scale and shift are not
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]


def test_a_layer_that_never_saw_the_target_reads_it_through_the_source_statistics() -> None:
    bn = DomainBatchNorm2d(3)
    bn(_shifted(5.0))  # source only
    bn.eval()
    x = _shifted(-3.0, seed=1)
    with torch.no_grad():
        as_source = bn(x)
        bn.domain = "target"
        as_target = bn(x)
    assert not bool(bn.target_seen)
    assert torch.equal(as_source, as_target)


def test_in_domain_is_scoped_and_checked() -> None:
    net = DANN(batchnorm=True)
    layers = [m for m in net.modules() if isinstance(m, DomainBatchNorm2d)]
    assert len(layers) == 2
    assert net.batchnorm
    assert not DANN().batchnorm
    with net.in_domain("target"):
        assert {m.domain for m in layers} == {"target"}
    assert {m.domain for m in layers} == {"source"}
    with pytest.raises(ValueError, match="domain"), net.in_domain("photos"):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="batchnorm"):
        DANN(batchnorm=1)  # type: ignore[arg-type]


def _toy_domains(n: int = 64) -> tuple[Dataset, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset(x, y, 10, "toy"), 0.5 * torch.rand(n, 3, 28, 28, generator=g) + 0.5


@pytest.mark.parametrize("adapt", [True, False])
def test_train_dann_sends_target_batches_through_target_statistics_only_when_adapting(adapt: bool) -> None:
    source, target_x = _toy_domains()
    torch.manual_seed(0)
    net = DANN(batchnorm=True)
    train_dann(net, source, target_x, adapt=adapt, epochs=1, batch_size=32, quiet=True)
    layers = [m for m in net.modules() if isinstance(m, DomainBatchNorm2d)]
    assert all(bool(m.target_seen) == adapt for m in layers)
    assert all(m.domain == "source" for m in layers)  # restored after training
    source_stats = layers[0].norms[0].running_mean  # type: ignore[union-attr]
    target_stats = layers[0].norms[1].running_mean  # type: ignore[union-attr]
    assert not torch.equal(source_stats, target_stats) if adapt else torch.all(target_stats == 0)
    # scoring the target in the target domain differs from scoring it in the source one only when adapted
    f_source = features(net, target_x, domain="source")
    f_target = features(net, target_x, domain="target")
    assert torch.equal(f_source, f_target) is not adapt


def test_accuracy_and_features_refuse_an_unknown_domain() -> None:
    source, _ = _toy_domains(8)
    for net in (DANN(), DANN(batchnorm=True)):
        with pytest.raises(ValueError, match="domain"):
            accuracy(net, source.x, source.y, domain="photos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="domain"):
        accuracy(nn.Sequential(nn.Flatten(), nn.LazyLinear(10)), source.x, source.y, domain="x")  # type: ignore[arg-type]


def test_checkpoint_rebuilds_both_domains(tmp_path: Path) -> None:
    source, target_x = _toy_domains()
    torch.manual_seed(0)
    net = DANN(batchnorm=True)
    train_dann(net, source, target_x, epochs=1, batch_size=32, quiet=True)
    save_model(tmp_path, net, name="dann", options={"in_channels": 3, "num_classes": 10, "batchnorm": True})
    loaded, _ = load_model(tmp_path)
    assert isinstance(loaded, DANN)
    assert loaded.batchnorm
    for domain in ("source", "target"):
        assert torch.equal(features(net, target_x, domain=domain), features(loaded, target_x, domain=domain))  # type: ignore[arg-type]
