"""Atomic file writes and safe reads: a crash leaves the old file or the new one, never half of one;
a file someone hands in is read without unpickling arbitrary objects."""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

PathLike = str | os.PathLike[str]


#: longest file or folder name accepted for a run or model label (most file systems allow 255 bytes)
MAX_NAME_BYTES = 200


def check_name(name: object, key: str = "name") -> str:
    """``name`` if it can name one folder, else a ValueError that starts with ``key``.

    Refused: a non-string, ``""``, ``"."``, ``".."``, a leading dot, slashes, control
    characters (NUL included) and names over :data:`MAX_NAME_BYTES` bytes.

    Example:
        >>> check_name("run-1")
        'run-1'
        >>> check_name("a/b")
        Traceback (most recent call last):
        ...
        ValueError: name: 'a/b' is not a usable folder name (no slashes, control characters or leading dot)
    """
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValueError(f"{key}: {name!r} is not a usable folder name")
    if name.startswith(".") or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(
            f"{key}: {name!r} is not a usable folder name (no slashes, control characters or leading dot)"
        )
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise ValueError(f"{key}: the name is {size} bytes long; use at most {MAX_NAME_BYTES}")
    return name


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ----------------------------------------------------------------------------- JSON


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def replacing(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; once the body has written it, fsync it and
    rename it over ``path``. On any error the temporary file is removed and ``path`` is untouched.

    The file gets the mode a plain ``open`` would give it (``0o644`` under the usual umask), whatever
    the writer chose for the temporary (safetensors writes ``0o600``), so every file of a run
    folder has the same permissions."""
    target = Path(path)
    # Same directory, so the rename never crosses file systems; the dot hides it from globbing.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        _fsync_path(tmp)
        if os.name == "posix":
            os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful rename
    _fsync_dir(target.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old content or ``data``, never a part.

    Args:
        path: the file to create or replace; its directory must exist.
        data: the bytes to write.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     atomic_write_bytes(Path(d) / "a.bin", b"abc")
        ...     (Path(d) / "a.bin").read_bytes(), sorted(p.name for p in Path(d).iterdir())
        (b'abc', ['a.bin'])
    """
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write_bytes`).

    Meant for optimizer, scheduler and RNG state; keep ``obj`` to tensors,
    numbers, strings and containers of them so :func:`safe_torch_load` can read it.
    """
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def safe_torch_load(path: PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """Read a file written by :func:`atomic_torch_save` with ``torch.load(weights_only=True)``.

    The weights-only unpickler rebuilds tensors, numbers, strings and containers
    and refuses anything else, so a crafted file cannot run code.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is corrupt, truncated, or holds objects the
            weights-only unpickler refuses (the message names the file).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no file at {file}")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{file} holds objects that torch.load(weights_only=True) refuses to rebuild, so it was not "
            f"loaded (advlearn never unpickles arbitrary objects): {first_line(e)}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(
            f"{file} is not a readable torch.save file (corrupt or truncated): {first_line(e)}"
        ) from None
