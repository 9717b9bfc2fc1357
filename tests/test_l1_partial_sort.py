"""ℓ1 projection with a partial sort (issue 13 item 7): bit for bit the full sort's result.

``L1.project`` sorts only the few nonzeros of a sparse row on CPU (:func:`_largest_first`); the
property tests compare it with the full-sort path on sparse, dense, tied, inside and non-finite rows.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlearn.threat import norms
from advlearn.threat.norms import L1


def _full_sort(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(norms, "_largest_first", lambda u, eps, inside: None)
        return L1().project(delta, eps)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(2, 400),
    nonzero=st.floats(0.0, 1.0),
    eps=st.floats(1e-3, 20.0),
    ties=st.booleans(),
)
def test_partial_sort_gives_the_full_sorts_bits(seed, d, nonzero, eps, ties) -> None:
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(6, d, generator=g) * torch.rand(6, 1, generator=g) * 3
    delta *= torch.rand(6, d, generator=g) < nonzero  # sparse rows, some all zero
    if ties:
        delta = (delta * 4).round() / 4
    radii = torch.full((6,), eps)
    radii[0] = float(delta[0].abs().sum())  # exactly on the sphere
    got = L1().project(delta, radii)
    want = _full_sort(delta, radii)
    assert torch.equal(got, want)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # signed zeros too


def test_the_partial_sort_runs_on_sparse_rows_and_not_on_dense_or_non_finite_ones(monkeypatch) -> None:
    calls: list[bool] = []
    original = norms._largest_first

    def spy(u, eps, inside):  # type: ignore[no-untyped-def]
        found = original(u, eps, inside)
        calls.append(found is not None)
        return found

    monkeypatch.setattr(norms, "_largest_first", spy)
    sparse = torch.zeros(4, 300)
    sparse[:, :5] = torch.tensor([3.0, -2.0, 1.5, 0.5, -0.25])
    out = L1().project(sparse, torch.full((4,), 2.0))
    assert calls == [True]
    assert torch.allclose(out.abs().sum(dim=1), torch.full((4,), 2.0))
    L1().project(torch.randn(4, 300), torch.full((4,), 2.0))  # dense: the full sort
    bad = sparse.clone()
    bad[0, 7] = float("nan")
    L1().project(bad, torch.full((4,), 2.0))
    assert calls == [True, False, False]
