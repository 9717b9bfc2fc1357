"""Mixed precision, channels_last and compile (issue 13 items 1 and 2): attacks stay in the ball in
float32 whatever the model's precision, fp16 input gradients do not underflow, bf16 and fp16
training train, and bad options are one clear line."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advlearn as al
from advlearn._precision import FastModel, attack_gradients, check_precision, fast_model
from advlearn.attacks import ATTACKS, build_attack
from advlearn.attacks._base import loss_and_grad
from advlearn.config import ConfigError, parse_config
from advlearn.losses import get_loss
from advlearn.training import PGDAT, FreeAT, Standard, Trainer

LOW = ("bf16", "fp16")


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 4),
    ).eval()


def batch(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


# Every registered attack's defaults except the ensembles (AutoAttack runs its members, tested here).
_NAMES = sorted(n for n in ATTACKS if n not in {"autoattack", "autoattack_plus", "ensemble"})


@pytest.mark.parametrize("precision", LOW)
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_every_attack_stays_in_the_ball_in_fp32(precision: str, norm: str) -> None:
    eps = {"linf": 8 / 255, "l2": 0.5, "l1": 4.0}[norm]
    threat = al.ThreatModel(norm, eps)
    net = FastModel(small_cnn(), precision=precision, memory_format="channels_last")
    x, y = batch()
    ran = 0
    for name in _NAMES:
        try:
            attack = build_attack(name, threat, **_cheap(name))
        except ValueError:  # the attack does not take this norm
            continue
        x_adv = attack(net, x, y, generator=torch.Generator().manual_seed(0))
        assert x_adv.dtype == torch.float32, name
        assert bool(threat.contains(x_adv, x).all()), (name, precision, norm)
        ran += 1
    assert ran >= 4


def _cheap(name: str) -> dict[str, object]:
    fields = ATTACKS.fields(name)
    options: dict[str, object] = {}
    for key, value in (("steps", 3), ("queries", 20), ("restarts", 1), ("samples", 2)):
        if key in fields:
            options[key] = value
    return options


def test_bf16_forward_really_runs_in_bf16() -> None:
    seen: list[torch.dtype] = []
    model = small_cnn()
    model[-1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = FastModel(model, precision="bf16")(batch()[0])
    assert seen == [torch.bfloat16]
    assert out.dtype == torch.float32


def test_fp16_input_gradients_do_not_underflow() -> None:
    """A softmax saturated at a margin of 18 gives logit gradients of e^-18 = 1.5e-8, below half of
    fp16's smallest subnormal (6e-8): plain fp16 input gradients are exactly 0, scaled ones are right."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        model[1].weight.normal_(0.0, 1.0)
        model[1].bias.copy_(torch.tensor([18.0, 0.0, 0.0]))
    x = torch.rand(16, 3, 2, 2) * 0.01
    y = torch.zeros(16, dtype=torch.long)
    loss_fn = get_loss("ce")
    _, losses, reference = loss_and_grad(model, x, y, loss_fn)
    assert float(losses.max()) < 1e-7
    assert bool((reference != 0).all())
    unscaled = FastModel(model, precision="fp16", attack_grad_scale=1.0)
    scaled = FastModel(model, precision="fp16")
    with attack_gradients():
        _, _, g_plain = loss_and_grad(unscaled, x, y, loss_fn)
        _, _, g_scaled = loss_and_grad(scaled, x, y, loss_fn)
    assert bool((g_plain == 0).all())  # the failure the scaling prevents
    assert float((g_scaled.sign() == reference.sign()).float().mean()) > 0.95
    assert float((g_scaled - reference).norm() / reference.norm()) < 0.05
    # an attack's step follows the true gradient: FGSM in fp16 equals FGSM in fp32 on most coordinates
    threat = al.ThreatModel("linf", 0.001, bounds=None)
    x32, x16 = al.attacks.FGSM(threat)(model, x, y), al.attacks.FGSM(threat)(scaled, x, y)
    assert float((x32 == x16).float().mean()) > 0.95
    assert bool((x16 != x).any())
    # outside an attack nothing is scaled: a training loss's gradients are the GradScaler's business
    xg = x.clone().requires_grad_(True)
    (g_out,) = torch.autograd.grad(F.cross_entropy(scaled(xg), y, reduction="sum"), xg)
    assert bool((g_out == 0).all())


def test_fp32_path_is_the_model_itself() -> None:
    model = small_cnn()
    assert fast_model(model) is model


def _separable(n: int = 256) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.6
    x[:, 0] += 0.4 * y.view(-1, 1, 1)  # the class is how bright channel 0 is
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


def _accuracy(model: nn.Module, loader: torch.utils.data.DataLoader) -> float:
    model.eval()
    with torch.no_grad():
        hits = [(model(x).argmax(1) == y).float() for x, y in loader]
    return float(torch.cat(hits).mean())


@pytest.mark.parametrize("precision", LOW)
def test_low_precision_training_trains(precision: str) -> None:
    loader = _separable(128)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 2))
    threat = al.ThreatModel("linf", 2 / 255)
    before = _accuracy(model, loader)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = Trainer(model, PGDAT(threat, steps=2), optimizer, precision=precision, quiet=True, device="cpu")
    history = trainer.fit(loader, epochs=4)
    losses = history.column("train_loss")
    assert losses[-1] < 0.75 * losses[0]
    assert _accuracy(model, loader) > max(before, 0.8)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    if precision == "fp16":
        assert trainer.scaler is not None
        assert trainer.scaler.get_scale() > 0


