"""One small registry by name, shared by attacks and training objectives (timm's pattern).

Entries are frozen dataclasses; their init fields are the options a config
may set, and anything else is rejected with the option's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, type[T]], Generic[T]):
    """A ``name → class`` mapping with a decorator to fill it and a checked ``build``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: make the class buildable as ``name``; sets ``cls.name``."""

        def wrap(cls: type[T]) -> type[T]:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self[name].__name__})")
            cls.name = name  # type: ignore[attr-defined]
            self[name] = cls
            return cls

        return wrap

    def fields(self, name: str) -> set[str]:
        """The init fields of entry ``name``."""
        return {f.name for f in dataclasses.fields(self[name]) if f.init}  # type: ignore[arg-type]

    def build(self, name: str, options: Mapping[str, Any], **supplied: Any) -> T:
        """Build ``name`` from user ``options`` plus library-``supplied`` fields (e.g. the threat model).

        Raises:
            ValueError: for an unknown name, an option the entry does not take
                (named, with the known ones), or a required option left out.
        """
        if name not in self:
            raise ValueError(f"{self.kind} {name!r} is not registered; known: {', '.join(sorted(self))}")
        known = self.fields(name) - set(supplied)
        unknown = sorted(set(options) - known)
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise ValueError(
                f"unknown option {unknown[0]!r} for {self.kind} {name!r}; known options: {listed}"
            )
        required = {
            f.name
            for f in dataclasses.fields(self[name])  # type: ignore[arg-type]
            if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(options) - set(supplied))
        if missing:
            raise ValueError(f"{self.kind} {name!r} needs option {missing[0]!r} (no default)")
        return self[name](**supplied, **options)
