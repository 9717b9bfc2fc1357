"""transfer_matrix: Goodfellow's table of examples crafted on each model, evaluated on every model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.attacks import FGSM, PGD, Transfer
from advlearn.data import digits
from advlearn.evaluation import TransferMatrix, evaluate, transfer_matrix
from advlearn.report import ModelReport, write_report
from test_diagnostics import EPS, train_mlp

NUM_EXAMPLES = 200


@pytest.fixture(scope="module")
def setup() -> tuple[dict[str, nn.Module], tuple[Tensor, Tensor]]:
    split = digits()
    data = (split.train.x, split.train.y)
    models = {
        "standard": train_mlp(data, adversarial=False, seed=0),
        "pgd-at": train_mlp(data, adversarial=True, seed=1),
    }
    return models, (split.test.x[:NUM_EXAMPLES], split.test.y[:NUM_EXAMPLES])


def test_entries_equal_evaluate(setup: tuple[dict[str, nn.Module], tuple[Tensor, Tensor]]) -> None:
    """The diagonal is each model's white-box robust accuracy and each entry the target's accuracy under
    Transfer from the source, exactly as evaluate() measures them with the same seed and batches."""
    models, data = setup
    threat = al.ThreatModel("linf", EPS)
    attack = PGD(threat, steps=10)
    matrix = transfer_matrix(models, data, attack, batch_size=64, seed=3, quiet=True)
    for source in models:
        for target in models:
            if source == target:
                attacks = {"white-box": attack}
            else:
                attacks = {"transfer": Transfer(threat, models[source], attack)}
            ev = evaluate(models[target], data, threat, attacks, batch_size=64, seed=3, quiet=True)
            assert matrix[source, target] == pytest.approx(
                next(iter(ev.robust_accuracy.values())), abs=1e-6
            )  # evaluate() averages in float32
            assert matrix.clean_accuracy[target] == pytest.approx(
                ev.clean_accuracy, abs=1e-6
            )  # evaluate() averages in float32


def test_counts_and_goodfellows_pattern(setup: tuple[dict[str, nn.Module], tuple[Tensor, Tensor]]) -> None:
    """Entries are counts over num_examples, never above the target's clean accuracy; examples from the
    standard model hurt the PGD-trained one less than its own white-box attack does, and hurt the
    standard model itself most."""
    models, data = setup
    matrix = transfer_matrix(models, data, PGD(al.ThreatModel("linf", EPS), steps=10), quiet=True)
    assert matrix.names == ["standard", "pgd-at"]
    assert matrix.num_examples == NUM_EXAMPLES
    assert matrix.attack == "PGD"
    for i, source in enumerate(matrix.names):
        for j, target in enumerate(matrix.names):
            assert matrix.accuracy[i][j] == matrix.correct[i][j] / NUM_EXAMPLES
            assert matrix[source, target] <= matrix.clean_accuracy[target]
    assert matrix["pgd-at", "pgd-at"] < matrix["standard", "pgd-at"]
    assert matrix["standard", "standard"] < matrix["pgd-at", "standard"]
    rows = matrix.table()
    assert len(rows) == 4
    assert {(r["source"], r["target"]) for r in rows} == {(s, t) for s in models for t in models}
    with pytest.raises(KeyError, match="nope"):
        matrix["nope", "standard"]


def test_single_model_and_loader(setup: tuple[dict[str, nn.Module], tuple[Tensor, Tensor]]) -> None:
    """One model gives a 1×1 table; a DataLoader of batches gives the same figure as tensors."""
    models, (x, y) = setup
    attack = FGSM(al.ThreatModel("linf", EPS))
    one = {"standard": models["standard"]}
    from_tensors = transfer_matrix(one, (x, y), attack, quiet=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    from_loader = transfer_matrix(one, loader, attack, quiet=True)
    assert isinstance(from_tensors, TransferMatrix)
    assert from_tensors.accuracy == from_loader.accuracy
    assert len(from_tensors.accuracy) == 1


def test_rejects_bad_input(setup: tuple[dict[str, nn.Module], tuple[Tensor, Tensor]]) -> None:
    """No models, a non-module, a non-attack or empty data raise ValueErrors naming the problem."""
    models, data = setup
    attack = FGSM(al.ThreatModel("linf", EPS))
    with pytest.raises(ValueError, match="models"):
        transfer_matrix({}, data, attack)
    with pytest.raises(ValueError, match="models"):
        transfer_matrix({"a": "not a model"}, data, attack)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="attack"):
        transfer_matrix(models, data, "pgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no examples"):
        transfer_matrix(models, [], attack)


def test_report_draws_the_heat_map(
    tmp_path: Path, setup: tuple[dict[str, nn.Module], tuple[Tensor, Tensor]]
) -> None:
    """write_report(transfer=...) writes transfer_matrix.png and shows it in both reports; without it, not."""
    models, data = setup
    threat = al.ThreatModel("linf", EPS)
    attack = FGSM(threat)
    matrix = transfer_matrix(models, data, attack, quiet=True)
    reports = [
        ModelReport(name, evaluate(m, data, threat, [attack], quiet=True)) for name, m in models.items()
    ]
    html_path, md_path = write_report(tmp_path / "with", title="t", models=reports, transfer=matrix)
    png = tmp_path / "with" / "transfer_matrix.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "Transfer between models" in html_path.read_text(encoding="utf-8")
    assert "](transfer_matrix.png)" in md_path.read_text(encoding="utf-8")
    write_report(tmp_path / "without", title="t", models=reports)
    assert not (tmp_path / "without" / "transfer_matrix.png").exists()
