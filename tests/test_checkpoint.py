"""Checkpoints: exact round trips, clear errors on damaged files, no unpickling, atomic writes."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import advlearn
from advlearn import checkpoint
from advlearn.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    load_model,
    safe_torch_load,
    save_model,
)
from advlearn.models import build_model

CNN = {"in_shape": (1, 8, 8), "num_classes": 3, "channels": (4, 8), "hidden": 16, "mean": 0.5, "std": 0.25}
RESNET = {
    "in_shape": (3, 8, 8),
    "num_classes": 5,
    "width": 4,
    "mean": (0.4, 0.5, 0.6),
    "std": (0.2, 0.2, 0.3),
}


class _Touch:
    """A pickle that creates ``marker`` when unpickled: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _trained_resnet() -> nn.Module:
    """A BatchNorm model whose running statistics and counters have moved off their initial values."""
    model = build_model("preact_resnet18", **RESNET)
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 8, 8))
        model(torch.rand(4, 3, 8, 8))
    return model


def _save(directory: Path, model: nn.Module, name: str, options: dict[str, Any]) -> None:
    save_model(directory, model, name=name, options=options, metadata={"epochs": 3, "note": "test"})


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _set_sha(directory: Path) -> None:
    """Record the SHA-256 of the current weights file, so only the safetensors parser can object."""
    record = json.loads((directory / CONFIG_FILE).read_text())
    record["weights_sha256"] = checkpoint._sha256(directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(record))


def _edit_config(directory: Path, **changes: Any) -> None:
    record = json.loads((directory / CONFIG_FILE).read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            record[key].update(value)
        else:
            record[key] = value
    (directory / CONFIG_FILE).write_text(json.dumps(record))


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("name", "options", "make"),
    [
        ("small_cnn", CNN, lambda: build_model("small_cnn", **CNN)),
        ("preact_resnet18", RESNET, _trained_resnet),
    ],
    ids=["small_cnn", "preact_resnet18"],
)
def test_roundtrip_is_bitwise(tmp_path: Path, name: str, options: dict[str, Any], make: Any) -> None:
    model = make()
    _save(tmp_path, model, name, options)
    assert _files(tmp_path) == [CONFIG_FILE, WEIGHTS_FILE]

    torch.manual_seed(99)  # a different init: everything must come from the file
    loaded, record = load_model(tmp_path)
    assert type(loaded) is type(model)
    assert not loaded.training
    saved, restored = model.state_dict(), loaded.state_dict()
    assert list(saved) == list(restored)
    for key in saved:
        assert saved[key].dtype == restored[key].dtype, key
        assert torch.equal(saved[key], restored[key]), key
    x = torch.rand(3, *options["in_shape"])
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert record["model"] == name


