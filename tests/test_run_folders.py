"""Run folders are never overwritten silently, are locked while a run writes, resume exactly, and
identical runs write identical weights (issue 15, items 2, 10, 15, 17, 18)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from advlearn.cli import main
from advlearn.experiments._run_folder import LOCK_FILE, folder_lock
from advlearn.training import Trainer

TINY = """name = "tiny"
seed = {seed}
[data]
name = "digits"
val_size = 0
[model]
name = "mlp"
hidden = [8]
[[train]]
label = "std"
epochs = {epochs}
"""


def _config(tmp_path: Path, seed: int = 0, epochs: int = 2, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(TINY.format(seed=seed, epochs=epochs))
    return path


def _train(config: Path, out: Path, *extra: str) -> int:
    return main(["train", str(config), "--out-dir", str(out), "--quiet", *extra])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def seed0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run at seed 0 (its folder is copied by the tests that change it)."""
    root = tmp_path_factory.mktemp("seed0")
    assert _train(_config(root), root / "runs") == 0
    return root / "runs" / "tiny"


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "runs"
    shutil.copytree(run, out / run.name)
    return out


def test_rerun_without_resume_is_refused_and_changes_nothing(seed0: Path, tmp_path: Path, capsys):
    """Item 2: a second `train` on a finished run folder refuses, naming the three ways out."""
    out = _copy(seed0, tmp_path)
    before = _snapshot(out / "tiny")
    assert _train(_config(tmp_path, seed=1), out) == 2
    line = _one_line(capsys.readouterr().err)
    for option in ("--resume", "--overwrite", "--name"):
        assert option in line
    assert _snapshot(out / "tiny") == before


