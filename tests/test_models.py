"""Conformance over the model registry, plus exact checks of Normalize and the builders' validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import advlearn.games  # noqa: F401  (registers the games' networks, which this file's checks count)
from advlearn.models import (
    MODELS,
    Maxout,
    Normalize,
    build_model,
    count_parameters,
    register_model,
)

NUM_CLASSES = 4

# Small but structurally complete variants, so the whole file runs in seconds.
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "logreg": {},
    "mlp": {"hidden": (16, 8)},
    "maxout": {"hidden": (12, 12), "pieces": 3},
    "small_cnn": {"channels": (4, 8), "hidden": 16},
    "ibp_cnn": {"channels": (4, 8), "hidden": 16, "padding": 1},
    "preact_resnet18": {"width": 4},
    "wide_resnet": {"depth": 10, "width": 1},
}
# The games' networks share the registry (so their checkpoints load) but are not image classifiers
# taking in_shape and num_classes; test_games.py loads each back from a run folder.
GAME_NETWORKS = {"gan_generator", "gan_discriminator", "dann"}
CLASSIFIERS = sorted(set(MODELS) - GAME_NETWORKS)
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


def _build(name: str, in_shape: tuple[int, ...], **extra: Any) -> nn.Module:
    return build_model(name, in_shape=in_shape, num_classes=NUM_CLASSES, **SMALL_OPTIONS[name], **extra)


def test_every_registered_model_has_small_options() -> None:
    assert set(MODELS) == set(SMALL_OPTIONS) | GAME_NETWORKS


# ----------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("in_shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_backward_and_input_gradient(name: str, in_shape: tuple[int, ...]) -> None:
    model = _build(name, in_shape)
    x = torch.rand(2, *in_shape, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    assert x.grad is not None
    assert x.grad.shape == x.shape
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_eval_mode_batch_independent(name: str) -> None:
    """In eval mode every example's logits depend on that example only (BatchNorm uses running stats)."""
    model = _build(name, (3, 32, 32)).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_build_is_deterministic_under_seed(name: str) -> None:
    torch.manual_seed(123)
    first = _build(name, (1, 28, 28)).state_dict()
    torch.manual_seed(123)
    second = _build(name, (1, 28, 28)).state_dict()
    torch.manual_seed(124)
    other = _build(name, (1, 28, 28)).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_normalize_is_the_first_layer(name: str) -> None:
    """With mean/std the model equals the same weights applied to (x − mean)/std."""
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    torch.manual_seed(7)
    plain = _build(name, (3, 32, 32)).eval()
    torch.manual_seed(7)
    normalized = _build(name, (3, 32, 32), mean=mean, std=std).eval()
    assert isinstance(normalized, nn.Sequential)
    assert isinstance(normalized[0], Normalize)
    # Flat Sequentials keep their layer names, so the weights line up after dropping the normalize buffers.
    weights = {k.removeprefix("net."): v for k, v in normalized.state_dict().items() if "normalize" not in k}
    plain.load_state_dict(weights)
    x = torch.rand(2, 3, 32, 32)
    m, s = torch.tensor(mean).reshape(1, 3, 1, 1), torch.tensor(std).reshape(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normalized(x), plain((x - m) / s))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_unknown_option_names_it(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown option 'bogus'.*accepted options: in_shape, num_classes"):
        build_model(name, in_shape=(1, 28, 28), num_classes=10, bogus=1)


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
def test_bad_num_classes(name: str, num_classes: Any) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model(name, in_shape=(1, 28, 28), num_classes=num_classes)


# ----------------------------------------------------------------------------- registry


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'resnet50' is not registered; known models: .*small_cnn"):
        build_model("resnet50", in_shape=(3, 32, 32), num_classes=10)


def test_missing_required_option() -> None:
    with pytest.raises(ValueError, match=r"needs the option.*num_classes"):
        build_model("mlp", in_shape=(2,))


def test_register_model_rejects_duplicates_and_registers() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp")(lambda in_shape, num_classes: nn.Identity())

    @register_model("_test_identity")
    def identity(in_shape: tuple[int, ...], num_classes: int, *, scale: float = 1.0) -> nn.Module:
        return nn.Identity()

    try:
        assert isinstance(build_model("_test_identity", in_shape=(3,), num_classes=3, scale=2.0), nn.Identity)
        with pytest.raises(ValueError, match=r"unknown option 'shift'.*in_shape, num_classes, scale"):
            build_model("_test_identity", in_shape=(3,), num_classes=3, shift=1.0)
    finally:
        del MODELS["_test_identity"]


# ----------------------------------------------------------------------------- Normalize


def test_normalize_images_exact() -> None:
    mean, std = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
    norm = Normalize(mean, std)
    assert norm.mean.shape == norm.std.shape == (1, 3, 1, 1)
    x = torch.rand(2, 3, 5, 4)
    expected = torch.empty_like(x)
    for c in range(3):
        expected[:, c] = (x[:, c] - mean[c]) / std[c]
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=0)


