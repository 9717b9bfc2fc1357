"""One small registry by name for everything a config names (timm's pattern).

Attacks, training objectives, models, datasets, losses, learning-rate schedules
and optimizers are each a :class:`Registry`: a ``name → entry`` mapping with a
decorator to fill it, a checked :meth:`~Registry.lookup` and a checked
:meth:`~Registry.build`. An entry is anything callable with keyword arguments:

- a frozen dataclass (attacks, objectives): its init fields are the options;
- a function (model builders, dataset loaders, schedules, optimizers): its
  keyword-capable parameters are the options.

Both read the same way, from :func:`inspect.signature`; an option without a
default is required. Anything else is rejected with the option's name and the
list of the known ones, in the entry's declaration order.

Each registry words its errors the way its users already read them
(:class:`Wording`); the content is always the same: the unknown name and the
known names, or the unknown option and the accepted options, or the missing one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=Callable[..., Any])

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class Wording:
    """The messages of a registry's ``ValueError`` s, as :meth:`str.format` templates.

    Placeholders: ``kind`` (``"attack"``), ``name`` (the name asked for), ``known``
    (the registered names, sorted, comma-separated), ``choices`` (the registered
    names quoted, in registration order), ``option`` (the first unknown or missing
    option), ``options`` (all unknown or missing options, quoted), ``s`` (``"s"``
    when there are several), ``accepted`` (the entry's options in declaration
    order, or :attr:`no_options`) and ``missing`` (the missing options, unquoted).
    """

    unknown_name: str = "{kind} {name!r} is not registered; known: {known}"
    unknown_option: str = "unknown option {option!r} for {kind} {name!r}; known options: {accepted}"
    missing_option: str = "{kind} {name!r} needs option {option!r} (no default)"
    no_options: str = "none"


class Registry(dict[str, Any], Generic[T]):
    """A ``name → entry`` mapping whose entries build a ``T`` from keyword options.

    Entries are stored as registered (the class or the function itself), so
    ``registry[name]`` is the entry and class attributes stay reachable.

    Args:
        kind: what an entry is, for messages (``"attack"``, ``"model"``, ...).
        wording: the messages' templates; the default reads
            ``attack 'x' is not registered; known: ...``.

    Example:
        >>> SHAPES: Registry[tuple[int, ...]] = Registry("shape")
        >>> @SHAPES.register("square")
        ... def square(side: int, *, channels: int = 1) -> tuple[int, ...]:
        ...     return (channels, side, side)
        >>> SHAPES.build("square", {"side": 3})
        (1, 3, 3)
        >>> SHAPES.options("square"), SHAPES.required("square")
        (('side', 'channels'), ('side',))
        >>> SHAPES.build("square", {"side": 3, "colour": 2})
        Traceback (most recent call last):
        ...
        ValueError: unknown option 'colour' for shape 'square'; known options: side, channels
    """

    def __init__(self, kind: str, *, wording: Wording | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.wording = wording or Wording()

    # ------------------------------------------------------------------ filling

    def register(self, name: str) -> Callable[[E], E]:
        """Decorator: make the class or function buildable as ``name``; a class also gets ``cls.name``.

        Raises:
            ValueError: if an entry is already registered under ``name``.
        """

        def wrap(entry: E) -> E:
            if name in self:
                existing = getattr(self[name], "__name__", repr(self[name]))
                raise ValueError(f"{self.kind} {name!r} is already registered ({existing})")
            if isinstance(entry, type):
                entry.name = name  # type: ignore[attr-defined]
            self[name] = entry
            return entry

        return wrap

    # ------------------------------------------------------------------ reading

    def _message(self, template: str, name: str, **values: Any) -> str:
        return template.format(
            kind=self.kind,
            name=name,
            known=", ".join(sorted(self)),
            choices=", ".join(map(repr, self)),
            **values,
        )

    def _option_error(self, template: str, name: str, options: Sequence[str], **values: Any) -> ValueError:
        """The error about ``options`` (the unknown or the missing ones) of entry ``name``."""
        return ValueError(
            self._message(
                template,
                name,
                option=options[0],
                options=", ".join(map(repr, options)),
                s="s" if len(options) > 1 else "",
                **values,
            )
        )

    def lookup(self, name: str) -> Any:
        """The entry registered as ``name``.

        Raises:
            ValueError: for an unknown name; the message lists the known ones.
        """
        if name not in self:
            raise ValueError(self._message(self.wording.unknown_name, name))
        return self[name]

    def _parameters(self, name: str) -> dict[str, inspect.Parameter]:
        parameters = inspect.signature(self.lookup(name)).parameters
        return {p: spec for p, spec in parameters.items() if spec.kind in _KEYWORD_KINDS}

    def options(self, name: str) -> tuple[str, ...]:
        """The options of entry ``name`` in declaration order: init fields, or keyword parameters."""
        return tuple(self._parameters(name))

    def required(self, name: str) -> tuple[str, ...]:
        """The options of entry ``name`` that have no default."""
        return tuple(
            p for p, spec in self._parameters(name).items() if spec.default is inspect.Parameter.empty
        )

    def fields(self, name: str) -> set[str]:
        """The options of entry ``name`` as a set (the name attack and objective code has always used)."""
        return set(self.options(name))

    def check(self, name: str, options: Mapping[str, Any], **supplied: Any) -> Any:
        """The entry ``name``, after checking user ``options`` plus library-``supplied`` ones against it.

        Raises:
            ValueError: for an unknown name, an option the entry does not take
                (named, with the known ones), or a required option left out.
        """
        parameters = self._parameters(name)
        accepted = [p for p in parameters if p not in supplied]
        unknown = sorted(set(options) - set(accepted))
        wording = self.wording
        if unknown:
            raise self._option_error(
                wording.unknown_option, name, unknown, accepted=", ".join(accepted) or wording.no_options
            )
        missing = [
            p
            for p, spec in parameters.items()
            if spec.default is inspect.Parameter.empty and p not in options and p not in supplied
        ]
        if missing:
            raise self._option_error(wording.missing_option, name, missing, missing=", ".join(missing))
        return self[name]

    def build(self, name: str, options: Mapping[str, Any], **supplied: Any) -> T:
        """Build ``name`` from user ``options`` plus library-``supplied`` ones (e.g. the threat model).

        Raises:
            ValueError: for an unknown name, an option the entry does not take
                (named, with the known ones), or a required option left out;
                and whatever the entry raises for bad values.
        """
        built: T = self.check(name, options, **supplied)(**supplied, **options)
        return built


__all__ = ["Registry", "Wording"]
