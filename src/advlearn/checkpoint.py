"""Checkpoints that never unpickle a user's file, written so a killed process leaves no half file.

A model checkpoint is a directory holding two files:

- ``model.safetensors``: the ``state_dict`` tensors (parameters and buffers,
  BatchNorm statistics included) in the safetensors format, which holds raw
  tensor bytes and a JSON header, and cannot run code when read;
- ``model.json``: ``{"model": name, "options": {...}, "metadata": {...},
  "advlearn_version", "torch_version", "weights_sha256"}``, enough to rebuild
  the architecture with :func:`advlearn.models.build_model` and to check that
  the weights are the ones saved with it.

Every file is written atomically: into a temporary file in the same
directory, flushed to disk (``fsync``), then renamed over the target with
:func:`os.replace`, which POSIX and Windows both make atomic. A reader sees the
old file or the new one, never a partial write. The same helpers
(:func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_torch_save`)
serve the trainer's resumable training state; that state is read back with
:func:`safe_torch_load`, i.e. ``torch.load(weights_only=True)``, whose restricted
unpickler only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from advlearn._io import (
    PathLike,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    safe_torch_load,
)
from advlearn._version import __version__
from advlearn.models import MODELS, build_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON data: tuples become lists, scalars (NumPy or 0-d tensors) plain numbers."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, which JSON cannot hold; use a finite number or null")
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r}; JSON object keys must be strings")
            out[key] = _jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if hasattr(value, "item") and tuple(getattr(value, "shape", (None,))) == ():
        return _jsonable(value.item(), where)  # NumPy scalars, 0-d tensors
    raise ValueError(
        f"{where} is a {type(value).__name__}, which JSON cannot hold; "
        "use numbers, strings, booleans, None, lists, tuples and dicts with string keys"
    )


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the model builders take, recursively."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- model checkpoints


def _files(stem: str) -> tuple[str, str]:
    """``(weights, config)`` file names for ``stem``; ``"model"`` gives the default two."""
    if not isinstance(stem, str) or not stem or any(c in stem for c in "/\\") or stem.startswith("."):
        raise ValueError(f"stem must be a file name without slashes or a leading dot, got {stem!r}")
    return f"{stem}.safetensors", f"{stem}.json"


def _tensors_to_save(model: nn.Module) -> dict[str, Tensor]:
    """The state dict as dense, contiguous CPU tensors that share no memory (safetensors refuses aliases)."""
    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        tensor = value.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen:
            tensor = tensor.clone()  # tied weights: one copy per key; loading fills both with the same values
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors


def _safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors file for ``tensors`` with its JSON header's keys in sorted order.

    safetensors keeps the header in a hash map whose order changes from process to process, so
    identical weights gave files with different bytes; with the header canonical, identical runs
    give identical files (a SHA-256 users can compare). The tensor bytes and offsets are untouched.
    """
    data = save(tensors, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to 8-byte alignment
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def _check_fits(model: nn.Module, name: str, options: dict[str, Any]) -> None:
    """Raise unless ``build_model(name, **options)`` has the state-dict keys and shapes of ``model``.

    The reference is built on the meta device (no memory, no init) where the builder allows it, and
    never draws from the caller's RNG stream.
    """
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                reference = build_model(name, **options)
        except (NotImplementedError, RuntimeError):  # a builder that needs real data to build
            reference = build_model(name, **options)
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"missing {k}" for k in sorted(want.keys() - have.keys())]
    problems += [f"unexpected {k}" for k in sorted(have.keys() - want.keys())]
    problems += [
        f"{k} has shape {have[k]}, expected {want[k]}"
        for k in sorted(want.keys() & have.keys())
        if want[k] != have[k]
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(
            f"model does not match build_model({name!r}, **options), so the checkpoint could not be "
            f"loaded back: {shown}; pass the name and options the model was built with"
        )


def save_model(
    directory: PathLike,
    model: nn.Module,
    *,
    name: str,
    options: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    stem: str = "model",
) -> None:
    """Save ``model`` as ``model.safetensors`` and ``model.json`` in ``directory``.

    ``name`` and ``options`` are what :func:`advlearn.models.build_model` was
    called with; they are checked against ``model`` (state-dict keys and shapes)
    before anything is written, so every checkpoint saved loads back. Each file
    is replaced atomically, the weights first; ``model.json`` records their
    SHA-256, so a save killed between the two files is detected on load instead
    of pairing new weights with an old config.

    Args:
        directory: created if missing.
        model: a model from :func:`advlearn.models.build_model` (any device, any mode).
        name: the registered model name.
        options: the builder options (tuples are stored as JSON lists).
        metadata: JSON-representable extras (data set, epochs, accuracy, ...).
        stem: the files' name without suffix, so that one run folder can hold several
            networks (a GAN's ``generator.safetensors`` and ``generator.json``, say).

    Raises:
        ValueError: for an unknown ``name`` or option, a model that does not match
            them, or options/metadata that JSON cannot hold, or a ``stem`` that is not a file name.

    Example:
        >>> import tempfile
        >>> from advlearn.models import build_model
        >>> options = {"in_shape": (2,), "num_classes": 3, "hidden": (4,)}
        >>> model = build_model("mlp", **options)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_model(d, model, name="mlp", options=options, metadata={"epochs": 1})
        ...     loaded, record = load_model(d)
        >>> record["options"]["hidden"], record["metadata"]
        ((4,), {'epochs': 1})
    """
    weights_file, config_file = _files(stem)
    options = dict(options)
    MODELS.check(name, options)
    record = {
        "model": name,
        "options": _jsonable(options, "options"),
        "metadata": _jsonable(dict(metadata or {}), "metadata"),
        "advlearn_version": __version__,
        "torch_version": torch.__version__,
    }
    _check_fits(model, name, options)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    weights = _safetensors_bytes(_tensors_to_save(model), {"format": "pt", "model": name})
    record["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    atomic_write_bytes(root / weights_file, weights)
    atomic_write_text(root / config_file, json.dumps(record, indent=2, allow_nan=False) + "\n")


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the checkpoint's config is corrupt") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("model"), str):
        raise ValueError(f'{path} must name the model as a string under "model"')
    if not isinstance(record.get("options"), dict):
        raise ValueError(f'{path} must hold the builder options as an object under "options"')
    if not isinstance(record.setdefault("metadata", {}), dict):
        raise ValueError(f'{path} must hold an object under "metadata"')
    return record


def read_record(directory: PathLike, *, stem: str = "model") -> dict[str, Any]:
    """The checked contents of ``directory/model.json`` (no weights read): what :func:`load_model` would
    rebuild, for callers that need the metadata first (which data the model saw).

    Raises:
        FileNotFoundError: if the directory or either file is missing (the message names the path).
        ValueError: if ``model.json`` is not valid JSON or misses a field.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {root}")
    for name in _files(stem):
        if not (root / name).is_file():
            raise FileNotFoundError(f"the checkpoint has no {name}: {root / name} does not exist")
    return _read_record(root / _files(stem)[1])


def check_input_shape(record: Mapping[str, Any], shape: tuple[int, ...], where: str) -> None:
    """Refuse data whose input shape differs from the ``in_shape`` a checkpoint's model was built for.

    Raises:
        ValueError: naming both shapes and ``where`` (the option that chose the data).
    """
    want = record.get("options", {}).get("in_shape")
    if want is not None and tuple(want) != tuple(shape):
        raise ValueError(
            f"{where}: the data's inputs have shape {tuple(shape)} but the model was built for "
            f"{tuple(want)}; pass the data the model was trained on"
        )


def load_model(
    directory: PathLike, *, map_location: str | torch.device = "cpu", stem: str = "model"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_model` in ``directory`` and load its weights.

    The architecture comes from ``build_model(record["model"], **record["options"])``
    (JSON lists turned back into tuples), the weights from ``model.safetensors``
    with ``load_state_dict(strict=True)``. Nothing is unpickled. The global RNG is
    left as it was, and the model is returned in **eval mode** (BatchNorm uses
    its running statistics), ready for attacks and evaluation; call ``.train()``
    to train it further. A model saved in float64 is rebuilt in float64.

    Args:
        directory: the checkpoint directory.
        map_location: the device to move the model to.
        stem: the files' name without suffix, as given to :func:`save_model`.

    Returns:
        ``(model, record)``: the model, and the contents of ``model.json`` with
        ``options`` as builder arguments (tuples).

    Raises:
        FileNotFoundError: if the directory or either file is missing (the message names the path).
        ValueError: if ``model.json`` is not valid JSON or misses a field, names an
            unknown model or option, or if ``model.safetensors`` is corrupt, truncated,
            not a safetensors file (a pickle, say), differs from the SHA-256 recorded in
            ``model.json``, or does not fit the model (missing or unexpected keys, wrong shapes).
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {root}")
    weights_file, config_file = _files(stem)
    config_path, weights_path = root / config_file, root / weights_file
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"the checkpoint has no {path.name}: {path} does not exist")
    record = _read_record(config_path)
    name, options = record["model"], _tuples(record["options"])
    record["options"] = options

    expected = record.get("weights_sha256")
    if expected is not None and _sha256(weights_path) != expected:
        raise ValueError(
            f"{weights_path} does not match the SHA-256 recorded in {config_path}: the weights are "
            "corrupt, or were replaced without their config (an interrupted save?)"
        )
    try:
        tensors = load_file(weights_path, device="cpu")
    except SafetensorError as e:
        raise ValueError(
            f"{weights_path} is not a valid safetensors file ({e}); it may be truncated, corrupt, or a "
            "pickle, which advlearn never loads"
        ) from None

    try:
        with torch.random.fork_rng(devices=[]):  # loading must not move the caller's RNG stream
            model = build_model(name, **options)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{config_path} does not describe a buildable model: {e}") from None
    float_dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(float_dtypes) == 1:
        model.to(float_dtypes.pop())
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        details = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line for logs
        raise ValueError(
            f"{weights_path} does not fit model {name!r} built from {config_path}: {details}"
        ) from None
    return model.to(map_location).eval(), record


__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_input_shape",
    "load_model",
    "read_record",
    "safe_torch_load",
    "save_model",
]
