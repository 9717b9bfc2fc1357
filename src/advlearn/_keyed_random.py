"""Random draws keyed by the example, not by its place in a batch: the same example gets the same
random start whatever the batch size, the early-exit compaction or the number of ranks.

A :class:`KeyedGenerator` stands where a ``torch.Generator`` goes (it is one, so a draw site
that does not know it still gets a seeded stream). It carries the key of each row of the batch
it was made for, usually the example's index in the data set. Its draws are a counter-based
hash, vectorised in torch integer ops on the tensors' device:

    u(seed, stream, key, counter, j) = hash(seed, stream, key, counter, j) / 2^24 ∈ [0, 1)

for element ``j`` of the row of example ``key`` in the ``counter``-th draw call. ``counter``
counts the draw calls made through the generator (and the views :meth:`KeyedGenerator.rows`
gives for subsets of its rows, which share it), so an attack whose every restart draws once for
the examples still active gives example ``key`` the same ``counter`` for its ``r``-th restart in
any batch. The hash is Wellons' "lowbias32" integer mixer (bias ≈ 0.17 of an ideal 32-bit
permutation's), chained over the five words.

:func:`rand`, :func:`randn`, :func:`exponential` and :func:`random_sign` draw ``(rows, *shape)``
tensors: keyed with a :class:`KeyedGenerator`, from torch's RNG (``generator`` or the global
one) otherwise.

Example:
    >>> g = KeyedGenerator(0, torch.tensor([7, 3]))
    >>> a = rand((2, 4), generator=g)
    >>> b = rand((1, 4), generator=KeyedGenerator(0, torch.tensor([3])))  # example 3 alone
    >>> bool(torch.equal(a[1], b[0]))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF


def _mix(h: Tensor) -> Tensor:
    """lowbias32 on int64 tensors holding 32-bit words (products wrap; the low 32 bits are exact)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _MASK
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & _MASK
    return h ^ (h >> 16)


def _mix_int(h: int) -> int:
    """:func:`_mix` on one Python int (a 32-bit word)."""
    h ^= h >> 16
    h = (h * 0x7FEB352D) & _MASK
    h ^= h >> 15
    h = (h * 0x846CA68B) & _MASK
    return h ^ (h >> 16)


def stream_seed(seed: int, stream: int, key: int, counter: int) -> int:
    """A 64-bit seed for the random stream of example ``key`` at draw call ``counter`` of ``stream``.

    Its low 32 bits are the row hash a :class:`KeyedGenerator`'s draws start from (the same chain of
    mixes over seed, stream, the key's two words and the counter); the high 32 bits mix it once more,
    for generators that take 64-bit seeds (CUDA's Philox; CPU's Mersenne Twister reads the low 32).
    For draw sites that seed a torch generator per example instead of hashing every element
    (randomized smoothing's noise: :mod:`advlearn.certify.smoothing`).

    Example:
        >>> stream_seed(0, 0, 7, 0) == stream_seed(0, 0, 7, 0) != stream_seed(0, 0, 8, 0)
        True
    """
    h = _mix_int(_mix_int(int(seed) & _MASK) ^ (int(stream) & _MASK))
    h = _mix_int(h ^ (int(key) & _MASK))
    h = _mix_int(h ^ ((int(key) >> 32) & _MASK))
    h = _mix_int(h ^ (int(counter) & _MASK))
    return h | (_mix_int(h ^ 0x9E3779B9) << 32)


class KeyedGenerator(torch.Generator):
    """A generator whose draws for a row depend on ``(seed, stream, key of the row, draw counter)`` only.

    Args:
        seed: the evaluation's seed.
        keys: ``(B,)`` integer key of each row (the example's index in the data set).
        stream: separates independent uses (one per attack of an evaluation).
        device: where the keys live and the draws are made.
    """

    def __new__(
        cls,
        seed: int,
        keys: Tensor,
        stream: int = 0,
        device: torch.device | str | None = None,
        *,
        batch_seed: int | None = None,
    ) -> KeyedGenerator:
        return super().__new__(cls, torch.device(device) if device is not None else keys.device)  # type: ignore[call-arg]

    def __init__(
        self,
        seed: int,
        keys: Tensor,
        stream: int = 0,
        device: torch.device | str | None = None,
        *,
        batch_seed: int | None = None,
    ) -> None:
        self.key_seed, self.stream = int(seed), int(stream)
        self.keys = keys.to(torch.int64).to(self.device)  # (B,)
        self._counter = [0]  # shared with the views of rows()
        # A draw site unaware of the keys (Square's, FAB's) still gets a reproducible stream: the same
        # for the same batch of examples (so for any rank count), another for another batch. Read once
        # per batch (one sync), never inside an attack's loop: views inherit it.
        if batch_seed is None:
            first = int(self.keys[0]) if self.keys.numel() else -1  # the batch's first example's key
            batch_seed = (self.key_seed * 1_000_003 + self.stream * 7_919 + first) % (2**63)
        self.batch_seed = batch_seed
        self.manual_seed(batch_seed)

    def rows(self, index: Tensor) -> KeyedGenerator:
        """The generator restricted to rows ``index`` of its batch (sharing the draw counter)."""
        keys = self.keys[index.to(self.keys.device)]
        view = KeyedGenerator(self.key_seed, keys, self.stream, self.device, batch_seed=self.batch_seed)
        view._counter = self._counter
        return view

    def row_seeds(self) -> list[int]:
        """One draw call's :func:`stream_seed` for each row (consuming the call's counter, as a draw does).

        Reads the keys to the host once (one sync on a GPU): for draw sites outside an attack's loop.
        """
        counter = self._counter[0]
        self._counter[0] += 1
        return [stream_seed(self.key_seed, self.stream, key, counter) for key in self.keys.tolist()]

    def _bits(self, shape: Sequence[int]) -> Tensor:
        """``(B, *shape)`` 32-bit hashes for the next draw call (int64)."""
        counter = self._counter[0]
        self._counter[0] += 1
        width = math.prod(shape[1:])
        if shape[0] != self.keys.numel():
            raise ValueError(
                f"a keyed draw of {shape[0]} rows from a generator keyed for {self.keys.numel()}"
            )
        base = _mix(torch.tensor(self.key_seed & _MASK, device=self.device))
        base = _mix(base ^ (self.stream & _MASK))
        row = _mix(base ^ (self.keys & _MASK))  # (B,)
        row = _mix(row ^ ((self.keys >> 32) & _MASK))
        row = _mix(row ^ counter)
        j = torch.arange(width, device=self.device, dtype=torch.int64)
        h = _mix(row.unsqueeze(1) ^ _mix((j + 0x9E3779B9) & _MASK).unsqueeze(0))  # (B, width)
        return h.reshape(*shape)


