"""The in-place PGD step (issue 13 item 7): ``ThreatModel.ascent_step_`` gives ``ascent_step``'s
bits for ℓ2 and ℓ1, the same feasible set to the last bit for ℓ∞ (the box computed once), never
NaN, and PGD built on it leaves the caller's tensors alone."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import advlearn as al


@settings(max_examples=40, deadline=None)
@given(
    norm=st.sampled_from(["linf", "l2", "l1"]),
    seed=st.integers(0, 2**16),
    boxed=st.booleans(),
    per_example=st.booleans(),
    special=st.sampled_from(["none", "zero", "tiny", "nan", "inf"]),
)
def test_in_place_step_matches_the_reference_step(
    norm: str, seed: int, boxed: bool, per_example: bool, special: str
) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 6
    base = {"linf": 0.1, "l2": 0.8, "l1": 3.0}[norm]
    eps = torch.rand(n, generator=g) * base if per_example else base
    threat = al.ThreatModel(norm, eps, (0.0, 1.0) if boxed else None)
    x0 = torch.rand(n, 2, 3, 3, generator=g)
    x = threat.random_init(x0, g)
    grad = torch.randn(n, 2, 3, 3, generator=g)
    if special == "zero":
        grad[1] = 0.0
    elif special == "tiny":
        grad[2] *= 1e-30
    elif special == "nan":
        grad[3, 0, 0, 0] = float("nan")
    elif special == "inf":
        grad[4, 1, 2, 2] = -float("inf")
    step = torch.rand(n, generator=g) * base
    reference = threat.ascent_step(x, x0, grad, step)
    x_in, grad_in = x.clone(), grad.clone()
    out = threat.ascent_step_(x_in, x0, grad_in, step)
    if norm != "l1":  # ℓ1's projection sorts into new tensors once the iterate leaves the ball
        assert out.data_ptr() == x_in.data_ptr()  # in place: no new iterate allocated
    assert not bool(out.isnan().any())
    assert bool(threat.contains(out, x0).all())
    if norm == "linf":
        # Same set, float ops in another order: at most one rounding apart.
        assert torch.allclose(out, reference, rtol=0.0, atol=2 * torch.finfo(torch.float32).eps)
    else:
        assert torch.equal(out, reference)


def test_pgd_leaves_the_inputs_alone_and_descends_when_targeted() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, y = torch.rand(8, 3, 2, 2), torch.randint(0, 3, (8,))
    x_copy = x.clone()
    for norm, eps in (("linf", 0.1), ("l2", 0.5), ("l1", 2.0)):
        threat = al.ThreatModel(norm, eps)
        for targeted in (False, True):
            attack = al.attacks.PGD(threat, steps=4, random_start=False, targeted=targeted)
            x_adv = attack(model, x, y)
            assert torch.equal(x, x_copy)
            loss = nn.functional.cross_entropy(model(x_adv), y, reduction="none")
            clean = nn.functional.cross_entropy(model(x), y, reduction="none")
            assert bool((loss <= clean).all() if targeted else (loss >= clean).all()), (norm, targeted)


def test_pgd_on_a_model_whose_input_gradient_is_expanded() -> None:
    """``x.sum(...)`` gives an input gradient with stride 0, which cannot be updated in place."""

    class Sums(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.sum(dim=(1, 2, 3), keepdim=False).unsqueeze(1)  # (B, 1)
            return torch.cat([s, -s], dim=1)  # (B, 2)

    x, y = torch.rand(4, 1, 3, 3), torch.zeros(4, dtype=torch.long)
    for norm in ("linf", "l2", "l1"):
        threat = al.ThreatModel(norm, 0.1)
        x_adv = al.attacks.PGD(threat, steps=3)(Sums(), x, y)
        assert bool(threat.contains(x_adv, x).all())
        assert bool((x_adv.sum(dim=(1, 2, 3)) < x.sum(dim=(1, 2, 3))).all())  # moved against class 0
