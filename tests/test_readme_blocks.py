"""Issue 16 item 7: every Python block of README.md and docs/*.md runs as pasted.

The blocks of one file run in order in one namespace (a file's first block sets up what the later
ones use), in a temporary working directory (blocks that write ``runs/...`` write there). A block
preceded by a line ``<!-- readme-test: slow (why) -->`` trains or evaluates for long: the default
run skips it, ``pytest -m slow`` runs every block of the file, that one included.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?P<marker><!-- readme-test: slow[^>]*-->\n)?```python\n(?P<code>.*?)```", re.S)


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, code, slow)`` for every ```` ```python ```` block of ``path``."""
    text = path.read_text(encoding="utf-8")
    return [
        (text[: m.start("code")].count("\n") + 1, m.group("code"), m.group("marker") is not None)
        for m in FENCE.finditer(text)
    ]


def _run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, with_slow: bool) -> int:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    ran = 0
    threads = torch.get_num_threads()
    try:
        for line, code, slow in python_blocks(path):
            if slow and not with_slow:
                continue
            try:
                exec(compile(code, f"{path.name}:{line}", "exec"), namespace)  # the docs of this repository
            except Exception as error:
                raise AssertionError(f"{path.name}, the block at line {line}, failed: {error!r}") from error
            ran += 1
    finally:
        torch.set_num_threads(threads)
    return ran


@pytest.mark.parametrize(
    "path", [p for p in FILES if any(not slow for _, _, slow in python_blocks(p))], ids=lambda p: p.name
)
def test_fast_blocks_run_as_pasted(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = sum(1 for _, _, slow in python_blocks(path) if not slow)
    assert _run(path, tmp_path, monkeypatch, with_slow=False) == fast


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in FILES if python_blocks(p)], ids=lambda p: p.name)
def test_every_block_runs_as_pasted(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(path, tmp_path, monkeypatch, with_slow=True) == len(python_blocks(path))


def test_blocks_hold_no_placeholder_arguments() -> None:
    """No ``fit(..., resume=True)``: a literal ``...`` argument is not code anyone can paste."""
    placeholder = re.compile(r"[(,]\s*\.\.\.\s*[,)]")
    for path in FILES:
        for line, code, _ in python_blocks(path):
            assert not placeholder.search(code), f"{path.name}:{line} passes a literal ... as an argument"


def test_readme_has_blocks_and_the_marker_is_seen() -> None:
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 5
    assert any(slow for _, _, slow in blocks)
    assert os.fspath(ROOT / "README.md") in [os.fspath(p) for p in FILES]
