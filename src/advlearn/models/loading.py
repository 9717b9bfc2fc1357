"""Models that were not saved by advlearn: state dicts, TorchScript, ``torch.export`` programs, factories.

``advlearn evaluate | attack | certify`` read a user's model through these functions (the
dispatch on the kind of file is :func:`advlearn.experiments.saved_model.load_user_model`):

- :func:`read_state_dict`: a ``.safetensors`` file (raw tensors, cannot run code) or a
  ``.pt``/``.pth``/``.bin`` file read with ``torch.load(weights_only=True)``, whose restricted
  unpickler rebuilds only tensors and plain containers; a checkpoint that wraps the weights
  under ``"state_dict"``, ``"model_state_dict"``, ``"model"`` or ``"net"`` is unwrapped.
- :func:`fit_state_dict`: load it into a model built from the registry, stripping the
  ``module.`` (DataParallel/DDP) and ``model.`` (Lightning and friends) prefixes when that is what
  makes the keys match, and refusing with one line that lists the missing keys, the unexpected
  keys and the shape mismatches.
- :func:`load_torchscript` (``torch.jit.load``) and :func:`load_exported` (``torch.export.load``
  of a ``.pt2`` program).
- :func:`load_factory`: ``package.module:function``, **imported and called**: this runs the
  user's own code, which is why it happens only when the user names the function.
- :func:`with_normalization`: ``Normalize(mean, std)`` in front of a model trained on
  standardized inputs, so that attacks and ε stay in the pixel space a person sees.
- :func:`resolve_device`: ``auto | cpu | cuda[:N] | mps`` to a :class:`torch.device`, refusing
  a device this machine does not have.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlearn.models.layers import Normalize

PathLike = str | os.PathLike[str]

#: Suffixes read as state dicts (``.safetensors`` without unpickling; the rest with ``weights_only=True``).
STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: Keys under which training scripts commonly nest the weights inside a checkpoint dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
#: Prefixes wrappers add to every key: ``module.`` (DataParallel/DDP), ``model.`` (Lightning and others).
PREFIXES = ("module.", "model.")
_SHOW = 5  # keys listed per category in an error before "and N more"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_torchscript_archive(path: PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``).

    ``torch.save`` writes zips too (``data.pkl`` without ``code/``), so the zip alone says nothing.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _tensor_mapping(value: object) -> dict[str, Tensor] | None:
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())
    ):
        return dict(value)
    return None


def read_state_dict(path: PathLike) -> dict[str, Tensor]:
    """The tensors of a weights file, on the CPU, never unpickling arbitrary objects.

    Args:
        path: ``.safetensors``, or ``.pt``/``.pth``/``.bin``/``.ckpt`` (``torch.load`` with
            ``weights_only=True``). A dict wrapping the weights under one of :data:`WRAPPER_KEYS`
            (e.g. ``{"epoch": 3, "state_dict": {...}}``) is unwrapped.

    Returns:
        ``{name: tensor}``.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: if the file is corrupt, holds objects the weights-only unpickler refuses
            (a pickled ``nn.Module``, say: save its ``state_dict()`` instead), or holds no
            mapping of names to tensors.

    Example:
        >>> import tempfile
        >>> from safetensors.torch import save_file
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_file({"weight": torch.zeros(2, 3)}, f"{d}/w.safetensors")
        ...     read_state_dict(f"{d}/w.safetensors")["weight"].shape
        torch.Size([2, 3])
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no weights file at {file}")
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(file, device="cpu")
        except SafetensorError as e:
            raise ValueError(f"{file} is not a valid safetensors file ({_first_line(e)})") from None
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (bad zip), EOFError: all mean "cannot read it"
        raise ValueError(
            f"{file} could not be read with torch.load(weights_only=True), which refuses pickled objects "
            f"other than tensors and containers ({_first_line(e)}); save model.state_dict() instead of "
            "the model, or pass a TorchScript (torch.jit.save) or torch.export (.pt2) file"
        ) from None
    found = _tensor_mapping(loaded)
    if found is None and isinstance(loaded, Mapping):
        for key in WRAPPER_KEYS:
            found = _tensor_mapping(loaded.get(key))
            if found is not None:
                break
    if found is None:
        keys = f" with keys {sorted(map(str, loaded))[:8]}" if isinstance(loaded, Mapping) else ""
        raise ValueError(
            f"{file} holds a {type(loaded).__name__}{keys}, not a state dict (names to tensors, possibly "
            f"under one of {', '.join(WRAPPER_KEYS)})"
        )
    return found


