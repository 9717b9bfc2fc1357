"""The four draws of ``_keyed_random`` after sharing one dispatch: each equals, bit for bit, its
definition on both paths (keyed hash; torch's RNG with a generator or the global one), at every dtype."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from advlearn import _keyed_random as keyed

DTYPES = [None, torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = [(3, 5), (4, 2, 3), (1, 1)]


def _uniform(g: keyed.KeyedGenerator, shape: tuple[int, ...], open_low: bool = False) -> Tensor:
    return ((g._bits(shape) >> 8).to(torch.float32) + (1.0 if open_low else 0.0)) * 2.0**-24


def _keyed_definitions() -> dict[str, Callable[[keyed.KeyedGenerator, tuple[int, ...]], Tensor]]:
    def randn(g: keyed.KeyedGenerator, s: tuple[int, ...]) -> Tensor:
        u1, u2 = _uniform(g, s, open_low=True), _uniform(g, s)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)

    return {
        "rand": _uniform,
        "randn": randn,
        "exponential": lambda g, s: -torch.log(_uniform(g, s, open_low=True)),
        "random_sign": lambda g, s: (g._bits(s) & 1) * 2 - 1,
    }


def _plain_definitions(
    dtype: torch.dtype | None,
) -> dict[str, Callable[[torch.Generator | None, tuple[int, ...]], Tensor]]:
    return {
        "rand": lambda g, s: torch.rand(*s, generator=g, dtype=dtype),
        "randn": lambda g, s: torch.randn(*s, generator=g, dtype=dtype),
        "exponential": lambda g, s: torch.empty(*s, dtype=dtype).exponential_(generator=g),
        "random_sign": lambda g, s: (torch.randint(0, 2, s, generator=g) * 2 - 1).to(dtype=dtype),
    }


@pytest.mark.parametrize("name", ["rand", "randn", "exponential", "random_sign"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_each_draw_is_its_definition(name: str, dtype: torch.dtype | None) -> None:
    draw = getattr(keyed, name)
    for shape in SHAPES:
        keys = torch.arange(10, 10 + shape[0])
        got = draw(shape, generator=keyed.KeyedGenerator(3, keys, 2), dtype=dtype)
        want = _keyed_definitions()[name](keyed.KeyedGenerator(3, keys, 2), shape).to(dtype=dtype)
        assert got.dtype == want.dtype
        assert torch.equal(got, want), (name, dtype, shape, "keyed")
        got = draw(shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
        want = _plain_definitions(dtype)[name](torch.Generator().manual_seed(5), shape)
        assert got.dtype == want.dtype
        assert torch.equal(got, want), (name, dtype, shape, "generator")
        torch.manual_seed(9)
        got = draw(shape, generator=None, dtype=dtype)
        torch.manual_seed(9)
        assert torch.equal(got, _plain_definitions(dtype)[name](None, shape)), (name, dtype, shape, "global")
