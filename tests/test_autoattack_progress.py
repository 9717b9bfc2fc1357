"""AutoAttack's bar per member (issue 16 item 5): totals are the examples standing when a member
starts, the members' loops feed it truthfully, each member leaves one summary line, quiet is quiet."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn

from advlearn.attacks import AutoAttack, build_attack
from advlearn.attacks._progress import silenced, watching
from advlearn.evaluation import evaluate
from advlearn.threat import ThreatModel

MEMBERS = (
    {"name": "apgd", "steps": 10, "early_stop": True},
    {"name": "apgd_t", "steps": 10, "num_targets": 3, "early_stop": True},
    {"name": "fab_t", "steps": 10, "num_targets": 2, "early_stop": True},
    {"name": "square", "queries": 200},
)


def _attack(eps: float = 0.08) -> AutoAttack:
    return AutoAttack(ThreatModel("linf", eps=eps), version="custom", attacks=MEMBERS)


def test_one_bar_per_member_totals_are_the_survivors(
    digits_mlp: tuple[nn.Module, Tensor, Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    model, x, y = digits_mlp
    x, y = x[:60], y[:60]
    out = _attack().evaluate(model, x, y, generator=torch.Generator().manual_seed(0))
    err = capsys.readouterr().err
    standing = out.clean_correct.clone()
    for i, name in enumerate(out.members):
        survivors = int(standing.sum())
        standing &= out.broken_by != i
        # The bar opens at 0 of the examples standing when the member starts ...
        assert f"AutoAttack {name}:   0%|" in err
        assert f"0/{survivors} [" in err
        totals = {
            int(t) for t in re.findall(rf"AutoAttack {re.escape(name)}: +\d+%\|[^|]*\| *\d+/(\d+)", err)
        }
        assert totals == {survivors}
        # ... and leaves one line: name, robust left / standing at its start, seconds.
        line = f"AutoAttack {name}: {int(standing.sum())} robust left / {survivors} standing at its start"
        assert err.count(line) == 1
        assert re.search(re.escape(line) + rf" \(60 examples\), {out.seconds[i]:.1f} s", err)
    assert 0 < int(out.robust.sum()) < int(out.clean_correct.sum())  # some broken, some not: a real test


@pytest.mark.parametrize(
    ("norm", "eps", "member"),
    [
        ("linf", 0.08, MEMBERS[0]),
        ("linf", 0.08, MEMBERS[1]),
        ("linf", 0.08, MEMBERS[2]),
        ("linf", 0.08, MEMBERS[3]),
        ("l2", 0.8, MEMBERS[3]),
        ("l1", 4.0, {"name": "apgd", "steps": 10, "restarts": 2, "eps_schedule": True, "early_stop": True}),
    ],
)
def test_members_feed_the_bar_truthfully(
    digits_mlp: tuple[nn.Module, Tensor, Tensor], norm: str, eps: float, member: dict[str, object]
) -> None:
    """Fractions spent rise within [0, 1]; the examples reported broken are exactly those broken."""
    model, x, y = digits_mlp
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:40], y[keep][:40]
    options = {k: v for k, v in member.items() if k != "name"}
    attack = build_attack(str(member["name"]), ThreatModel(norm, eps=eps), **options)
    fractions: list[float] = []
    broken: list[int] = []
    with watching(fractions.append, broken.append):
        result = attack.run(model, x, y, generator=torch.Generator().manual_seed(0))
    assert fractions
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    assert sum(broken) == int(result.success.sum()) > 0


def test_quiet_silences_the_member_bars(
    digits_mlp: tuple[nn.Module, Tensor, Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    model, x, y = digits_mlp
    x, y = x[:20], y[:20]
    attack = AutoAttack(ThreatModel("linf", eps=0.08), version="custom", attacks=MEMBERS[:1])
    attack.evaluate(model, x, y, quiet=True)
    with silenced():
        attack.evaluate(model, x, y)
    evaluate(model, (x, y), attacks=[attack], quiet=True)
    assert capsys.readouterr().err == ""
    evaluate(model, (x, y), attacks=[attack])
    assert "AutoAttack apgd: " in capsys.readouterr().err


class _Noisy(nn.Module):
    """A randomized defense: Gaussian noise on the input of every pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x + 0.05 * torch.randn_like(x))
        return out


def test_standard_warns_once_on_a_randomized_model(
    digits_mlp: tuple[nn.Module, Tensor, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from advlearn.attacks.adaptive import RandomizedOutputsWarning

    model, x, y = digits_mlp
    attack = AutoAttack(
        ThreatModel("linf", eps=0.02), version="custom", attacks=({"name": "apgd", "steps": 2},)
    )
    standard = AutoAttack(ThreatModel("linf", eps=0.02), version="standard")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        standard._warn_if_randomized(_Noisy(model), x[:8], model(x[:8]))
        attack.evaluate(_Noisy(model), x[:8], y[:8])
        attack.evaluate(_Noisy(model), x[:8], y[:8])  # the same AutoAttack: no second warning
    randomized = [w for w in record if issubclass(w.category, RandomizedOutputsWarning)]
    assert len(randomized) == 2  # one per AutoAttack
    assert "on 8 of 8 inputs" in str(randomized[0].message)
    assert "version='rand'" in str(randomized[0].message)
    base = AutoAttack(
        ThreatModel("linf", eps=0.02), version="custom", attacks=({"name": "apgd", "steps": 2},)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = base.evaluate(model, x[:8], y[:8], generator=torch.Generator().manual_seed(0))  # silent
        AutoAttack(ThreatModel("linf", eps=0.02), version="rand").evaluate(_Noisy(model), x[:4], y[:4])
    # The check's cost is counted: one more forward pass per checked input.
    monkeypatch.setattr(AutoAttack, "_warn_if_randomized", lambda self, model, x, logits, batch_size=None: 0)
    unchecked = base.evaluate(model, x[:8], y[:8], generator=torch.Generator().manual_seed(0))
    assert plain.num_forwards == unchecked.num_forwards + 8
    assert torch.equal(plain.x_adv, unchecked.x_adv)
