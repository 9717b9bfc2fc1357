"""Issue 16: `advlearn evaluate | attack | certify` on models trained outside advlearn, and user data.

Every model here is built in plain PyTorch in the test and saved the way a researcher would save
it: a state dict (``.pt``, ``.safetensors``, with a ``module.`` prefix), a TorchScript archive,
a ``torch.export`` program and a factory function in a module on ``sys.path``.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from advlearn.cli import main
from advlearn.data import batches, digits
from advlearn.data.registry import parse_data_spec
from advlearn.experiments.saved_model import ModelSpec, load_user_model
from advlearn.models import build_model
from advlearn.models.loading import fit_state_dict, parse_normalize, read_state_dict, resolve_device


def _plain_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """A plain-PyTorch MLP trained for a few hundred steps on the 8x8 digits (well above chance)."""
    net = _plain_net().train()
    train = digits().train
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(train.x), train.y).backward()
        opt.step()
    return net.eval()


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no traceback
    assert "Traceback" not in err
    return err


def test_state_dict_with_arch_from_the_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A registry architecture's state dict saved with a DataParallel prefix loads with --arch."""
    net = build_model("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=(16,))
    path = tmp_path / "w.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    argv = ["evaluate", "--model", str(path), "--arch", "mlp", "--arch-option", "hidden=[16]"]
    code = main(
        [*argv, "--data", "digits", "--attack", "fgsm", "--eps", "0.1", "--num-examples", "20", "--quiet"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "w.pth" in out
    assert "clean" in out
    loaded, record = load_user_model(
        ModelSpec(path=path, arch="mlp", arch_options={"hidden": (16,)}), in_shape=(1, 8, 8), num_classes=10
    )
    for (k, v), w in zip(loaded.state_dict().items(), net.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert record["kind"] == "state dict"


def test_wrong_arch_and_missing_keys_get_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.safetensors"
    save_file(dict(_plain_net().state_dict()), path)
    base = ["evaluate", "--model", str(path), "--data", "digits", "--eps", "0.1", "--quiet"]
    err = _one_line_error(capsys, [*base, "--arch", "resnet9000"])
    assert "resnet9000" in err
    assert "small_cnn" in err
    err = _one_line_error(capsys, [*base, "--arch", "logreg"])
    assert "missing key" in err
    assert "unexpected keys" in err
    assert "1.weight" in err
    err = _one_line_error(capsys, base)  # a state dict without an architecture
    assert "--arch" in err
    assert "--model-factory" in err


def test_shape_mismatch_is_listed() -> None:
    state = nn.Linear(3, 2).state_dict()
    with pytest.raises(
        ValueError,
        match=r"2 shape mismatches \(weight: file \(2, 3\), model \(3, 4\), "
        r"bias: file \(2,\), model \(3,\)\)",
    ):
        fit_state_dict(nn.Linear(4, 3), state, source="w.pt")
    with pytest.raises(ValueError, match=r"unexpected keys \(model.weight"):  # stripped only when that helps
        fit_state_dict(
            nn.Sequential(nn.Linear(3, 2)), {f"model.{k}": v for k, v in state.items()}, source="w"
        )


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_plain_net(), path)  # a pickled nn.Module: weights_only=True refuses it
    with pytest.raises(ValueError, match=r"weights_only=True.*state_dict\(\)"):
        read_state_dict(path)


def test_torchscript_and_export_evaluate_like_the_module(
    trained: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = digits().test.x[:50]
    scripted = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(trained, x[:2]), str(scripted))
    exported = tmp_path / "net.pt2"
    torch.export.save(
        torch.export.export(trained, (x[:2],), dynamic_shapes=({0: torch.export.Dim("b")},)), exported
    )
    expected = trained(x).argmax(1)
    for path, kind in ((scripted, "TorchScript"), (exported, "torch.export")):
        net, record = load_user_model(path)
        assert record["kind"] == kind
        assert torch.equal(net(x).argmax(1), expected)
        argv = ["evaluate", "--model", str(path), "--data", "digits", "--attack", "pgd", "--eps", "0.05"]
        assert main([*argv, "--num-examples", "40", "--quiet", "--device", "cpu"]) == 0
        assert path.name in capsys.readouterr().out


def test_factory_in_a_temp_module(
    tmp_path: Path, trained: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "h16_user_net.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build(hidden=32):
                return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
            """
        )
    )
    weights = tmp_path / "trained.pt"
    torch.save(trained.state_dict(), weights)
    sys.path.insert(0, str(tmp_path))
    try:
        base = [
            "attack",
            "--model-factory",
            "h16_user_net:build",
            "--model",
            str(weights),
            "--data",
            "digits",
        ]
        out = tmp_path / "adv.npz"
        assert main([*base, "--eps", "0.1", "--out", str(out), "--num-examples", "8", "--quiet"]) == 0
        saved = np.load(out)
        assert saved["x_adv"].shape == (8, 1, 8, 8)
        assert np.abs(saved["x_adv"] - saved["x"]).max() <= 0.1 + 1e-6
        err = _one_line_error(capsys, [*base, "--arch-option", "hidden=16", "--eps", "0.1"])
        assert "does not fit" in err
        assert "shape mismatch" in err
        err = _one_line_error(
            capsys, ["evaluate", "--model-factory", "h16_user_net:nope", "--data", "digits", "--eps", "0.1"]
        )
        assert "no function 'nope'" in err
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("h16_user_net", None)


def test_wrong_input_shape_gets_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    path = tmp_path / "mnist_net.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    err = _one_line_error(capsys, ["evaluate", "--model", str(path), "--data", "digits", "--eps", "0.1"])
    assert "(1, 1, 8, 8)" in err
    assert "digits" in err
    wide = tmp_path / "wide.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 7))), str(wide))
    err = _one_line_error(capsys, ["certify", "--model", str(wide), "--data", "digits"])
    assert "(1, 7)" in err
    assert "(1, 10)" in err


def test_normalize_wraps_the_model_so_eps_is_in_pixels(trained: nn.Module, tmp_path: Path) -> None:
    """A model trained on (x - 0.5) / 0.25, wrapped by --normalize 0.5,0.25, sees what it was trained on."""
    path = tmp_path / "t.pt"
    torch.jit.save(torch.jit.trace(trained, torch.zeros(1, 1, 8, 8)), str(path))
    plain, _ = load_user_model(path)
    wrapped, record = load_user_model(ModelSpec(path=path, normalize=parse_normalize("0.5,0.25")))
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(wrapped(x), plain((x - 0.5) / 0.25))
    assert record["normalize"] == {"mean": [0.5], "std": [0.25]}
    assert parse_normalize("0.4,0.5,0.6,0.2,0.3,0.4") == ((0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    for bad in ("0.5", "a,b", "0.5,0"):
        with pytest.raises(ValueError, match="--normalize"):
            parse_normalize(bad)


def test_npz_and_folder_data(tmp_path: Path, trained: nn.Module, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    test = digits().test
    npz = tmp_path / "d.npz"
    np.savez(npz, x=test.x[:60].numpy(), y=test.y[:60].numpy())
    model = tmp_path / "t.pt"
    torch.jit.save(torch.jit.trace(trained, test.x[:1]), str(model))
    base = ["evaluate", "--model", str(model), "--attack", "fgsm", "--eps", "0.1", "--quiet"]
    assert main([*base, "--data", f"npz:{npz}", "--data-option", "test_fraction=0.5"]) == 0
    assert "t.pt" in capsys.readouterr().out
    folder = tmp_path / "imgs"
    for i in range(40):
        label = int(test.y[i])
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((test.x[i, 0].numpy() * 255).astype(np.uint8)).save(folder / str(label) / f"{i}.png")
    assert (
        main([*base, "--data", f"folder:{folder}", "--data-option", "grayscale=true", "--split", "train"])
        == 0
    )
    assert "t.pt" in capsys.readouterr().out
    err = _one_line_error(capsys, [*base, "--data", f"folder:{folder}"])  # RGB images for a 1-channel model
    assert "(1, 3, 8, 8)" in err


def test_data_spec_forms_and_errors() -> None:
    assert parse_data_spec("mnist5k") == ("mnist5k", {})
    assert parse_data_spec("mnist:/d") == ("mnist", {"path": "/d"})
    assert parse_data_spec("npz:a.npz") == ("npz", {"path": "a.npz"})
    with pytest.raises(ValueError, match="needs the files' location: --data cifar10:PATH"):
        parse_data_spec("cifar10")
    with pytest.raises(ValueError, match="takes no path"):
        parse_data_spec("digits:/x")
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        parse_data_spec("cifar:/x")


def test_dict_loaders_and_bad_batches() -> None:
    from advlearn.attacks import FGSM
    from advlearn.evaluation import evaluate
    from advlearn.threat import ThreatModel

    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    dict_loader = [{"image": x[:3], "label": y[:3]}, {"image": x[3:], "label": y[3:]}]
    threat = ThreatModel("linf", 0.1)
    net = _plain_net()
    by_dict = evaluate(net, dict_loader, threat, [FGSM(threat)], quiet=True)
    by_pair = evaluate(net, (x, y), threat, [FGSM(threat)], quiet=True)
    assert torch.equal(by_dict.correct["FGSM"], by_pair.correct["FGSM"])
    other = [{"img": x, "target": y}]
    with pytest.raises(ValueError, match=r"keys \['img', 'target'\] but not \['image', 'label'\]"):
        evaluate(net, other, threat, [FGSM(threat)], quiet=True)
    assert [tuple(b[0].shape) for b in batches(other, keys=("img", "target"))] == [(6, 1, 8, 8)]
    with pytest.raises(ValueError, match="batch 0 is a Tensor"):
        list(batches([x]))
    with pytest.raises(ValueError, match="labels must be"):
        list(batches([(x, y[:2])]))


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not present on this machine; it has cpu"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="use auto, cpu"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="not present"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")


def test_split_all_takes_a_test_file_whole_and_a_split_is_said(
    tmp_path: Path, trained: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's test file given as npz: the default test split is 20% of it, and stderr says so;
    ``--split all`` evaluates every example, in the file's order."""
    from advlearn.config import Named
    from advlearn.data import load_collection, load_dataset
    from advlearn.experiments.saved_model import load_split

    test = digits().test
    npz = tmp_path / "mine.npz"
    np.savez(npz, x=test.x[:50].numpy(), y=test.y[:50].numpy())
    whole = load_split(Named("npz", {"path": str(npz)}), split="all")
    assert torch.equal(whole.x, test.x[:50])
    assert torch.equal(whole.y, test.y[:50])
    part = load_split(Named("npz", {"path": str(npz)}), split="test", num_examples=30, quiet=False)
    held = len(load_dataset("npz", path=str(npz)).test)  # the stratified split rounds per class
    assert len(part) == held < 30
    err = capsys.readouterr().err
    assert "stratified 20%" in err
    assert f"{held} of 50" in err
    assert "--split all" in err
    assert f"--num-examples 30, but the test split holds {held}" in err
    assert len(load_collection("digits")) == len(digits().train) + len(digits().test)
    with pytest.raises(ValueError, match="bogus"):
        load_collection("npz", path=str(npz), bogus=1)
    model = tmp_path / "t.pt"
    torch.jit.save(torch.jit.trace(trained, test.x[:1]), str(model))
    argv = ["evaluate", "--model", str(model), "--data", f"npz:{npz}", "--split", "all"]
    assert main([*argv, "--attack", "fgsm", "--eps", "0.1", "--quiet"]) == 0
    assert "| 50 |" in capsys.readouterr().out


def test_factory_module_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--model-factory mymod:fn`` run from the folder holding ``mymod.py`` finds it (as uvicorn
    does); a module that is nowhere still gets the one-line error."""
    (tmp_path / "h16_here_net.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        argv = ["evaluate", "--model-factory", "h16_here_net:build", "--data", "digits", "--eps", "0.1"]
        assert main([*argv, "--attack", "fgsm", "--num-examples", "8", "--quiet"]) == 0
        err = _one_line_error(
            capsys, ["evaluate", "--model-factory", "h16_nowhere:build", "--data", "digits", "--eps", "0.1"]
        )
        assert "cannot import 'h16_nowhere'" in err
    finally:
        sys.modules.pop("h16_here_net", None)


def test_torchscript_failure_names_the_reason_not_the_interpreter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    conv(torch.zeros(1, 3, 8, 8))
    path = tmp_path / "rgb.pt"
    torch.jit.save(torch.jit.script(conv), str(path))
    err = _one_line_error(capsys, ["evaluate", "--model", str(path), "--data", "digits", "--eps", "0.1"])
    assert "TorchScript interpreter" not in err
    assert "channels" in err


def test_attack_in_bf16_and_report_refuses_precision(
    tmp_path: Path, trained: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    """``attack --precision bf16`` runs the model under autocast and still writes float32 points in
    the ball; ``evaluate --report`` runs in float32 and says so rather than ignoring --precision."""
    model = tmp_path / "t.pt"
    torch.jit.save(torch.jit.trace(trained, digits().test.x[:1]), str(model))
    out = tmp_path / "adv.npz"
    argv = ["attack", "--model", str(model), "--data", "digits", "--eps", "0.1", "--num-examples", "8"]
    assert main([*argv, "--precision", "bf16", "--out", str(out), "--quiet"]) == 0
    saved = np.load(out)
    assert saved["x_adv"].dtype == np.float32
    assert np.abs(saved["x_adv"] - saved["x"]).max() <= 0.1 + 1e-6
    report = [
        "evaluate",
        "--model",
        str(model),
        "--data",
        "digits",
        "--eps",
        "0.1",
        "--report",
        str(tmp_path / "r"),
    ]
    err = _one_line_error(capsys, [*report, "--precision", "bf16"])
    assert "--report runs in float32" in err


def test_quiet_silences_the_bars_inside_attacks(
    tmp_path: Path, trained: nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--quiet`` reaches AutoAttack's per-member bars and summaries, not only evaluate's bar."""
    model = tmp_path / "t.pt"
    torch.jit.save(torch.jit.trace(trained, digits().test.x[:1]), str(model))
    argv = ["attack", "--model", str(model), "--data", "digits", "--eps", "0.1", "--num-examples", "4"]
    argv += ["--attack", "autoattack", "--out", str(tmp_path / "adv.npz")]
    assert main([*argv, "--quiet"]) == 0
    assert "AutoAttack" not in capsys.readouterr().err
    assert main(argv) == 0
    assert "AutoAttack APGD-CE" in capsys.readouterr().err  # the same run, not quiet, shows them