def _uniform(shape: Sequence[int], generator: KeyedGenerator, *, open_low: bool = False) -> Tensor:
    """Keyed uniforms on [0, 1) (or (0, 1] with ``open_low``) at 24-bit resolution, float32."""
    top = (generator._bits(shape) >> 8).to(torch.float32)
    return (top + (1.0 if open_low else 0.0)) * 2.0**-24


def _draw(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | None,
    dtype: torch.dtype | None,
    keyed: Callable[[KeyedGenerator], Tensor],
    plain: Callable[[tuple[int, ...], torch.Generator | None, torch.device | None], Tensor],
) -> Tensor:
    """The one dispatch of every draw: ``keyed(generator)`` under a :class:`KeyedGenerator`, else
    ``plain(shape, generator, device)`` from torch's RNG; either cast to ``device`` and ``dtype``."""
    if isinstance(generator, KeyedGenerator):
        out = keyed(generator)
    else:
        out = plain(tuple(shape), generator, device)
    return out.to(device=device, dtype=dtype)


def rand(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Uniform on [0, 1), shaped ``shape`` (first dimension: rows)."""
    return _draw(
        shape, generator, device, dtype,
        lambda g: _uniform(shape, g),
        lambda s, gen, dev: torch.rand(*s, generator=gen, device=dev, dtype=dtype),
    )  # fmt: skip


def _box_muller(shape: Sequence[int], generator: KeyedGenerator) -> Tensor:
    u1, u2 = _uniform(shape, generator, open_low=True), _uniform(shape, generator)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def randn(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Standard normal, shaped ``shape`` (keyed: Box–Muller on two keyed uniforms)."""
    return _draw(
        shape, generator, device, dtype,
        lambda g: _box_muller(shape, g),
        lambda s, gen, dev: torch.randn(*s, generator=gen, device=dev, dtype=dtype),
    )  # fmt: skip


def exponential(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Exponential with rate 1, shaped ``shape``."""
    return _draw(
        shape, generator, device, dtype,
        lambda g: -torch.log(_uniform(shape, g, open_low=True)),
        lambda s, gen, dev: torch.empty(*s, device=dev, dtype=dtype).exponential_(generator=gen),
    )  # fmt: skip


def random_sign(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """±1 with probability 1/2 each, shaped ``shape``."""
    return _draw(
        shape, generator, device, dtype,
        lambda g: (g._bits(shape) & 1) * 2 - 1,
        lambda s, gen, dev: torch.randint(0, 2, s, device=dev, generator=gen) * 2 - 1,
    )  # fmt: skip


def member(
    generator: torch.Generator | None, stream: int, index: Tensor, seed: int, device: torch.device
) -> torch.Generator:
    """The generator of an ensemble's ``stream``-th member run on rows ``index``: keyed by the same
    examples (a stream of its own) under a keyed ``generator``, else a torch generator seeded ``seed``."""
    if isinstance(generator, KeyedGenerator):
        keys = generator.keys[index.to(generator.keys.device)]
        return KeyedGenerator(generator.key_seed, keys, generator.stream * 1_000_003 + stream + 1, device)
    return torch.Generator(device=device).manual_seed(seed)


def rows(generator: torch.Generator | None, index: Tensor) -> torch.Generator | None:
    """``generator`` for the rows ``index`` of its batch: a keyed view, else the generator itself."""
    return generator.rows(index) if isinstance(generator, KeyedGenerator) else generator


__all__ = ["KeyedGenerator", "exponential", "member", "rand", "randn", "random_sign", "rows", "stream_seed"]
