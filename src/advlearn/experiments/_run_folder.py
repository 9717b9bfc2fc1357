"""Run folders: their path, ``config.toml`` and ``metrics.jsonl``, and how they are protected.

A run folder that holds a started or finished run is never written over silently:
:func:`open_run_folder` refuses it unless the caller resumes it (same config) or
asks to overwrite it, and holds a lock file (``.advlearn.lock``, the owner's PID)
for as long as the run writes, so a second process on the same folder stops with
the PID that holds it. A lock left by a process that no longer exists is taken over.
Resuming removes the ``.*.tmp`` temporaries a killed atomic write leaves behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from advlearn._io import check_name as _check_name

#: the file that marks a folder as an advlearn run folder (written once the run really starts)
MARKER = "config.toml"
#: the lock file a running process holds in its run folder
LOCK_FILE = ".advlearn.lock"


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message names it and the way out."""


def check_name(name: Any, key: str = "name") -> str:
    """``name`` if it is a usable folder name, else a :class:`RunFolderError` naming ``key``."""
    try:
        return _check_name(name, key)
    except ValueError as err:
        raise RunFolderError(str(err)) from None


def _os_error(err: OSError, folder: Path) -> RunFolderError:
    """One line for a folder that cannot be created or written."""
    reason = err.strerror or type(err).__name__
    if isinstance(err, (FileExistsError, NotADirectoryError)) or err.errno in (errno.EEXIST, errno.ENOTDIR):
        return RunFolderError(
            f"{folder}: cannot make a run folder there, a file is in the way; pick another --out-dir"
        )
    return RunFolderError(
        f"{folder}: cannot write into this run folder ({reason}); "
        "fix its permissions or pick another --out-dir"
    )


def make_folder(folder: Path) -> Path:
    """``mkdir -p folder``, one clear line when a file is in the way or permissions forbid it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _os_error(err, folder) from None
    if not folder.is_dir():
        raise _os_error(FileExistsError(errno.EEXIST, "exists"), folder)
    return folder


def _run_dir(out_dir: str | Path, name: str) -> Path:
    """``out_dir/name``, created (games runs, which are always written fresh)."""
    check_name(name)
    return make_folder(Path(out_dir) / name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[Path]:
    """Hold ``folder/.advlearn.lock`` for the body; refuse while a live process holds it.

    The lock records the PID and host. One whose PID no longer runs on this host
    (a killed run) is stale and taken over.

    Raises:
        RunFolderError: when another live process holds the folder (its PID named), or the
            folder cannot be written.
    """
    path = folder / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read_lock(path)
            pid, host = (held or {}).get("pid"), (held or {}).get("host")
            live = isinstance(pid, int) and (host != me["host"] or _pid_alive(pid))
            if live:
                where = "" if host == me["host"] else f" on host {host}"
                raise RunFolderError(
                    f"{folder} is in use by process {pid}{where} (lock file {path}); wait for it to end, "
                    "or delete the lock file if that process is not an advlearn run"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        except OSError as err:
            raise _os_error(err, folder) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me) + "\n")
        break
    else:  # pragma: no cover (three processes racing for one stale lock)
        raise RunFolderError(f"{folder}: could not take the lock file {path}; try again")
    try:
        yield path
    finally:
        if (_read_lock(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the ``.<name>.<hex>.tmp`` files a killed atomic write left in ``folder`` and below."""
    removed = []
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _is_empty(folder: Path) -> bool:
    return all(p.name == LOCK_FILE for p in folder.iterdir())


def claim_run_folder(folder: Path, *, resume: bool, overwrite: bool, command: str = "train") -> bool:
    """Decide what a run may do with ``folder`` (already locked); return whether it resumes.

    - empty or missing: a fresh run;
    - holding a run (``config.toml``): ``resume`` continues it (its stale temporaries removed),
      ``overwrite`` deletes its contents first, neither is refused;
    - holding anything else: refused (advlearn does not write into a folder it did not make).

    Raises:
        RunFolderError: one line naming the folder and the options.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: continue the run or replace it")
    if not folder.exists() or _is_empty(folder):
        return False
    if not (folder / MARKER).is_file():
        raise RunFolderError(
            f"{folder} exists and is not an advlearn run folder (no {MARKER}); "
            "pick a new --name or another --out-dir"
        )
    if resume:
        remove_stale_temporaries(folder)
        return True
    if overwrite:
        for child in folder.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        return False
    raise RunFolderError(
        f"{folder} already holds a run; pass --resume to continue it, --overwrite to replace it, "
        "or a new --name"
    )


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def _jsonl(records: list[dict[str, Any]]) -> str:
    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return "".join(json.dumps({k: clean(v) for k, v in r.items()}) + "\n" for r in records)