def test_normalize_vectors_exact() -> None:
    norm = Normalize(mean=[1.0, -2.0], std=[2.0, 0.5])
    x = torch.tensor([[3.0, -1.0], [1.0, -2.0]])
    assert torch.equal(norm(x), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def test_normalize_scalar_broadcasts() -> None:
    norm = Normalize(0.5, 0.25)
    x = torch.rand(3, 7)
    assert torch.equal(norm(x), (x - 0.5) / 0.25)
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(norm(x), (x - 0.5) / 0.25)
    assert torch.equal(Normalize([0.1, 0.2], 2.0).std.flatten(), torch.tensor([2.0, 2.0]))


def test_normalize_follows_dtype_and_state_dict() -> None:
    norm = Normalize((0.1, 0.2, 0.3), (1.0, 2.0, 3.0)).double()
    assert norm(torch.rand(1, 3, 2, 2, dtype=torch.float64)).dtype == torch.float64
    assert set(norm.state_dict()) == {"mean", "std"}


@pytest.mark.parametrize("std", [0.0, -1.0, [0.5, 0.0, 0.5], [0.2, -0.1]])
def test_normalize_rejects_nonpositive_std(std: Any) -> None:
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalize(0.5, std)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.1, 0.2], [0.1, 0.2, 0.3], "mean has 2 channels but std has 3"),
        (float("nan"), 1.0, "mean must be finite"),
        ([], 1.0, "at least one value"),
        ("abc", 1.0, "mean must be a float or a sequence"),
    ],
)
def test_normalize_rejects_bad_stats(mean: Any, std: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Normalize(mean, std)


def test_normalize_rejects_channel_mismatch() -> None:
    with pytest.raises(ValueError, match="statistics for 3 channels but the input has 1"):
        Normalize((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))(torch.rand(2, 1, 4, 4))


# ----------------------------------------------------------------------------- architectures


def test_logreg_is_affine() -> None:
    model = build_model("logreg", in_shape=(2,), num_classes=3)
    linear = model.linear
    assert isinstance(linear, nn.Linear)
    x = torch.randn(5, 2)
    torch.testing.assert_close(model(x), x @ linear.weight.T + linear.bias)
    assert count_parameters(model) == 2 * 3 + 3


def test_mlp_layers_and_activation() -> None:
    model = build_model("mlp", in_shape=(1, 28, 28), num_classes=10, activation="tanh")
    assert [type(m).__name__ for m in model.children()] == [
        "Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear",
    ]  # fmt: skip
    assert count_parameters(model) == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    with pytest.raises(ValueError, match="activation='swish' is not known"):
        build_model("mlp", in_shape=(2,), num_classes=2, activation="swish")
    with pytest.raises(ValueError, match="hidden must be"):
        build_model("mlp", in_shape=(2,), num_classes=2, hidden=(8, 0))


def test_maxout_takes_the_max_over_pieces() -> None:
    layer = Maxout(in_features=3, units=2, pieces=4)
    x = torch.randn(5, 3)
    z = layer.linear(x).reshape(5, 2, 4)
    assert torch.equal(layer(x), z.max(dim=2).values)


def test_maxout_defaults_follow_goodfellow_2013() -> None:
    model = build_model("maxout", in_shape=(1, 28, 28), num_classes=10)
    layers = [m for m in model.modules() if isinstance(m, Maxout)]
    assert [(m.units, m.pieces) for m in layers] == [(240, 5), (240, 5)]
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    # deterministic in training mode when dropout is 0
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model.train()(x), model(x))
    with_dropout = build_model("maxout", in_shape=(1, 28, 28), num_classes=10, hidden=(8,), dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for m in with_dropout.modules())
    with pytest.raises(ValueError, match="dropout must be in"):
        build_model("maxout", in_shape=(2,), num_classes=2, dropout=1.0)


