"""The experiment config: a TOML file checked against typed dataclasses.

Unknown keys, wrong types and bad values are rejected with a one-line
:class:`ConfigError` that names the key (``train[1].objective.steps``);
options handed on to a registry (a model's, a dataset's, an attack's) are
checked by that registry and the error is prefixed with the key. Numbers may be
written as exact fractions (``eps = "8/255"``), parsed with
:class:`fractions.Fraction`, never ``eval``.

The ``[threat]`` table is parsed once into a :class:`~advlearn.threat.ThreatModel`
(``cfg.threat``), the one object the main job hands to training, the attacks,
the evaluation and the report.

Example:
    >>> cfg = parse_config({"name": "demo", "threat": {"eps": "8/255"}})
    >>> round(cfg.threat.eps * 255, 6), cfg.threat.norm.symbol
    (8.0, 'ℓ∞')
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

from advlearn._io import check_name
from advlearn.threat import L2, Linf, ThreatModel, get_norm

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


TOMLDecodeError = tomllib.TOMLDecodeError


def parse_toml(text: str) -> dict[str, Any]:
    """Parse TOML text (``tomllib`` on Python 3.11+, ``tomli`` before)."""
    parsed: dict[str, Any] = tomllib.loads(text)
    return parsed


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Named:
    """A registry entry and its options: ``"pgd"`` or ``{ name = "pgd", steps = 40 }`` in TOML."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> str | dict[str, Any]:
        return {"name": self.name, **self.options} if self.options else self.name


#: ``threat.eps`` may be at most this many times ``hi - lo`` (ℓ2 and ℓ1 balls of a d-pixel box need
#: up to √d and d times; 1e6 covers 1000×1000 images and refuses overflow such as 1e300)
MAX_EPS_RATIO = 1e6


@dataclass(frozen=True)
class ThreatConfig:
    """The keys of the ``[threat]`` table; :func:`parse_config` turns it into a ThreatModel."""

    norm: str = Linf.name
    eps: float = 0.3
    bounds: tuple[float, float] = (0.0, 1.0)

    def build(self, key: str = "threat") -> ThreatModel:
        """The threat model every model is trained against and evaluated under.

        Raises:
            ConfigError: naming ``key.norm``, ``key.eps`` or ``key.bounds``.
        """
        try:
            norm = get_norm(self.norm)
        except ValueError as err:
            raise ConfigError(f"{key}.norm: {err}") from None
        if not math.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"{key}.eps: must be a finite number >= 0, got {self.eps}")
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ConfigError(f"{key}.bounds: must be finite, got {list(self.bounds)}")
        if not lo < hi:
            raise ConfigError(f"{key}.bounds: expected lo < hi, got {list(self.bounds)}")
        if self.eps > MAX_EPS_RATIO * (hi - lo):
            raise ConfigError(
                f"{key}.eps: {self.eps:g} is over {MAX_EPS_RATIO:g} times the width of the bounds "
                f"{list(self.bounds)}; a radius that large is a typo (the ball would hold the whole box)"
            )
        try:
            return ThreatModel(norm, self.eps, self.bounds)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None


@dataclass(frozen=True)
class DataConfig:
    """The dataset (a name in ``advlearn.data.DATASETS`` plus its options) and the validation split."""

    name: str = "mnist5k"
    options: dict[str, Any] = field(default_factory=dict)
    val_size: int = 400


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained; ``label`` names it in the run folder and the report.

    ``model`` gives this training its own architecture (``model = { name = "ibp_cnn" }`` in a
    ``[[train]]`` table, the same form as the top-level ``model``); ``None``, the default, trains the
    run's ``model``. The IBP row of ``advlearn run --certified`` uses it for ``ibp_cnn``.
    """

    label: str = "standard"
    model: Named | None = None
    objective: Named = field(default_factory=lambda: Named("standard"))
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Named = field(default_factory=lambda: Named("constant"))
    early_stopping: int = 0  # patience in epochs; 0 turns it off
    val_attack: Named = field(default_factory=lambda: Named("pgd", {"steps": 10, "early_stop": True}))


@dataclass(frozen=True)
class EvaluateConfig:
    """The final evaluation: attacks, the ε sweep and the example grid."""

    attacks: tuple[Named, ...] = (
        Named("fgsm"),
        Named("pgd", {"steps": 40, "restarts": 3, "early_stop": True}),
    )
    eps_sweep: tuple[float, ...] = ()
    sweep_attack: Named = field(default_factory=lambda: Named("pgd", {"steps": 20, "early_stop": True}))
    num_examples: int = 0  # 0: the whole test split
    batch_size: int = 500
    examples: int = 8
    smoothing_examples: int = 0  # randomized-smoothing certificates on this many test examples; 0: none


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run: data, model, threat model, one or more trainings, the evaluation."""

    name: str = "experiment"
    seed: int = 0
    device: str = "auto"
    #: the forward passes' precision: "32", "bf16" or "fp16" (autocast; attacks' points stay float32)
    precision: str = "32"
    #: "contiguous" or "channels_last" (4-D inputs and weights)
    memory_format: str = "contiguous"
    #: run the model through torch.compile (eager, with a warning, where that fails)
    compile: bool = False
    #: DataLoader worker processes for the training and validation batches (0: the main process)
    num_workers: int = 0
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: Named = field(default_factory=lambda: Named("small_cnn"))
    threat: ThreatModel = field(default_factory=lambda: ThreatConfig().build())
    train: tuple[TrainConfig, ...] = (TrainConfig(),)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


