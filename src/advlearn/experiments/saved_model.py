"""What ``advlearn evaluate | attack | certify`` do with a user's model: load it, check it on the
data, evaluate or attack it on a split of a dataset, and write what a person reads.

A model is any of (:class:`ModelSpec`, read by :func:`load_user_model`):

- an advlearn run folder (``model.safetensors`` + ``model.json``), rebuilt by
  :func:`advlearn.checkpoint.load_model`;
- a state dict (``.safetensors``; ``.pt``/``.pth``/``.bin``/``.ckpt`` read with
  ``torch.load(weights_only=True)``) plus an architecture: ``arch`` from
  :data:`advlearn.models.MODELS` with ``arch_options``, or a ``factory``;
- a TorchScript archive (``torch.jit.save``) or a ``torch.export`` program (``.pt2``);
- ``factory="package.module:function"`` alone: the function builds (and may load) the model.
  **This imports and runs the user's code**, which is why it happens only when named.

``normalize=(mean, std)`` puts :class:`advlearn.models.Normalize` in front, for a model trained
on standardized inputs, so ε stays in pixel units. Nothing is unpickled beyond what
``torch.load(weights_only=True)`` rebuilds (tensors and plain containers).
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advlearn._io import atomic_write_bytes
from advlearn._precision import check_precision, fast_model
from advlearn.attacks import Attack
from advlearn.checkpoint import CONFIG_FILE, check_input_shape, load_model, read_record
from advlearn.config import Named, with_key
from advlearn.data import Dataset, DataSplit, load_collection, load_dataset
from advlearn.evaluation import Evaluation, Examples, adversarial_examples, evaluate
from advlearn.evaluation._progress import summary
from advlearn.models import MODELS, build_model
from advlearn.models.loading import (
    fit_state_dict,
    is_torchscript_archive,
    load_exported,
    load_factory,
    load_torchscript,
    read_state_dict,
    resolve_device,
    with_normalization,
)
from advlearn.report import plot_examples
from advlearn.threat import ThreatModel

SPLITS = ("test", "train", "all")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from; see the module docstring for the kinds.

    Attributes:
        path: a run folder, a weights file, a TorchScript archive or a ``.pt2`` program; ``None``
            with ``factory`` alone.
        arch: a name in :data:`advlearn.models.MODELS` for a state dict.
        arch_options: the builder's options (``in_shape`` and ``num_classes`` default to the data's).
        factory: ``"package.module:function"`` (runs that code), called with ``arch_options``.
        normalize: ``(mean, std)`` to put in front of the model, or ``None``.
    """

    path: str | Path | None = None
    arch: str | None = None
    arch_options: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None
    normalize: tuple[Sequence[float], Sequence[float]] | None = None

    @property
    def label(self) -> str:
        """A short name for tables: the file or folder name, else the factory."""
        return Path(self.path).name if self.path is not None else str(self.factory)


def _spec(model: ModelSpec | str | Path) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else ModelSpec(path=model)