def test_fp16_resume_restores_the_grad_scaler(tmp_path: object) -> None:
    loader = _separable(128)

    def run(epochs: int, resume: bool, folder: str) -> Trainer:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        t = Trainer(model, Standard(), opt, precision="fp16", run_dir=f"{tmp_path}/{folder}", quiet=True)
        t.fit(loader, epochs=epochs, resume=resume)
        return t

    whole = run(2, False, "a")
    run(1, False, "b")
    resumed = run(2, True, "b")
    assert resumed.scaler is not None
    assert whole.scaler is not None
    assert resumed.scaler.state_dict() == whole.scaler.state_dict()
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_bad_precision_options_are_one_line() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"precision='fp8' is not one of '32', 'bf16', 'fp16'"):
        Trainer(model, Standard(), opt, precision="fp8")
    with pytest.raises(ValueError, match=r"FreeAT's own train_step .* use precision='bf16'"):
        Trainer(model, FreeAT(al.ThreatModel("linf", 0.1)), opt, precision="fp16")
    with pytest.raises(ValueError, match="memory_format='nhwc' is not one of"):
        FastModel(model, memory_format="nhwc")
    with pytest.raises(ConfigError, match=r"^precision: 'half' is not one of"):
        parse_config({"precision": "half"})
    with pytest.raises(ConfigError, match=r"^num_workers: must be >= 0"):
        parse_config({"num_workers": -1})
    cfg = parse_config({"precision": "bf16", "memory_format": "channels_last", "compile": True})
    assert (cfg.precision, cfg.memory_format, cfg.compile) == ("bf16", "channels_last", True)


def test_a_device_without_the_precision_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_half(*args: object, **kwargs: object) -> None:
        raise RuntimeError("autocast float16 is not supported here")

    monkeypatch.setattr(torch, "mm", no_half)
    with pytest.raises(
        ValueError, match=r"precision='fp16' is not available on device 'cpu' .* use precision='bf16'"
    ):
        check_precision("fp16", "cpu")


def test_evaluate_in_bf16_scores_points_in_the_ball() -> None:
    model = small_cnn()
    x, y = batch(32)
    threat = al.ThreatModel("linf", 8 / 255)
    attacks = [al.attacks.PGD(threat, steps=5, early_stop=True), al.attacks.FGSM(threat)]
    ev32 = al.evaluation.evaluate(model, (x, y), threat, attacks, quiet=True)
    ev16 = al.evaluation.evaluate(model, (x, y), threat, attacks, quiet=True, precision="bf16")
    assert all(v <= 8 / 255 + 1e-6 for v in ev16.max_perturbation.values())
    assert ev16.clean_accuracy == pytest.approx(ev32.clean_accuracy, abs=2 / 32)
    for name in ev32.robust_accuracy:
        assert ev16.robust_accuracy[name] == pytest.approx(ev32.robust_accuracy[name], abs=3 / 32)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: nn.Module, **kwargs: object) -> object:
        def call(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("inductor: no working C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    model = small_cnn()
    net = FastModel(model, compile=True)
    x = batch()[0]
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no working C\\+\\+ compiler.*eagerly"):
        out = net(x)
    assert torch.equal(out, model(x))
    assert not net.compiled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(x)  # warned once, then eager without a word

    monkeypatch.delattr(torch, "compile")
    with pytest.warns(RuntimeWarning, match="torch.compile is not available"):
        assert not FastModel(model, compile=True).compiled


@pytest.mark.slow
def test_compiled_attack_matches_eager_without_recompiling_per_batch_size() -> None:
    torch._dynamo.reset()
    model = small_cnn()
    net = FastModel(model, compile=True)
    threat = al.ThreatModel("linf", 8 / 255)
    x, y = batch(64)
    with torch._dynamo.config.patch(error_on_recompile=False):
        eager = al.attacks.PGD(threat, steps=5, early_stop=True).run(
            model, x, y, generator=torch.Generator().manual_seed(0)
        )
        compiled = al.attacks.PGD(threat, steps=5, early_stop=True).run(
            net, x, y, generator=torch.Generator().manual_seed(0)
        )
    assert net.compiled
    assert bool(threat.contains(compiled.x_adv, x).all())
    assert (compiled.success == eager.success).float().mean() > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_gpu_attacks_and_amp_training_stay_on_the_device(precision: str) -> None:
    device = torch.device("cuda")
    model = small_cnn().to(device)
    x, y = (t.to(device) for t in batch(32))
    threat = al.ThreatModel("linf", 8 / 255)
    net = FastModel(model, precision=precision, memory_format="channels_last")
    for name in _NAMES:
        try:
            attack = build_attack(name, threat, **_cheap(name))
        except ValueError:
            continue
        x_adv = attack(net, x, y)
        assert x_adv.device.type == "cuda", name
        assert bool(threat.contains(x_adv, x).all()), name
    loader = [(a.to(device), b.to(device)) for a, b in _separable()]
    train_model = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(train_model.parameters(), lr=3e-3)
    trainer = Trainer(
        train_model, PGDAT(threat, steps=2), opt, precision=precision, device=device, quiet=True
    )

    class Sized(list):  # the Trainer needs a length
        pass

    history = trainer.fit(Sized(loader), epochs=4)
    assert history.column("train_loss")[-1] < history.column("train_loss")[0]
