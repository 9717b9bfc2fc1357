"""`advlearn reproduce` as a newcomer meets it: bad names and bad --data-dir folders fail at once, clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from advlearn.cli import main
from advlearn.experiments.reproduce import EXPERIMENTS, _mnist, check_data_dir, madry_mnist


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["reproduce", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_data_dir_that_is_no_folder_says_so(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]):
    target = tmp_path / "mnist"
    if kind == "file":
        target.write_text("not a folder")
    code, err = _run(capsys, "goodfellow", "--data-dir", str(target), "--out-dir", str(tmp_path))
    assert code == 2
    assert ("does not exist" if kind == "missing" else "is a file, not a folder") in err
    assert all(name in err for name in _mnist.IDX_FILES)
    assert "Traceback" not in err


def test_data_dir_with_some_files_names_the_missing_ones(tmp_path: Path):
    for name in _mnist.IDX_FILES[:2]:
        (tmp_path / name).touch()
    (tmp_path / f"{_mnist.IDX_FILES[2]}.gz").touch()
    with pytest.raises(FileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte; it looks for") as info:
        check_data_dir(tmp_path)
    assert "t10k-images-idx3-ubyte," not in str(info.value).split(";")[0]


def test_all_with_a_bad_data_dir_fails_before_any_experiment_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """`all` reaches the MNIST readers after the theory ones: the folder is checked first."""
    out = tmp_path / "out"
    code, err = _run(capsys, "all", "--quick", "--data-dir", str(tmp_path / "none"), "--out-dir", str(out))
    assert code == 2
    assert "does not exist" in err
    assert not out.exists()


def test_unknown_name_lists_every_known_one(capsys: pytest.CaptureFixture[str]):
    code, err = _run(capsys, "madry")
    assert code == 2
    assert all(name in err for name in EXPERIMENTS)


def test_madry_budgets_state_every_cell_on_a_prefix_and_quick_is_one_evaluation():
    """Quick keeps one digit count for every cell and arm (its figures as before); full cuts the restarts."""
    quick, full = madry_mnist.QUICK, madry_mnist.FULL
    assert {quick.digits, quick.masked_digits, quick.restart_digits} == {200}
    assert set(quick.restart_arms) == set(madry_mnist.ARMS)
    assert full.restart_digits < full.digits
    assert full.masked_digits <= full.digits
    assert full.restart_arms == ("pgd-at",)
    assert full.restarts == 20
    assert {40, 100} <= set(full.restart_steps)
    assert 100 in full.steps


def test_madry_cells_compare_on_the_smaller_prefix():
    import torch

    cells = madry_mnist.Cells()
    cells.add("a", "wide", torch.tensor([True, True, False, False]))
    cells.add("a", "narrow", torch.tensor([True, False]))
    assert cells.digits("a", "wide") == 4
    assert cells.digits("a", "narrow") == 2
    assert cells.accuracy("a", "wide") == [0.5]
    assert cells.accuracy("a", "wide", 2) == [1.0]
    assert cells.scores() == {"a": {"wide": [0.5], "narrow": [0.5]}}