def test_batchnorm_counters_survive(tmp_path: Path) -> None:
    model = _trained_resnet()
    _save(tmp_path, model, "preact_resnet18", RESNET)
    loaded, _ = load_model(tmp_path)
    counters = {k: v for k, v in loaded.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counters
    assert all(v.dtype == torch.int64 and v.item() == 2 for v in counters.values())


def test_model_json_content(tmp_path: Path) -> None:
    model = build_model("small_cnn", **CNN)
    save_model(tmp_path, model, name="small_cnn", options=CNN, metadata={"epochs": 3, "eps": (0.1, 0.3)})
    record = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert record["model"] == "small_cnn"
    assert record["options"] == {
        "in_shape": [1, 8, 8], "num_classes": 3, "channels": [4, 8], "hidden": 16, "mean": 0.5, "std": 0.25,
    }  # fmt: skip
    assert record["metadata"] == {"epochs": 3, "eps": [0.1, 0.3]}
    assert record["advlearn_version"] == advlearn.__version__
    assert record["torch_version"] == torch.__version__
    assert record["weights_sha256"] == checkpoint._sha256(tmp_path / WEIGHTS_FILE)


def test_loaded_record_gives_builder_arguments(tmp_path: Path) -> None:
    _save(tmp_path, build_model("small_cnn", **CNN), "small_cnn", CNN)
    _, record = load_model(tmp_path)
    assert record["options"] == CNN  # lists back to tuples
    assert record["metadata"] == {"epochs": 3, "note": "test"}
    rebuilt = build_model(record["model"], **record["options"])
    assert isinstance(rebuilt, nn.Sequential)


def test_save_and_load_leave_the_global_rng_alone(tmp_path: Path) -> None:
    model = build_model("small_cnn", **CNN)
    state = torch.get_rng_state()
    _save(tmp_path, model, "small_cnn", CNN)
    load_model(tmp_path)
    assert torch.equal(torch.get_rng_state(), state)


def test_float64_model_stays_float64(tmp_path: Path) -> None:
    options = {"in_shape": (3,), "num_classes": 2, "hidden": (5,)}
    model = build_model("mlp", **options).double()
    _save(tmp_path, model, "mlp", options)
    loaded, _ = load_model(tmp_path, map_location=torch.device("cpu"))
    assert all(p.dtype == torch.float64 for p in loaded.parameters())
    x = torch.rand(2, 3, dtype=torch.float64)
    assert torch.equal(model(x), loaded(x))


def test_resave_replaces_the_checkpoint(tmp_path: Path) -> None:
    first = build_model("small_cnn", **CNN)
    _save(tmp_path, first, "small_cnn", CNN)
    second = build_model("small_cnn", **CNN)
    _save(tmp_path, second, "small_cnn", CNN)
    loaded, _ = load_model(tmp_path)
    assert torch.equal(loaded.conv1.weight, second.conv1.weight)
    assert _files(tmp_path) == [CONFIG_FILE, WEIGHTS_FILE]


def test_save_creates_nested_directories(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "demo"
    _save(target, build_model("small_cnn", **CNN), "small_cnn", CNN)
    assert _files(target) == [CONFIG_FILE, WEIGHTS_FILE]


# ----------------------------------------------------------------------------- save-time validation


@pytest.mark.parametrize(
    ("name", "options", "metadata", "match"),
    [
        ("resnet50", CNN, None, "'resnet50' is not registered"),
        ("small_cnn", {**CNN, "bogus": 1}, None, "unknown option 'bogus'"),
        ("small_cnn", {**CNN, "hidden": 32}, None, r"fc\.weight has shape \(16, 32\), expected \(32, 32\)"),
        (
            "small_cnn",
            {k: v for k, v in CNN.items() if k != "mean"} | {"std": None},
            None,
            "unexpected normalize",
        ),
        ("mlp", {"in_shape": (1, 8, 8), "num_classes": 3}, None, "missing fc1.weight"),
        ("small_cnn", CNN, {"when": object()}, r"metadata\['when'\] is a object"),
        ("small_cnn", CNN, {"acc": float("nan")}, r"metadata\['acc'\] is nan"),
        ("small_cnn", CNN, {1: "x"}, "keys must be strings"),
    ],
)
def test_save_rejects_what_could_not_load(
    tmp_path: Path, name: str, options: dict[str, Any], metadata: Any, match: str
) -> None:
    model = build_model("small_cnn", **CNN)
    with pytest.raises(ValueError, match=match):
        save_model(tmp_path / "ckpt", model, name=name, options=options, metadata=metadata)
    assert not (tmp_path / "ckpt").exists()


def test_metadata_scalars_become_plain_numbers(tmp_path: Path) -> None:
    import numpy as np

    metadata = {"acc": torch.tensor(0.5), "step": np.int64(7), "path": tmp_path}
    _save_with = build_model("small_cnn", **CNN)
    save_model(tmp_path, _save_with, name="small_cnn", options=CNN, metadata=metadata)
    _, record = load_model(tmp_path)
    assert record["metadata"] == {"acc": 0.5, "step": 7, "path": str(tmp_path)}


# ----------------------------------------------------------------------------- damaged checkpoints


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    _save(tmp_path, build_model("small_cnn", **CNN), "small_cnn", CNN)
    return tmp_path


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(missing)


@pytest.mark.parametrize("filename", [CONFIG_FILE, WEIGHTS_FILE])
def test_missing_file(saved: Path, filename: str) -> None:
    (saved / filename).unlink()
    with pytest.raises(FileNotFoundError, match=filename):
        load_model(saved)


@pytest.mark.parametrize("keep", [0, 7, 100, -10])
def test_truncated_weights(saved: Path, keep: int) -> None:
    data = (saved / WEIGHTS_FILE).read_bytes()
    (saved / WEIGHTS_FILE).write_bytes(data[:keep])
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        load_model(saved)
    _set_sha(saved)  # without the checksum, the safetensors parser itself must refuse the file
    with pytest.raises(ValueError, match=r"model\.safetensors is not a valid safetensors file"):
        load_model(saved)


def test_overwritten_tensor_bytes_are_detected(saved: Path) -> None:
    data = bytearray((saved / WEIGHTS_FILE).read_bytes())
    data[-40:-20] = b"\xff" * 20  # inside the tensor data: still a well-formed file
    (saved / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors does not match the SHA-256"):
        load_model(saved)


def test_overwritten_header_bytes(saved: Path) -> None:
    data = bytearray((saved / WEIGHTS_FILE).read_bytes())
    data[8:24] = b"\x00garbage\x00\x00\x00\x00\x00\x00\x00\x00"
    (saved / WEIGHTS_FILE).write_bytes(bytes(data))
    _set_sha(saved)
    with pytest.raises(ValueError, match=r"model\.safetensors is not a valid safetensors file"):
        load_model(saved)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_weights_are_never_unpickled(saved: Path, writer: str) -> None:
    marker = saved / "pwned"
    payload = {"conv1.weight": _Touch(marker)}
    if writer == "pickle":
        (saved / WEIGHTS_FILE).write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, saved / WEIGHTS_FILE)
    _set_sha(saved)
    with pytest.raises(ValueError, match=r"model\.safetensors is not a valid safetensors file.*pickle"):
        load_model(saved)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"options": {}}', 'must name the model as a string under "model"'),
        ('{"model": "small_cnn", "options": [1]}', 'under "options"'),
    ],
)
def test_corrupt_config(saved: Path, text: str, match: str) -> None:
    (saved / CONFIG_FILE).write_text(text)
    with pytest.raises(ValueError, match=rf"model\.json.*{match}"):
        load_model(saved)


