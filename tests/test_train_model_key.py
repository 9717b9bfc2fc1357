"""A training's own architecture (``[[train]] model = {...}``, issue 17 part 1's main-job row).

The config key round-trips, bad values are refused naming ``train[i].model``, and every place that
builds a model from the config or from a run folder (training, ``--resume``, ``model.json``, the
report's results, ``advlearn evaluate`` on the checkpoint) uses the training's model, not the run's.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advlearn.checkpoint import load_model
from advlearn.cli import main
from advlearn.config import ConfigError, Named, TrainConfig, dumps, parse_config, parse_toml, to_dict
from advlearn.experiments import main_job
from advlearn.models import build_model


def _raw(tmp_path, own_model=None):
    own = {"label": "own", "epochs": 1}
    if own_model is not None:
        own["model"] = own_model
    return {
        "name": "own-model",
        "out_dir": str(tmp_path),
        "data": {"name": "digits", "val_size": 50},
        "model": {"name": "mlp", "hidden": [16]},
        "threat": {"norm": "linf", "eps": 0.1},
        "train": [{"label": "run-model", "epochs": 1}, own],
        "evaluate": {"num_examples": 30, "attacks": ["fgsm"], "examples": 0},
    }


# ----------------------------------------------------------------------------- the config key


def test_the_key_takes_a_name_or_a_table_and_defaults_to_the_run_model(tmp_path):
    assert TrainConfig().model is None
    cfg = parse_config(_raw(tmp_path, "logreg"))
    assert cfg.train[0].model is None
    assert cfg.train[1].model == Named("logreg")
    table = parse_config(_raw(tmp_path, {"name": "mlp", "hidden": [8, 4]}))
    assert table.train[1].model == Named("mlp", {"hidden": [8, 4]})
    assert main_job.model_spec(table, 0) == ("model", Named("mlp", {"hidden": [16]}))
    assert main_job.model_spec(table, 1) == ("train[1].model", Named("mlp", {"hidden": [8, 4]}))


@pytest.mark.parametrize("own", [None, "logreg", {"name": "ibp_cnn", "channels": [4, 8], "init": "ibp"}])
def test_the_key_round_trips_through_config_toml(tmp_path, own):
    cfg = parse_config(_raw(tmp_path, own))
    text = dumps(cfg)
    assert parse_config(parse_toml(text)) == cfg
    # left at None the key is not written at all (TOML has no null): old config files stay as they are
    assert ("model" in to_dict(cfg)["train"][1]) is (own is not None)
    assert "model" not in to_dict(cfg)["train"][0]


def test_the_certified_main_job_trains_an_ibp_cnn_with_the_bench_settings():
    for quick in (False, True):
        cfg = main_job.default_config(quick=quick, certified=True)
        key, spec = main_job.model_spec(cfg, 2)
        assert key == "train[2].model"
        assert spec == Named("ibp_cnn", {"channels": [16, 32], "hidden": 100, "init": "ibp"})
        assert [main_job.model_spec(cfg, i)[1].name for i in (0, 1)] == ["small_cnn", "small_cnn"]
        assert parse_config(parse_toml(dumps(cfg))) == cfg
    assert all(t.model is None for t in main_job.default_config().train)  # the plain job is unchanged
    full = main_job.default_config(certified=True).train[2]
    assert (full.batch_size, full.lr, full.epochs) == (50, 1e-3, 100)  # 76 steps an epoch: 7,600 steps


@pytest.mark.parametrize(
    ("own", "message"),
    [
        (3, r"train\[1\]\.model: expected a name or a table"),
        ({"hidden": [8]}, r"train\[1\]\.model: expected a name or a table with a \"name\" key"),
        ("no_such_net", r"train\[1\]\.model: .*no_such_net"),
        ({"name": "mlp", "bogus": 1}, r"train\[1\]\.model: .*bogus"),
        ({"name": "ibp_cnn", "init": "xavier"}, r"train\[1\]\.model: init must be \"default\" or \"ibp\""),
        ({"name": "ibp_cnn", "padding": 0}, r"train\[1\]\.model: in_shape .* too small for ibp_cnn"),
    ],
)
def test_a_bad_model_is_refused_by_its_key_before_any_work(tmp_path, own, message):
    with pytest.raises(ConfigError, match=message):
        main_job.run_experiment(parse_config(_raw(tmp_path, own)), quiet=True)
    assert not (tmp_path / "own-model").exists()  # refused before the run folder is touched


def test_ibp_cnn_init_is_shi_et_al_and_bad_values_are_refused():
    torch.manual_seed(0)
    net = build_model("ibp_cnn", in_shape=(1, 28, 28), num_classes=10, init="ibp")
    fc = net.fc
    assert isinstance(fc, nn.Linear)
    assert float(fc.bias.detach().abs().max()) == 0.0
    fan_in = fc.weight.shape[1]  # 32 * 10 * 10
    assert float(fc.weight.detach().std()) == pytest.approx((2 * torch.pi) ** 0.5 / fan_in, rel=0.05)
    torch.manual_seed(0)
    default = build_model("ibp_cnn", in_shape=(1, 28, 28), num_classes=10)
    assert float(default.fc.bias.detach().abs().max()) > 0  # PyTorch's init: nonzero biases
    for bad in ("xavier", 1, None):
        with pytest.raises(ValueError, match="init must be"):
            build_model("ibp_cnn", in_shape=(1, 28, 28), num_classes=10, init=bad)


# ----------------------------------------------------------------------------- a run with two architectures


def _structure(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in model.state_dict().items()]


def test_training_resume_report_and_evaluate_use_each_training_model(tmp_path, capsys):
    """One run, the run's MLP and a training's logreg: model.json, resume, results.json, evaluate."""
    cfg = parse_config(_raw(tmp_path, {"name": "logreg"}))
    result = main_job.run_experiment(cfg, quiet=True)
    run = result.run_dir
    records = {label: json.loads((run / label / "model.json").read_text()) for label in ("run-model", "own")}
    assert records["run-model"]["model"] == "mlp"
    assert records["run-model"]["options"]["hidden"] == [16]
    assert records["own"]["model"] == "logreg"
    assert "hidden" not in records["own"]["options"]
    own, _ = load_model(run / "own")
    expected = build_model("logreg", in_shape=(1, 8, 8), num_classes=10)
    assert _structure(own) == _structure(expected)
    results = json.loads((run / "results.json").read_text())
    assert results["architectures"] == {"run-model": {"name": "mlp", "hidden": [16]}, "own": "logreg"}
    assert set(results["models"]) == {"run-model", "own"}
    assert "own: logreg" in (run / "report.md").read_text()
    # --resume rebuilds each training's own model from config.toml and the state it saved
    resumed = main_job.run_experiment(
        parse_config(parse_toml((run / "config.toml").read_text())), resume=True
    )
    for label in ("run-model", "own"):  # the same weights back: the same accuracies
        before, after = (
            [(row["attack"], row["accuracy"]) for row in r.evaluations[label].table()]
            for r in (result, resumed)
        )
        assert after == before
    # a run started with the other architecture is not resumed with this one
    other = parse_config(_raw(tmp_path, {"name": "mlp", "hidden": [4]}))
    with pytest.raises(ConfigError, match="another config"):
        main_job.run_experiment(other, resume=True, quiet=True)
    capsys.readouterr()
    # advlearn evaluate on the checkpoint rebuilds the logreg from model.json
    code = main(
        ["evaluate", "--model", str(run / "own"), "--attack", "fgsm", "--eps", "0.1", "--num-examples", "20"]
    )
    assert code == 0
    assert "| fgsm " in capsys.readouterr().out  # a logreg state dict would not load into the run's MLP


@pytest.mark.slow  # the quick main job with its third model: about a minute on 2 cores
def test_quick_certified_run_trains_and_reports_an_ibp_cnn(tmp_path):
    out = tmp_path / "runs"
    assert main(["run", "--quick", "--certified", "--quiet", "--out-dir", str(out), "--name", "cert"]) == 0
    run = out / "cert"
    record = json.loads((run / "ibp" / "model.json").read_text())
    assert record["model"] == "ibp_cnn"
    assert record["options"] | {"in_shape": [1, 28, 28]} == {
        "in_shape": [1, 28, 28],
        "num_classes": 10,
        "channels": [16, 32],
        "hidden": 100,
        "init": "ibp",
    }
    model, _ = load_model(run / "ibp")
    assert _structure(model) == _structure(build_model("ibp_cnn", in_shape=(1, 28, 28), num_classes=10))
    assert json.loads((run / "pgd-at" / "model.json").read_text())["model"] == "small_cnn"
    results = json.loads((run / "results.json").read_text())
    assert set(results["models"]) == {"standard", "pgd-at", "ibp"}
    assert results["architectures"]["ibp"]["name"] == "ibp_cnn"
    assert set(results["verified_sweeps"]) >= {"ibp"}
    rows = {row["attack"] for row in results["models"]["ibp"]}
    assert "certified (IBP)" in rows


def test_the_documented_ibp_table_is_the_certified_main_jobs():
    """docs/defenses.md's [[train]] example with its own model is what `advlearn run --certified` trains."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "defenses.md").read_text(encoding="utf-8")
    block = next(b.split("```", 1)[0] for b in text.split("```toml\n")[1:] if 'label = "ibp"' in b)
    documented = parse_config({"train": parse_toml(block)["train"]}).train[0]
    certified = main_job.default_config(certified=True).train[2]
    assert documented == certified
