"""Issue 16 item 6: ``advlearn --help`` and ``import advlearn`` load no heavy dependency.

The timing itself is measured with ``python -X importtime`` (README); a test never asserts a time.
What can be asserted is which modules a fresh interpreter has loaded.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("scipy", "matplotlib", "sklearn", "skimage", "mlxtend", "PIL")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split("\n")[-2].split())


def test_help_and_import_load_no_heavy_dependency() -> None:
    code = (
        "import contextlib, io\n"
        "import advlearn\n"
        "from advlearn.cli import main\n"
        "for argv in (['--help'], ['evaluate', '--help'], ['certify', '--help'], ['gan', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
    )
    loaded = _loaded_after(code)
    assert "advlearn" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_subpackages_still_load_on_access() -> None:
    loaded = _loaded_after("import advlearn as al\nal.certify.Smooth\nal.attacks.PGD\nal.evaluation.evaluate")
    assert "advlearn" in loaded
    import advlearn as al

    assert al.training.PGDAT is not None
    assert "certify" in dir(al)
