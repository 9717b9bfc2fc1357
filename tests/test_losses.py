"""Per-example losses: closed forms, signs, caps and invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from advlearn import losses
from advlearn.losses import LOSSES, cross_entropy, cw_margin, dlr, get_loss, margin

F64 = torch.float64


@pytest.fixture
def logits() -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, y)``: 64 float64 rows of 5 continuous logits (no ties) and labels."""
    g = torch.Generator().manual_seed(0)
    return 3 * torch.randn(64, 5, generator=g, dtype=F64), torch.randint(0, 5, (64,), generator=g)


def test_registry_names() -> None:
    """LOSSES holds exactly ce, cw and dlr, and get_loss returns the registered functions."""
    assert set(LOSSES) == {"ce", "cw", "dlr"}
    assert get_loss("ce") is cross_entropy
    assert get_loss("cw") is cw_margin
    assert get_loss("dlr") is dlr


@pytest.mark.parametrize("name", ["hinge", "CE", ""])
def test_get_loss_unknown_name(name: str) -> None:
    """An unknown loss name raises a ValueError naming the argument."""
    with pytest.raises(ValueError, match="loss"):
        get_loss(name)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_are_per_example(name: str, logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Every loss maps (B, C) logits and (B,) labels to a finite (B,) tensor."""
    z, y = logits
    out = get_loss(name)(z, y)
    assert out.shape == (64,)
    assert out.dtype == F64
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_fall_as_the_label_logit_rises(name: str, logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Raising z_y never raises any loss (the loss grows as the prediction moves away from the label)."""
    z, y = logits
    loss_fn = get_loss(name)
    raised = z + 0.1 * torch.nn.functional.one_hot(y, 5).to(z)
    assert (loss_fn(raised, y) <= loss_fn(z, y) + 1e-12).all()
    assert (loss_fn(raised, y) < loss_fn(z, y)).any()


def test_cross_entropy_matches_log_softmax(logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """cross_entropy = logsumexp(z) − z_y, computed independently in NumPy."""
    z, y = logits
    expected = logsumexp(z.numpy(), axis=1) - z.numpy()[np.arange(64), y.numpy()]
    np.testing.assert_allclose(cross_entropy(z, y).numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(
        cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3])), torch.full((2,), np.log(4.0))
    )


def test_margin_closed_form() -> None:
    """margin = max_{j≠y} z_j − z_y on a hand-computed row."""
    z = torch.tensor([[2.0, 0.5, 1.0], [2.0, 0.5, 1.0], [2.0, 0.5, 1.0]])
    assert margin(z, torch.tensor([0, 1, 2])).tolist() == [-1.0, 1.5, 1.0]


def test_cw_margin_positive_iff_misclassified(logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """cw_margin > 0 exactly where argmax z ≠ y, and equals margin without a cap."""
    z, y = logits
    out = cw_margin(z, y)
    wrong = z.argmax(1) != y
    assert wrong.any()
    assert (~wrong).any()
    assert torch.equal(out > 0, wrong)
    torch.testing.assert_close(out, margin(z, y))


@pytest.mark.parametrize("confidence", [-1.0, 0.0, 0.5, 2.0])
def test_cw_margin_confidence_cap(confidence: float, logits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """cw_margin(z, y, κ) = min(margin, κ): margins above κ are capped, the rest untouched."""
    z, y = logits
    raw = margin(z, y)
    out = cw_margin(z, y, confidence=confidence)
    torch.testing.assert_close(out, raw.clamp_max(confidence))
    assert (out[raw > confidence] == confidence).all()


def test_dlr_closed_form() -> None:
    """dlr = (max_{j≠y} z_j − z_y) / (z_π1 − z_π3) on hand-computed rows."""
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]] * 3, dtype=F64)
    torch.testing.assert_close(
        dlr(z, torch.tensor([0, 1, 3])), torch.tensor([-2 / 3, 2 / 3, 4 / 3], dtype=F64)
    )


@pytest.mark.parametrize("scale", [0.01, 0.5, 3.0, 100.0])
@pytest.mark.parametrize("shift", [-7.0, 0.0, 5.0])
def test_dlr_invariant_to_shift_and_positive_scale(
    scale: float, shift: float, logits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """dlr(a·z + c) = dlr(z) for a > 0 and any shift c, also a different c per example."""
    z, y = logits
    row_shift = shift * torch.arange(64, dtype=F64)[:, None]  # (B, 1)
    torch.testing.assert_close(dlr(scale * z + row_shift, y), dlr(z, y), rtol=1e-8, atol=1e-10)


def test_dlr_needs_three_classes() -> None:
    """dlr raises a ValueError naming the loss on a 2-class model."""
    with pytest.raises(ValueError, match="dlr"):
        dlr(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


def test_public_names() -> None:
    """The module exports its losses."""
    assert {"LOSSES", "cross_entropy", "cw_margin", "dlr", "get_loss", "margin"} <= set(losses.__all__)