def test_config_with_binary_garbage(saved: Path) -> None:
    (saved / CONFIG_FILE).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"model\.json is not valid JSON"):
        load_model(saved)


def test_unknown_model_in_config(saved: Path) -> None:
    _edit_config(saved, model="resnet50")
    with pytest.raises(ValueError, match=r"model\.json does not describe a buildable model.*'resnet50'"):
        load_model(saved)


def test_mismatched_shapes(saved: Path) -> None:
    _edit_config(saved, options={"hidden": 32})
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit model 'small_cnn'.*size mismatch"):
        load_model(saved)


def test_mismatched_keys(saved: Path) -> None:
    record = json.loads((saved / CONFIG_FILE).read_text())
    del record["options"]["mean"], record["options"]["std"]
    (saved / CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit.*Unexpected key.*normalize\.mean"):
        load_model(saved)


# ----------------------------------------------------------------------------- atomic writes


def _fail_replace(*args: Any, **kwargs: Any) -> None:
    raise OSError("disk full (simulated)")


def test_atomic_write_bytes_and_text(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "ε = 8/255\n")
    atomic_write_text(tmp_path / "b.txt", "replaced")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "replaced"
    assert _files(tmp_path) == ["a.bin", "b.txt"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.txt"
    atomic_write_text(target, "old")
    monkeypatch.setattr(os, "replace", _fail_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_text(target, "new, and much longer than the old content")
    with pytest.raises(OSError, match="simulated"):
        atomic_torch_save({"step": torch.tensor(1)}, target)
    assert target.read_text() == "old"
    assert _files(tmp_path) == ["state.txt"]


def test_error_while_writing_leaves_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "x.bin", "not bytes")  # type: ignore[arg-type]
    assert _files(tmp_path) == []


def test_failed_save_keeps_the_old_checkpoint(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: (saved / p).read_bytes() for p in _files(saved)}
    monkeypatch.setattr(os, "replace", _fail_replace)
    with pytest.raises(OSError, match="simulated"):
        _save(saved, build_model("small_cnn", **CNN), "small_cnn", CNN)
    monkeypatch.undo()
    assert {p: (saved / p).read_bytes() for p in _files(saved)} == before
    load_model(saved)


def test_save_killed_between_the_two_files_is_detected(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New weights next to the old config: the recorded checksum exposes the mismatch."""

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(saved, build_model("small_cnn", **CNN), "small_cnn", CNN)
    assert _files(saved) == [CONFIG_FILE, WEIGHTS_FILE]
    with pytest.raises(ValueError, match="interrupted save"):
        load_model(saved)


# ----------------------------------------------------------------------------- training state


def test_torch_state_roundtrip(tmp_path: Path) -> None:
    model = build_model("mlp", in_shape=(3,), num_classes=2, hidden=(4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3)).sum().backward()
    optimizer.step()
    state = {"epoch": 2, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "tag": "x"}
    atomic_torch_save(state, tmp_path / "train_state.pt")
    restored = safe_torch_load(tmp_path / "train_state.pt")
    assert restored["epoch"] == 2
    assert restored["tag"] == "x"
    assert torch.equal(restored["rng"], state["rng"])
    momentum = restored["optimizer"]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, optimizer.state_dict()["state"][0]["momentum_buffer"])
    assert _files(tmp_path) == ["train_state.pt"]


def test_safe_torch_load_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"x": _Touch(marker)}, tmp_path / "evil.pt")
    with pytest.raises(
        ValueError, match=r"evil\.pt holds objects that torch\.load\(weights_only=True\) refuses"
    ):
        safe_torch_load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_safe_torch_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        safe_torch_load(tmp_path / "missing.pt")
    atomic_torch_save({"x": torch.ones(100)}, tmp_path / "state.pt")
    data = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"state\.pt is not a readable torch\.save file"):
        safe_torch_load(tmp_path / "state.pt")
    (tmp_path / "state.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"state\.pt"):
        safe_torch_load(tmp_path / "state.pt")
