"""The game itself: :class:`GANConfig`, alternating updates in :func:`train_gan`, and :class:`GANResult`."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn.data import Dataset
from advlearn.games.gan.losses import (
    _check_loss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)
from advlearn.games.gan.metrics import GANMonitor, ModeCollapseWarning, ModeCoverage
from advlearn.games.gan.networks import GAN_ARCHS, build_gan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GANConfig:
    """Everything :func:`train_gan` needs besides the data.

    Args:
        loss: one of :data:`GAN_LOSSES`.
        arch: one of :data:`GAN_ARCHS`.
        steps: generator steps.
        d_steps: discriminator steps per generator step (``None``: 5 for ``wgan-gp``, else 1).
        batch_size: real and generated examples per step.
        latent_dim: size of ``z ~ N(0, I)``.
        lr: Adam's learning rate for both players (``None``: 2e-4, or 1e-4 for ``wgan-gp``).
        betas: Adam's betas (``None``: (0.5, 0.999), or (0.5, 0.9) for ``wgan-gp``).
        gp_weight: ``λ`` of the gradient penalty (``wgan-gp`` only).
        eval_every: generator steps between two evaluations (coverage, Fréchet distance,
            sample grid); the last step is always evaluated.
        eval_samples: samples drawn for each evaluation.
        log_every: generator steps between two records of the curves.
        min_share: see :func:`mode_coverage`.
        collapse_classes: warn (:class:`ModeCollapseWarning`) when fewer classes than this are
            covered at the end (``None``: 70% of the classes, rounded up).
        seed: seeds the networks, ``z`` and the batches.
    """

    loss: str = "nonsaturating"
    arch: str = "mlp"
    steps: int = 2000
    d_steps: int | None = None
    batch_size: int = 64
    latent_dim: int = 32
    lr: float | None = None
    betas: tuple[float, float] | None = None
    gp_weight: float = 10.0
    eval_every: int = 500
    eval_samples: int = 1000
    log_every: int = 10
    min_share: float = 0.2
    collapse_classes: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        wgan = _check_loss(self.loss) == "wgan-gp"
        if self.arch not in GAN_ARCHS:
            raise ValueError(f"arch must be one of {', '.join(GAN_ARCHS)}, got {self.arch!r}")
        for name in ("steps", "batch_size", "latent_dim", "eval_every", "log_every"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("eval_samples", self.eval_samples, minimum=2)
        if self.d_steps is None:
            object.__setattr__(self, "d_steps", 5 if wgan else 1)
        check_positive_int("d_steps", self.d_steps)
        if self.lr is None:
            object.__setattr__(self, "lr", 1e-4 if wgan else 2e-4)
        lr = check_nonnegative("lr", self.lr)
        if lr == 0:
            raise ValueError("lr must be > 0")
        if self.betas is None:
            object.__setattr__(self, "betas", (0.5, 0.9) if wgan else (0.5, 0.999))
        betas = tuple(self.betas)  # type: ignore[arg-type]
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        check_nonnegative("gp_weight", self.gp_weight)
        check_nonnegative("min_share", self.min_share)
        if self.collapse_classes is not None:
            check_positive_int("collapse_classes", self.collapse_classes)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class GANResult:
    """What :func:`train_gan` returns.

    Attributes:
        config: the resolved configuration.
        generator: the trained generator, in eval mode.
        discriminator: the trained discriminator (critic), in eval mode.
        history: one record every ``log_every`` steps: ``step``, ``d_loss``, ``g_loss``,
            ``d_real`` and ``d_fake`` (mean ``D(x)`` and ``D(G(z))``: probabilities σ(a) for
            the minimax and non-saturating games, raw critic values for WGAN-GP).
        evaluations: one record per evaluation: ``step``, ``covered``, ``frechet``, ``counts``.
        samples: ``(step, images)`` of a fixed grid of ``z`` at every evaluation.
        coverage: the final :class:`ModeCoverage`.
        frechet: the final Fréchet distance.
        seconds: wall time of the training loop (evaluations included).
    """

    config: GANConfig
    generator: nn.Module
    discriminator: nn.Module
    history: list[dict[str, float]]
    evaluations: list[dict[str, Any]]
    samples: list[tuple[int, Tensor]] = field(repr=False)
    coverage: ModeCoverage
    frechet: float
    seconds: float


def _sample(generator: nn.Module, z: Tensor) -> Tensor:
    """Samples for ``z`` (drawn on the CPU), computed where the generator is, returned on the CPU."""
    was_training = generator.training
    device = next((p.device for p in generator.parameters()), torch.device("cpu"))
    generator.eval()
    with torch.no_grad():
        out = torch.cat([generator(chunk.to(device)).cpu() for chunk in z.split(512)])
    generator.train(was_training)
    return out


def train_gan(
    config: GANConfig,
    data: Dataset,
    *,
    monitor: GANMonitor | None = None,
    quiet: bool = False,
    callback: Callable[[int, Tensor], None] | None = None,
    device: str | torch.device = "cpu",
) -> GANResult:
    """Play the GAN game on ``data`` by alternating Adam steps: ``d_steps`` for D, then one for G.

    Per generator step (Goodfellow et al. 2014, Algorithm 1; Gulrajani et al. 2017, Algorithm 1):

    1. ``d_steps`` times: draw real ``x`` and ``z ~ N(0, I)``, and step D on
       :func:`discriminator_loss` (``+ gp_weight ·`` :func:`gradient_penalty` for ``wgan-gp``);
    2. draw ``z`` and step G on :func:`generator_loss`.

    Args:
        config: the :class:`GANConfig`.
        data: real images ``(N, C, H, W)`` in ``[0, 1]`` (labels are not used by the game).
        monitor: a :class:`GANMonitor` for mode coverage and Fréchet distance; without one,
            evaluations record ``covered = -1`` and ``frechet = nan``.
        quiet: no progress bar.
        callback: called as ``callback(step, grid_samples)`` after every evaluation (the CLI
            saves the grid as a PNG).
        device: where the players train. Real batches and ``z`` are drawn on the CPU from the
            seeded generator and moved, so they do not depend on it (WGAN-GP's interpolation
            weights are drawn on ``device`` from a generator seeded with ``seed``). The players
            come back on the CPU.

    Returns:
        A :class:`GANResult`.

    Warns:
        ModeCollapseWarning: when the final samples cover fewer than ``collapse_classes`` classes.
    """
    if not isinstance(config, GANConfig):
        raise ValueError(f"config must be a GANConfig, got {type(config).__name__}")
    if not isinstance(data, Dataset) or len(data.input_shape) != 3:
        raise ValueError("data must be a Dataset of images (N, C, H, W)")
    if len(data) < 2:
        raise ValueError("data must hold at least 2 images")
    from tqdm.auto import tqdm

    # Resolved by GANConfig.__post_init__.
    assert config.d_steps is not None
    assert config.lr is not None
    assert config.betas is not None
    wgan = config.loss == "wgan-gp"
    k = data.num_classes
    collapse = config.collapse_classes if config.collapse_classes is not None else math.ceil(0.7 * k)
    rng = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        gen, disc = build_gan(config.arch, data.input_shape, config.latent_dim)
    target = torch.device(device)
    gen.to(target).train()
    disc.to(target).train()
    gp_rng = rng if target.type == "cpu" else torch.Generator(device=target).manual_seed(config.seed)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    z_grid = torch.randn(100, config.latent_dim, generator=rng)
    z_eval = torch.randn(config.eval_samples, config.latent_dim, generator=rng)
    x_all = data.x.to(target)
    history: list[dict[str, float]] = []
    evaluations: list[dict[str, Any]] = []
    grids: list[tuple[int, Tensor]] = []
    coverage = ModeCoverage(tuple([0] * k), -1, k, config.min_share)
    frechet = math.nan

    def evaluate(step: int) -> None:
        nonlocal coverage, frechet
        grid = _sample(gen, z_grid)
        grids.append((step, grid))
        if monitor is not None:
            samples = _sample(gen, z_eval)
            coverage = monitor.coverage(samples, min_share=config.min_share)
            frechet = monitor.distance(samples)
        evaluations.append(
            {"step": step, "covered": coverage.covered, "frechet": frechet, "counts": list(coverage.counts)}
        )
        logger.info(
            "step %d: %d/%d classes covered, Fréchet distance %.3g", step, coverage.covered, k, frechet
        )
        if callback is not None:
            callback(step, grid)

    start = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc=f"GAN ({config.loss})", disable=quiet, leave=False)
    with torch.enable_grad():
        for step in bar:
            for _ in range(config.d_steps):
                real = x_all[torch.randint(0, len(x_all), (config.batch_size,), generator=rng).to(target)]
                z = torch.randn(config.batch_size, config.latent_dim, generator=rng).to(target)
                with torch.no_grad():
                    fake = gen(z)
                real_scores, fake_scores = disc(real), disc(fake)
                d_loss = discriminator_loss(real_scores, fake_scores, config.loss)
                if wgan and config.gp_weight > 0:
                    d_loss = d_loss + config.gp_weight * gradient_penalty(disc, real, fake, generator=gp_rng)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            z = torch.randn(config.batch_size, config.latent_dim, generator=rng).to(target)
            g_loss = generator_loss(disc(gen(z)), config.loss)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            if step % config.log_every == 0 or step == config.steps:
                real_d = real_scores.detach() if wgan else torch.sigmoid(real_scores.detach())
                fake_d = fake_scores.detach() if wgan else torch.sigmoid(fake_scores.detach())
                record = {
                    "step": float(step),
                    "d_loss": float(d_loss.detach()),
                    "g_loss": float(g_loss.detach()),
                    "d_real": float(real_d.mean()),
                    "d_fake": float(fake_d.mean()),
                }
                history.append(record)
                bar.set_postfix(d=f"{record['d_real']:.2f}/{record['d_fake']:.2f}", refresh=False)
            if step % config.eval_every == 0 or step == config.steps:
                evaluate(step)
    bar.close()
    gen.cpu().eval()
    disc.cpu().eval()
    if monitor is not None and coverage.covered < collapse:
        warnings.warn(
            f"mode collapse: the generator's samples cover {coverage.covered} of {k} classes (a class "
            f"counts when it gets at least {config.min_share:g} of its fair share); try more steps, "
            "the non-saturating or WGAN-GP loss, or a lower learning rate",
            ModeCollapseWarning,
            stacklevel=2,
        )
    return GANResult(
        config=config,
        generator=gen,
        discriminator=disc,
        history=history,
        evaluations=evaluations,
        samples=grids,
        coverage=coverage,
        frechet=frechet,
        seconds=time.perf_counter() - start,
    )


def config_dict(config: GANConfig) -> dict[str, Any]:
    """The resolved config as plain values (``None`` entries dropped), for TOML and JSON."""
    return {
        key: (list(value) if isinstance(value, tuple) else value)
        for key, value in asdict(config).items()
        if value is not None
    }


__all__ = ["GANConfig", "GANResult", "config_dict", "train_gan"]
