"""The command line end to end: `advlearn run --quick`, then evaluate and attack its models; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from advlearn.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `advlearn run --quick` shared by the tests below (it trains two small models)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "--quick", "--quiet", "--out-dir", str(out), "--name", "smoke"]) == 0
    return out / "smoke"


def test_run_writes_the_promised_files(quick_run: Path):
    """runs/<name>/ holds the resolved config, metrics, weights, both reports and the plots."""
    for name in ("config.toml", "metrics.jsonl", "results.json", "report.html", "report.md"):
        assert (quick_run / name).is_file(), name
    for label in ("standard", "pgd-at"):
        for name in ("model.safetensors", "model.json", "metrics.jsonl", "train_state.pt"):
            assert (quick_run / label / name).is_file(), f"{label}/{name}"
    assert list(quick_run.glob("*.png")), "no plots"
    html = (quick_run / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "pgd-at" in html
    rows = [json.loads(line) for line in (quick_run / "metrics.jsonl").read_text().splitlines()]
    assert {row["model"] for row in rows} == {"standard", "pgd-at"}
    results = json.loads((quick_run / "results.json").read_text())
    assert set(results["models"]) == {"standard", "pgd-at"}


def test_evaluate_a_saved_model(quick_run: Path, capsys: pytest.CaptureFixture[str]):
    """`advlearn evaluate` loads the saved weights and prints a table with clean and attacked accuracy."""
    model = str(quick_run / "pgd-at")
    args = ["--eps", "3/10", "--attack", "pgd", "-o", "steps=3", "--num-examples", "50", "--quiet"]
    code = main(["evaluate", "--model", model, *args])
    assert code == 0
    out = capsys.readouterr().out
    assert "clean" in out
    assert "pgd" in out


def test_attack_writes_npz_and_png(quick_run: Path, tmp_path: Path):
    """`advlearn attack` writes adversarial examples inside the ε-ball, and a PNG grid beside them."""
    out = tmp_path / "adv.npz"
    model = str(quick_run / "standard")
    args = ["--eps", "0.3", "--attack", "fgsm", "--num-examples", "6", "--out", str(out), "--quiet"]
    code = main(["attack", "--model", model, *args])
    assert code == 0
    with np.load(out) as data:
        assert data["x"].shape == data["x_adv"].shape == (6, 1, 28, 28)
        assert np.abs(data["x_adv"] - data["x"]).max() <= 0.3 + 1e-6
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["evaluate", "--model", "/no/such/dir", "--eps", "0.3"], "/no/such/dir"),
        (["run", "/no/such/config.toml"], "no such config file"),
    ],
)
def test_bad_paths_give_one_line_errors(argv, needle, capsys: pytest.CaptureFixture[str]):
    """Missing models and configs exit with status 2 and a one-line message naming the path."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1


def test_bad_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A typo in a config stops before any training with the key in the message."""
    config = tmp_path / "bad.toml"
    config.write_text('name = "x"\n[model]\nname = "small_cnn"\nchanels = [8, 8]\n')
    assert main(["train", str(config), "--out-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model" in err
    assert "chanels" in err


def test_corrupt_checkpoint_is_reported(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A damaged model.safetensors is refused with its path, never unpickled."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((quick_run / "standard" / "model.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\x80\x04garbage")
    assert main(["evaluate", "--model", str(broken), "--eps", "0.1", "--quiet"]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_eps_must_be_a_fraction_or_number(capsys: pytest.CaptureFixture[str]):
    """--eps accepts 8/255 and refuses words, with argparse's usage error."""
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--model", "x", "--eps", "eight"])
    assert info.value.code == 2
    assert "eight" in capsys.readouterr().err
