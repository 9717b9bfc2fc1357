"""Repository-wide pytest setup: one intra-op thread, and ``torch`` in the doctest namespace.

It lives at the root so that it applies both to ``tests/`` and to
``pytest --doctest-modules src/advlearn``.
"""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # The test models are tiny: intra-op threads only add synchronization (10-30x slower on 2 busy cores).
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def add_torch(doctest_namespace: dict[str, object]) -> None:
    """Doctests may use ``torch`` without importing it, as the docstrings in src do."""
    doctest_namespace["torch"] = torch