# ----------------------------------------------------------------------------- parsing

_TOP_OPTIONS = {DataConfig: "options"}  # dataclasses whose unknown keys are options for a registry


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            pass
    raise ConfigError(f'{key}: expected a number or a fraction like "8/255", got {value!r}')


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        return _number(value, key)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is ThreatModel:
        raw: ThreatConfig = _convert(value, ThreatConfig, key)
        return raw.build(key)
    if tp is Named:
        if isinstance(value, str):
            return Named(value)
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            options = {k: v for k, v in value.items() if k != "name"}
            return Named(value["name"], options)
        raise ConfigError(f'{key}: expected a name or a table with a "name" key, got {value!r}')
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _parse_dataclass(tp, value, key)  # type: ignore[arg-type]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if origin in (Union, types.UnionType):
        # ``X | None``: TOML has no null, so a value given is always an X (None is the default alone)
        others = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(others) == 1:
            return _convert(value, others[0], key)
        raise ConfigError(f"{key}: unsupported union type {tp}")  # pragma: no cover
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _parse_dataclass(cls: type[Any], raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    options_field = _TOP_OPTIONS.get(cls)
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else key
        if key in fields and key != options_field:
            values[key] = _convert(value, hints[key], full)
        elif options_field is not None:
            extra[key] = value
        else:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{full}: unknown key (known keys here: {known})")
    if options_field is not None:
        values[options_field] = extra
    return cls(**values)


#: what ``device`` may say: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")
#: the largest seed every generator takes (NumPy's legacy global seed is 32-bit)
MAX_SEED = 2**32 - 1


def _finite(value: float, key: str, *, minimum: float | None = None, positive: bool = False) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    if positive and value <= 0:
        raise ConfigError(f"{key}: must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum:g}, got {value}")


def _at_least(value: int, key: str, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value}")


def _check(cfg: ExperimentConfig) -> None:
    """Value checks the types cannot express, each error naming its key."""
    from advlearn.training.optim import OPTIMIZERS  # late: configs parse without importing training

    try:
        check_name(cfg.name, "name")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"seed: must be in [0, {MAX_SEED}] (NumPy's seed range), got {cfg.seed}")
    if not _DEVICE.fullmatch(cfg.device):
        raise ConfigError(
            f'device: {cfg.device!r} is not a device; use "auto", "cpu", "cuda", "cuda:N" or "mps"'
        )
    from advlearn._precision import MEMORY_FORMATS, PRECISIONS

    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision: {cfg.precision!r} is not one of {', '.join(map(repr, PRECISIONS))}")
    if cfg.memory_format not in MEMORY_FORMATS:
        known = ", ".join(map(repr, MEMORY_FORMATS))
        raise ConfigError(f"memory_format: {cfg.memory_format!r} is not one of {known}")
    _at_least(cfg.num_workers, "num_workers", 0)
    if not cfg.out_dir or "\0" in cfg.out_dir:
        raise ConfigError(f"out_dir: {cfg.out_dir!r} is not a usable path")
    _at_least(cfg.data.val_size, "data.val_size", 0)
    if not cfg.train:
        raise ConfigError("train: at least one [[train]] table is needed")
    labels = [t.label for t in cfg.train]
    for i, t in enumerate(cfg.train):
        key = f"train[{i}]"
        if t.label in labels[:i]:
            raise ConfigError(f"{key}.label: {t.label!r} is used twice; every model needs its own label")
        try:
            check_name(t.label, f"{key}.label")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("early_stopping", 0)):
            _at_least(getattr(t, name), f"{key}.{name}", minimum)
        if t.optimizer not in OPTIMIZERS:
            known = ", ".join(map(repr, sorted(OPTIMIZERS)))
            raise ConfigError(
                f"{key}.optimizer: {t.optimizer!r} is not a known optimizer; use one of {known}"
            )
        _finite(t.lr, f"{key}.lr", positive=True)
        _finite(t.weight_decay, f"{key}.weight_decay", minimum=0)
        _finite(t.momentum, f"{key}.momentum", minimum=0)
        if t.momentum >= 1:
            raise ConfigError(f"{key}.momentum: must be in [0, 1), got {t.momentum}")
    ev = cfg.evaluate
    _at_least(ev.num_examples, "evaluate.num_examples", 0)
    _at_least(ev.examples, "evaluate.examples", 0)
    _at_least(ev.smoothing_examples, "evaluate.smoothing_examples", 0)
    _at_least(ev.batch_size, "evaluate.batch_size", 1)
    if not all(math.isfinite(e) and e >= 0 for e in ev.eps_sweep):
        raise ConfigError(f"evaluate.eps_sweep: radii must be finite and >= 0, got {list(ev.eps_sweep)}")


