"""What every games run folder shares: its path, ``config.toml`` and ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _run_dir(out_dir: str | Path, name: str) -> Path:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"name must be a folder name without slashes, got {name!r}")
    path = Path(out_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def _jsonl(records: list[dict[str, Any]]) -> str:
    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return "".join(json.dumps({k: clean(v) for k, v in r.items()}) + "\n" for r in records)
