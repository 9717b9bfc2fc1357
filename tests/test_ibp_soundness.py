"""IBP refuses what it cannot bound (issue 17, part 0): each case below was certified unsoundly before.

The excess of a real output over the "certified" bound was measured on each of these models
(0.030, 0.92, 0.62, 1.65, 1.83); now every one is refused with a ValueError naming the module.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import advlearn as al
from advlearn.certify import check_ibp_supported, ibp_bounds, ibp_margin_bounds, verified_accuracy
from advlearn.models import Maxout, Normalize

THREAT = al.ThreatModel("linf", 0.1)


class ResidualSequential(nn.Sequential):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return x + super().forward(x)


class FancyReLU(nn.ReLU):
    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x) * 2 - 1


def _refused(model: nn.Module, match: str, x: Tensor | None = None) -> None:
    x = torch.rand(3, 4) if x is None else x
    with pytest.raises(ValueError, match=match):
        ibp_bounds(model, x, THREAT)
    with pytest.raises(ValueError, match=match):
        ibp_margin_bounds(model, x, torch.zeros(len(x), dtype=torch.long), THREAT)
    with pytest.raises(ValueError, match=match):
        check_ibp_supported(model)
    with pytest.raises(ValueError, match=match):
        verified_accuracy(model, (x, torch.zeros(len(x), dtype=torch.long)), THREAT)


def test_sequential_subclass_with_its_own_forward_is_refused():
    block = ResidualSequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    _refused(nn.Sequential(block, nn.Linear(4, 2)), r"layer '0' \(ResidualSequential\).*residual")


def test_subclass_of_a_supported_layer_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), FancyReLU(), nn.Linear(4, 2))
    _refused(model, r"'1' \(FancyReLU\).*subclass of ReLU")


def test_forward_hooks_and_pre_hooks_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    handle = model[1].register_forward_hook(lambda module, inputs, output: output + 1.0)
    _refused(model, r"layer '1' \(ReLU\).*hooks")
    handle.remove()
    check_ibp_supported(model)  # passes again once the hook is gone
    handle = model[2].register_forward_pre_hook(lambda module, inputs: (inputs[0] * 3,))
    _refused(model, r"layer '2' \(Linear\).*hooks")
    handle.remove()
    handle = model.register_forward_hook(lambda module, inputs, output: -output)
    _refused(model, r"model Sequential.*hooks")
    handle.remove()
    maxout = nn.Sequential(Maxout(4, 3, 2), nn.Linear(3, 2))
    handle = maxout[0].linear.register_forward_hook(lambda module, inputs, output: output * 5)
    _refused(maxout, r"'0' \(Maxout\).*hooks")
    handle.remove()


def test_global_forward_hooks_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    handle = nn.modules.module.register_module_forward_hook(lambda module, inputs, output: output)
    try:
        _refused(model, "global forward hooks")
    finally:
        handle.remove()
    check_ibp_supported(model)


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (nn.ELU(alpha=-1.5), r"'1' \(ELU\).*alpha=-1.5"),
        (nn.LeakyReLU(-0.2), r"'1' \(LeakyReLU\).*negative_slope=-0.2"),
        (nn.Softplus(beta=-2.0), r"'1' \(Softplus\).*beta=-2.0"),
    ],
)
def test_non_monotone_activation_parameters_are_refused(layer, match):
    _refused(nn.Sequential(nn.Linear(4, 4), layer, nn.Linear(4, 2)), match)


def test_monotone_activation_parameters_are_accepted_and_sound():
    torch.manual_seed(0)
    for layer in (nn.ELU(alpha=2.0), nn.LeakyReLU(0.0), nn.Softplus(beta=0.5)):
        model = nn.Sequential(nn.Linear(4, 6), layer, nn.Linear(6, 2))
        x = torch.rand(2, 4)
        lower, upper = ibp_bounds(model, x, THREAT)
        for _ in range(50):
            out = model(THREAT.project(x + 0.2 * (torch.rand_like(x) - 0.5), x))
            assert bool((lower <= out + 1e-6).all() and (out <= upper + 1e-6).all())


def test_avgpool_with_a_non_positive_divisor_is_refused():
    x = torch.rand(2, 1, 4, 4)
    model = nn.Sequential(nn.AvgPool2d(2, divisor_override=-1), nn.Flatten(), nn.Linear(4, 2))
    _refused(model, r"'0' \(AvgPool2d\).*divisor_override=-1", x)
    model[0].divisor_override = 0
    _refused(model, "divisor_override=0", x)


def test_normalize_with_a_non_positive_std_is_refused():
    x = torch.rand(2, 1, 2, 2)
    model = nn.Sequential(Normalize(0.5, 0.25), nn.Flatten(), nn.Linear(4, 2))
    check_ibp_supported(model)
    model[0].std.fill_(-0.5)
    _refused(model, r"'0' \(Normalize\).*std", x)
    model[0].std.fill_(float("inf"))
    _refused(model, r"'0' \(Normalize\)", x)


def test_batchnorm_with_a_negative_running_var_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    check_ibp_supported(model)
    model[1].running_var.fill_(-1.0)
    _refused(model, r"'1' \(BatchNorm1d\).*running_var")