def test_interrupted_overwrite_leaves_no_old_models(seed0: Path, tmp_path: Path, monkeypatch, capsys):
    """Item 2's regression: an interrupted rerun cannot leave seed-0 models under a seed-1 config, and
    --resume then finishes the seed-1 run exactly as an uninterrupted seed-1 run (same SHA-256)."""
    out = _copy(seed0, tmp_path)
    seed1 = _config(tmp_path, seed=1)
    calls = {"n": 0}
    real_epoch = Trainer._train_epoch

    def interrupted(self, *args, **kwargs):  # Ctrl-C during the second epoch of the rerun
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    assert _train(seed1, out, "--overwrite") == 130
    line = _one_line(capsys.readouterr().err)
    assert "--resume" in line
    assert "interrupted" in line
    folder = out / "tiny"
    assert "seed = 1" in (folder / "config.toml").read_text()
    assert not (folder / "std" / "model.safetensors").exists()  # the seed-0 model is gone
    assert json.loads((folder / "std" / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1
    assert not (folder / LOCK_FILE).exists()
    monkeypatch.setattr(Trainer, "_train_epoch", real_epoch)

    assert _train(seed1, out, "--resume") == 0
    fresh = tmp_path / "fresh"
    assert _train(seed1, fresh) == 0
    assert _sha(folder / "std" / "model.safetensors") == _sha(fresh / "tiny" / "std" / "model.safetensors")
    assert _sha(folder / "std" / "model.safetensors") != _sha(seed0 / "std" / "model.safetensors")


def test_resume_with_another_config_names_what_differs(seed0: Path, tmp_path: Path, capsys):
    out = _copy(seed0, tmp_path)
    assert _train(_config(tmp_path, seed=1), out, "--resume") == 2
    line = _one_line(capsys.readouterr().err)
    assert "another config" in line
    assert "seed" in line


def test_resume_ignores_how_out_dir_is_spelled_and_where_the_folder_moved(seed0: Path, tmp_path: Path):
    """Item 15: `--out-dir runs` vs `./runs/` or a moved folder is the same run."""
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(seed0, moved / "tiny")
    before = _sha(moved / "tiny" / "std" / "model.safetensors")
    assert _train(_config(tmp_path), Path(f"{moved}/./"), "--resume") == 0
    assert _sha(moved / "tiny" / "std" / "model.safetensors") == before


def test_resume_and_overwrite_exclude_each_other(seed0: Path, tmp_path: Path, capsys):
    out = _copy(seed0, tmp_path)
    assert _train(_config(tmp_path), out, "--resume", "--overwrite") == 2
    assert "exclude each other" in _one_line(capsys.readouterr().err)


def test_foreign_folder_is_never_written(tmp_path: Path, capsys):
    """A folder advlearn did not make (no config.toml) is refused, even with --overwrite."""
    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("mine")
    assert _train(_config(tmp_path), tmp_path / "runs", "--overwrite") == 2
    assert "not an advlearn run folder" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]


def test_resume_removes_stale_temporaries(seed0: Path, tmp_path: Path):
    """Item 17: a SIGKILL inside an atomic write leaves `.<file>.<hex>.tmp`; resume deletes it."""
    out = _copy(seed0, tmp_path)
    stale = [out / "tiny" / "std" / ".train_state.pt.0123abcd.tmp", out / "tiny" / ".metrics.jsonl.ff.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    assert _train(_config(tmp_path), out, "--resume") == 0
    assert not any(path.exists() for path in stale)


def test_second_process_is_told_which_pid_holds_the_folder(seed0: Path, tmp_path: Path, capsys):
    """Item 17: a live process's lock refuses the run and names the PID; nothing is written."""
    out = _copy(seed0, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = out / "tiny" / LOCK_FILE
        lock.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        before = _snapshot(out / "tiny")
        assert _train(_config(tmp_path), out, "--resume") == 2
        line = _one_line(capsys.readouterr().err)
        assert f"process {holder.pid}" in line
        assert LOCK_FILE in line
        assert _snapshot(out / "tiny") == before
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(seed0: Path, tmp_path: Path):
    out = _copy(seed0, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = out / "tiny" / LOCK_FILE
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    assert _train(_config(tmp_path), out, "--resume") == 0
    assert not lock.exists()


def test_lock_is_held_in_process_and_released(tmp_path: Path):
    with folder_lock(tmp_path) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"), folder_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_FILE).exists()


def test_weights_have_the_mode_of_the_other_files(seed0: Path):
    """Item 10: model.safetensors is not 0600 while model.json is 0644."""
    mode = {p.name: p.stat().st_mode & 0o777 for p in (seed0 / "std").iterdir()}
    assert mode["model.safetensors"] == mode["model.json"] == mode["metrics.jsonl"], mode


def test_out_dir_that_is_a_file(tmp_path: Path, capsys):
    """Item 13: an out_dir that is a file is one line naming the folder, not a traceback."""
    (tmp_path / "file").write_text("x")
    assert _train(_config(tmp_path), tmp_path / "file") == 2
    line = _one_line(capsys.readouterr().err)
    assert "file" in line
    assert "--out-dir" in line


def test_unwritable_run_folder_is_one_line(seed0: Path, tmp_path: Path, monkeypatch, capsys):
    """Item 10: a folder the process may not write (read-only, another user's) gives one line naming it.

    The test runs as root here, which ignores permission bits, so the refusal is simulated where the
    run first writes (the lock file); test_read_only_folder_for_real checks real permissions."""
    out = _copy(seed0, tmp_path)
    real_open = os.open

    def refuse(path, flags, *args):
        if str(path).endswith(LOCK_FILE):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    assert _train(_config(tmp_path), out, "--resume") == 2
    line = _one_line(capsys.readouterr().err)
    assert str(out / "tiny") in line
    assert "Permission denied" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_folder_for_real(seed0: Path, tmp_path: Path, capsys):
    out = _copy(seed0, tmp_path)
    (out / "tiny").chmod(0o555)
    try:
        assert _train(_config(tmp_path), out, "--resume") == 2
        assert str(out / "tiny") in _one_line(capsys.readouterr().err)
    finally:
        (out / "tiny").chmod(0o755)


def test_safetensors_header_is_canonical(seed0: Path):
    """Item 18: the header's keys (tensor names and __metadata__) are written in sorted order."""
    data = (seed0 / "std" / "model.safetensors").read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    assert list(header) == sorted(header)
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])


@pytest.mark.slow
def test_identical_runs_in_two_processes_give_identical_files(tmp_path: Path):
    """Item 18: two identical runs, each its own process (safetensors' hash-map order differs between
    processes), write byte-identical model.safetensors: the same SHA-256."""
    config = _config(tmp_path, epochs=1)
    code = "import sys; from advlearn.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    digests = []
    for run in ("a", "b"):
        argv = ["train", str(config), "--out-dir", str(tmp_path / run), "--quiet"]
        subprocess.run([sys.executable, "-c", code, *argv], check=True, env=env)
        digests.append(_sha(tmp_path / run / "tiny" / "std" / "model.safetensors"))
    assert digests[0] == digests[1]