def test_small_cnn_is_madry_mnist_architecture() -> None:
    model = build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10)
    conv1, conv2 = model.conv1, model.conv2
    assert isinstance(conv1, nn.Conv2d)
    assert isinstance(conv2, nn.Conv2d)
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.padding) == (
        1,
        32,
        (5, 5),
        (2, 2),
    )
    assert (conv2.in_channels, conv2.out_channels) == (32, 64)
    fc = model.fc
    assert isinstance(fc, nn.Linear)
    assert (fc.in_features, fc.out_features) == (7 * 7 * 64, 1024)
    # conv1 832 + conv2 51,264 + fc 3,212,288 + logits 10,250
    assert count_parameters(model) == 3_274_634


def test_small_cnn_validation() -> None:
    with pytest.raises(ValueError, match="kernel_size must be a positive odd int"):
        build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10, kernel_size=4)
    with pytest.raises(ValueError, match="too small for 3 pooling layers"):
        build_model("small_cnn", in_shape=(1, 4, 4), num_classes=10, channels=(2, 2, 2))
    with pytest.raises(ValueError, match=r"in_shape must be \(C, H, W\)"):
        build_model("small_cnn", in_shape=(784,), num_classes=10)
    model = build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10, kernel_size=3, channels=(4,))
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 10)


def test_preact_resnet18_structure() -> None:
    model = build_model("preact_resnet18", in_shape=(3, 32, 32), num_classes=10, width=8)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 17  # stem + 8 blocks × 2; with the linear layer, 18 weight layers
    assert max(c.out_channels for c in convs) == 64
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_preact_resnet18_full_size_parameter_count() -> None:
    with torch.device("meta"):  # shapes only: no memory, no init
        model = build_model("preact_resnet18", in_shape=(3, 32, 32), num_classes=10)
    assert count_parameters(model) == 11_172_170


@pytest.mark.parametrize(("depth", "width", "expected"), [(28, 10, 36_479_194), (34, 10, 46_160_474)])
def test_wide_resnet_parameter_counts(depth: int, width: int, expected: int) -> None:
    """WRN-28-10 and WRN-34-10 have the 36.5M and 46.2M parameters reported for CIFAR-10."""
    with torch.device("meta"):
        model = build_model("wide_resnet", in_shape=(3, 32, 32), num_classes=10, depth=depth, width=width)
    assert count_parameters(model) == expected


@pytest.mark.parametrize("depth", [8, 12, 27, 29, 4, -2])
def test_wide_resnet_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 4"):
        build_model("wide_resnet", in_shape=(3, 32, 32), num_classes=10, depth=depth, width=1)


def test_resnets_use_kaiming_init_and_identity_batchnorm() -> None:
    torch.manual_seed(0)
    model = build_model("wide_resnet", in_shape=(3, 32, 32), num_classes=10, depth=10, width=4)
    conv = model.block3[0].conv2
    assert isinstance(conv, nn.Conv2d)
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() / (2.0 / fan_out) ** 0.5 - 1) < 0.05
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_bad_in_shape() -> None:
    for bad in [(), (0, 28, 28), ("a",), None]:
        with pytest.raises(ValueError, match="in_shape must be"):
            build_model("mlp", in_shape=bad, num_classes=10)


def test_count_parameters_trainable_only() -> None:
    model = build_model("logreg", in_shape=(4,), num_classes=2)
    assert count_parameters(model) == 10
    model.linear.bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 8
    assert count_parameters(model) == 10