def is_run_folder(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder holding an advlearn checkpoint (``model.json``)."""
    return path is not None and (Path(path) / CONFIG_FILE).is_file()


def data_of_model(model: ModelSpec | str | Path) -> Named | None:
    """The dataset an advlearn run folder's model was trained on (its ``model.json``), else ``None``."""
    spec = _spec(model)
    if not is_run_folder(spec.path):
        return None
    assert spec.path is not None
    try:
        meta = json.loads((Path(spec.path) / CONFIG_FILE).read_text())["metadata"]["data"]
        return Named(meta.pop("name"), meta)
    except (OSError, KeyError, ValueError, TypeError, AttributeError):
        return None


def load_user_model(
    model: ModelSpec | str | Path,
    *,
    in_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model of any kind :class:`ModelSpec` describes, on ``device``, in eval mode.

    Args:
        model: the spec, or a path (a run folder, a TorchScript archive or a ``.pt2`` program).
        in_shape, num_classes: the data's, passed to a registry builder unless ``arch_options``
            sets them.
        device: where the model goes (``"auto"``, ``"cpu"``, ``"cuda:1"``...); weights are read
            on the CPU, then moved.

    Returns:
        ``(model, record)``: ``record`` is the run folder's ``model.json`` contents, or
        ``{"model": ..., "kind": ..., "source": ...}`` describing what was loaded.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: one line for a state dict without ``arch`` or ``factory``, an unknown
            architecture (the known ones listed), weights that do not fit (missing, unexpected,
            mis-shaped keys listed), an unreadable file, or a factory that fails.
    """
    spec = _spec(model)
    target = resolve_device(device)
    path = Path(spec.path) if spec.path is not None else None
    record: dict[str, Any]
    if path is None:
        if spec.factory is None:
            raise ValueError("no model: pass --model PATH, or --model-factory package.module:function")
        net = load_factory(spec.factory, **spec.arch_options)
        record = {"model": spec.factory, "kind": "factory", "source": spec.factory}
    elif path.is_dir():
        if spec.arch or spec.factory:
            raise ValueError(
                f"{path} is a run folder, which names its architecture; drop --arch/--model-factory"
            )
        net, record = load_model(path)
        record = {**record, "kind": "run folder", "source": str(path)}
    elif not path.exists():
        raise FileNotFoundError(f"no model at {path}: not a run folder, weights file or program")
    elif path.suffix == ".pt2":
        net = load_exported(path)
        record = {"model": path.name, "kind": "torch.export", "source": str(path)}
    elif is_torchscript_archive(path):
        net = load_torchscript(path)
        record = {"model": path.name, "kind": "TorchScript", "source": str(path)}
    else:
        state = read_state_dict(path)
        if spec.factory is not None:
            with torch.random.fork_rng(devices=[]):
                net = load_factory(spec.factory, **spec.arch_options)
            name = spec.factory
        elif spec.arch is not None:
            if spec.arch not in MODELS:
                raise ValueError(
                    f"--arch {spec.arch!r} is not registered; known architectures: {', '.join(MODELS)}"
                )
            options = dict(spec.arch_options)
            if in_shape is not None:
                options.setdefault("in_shape", tuple(in_shape))
            if num_classes is not None:
                options.setdefault("num_classes", num_classes)
            with torch.random.fork_rng(devices=[]):  # building must not move the caller's RNG stream
                net = with_key(f"--arch {spec.arch}", build_model, spec.arch, **options)
            name = spec.arch
        else:
            raise ValueError(
                f"{path} is a state dict (weights without an architecture); pass --arch NAME "
                f"(one of {', '.join(MODELS)}) with --arch-option key=value, or --model-factory pkg.mod:fn"
            )
        net = fit_state_dict(net, state, source=str(path))
        record = {
            "model": name,
            "options": dict(spec.arch_options),
            "kind": "state dict",
            "source": str(path),
        }
    if spec.normalize is not None:
        mean, std = spec.normalize
        net = with_normalization(net, mean, std)
        record["normalize"] = {"mean": list(mean), "std": list(std)}
    net = net.to(target)
    if record["kind"] != "torch.export":  # an exported graph has no mode switch: it runs as traced
        net = net.eval()
    return net, record


def _reason(error: Exception) -> str:
    """The line of an error that says what went wrong: its first, or for a TorchScript error (a
    traceback of the scripted code) the final ``SomeError: ...`` line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and "TorchScript interpreter" in lines[0]:
        return lines[-1]
    return lines[0]


def check_model_fits_data(model: nn.Module, data: Dataset, device: str | torch.device = "cpu") -> None:
    """Run the model on one example and check it returns ``(1, num_classes)`` logits.

    Raises:
        ValueError: one line naming the input shape when the forward pass fails, or the output
            shape when it is not one logit per class.
    """
    x = data.x[:1].to(resolve_device(device))
    what = f"an input of shape {tuple(x.shape)} from {data.name}"
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # any failure of the user's forward pass: say what it was fed
        raise ValueError(f"the model failed on {what}: {_reason(e)}") from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != (1, data.num_classes):
        got = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
        raise ValueError(
            f"the model returned {got} for {what}; expected logits of shape (1, {data.num_classes}), "
            f"one per class of {data.name}"
        )


def load_split(data: Named, *, split: str = "test", num_examples: int = 0, quiet: bool = True) -> Dataset:
    """The first ``num_examples`` (0: all) examples of ``split`` of ``data``.

    ``split`` is ``"test"``, ``"train"`` or ``"all"`` (every example, in file order: see
    :func:`~advlearn.data.load_collection`). A single file or folder handed in without a
    ``test_path`` is split by ``test_fraction`` (20% by default) for ``test``/``train``; unless
    ``quiet``, one line on stderr then says how many of its examples the split holds, and
    ``--num-examples`` beyond the split is said rather than passed over.

    Raises:
        ValueError: for an unknown split or a negative count, and whatever the dataset raises.
    """
    if split not in SPLITS:
        raise ValueError(f"--split {split!r} is not known; use test, train or all")
    if num_examples < 0:
        raise ValueError(f"--num-examples must be >= 0 (0: all), got {num_examples}")
    if split == "all":
        chosen: Dataset = with_key("--data", load_collection, data.name, **data.options)
    else:
        full: DataSplit = with_key("--data", load_dataset, data.name, **data.options)
        chosen = full.test if split == "test" else full.train
        if data.name in ("npz", "image_folder") and data.options.get("test_path") is None:
            whole = len(full.train) + len(full.test)
            fraction = data.options.get("test_fraction", 0.2)
            share = fraction if split == "test" else 1 - fraction
            summary(
                f"data: the {split} split of {data.options.get('path')} is a stratified {share:.0%} of "
                f"it, {len(chosen)} of {whole} examples (--split all takes every example)",
                quiet,
            )
    if num_examples > len(chosen):
        summary(f"data: --num-examples {num_examples}, but the {split} split holds {len(chosen)}", quiet)
    return chosen.subset(min(num_examples, len(chosen))) if num_examples else chosen


def load_model_and_data(
    model: ModelSpec | str | Path,
    data: Named | None,
    *,
    split: str = "test",
    num_examples: int = 0,
    device: str | torch.device = "cpu",
    quiet: bool = True,
) -> tuple[nn.Module, dict[str, Any], Dataset]:
    """The model and the examples it will be measured on, checked against each other.

    ``data=None`` takes the dataset a run folder's model was trained on.

    Raises:
        ValueError: when no dataset is given and the model does not name one, and as
            :func:`load_user_model`, :func:`load_split` and :func:`check_model_fits_data`.
    """
    path = _spec(model).path
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"no model at {path}: not a run folder, weights file or program")
    folder_record = read_record(path) if path is not None and Path(path).is_dir() else None
    if data is None:
        data = data_of_model(model)
        if data is None:
            raise ValueError(
                f"{_spec(model).label} does not say which data it saw; pass --data "
                "(mnist5k, digits, cifar10:DIR, cifar100:DIR, mnist:DIR, npz:PATH or folder:DIR)"
            )
    examples = load_split(data, split=split, num_examples=num_examples, quiet=quiet)
    if folder_record is not None:  # a run folder knows its input shape: name both, before building
        check_input_shape(folder_record, tuple(examples.input_shape), "--data")
    net, record = load_user_model(
        model, in_shape=examples.input_shape, num_classes=examples.num_classes, device=device
    )
    check_model_fits_data(net, examples, device)
    return net, record, examples


def evaluate_saved(
    model: ModelSpec | str | Path,
    data: Named | None,
    threat: ThreatModel,
    attacks: Mapping[str, Attack],
    *,
    split: str = "test",
    num_examples: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    seed: int = 0,
    quiet: bool = False,
    smooth_sigma: float | None = None,
    smooth_n: int = 1000,
    precision: str = "32",
) -> Evaluation:
    """Load a model (any kind :class:`ModelSpec` describes) and evaluate it on a split of ``data``.

    Beside the attacks' (upper-bound) robust accuracy, the evaluation's ``certified`` holds the
    lower bounds that apply: IBP's verified accuracy when the model's layers allow it, and with
    ``smooth_sigma`` for an ℓ2 threat model, randomized smoothing's certified accuracy at radius ε
    (``smooth_n`` noise samples per example). ``precision`` is :func:`~advlearn.evaluation.evaluate`'s
    (the attacks' forward passes; the certified bounds are computed in float32).
    """
    from advlearn.certify import certified_accuracies

    net, _, examples = load_model_and_data(
        model, data, split=split, num_examples=num_examples, device=device, quiet=quiet
    )
    target = resolve_device(device)
    evaluation = evaluate(
        net,
        (examples.x, examples.y),
        threat,
        dict(attacks),
        batch_size=batch_size,
        device=target,
        seed=seed,
        quiet=quiet,
        precision=precision,
    )
    certified = certified_accuracies(
        net,
        (examples.x.to(target), examples.y.to(target)),
        threat,
        sigma=smooth_sigma,
        n=smooth_n,
        seed=seed,
        quiet=quiet,
    )
    return dataclasses.replace(evaluation, certified=certified)


def benchmark_saved(
    model: ModelSpec | str | Path,
    data: Named | None,
    threat: ThreatModel,
    attacks: Mapping[str, Attack] | None,
    out_dir: str | Path,
    *,
    split: str = "test",
    num_examples: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    seed: int = 0,
    quiet: bool = False,
    smooth_sigma: float | None = None,
) -> Path:
    """``advlearn evaluate --report DIR``: :func:`advlearn.evaluation.benchmark` on a user's model.

    Returns:
        ``out_dir``, holding ``report.html``, ``report.md``, ``results.json`` and the PNGs.
    """
    from advlearn.evaluation import benchmark

    net, _, examples = load_model_and_data(
        model, data, split=split, num_examples=num_examples, device=device, quiet=quiet
    )
    return benchmark(
        net,
        (examples.x, examples.y),
        threat,
        out_dir=out_dir,
        attacks=attacks,
        batch_size=batch_size,
        smooth_sigma=smooth_sigma,
        class_names=examples.class_names,
        label=_spec(model).label,
        device=resolve_device(device),
        seed=seed,
        quiet=quiet,
    )


def write_adversarial_examples(
    model: ModelSpec | str | Path,
    data: Named | None,
    attack: Attack,
    out: str | Path,
    *,
    split: str = "test",
    num_examples: int = 16,
    name: str = "",
    device: str | torch.device = "cpu",
    seed: int = 0,
    precision: str = "32",
) -> tuple[Examples, Path]:
    """Attack the first ``num_examples`` inputs of a split of ``data`` with a user's model.

    ``precision`` (``"32"``, ``"bf16"``, ``"fp16"``) runs the model's forward passes under
    autocast; the adversarial points stay float32 and inside the threat set. Writes ``out`` (a
    ``.npz`` with ``x``, ``x_adv``, ``y``, ``pred_clean``, ``pred_adv``, ``conf_adv``) and a PNG grid
    beside it; returns the examples and the PNG's path.
    """
    net, _, examples = load_model_and_data(model, data, split=split, num_examples=num_examples, device=device)
    target = resolve_device(device)
    check_precision(precision, target)
    net = fast_model(net, precision=precision)
    found = adversarial_examples(
        net, examples.x.to(target), examples.y.to(target), attack, name=name, seed=seed
    )
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x=found.x.numpy(),
        x_adv=found.x_adv.numpy(),
        y=found.y.numpy(),
        pred_clean=found.pred_clean.numpy(),
        pred_adv=found.pred_adv.numpy(),
        conf_adv=found.conf_adv.numpy(),
    )
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    png = out.with_suffix(".png")
    plot_examples(found, png, class_names=examples.class_names)
    return found, png


__all__ = [
    "SPLITS",
    "ModelSpec",
    "benchmark_saved",
    "check_model_fits_data",
    "data_of_model",
    "evaluate_saved",
    "is_run_folder",
    "load_model_and_data",
    "load_split",
    "load_user_model",
    "write_adversarial_examples",
]