def _strip_prefix(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """``state`` with a wrapper prefix removed from every key, when that makes more keys match the model's."""
    best, matched = state, len(expected & set(state))
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if len(expected & set(stripped)) > matched:
                best, matched = stripped, len(expected & set(stripped))
    return best


def _listing(what: str, items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"{len(items)} {what} ({shown}{more})"


def fit_state_dict(
    model: nn.Module, state: Mapping[str, Tensor], *, source: str = "the weights"
) -> nn.Module:
    """Load ``state`` into ``model`` strictly, after stripping a ``module.``/``model.`` prefix if that helps.

    Args:
        model: the architecture, freshly built.
        state: the tensors, e.g. from :func:`read_state_dict`.
        source: how to name the weights in an error (a path, say).

    Returns:
        ``model`` (in eval mode), its parameters and buffers replaced; if every floating tensor of
        ``state`` has one dtype (float64, say) the model is cast to it.

    Raises:
        ValueError: one line listing the missing keys, the unexpected keys and the shape mismatches
            (up to five of each, with the counts).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> wrapped = {f"module.{k}": v for k, v in nn.Linear(3, 2).state_dict().items()}
        >>> fit_state_dict(net, wrapped).weight.shape
        torch.Size([2, 3])
        >>> fit_state_dict(nn.Linear(4, 2), wrapped, source="w.pt")
        Traceback (most recent call last):
        ...
        ValueError: w.pt does not fit the model: 1 shape mismatch (weight: file (2, 3), model (2, 4))
    """
    expected = model.state_dict()
    tensors = _strip_prefix(dict(state), set(expected))
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [
        f"{k}: file {tuple(tensors[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(_listing("missing key" + "s" * (len(missing) > 1), missing))
    if unexpected:
        problems.append(_listing("unexpected key" + "s" * (len(unexpected) > 1), unexpected))
    if mismatched:
        problems.append(_listing("shape mismatch" + "es" * (len(mismatched) > 1), mismatched))
    if problems:
        raise ValueError(f"{source} does not fit the model: {'; '.join(problems)}")
    float_dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(float_dtypes) == 1:
        model.to(float_dtypes.pop())
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def load_torchscript(path: PathLike) -> nn.Module:
    """A TorchScript archive (``torch.jit.save``), on the CPU, in eval mode.

    TorchScript is a restricted language of its own; loading it does not run arbitrary Python.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: if ``torch.jit.load`` cannot read it.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no TorchScript file at {file}")
    try:
        module = torch.jit.load(str(file), map_location="cpu")
    except Exception as e:  # RuntimeError for anything torch.jit cannot parse
        raise ValueError(f"{file} could not be loaded as TorchScript: {_first_line(e)}") from None
    return module.eval()  # type: ignore[no-any-return]


def load_exported(path: PathLike) -> nn.Module:
    """A ``torch.export`` program saved with ``torch.export.save`` (a ``.pt2`` file), as a module.

    The exported graph has no train/eval switch (``.eval()`` raises): it runs as it was traced,
    so export the model in eval mode.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: if ``torch.export.load`` cannot read it.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no torch.export program at {file}")
    try:
        program = torch.export.load(str(file))
    except Exception as e:  # zip, version and deserialization errors
        raise ValueError(f"{file} could not be loaded with torch.export.load: {_first_line(e)}") from None
    return program.module()


def _import_here_too(module_name: str) -> Any:
    """``importlib.import_module``, retried with the current directory at the end of ``sys.path``."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        here, top = os.getcwd(), module_name.partition(".")[0]
        found_here = (Path(here) / top).is_dir() or (Path(here) / f"{top}.py").is_file()
        if e.name != top or here in sys.path or not found_here:
            raise
        sys.path.append(here)
        return importlib.import_module(module_name)


def load_factory(spec: str, **options: Any) -> nn.Module:
    """Import ``package.module:function`` and call it with ``options``: **this runs the user's code**.

    Only for a function the user names (``--model-factory``); advlearn never imports code it
    was not asked to. The module is found on ``sys.path`` and then in the current directory (as
    ``python -m`` and servers like uvicorn do), so ``--model-factory mymodels:net`` works from the
    folder that holds ``mymodels.py``; elsewhere add its folder to ``PYTHONPATH``.

    Args:
        spec: ``"package.module:function"``.
        **options: keyword arguments for the function (``--arch-option key=value``).

    Returns:
        The :class:`torch.nn.Module` the function returns.

    Raises:
        ValueError: if ``spec`` is not ``module:function``, the module cannot be imported, it has
            no such function, the call fails on its arguments, or it returns something other than
            an ``nn.Module``.
    """
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"--model-factory {spec!r} must look like package.module:function")
    try:
        module = _import_here_too(module_name)
    except ImportError as e:
        raise ValueError(
            f"--model-factory: cannot import {module_name!r} ({_first_line(e)}); is its folder on PYTHONPATH?"
        ) from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ValueError(f"--model-factory: module {module_name!r} has no function {function_name!r}")
    try:
        model = factory(**options)
    except TypeError as e:
        raise ValueError(f"--model-factory {spec}: {_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model-factory {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def with_normalization(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """``nn.Sequential(Normalize(mean, std), model)``: the model then takes pixels, and ε is in pixels.

    For a model trained on standardized inputs ``(x − mean) / std``: attack the wrapped model
    with inputs in ``[0, 1]`` and ε keeps one meaning for every channel.

    Example:
        >>> net = with_normalization(nn.Identity(), [0.5], [0.25])
        >>> net(torch.ones(1, 1))
        tensor([[2.]])
    """
    return nn.Sequential(Normalize(mean=tuple(mean), std=tuple(std)), model)  # modes are left as they are


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``"0.5,0.25"`` → ``((0.5,), (0.25,))``; ``"m1,m2,m3,s1,s2,s3"`` → per-channel mean and std.

    Raises:
        ValueError: for anything but an even count of finite numbers with positive std.
    """
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--normalize {text!r} must be numbers separated by commas: mean,std") from None
    if len(values) % 2 or not values or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"--normalize {text!r} needs mean,std (one channel) or m1,...,mC,s1,...,sC: "
            "an even count of numbers"
        )
    half = len(values) // 2
    mean, std = tuple(values[:half]), tuple(values[half:])
    if any(s <= 0 for s in std):
        raise ValueError(f"--normalize {text!r}: every std must be > 0")
    return mean, std


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA if present, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        ValueError: for another name, or a device this machine does not have (the message says
            what it has).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    have = ["cpu", *(f"cuda:{i}" for i in range(cuda_count)), *(["mps"] if mps else [])]
    if text == "auto":
        return torch.device("cuda" if cuda_count else "mps" if mps else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    present = (
        device.type == "cpu"
        or (device.type == "cuda" and cuda_count > (device.index or 0))
        or (device.type == "mps" and mps)
    )
    if not present:
        raise ValueError(f"--device {spec!r} is not present on this machine; it has {', '.join(have)}")
    return device


__all__ = [
    "PREFIXES",
    "STATE_DICT_SUFFIXES",
    "WRAPPER_KEYS",
    "fit_state_dict",
    "is_torchscript_archive",
    "load_exported",
    "load_factory",
    "load_torchscript",
    "parse_normalize",
    "read_state_dict",
    "resolve_device",
    "with_normalization",
]