def _parse_ball(value: Any, key: str) -> Any:
    """An objective's ``ball = { norm = "l2", eps = 1.0 }``: a ball with no box (VAT's, a hidden layer's)."""
    if not isinstance(value, dict):
        raise ConfigError(f'{key}: expected a table like {{ norm = "l2", eps = 1.0 }}, got {value!r}')
    unknown = sorted(set(value) - {"norm", "eps"})
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key (known keys here: eps, norm)")
    if "eps" not in value:
        raise ConfigError(f"{key}.eps: the ball needs a radius")
    eps = _number(value["eps"], f"{key}.eps")
    try:
        return ThreatModel(value.get("norm", L2.name), eps, bounds=None)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


def _with_balls(cfg: ExperimentConfig) -> ExperimentConfig:
    """Parse every objective's ``ball`` option into a ThreatModel, once, here."""
    train = []
    for i, t in enumerate(cfg.train):
        if "ball" in t.objective.options:
            options = dict(t.objective.options)
            options["ball"] = _parse_ball(options["ball"], f"train[{i}].objective.ball")
            t = dataclasses.replace(t, objective=Named(t.objective.name, options))
        train.append(t)
    return dataclasses.replace(cfg, train=tuple(train))


def parse_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Check a config given as nested dicts (as TOML parses) and fill in the defaults."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a table of keys, got {type(raw).__name__}")
    cfg: ExperimentConfig = _parse_dataclass(ExperimentConfig, raw, "")
    _check(cfg)
    return _with_balls(cfg)


def check_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Run :func:`parse_config`'s value checks again on a config changed in code (``--name``, say).

    Raises:
        ConfigError: naming the key.
    """
    _check(cfg)
    return cfg


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and check a TOML config file.

    Raises:
        ConfigError: a missing or malformed file, or a bad key, named in one line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}); save it as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror})") from None
    try:
        raw = parse_toml(text)
    except TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    if not raw:
        raise ConfigError(
            f"{path}: the config is empty (no keys, only comments or blank lines); "
            "run without CONFIG for the main job, or start from a file in configs/"
        )
    try:
        return parse_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def to_dict(cfg: Any) -> Any:
    """The config as plain TOML-ready values (what ``config.toml`` in a run folder holds)."""
    if isinstance(cfg, Named):
        return to_dict(cfg.to_toml())
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, ThreatModel):
        ball = {"norm": cfg.norm.name, "eps": cfg.eps}
        return ball if cfg.bounds is None else {**ball, "bounds": list(cfg.bounds)}
    if isinstance(cfg, DataConfig):
        return {"name": cfg.name, **cfg.options, "val_size": cfg.val_size}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        # a key left at None (``train.model``) is left out: TOML has no null, and parsing restores None
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        return {k: to_dict(v) for k, v in values.items() if v is not None}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    return cfg


def dumps(cfg: ExperimentConfig) -> str:
    """The resolved config as TOML text; :func:`parse_config` of it gives ``cfg`` back."""
    import tomli_w

    return tomli_w.dumps(to_dict(cfg))


__all__ = [
    "ConfigError",
    "DataConfig",
    "EvaluateConfig",
    "ExperimentConfig",
    "Named",
    "TOMLDecodeError",
    "ThreatConfig",
    "TrainConfig",
    "check_config",
    "dumps",
    "load_config",
    "parse_config",
    "parse_toml",
    "to_dict",
]


def with_key(key: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a registry builder, prefixing its ValueError with the config key that fed it.

    Example:
        >>> with_key("threat.eps", float, "abc")
        Traceback (most recent call last):
        ...
        advlearn.config.ConfigError: threat.eps: could not convert string to float: 'abc'
    """
    try:
        return build(*args, **kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{key}: {err}") from None
