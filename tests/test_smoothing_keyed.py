"""Smoothing noise keyed per example (issue 13 item 5): counts and certificates that do not depend
on the batch size, the chunking or the examples certified beside an input.

Each example's noise is a torch stream of its own, seeded by :func:`advlearn._keyed_random.stream_seed`
and drawn :data:`~advlearn.certify.smoothing.NOISE_BLOCK` copies per call; the tests cut the copies
into batches that split those blocks in every way (batch sizes below, at and across a block).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from advlearn._keyed_random import KeyedGenerator, _mix_int, stream_seed
from advlearn.certify import Smooth, certify_dataset
from advlearn.certify.smoothing import NOISE_BLOCK, _leading_affine


class Net(nn.Module):
    """A small ReLU network written as a custom module: the general path (noise on the input)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _mlp() -> nn.Sequential:
    """``Sequential(Flatten, Linear(12, 6), ...)``: the fast path (noise drawn after the first layer)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


def _data(n: int = 9) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.rand(n, 3, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("fast", [False, True])
def test_certificates_do_not_depend_on_batch_size_or_chunk(fast: bool) -> None:
    model = _mlp() if fast else Net().eval()
    assert (_leading_affine(model, torch.Size([3, 4])) is not None) == fast
    x, y = _data()
    smooth = Smooth(model, num_classes=3, sigma=3.0)  # large: the counts, and so the radii, vary
    settings = {"n0": 40, "n": 700, "alpha": 0.01, "quiet": True}
    runs = [
        certify_dataset(smooth, x, y, batch_size=batch, chunk=chunk, generator=_gen(3), **settings)
        for batch, chunk in [(1000, 9), (64, 2), (NOISE_BLOCK, 4), (300, 1)]
    ]
    for run in runs[1:]:
        assert torch.equal(run.predictions, runs[0].predictions)
        assert torch.equal(run.radii, runs[0].radii)
    radii = runs[0].radii
    assert bool((radii > 0).any())
    assert len(set(radii.tolist())) > 2  # the radii vary from example to example: noise is being drawn
    other = certify_dataset(smooth, x, y, batch_size=1000, generator=_gen(4), **settings)
    assert not torch.equal(other.radii, radii)  # another seed, other draws


@pytest.mark.parametrize("fast", [False, True])
def test_an_example_gets_its_counts_whatever_is_beside_it(fast: bool) -> None:
    model = _mlp() if fast else Net().eval()
    x, _ = _data()
    smooth = Smooth(model, num_classes=3, sigma=1.0)
    num = 2 * NOISE_BLOCK + 37  # three blocks, the last one short
    keys = torch.arange(100, 109)
    whole = smooth.sample_counts_many(x, num, 1000, KeyedGenerator(5, keys))
    pick = torch.tensor([6, 2])
    alone = smooth.sample_counts_many(x[pick], num, 97, KeyedGenerator(5, keys[pick]))
    assert torch.equal(alone, whole[pick])
    # the generator's draw counter separates passes: the second pass draws afresh
    g = KeyedGenerator(5, keys)
    first, second = (smooth.sample_counts_many(x, num, 500, g) for _ in range(2))
    assert torch.equal(first, whole)
    assert not torch.equal(second, first)
    with pytest.raises(ValueError, match="keyed for 2 examples but 9"):
        smooth.sample_counts_many(x, num, 500, KeyedGenerator(5, keys[:2]))


def test_one_input_alone_draws_what_it_draws_among_many() -> None:
    smooth = Smooth(Net().eval(), num_classes=3, sigma=0.5)
    x, _ = _data()
    num = NOISE_BLOCK + 5
    one = smooth.sample_counts(x[0], num, 7, torch.Generator().manual_seed(6))
    many = smooth.sample_counts_many(x, num, 1000, torch.Generator().manual_seed(6))
    assert torch.equal(one, many[0])
    label, radius = smooth.certify(x[0], 30, num, 0.01, 50, torch.Generator().manual_seed(7))
    labels, radii = smooth.certify_many(x, 30, num, 0.01, 999, torch.Generator().manual_seed(7))
    assert (label, radius) == (int(labels[0]), float(radii[0]))


class _Recorder(nn.Module):
    """Records the noise of every copy (its input minus the clean input); predicts class 0."""

    def __init__(self, clean: Tensor) -> None:
        super().__init__()
        self.clean, self.noise = clean, []

    def forward(self, x: Tensor) -> Tensor:
        self.noise.append(x - self.clean)
        return torch.zeros(x.shape[0], 2)


def test_the_keyed_noise_is_gaussian_with_sigma_and_blocks_do_not_repeat() -> None:
    clean = torch.full((64,), 0.5)
    recorder = _Recorder(clean)
    sigma, num = 0.3, 3 * NOISE_BLOCK
    counts = Smooth(recorder, num_classes=2, sigma=sigma).sample_counts(clean, num, 100, torch.Generator())
    assert counts.tolist() == [num, 0]
    noise = torch.cat(recorder.noise)  # (num, 64)
    z = noise.double() / sigma
    sd = 1 / math.sqrt(z.numel())
    assert abs(float(z.mean())) < 5 * sd
    assert abs(float(z.var()) - 1.0) < 5 * math.sqrt(2) * sd
    assert abs(float((z.abs() > 2).double().mean()) - 0.0455) < 5 * math.sqrt(0.0455 * 0.9545) * sd
    blocks = noise.reshape(3, NOISE_BLOCK, -1)
    assert not torch.equal(blocks[0], blocks[1])
    corr = torch.corrcoef(torch.stack([blocks[0].flatten(), blocks[1].flatten()]))[0, 1]
    assert abs(float(corr)) < 5 / math.sqrt(blocks[0].numel())


def test_stream_seed_starts_from_the_keyed_generators_row_hash() -> None:
    keys = torch.tensor([0, 7, 2**40 + 3, -5])
    g = KeyedGenerator(11, keys, stream=4)
    g._bits((4, 1))  # counter 0
    element0 = g._bits((4, 1))[:, 0].tolist()  # counter 1, element 0
    for key, h in zip(keys.tolist(), element0, strict=True):
        row = stream_seed(11, 4, key, 1) & 0xFFFFFFFF
        assert _mix_int(row ^ _mix_int(0x9E3779B9)) == h
    g = KeyedGenerator(11, keys, stream=4)
    assert g.row_seeds() == [stream_seed(11, 4, k, 0) for k in keys.tolist()]
    assert g.row_seeds() == [stream_seed(11, 4, k, 1) for k in keys.tolist()]  # the counter moved
    assert len({stream_seed(0, 0, k, 0) for k in range(1000)}) == 1000
    assert all(0 <= stream_seed(0, 0, k, 0) < 2**64 for k in range(100))


def test_one_input_of_a_leading_linear_model_takes_the_fast_path() -> None:
    smooth = Smooth(_mlp(), num_classes=3, sigma=0.5)
    x, _ = _data(1)
    one = smooth.sample_counts(x[0], 600, 128, _gen(8))
    many = smooth.sample_counts_many(x, 600, 1000, _gen(8))
    assert torch.equal(one, many[0])
    assert int(one.sum()) == 600
