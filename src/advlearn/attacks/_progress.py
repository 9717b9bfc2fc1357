"""How far a running attack has got, for a bar its caller holds (AutoAttack's bar per member).

An attack's loops say what fraction of their per-example budget the examples still running have
spent (:func:`spent`) and how many examples left for good because they were broken
(:func:`broken`); :func:`share` maps an inner loop's ``[0, 1]`` onto a slice of the enclosing
one (a restart of five, a target of nine). Nobody watching (the default), each call is one
``ContextVar`` lookup. :func:`silenced` is how ``quiet`` reaches bars drawn inside attacks: the
evaluation layer's ``quiet=True`` silences AutoAttack's member bars too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_Watch = tuple[Callable[[float], None], Callable[[int], None], float, float]
_WATCH: ContextVar[_Watch | None] = ContextVar("advlearn_attack_progress", default=None)
_QUIET: ContextVar[bool] = ContextVar("advlearn_attack_quiet", default=False)


@contextmanager
def watching(on_spent: Callable[[float], None], on_broken: Callable[[int], None]) -> Iterator[None]:
    """Send the attacks run inside to ``on_spent(fraction)`` and ``on_broken(count)``."""
    token = _WATCH.set((on_spent, on_broken, 0.0, 1.0))
    try:
        yield
    finally:
        _WATCH.reset(token)


@contextmanager
def share(lo: float, hi: float) -> Iterator[None]:
    """Inside, ``spent(f)`` means ``lo + (hi − lo)·f`` of the enclosing budget."""
    watch = _WATCH.get()
    if watch is None:
        yield
        return
    on_spent, on_broken, a, b = watch
    token = _WATCH.set((on_spent, on_broken, a + (b - a) * lo, a + (b - a) * hi))
    try:
        yield
    finally:
        _WATCH.reset(token)


def spent(fraction: float) -> None:
    """The examples still running have spent ``fraction`` of the current budget."""
    watch = _WATCH.get()
    if watch is not None:
        watch[0](watch[2] + (watch[3] - watch[2]) * fraction)


def broken(count: int) -> None:
    """``count`` examples were broken and leave the attack (early stop)."""
    watch = _WATCH.get()
    if watch is not None and count:
        watch[1](count)


@contextmanager
def silenced(quiet: bool = True) -> Iterator[None]:
    """No bars or summaries from the attacks run inside (when ``quiet``)."""
    token = _QUIET.set(quiet or _QUIET.get())
    try:
        yield
    finally:
        _QUIET.reset(token)


def is_quiet() -> bool:
    """Whether a caller asked for silence (:func:`silenced`)."""
    return _QUIET.get()
