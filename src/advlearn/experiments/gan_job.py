"""The run behind ``advlearn gan``: train a GAN, monitor it, and write its run folder."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from advlearn._checks import check_positive_int
from advlearn._io import atomic_write_text
from advlearn.checkpoint import save_model
from advlearn.data import DataSplit, digits, mnist5k
from advlearn.experiments._run_folder import _jsonl, _run_dir, _toml
from advlearn.games.gan import GANConfig, GANMonitor, GANResult, ModeCollapseWarning, config_dict, train_gan
from advlearn.models.loading import resolve_device
from advlearn.report import page as _report

GAN_DATA: tuple[str, ...] = ("digits", "mnist5k")
"""Datasets ``run_gan`` trains on: scikit-learn's 8×8 digits or the 28×28 MNIST-5k."""


@dataclass(frozen=True)
class GANRun:
    """What :func:`run_gan` returns: the folder it wrote, the pages in it, and the measurements.

    Attributes:
        run_dir: ``out_dir/name``.
        html: its ``report.html``.
        markdown: its ``report.md``.
        result: the :class:`~advlearn.games.gan.GANResult`.
        monitor_accuracy: test accuracy of the classifier that labels the samples.
        real_frechet: the Fréchet distance between real training and real test images in the same
            feature space: the floor a perfect generator would reach with this many samples.
        seconds: wall time of the whole run.
    """

    run_dir: Path
    html: Path
    markdown: Path
    result: GANResult
    monitor_accuracy: float
    real_frechet: float
    seconds: float


def _gan_data(data: str) -> DataSplit:
    if data == "digits":
        return digits()
    if data == "mnist5k":
        return mnist5k()
    raise ValueError(f"data must be one of {', '.join(GAN_DATA)}, got {data!r}")


def _plot_gan_curves(result: GANResult) -> bytes:
    history = result.history
    steps = [r["step"] for r in history]
    wgan = result.config.loss == "wgan-gp"
    fig = _report.figure(10, 3.2)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot(steps, [r["d_loss"] for r in history], label="D loss", lw=1)
    ax1.plot(steps, [r["g_loss"] for r in history], label="G loss", lw=1)
    ax1.set_xlabel("generator step")
    ax1.set_title("losses")
    ax1.legend()
    ax2.plot(steps, [r["d_real"] for r in history], label="D(x), real", lw=1)
    ax2.plot(steps, [r["d_fake"] for r in history], label="D(G(z)), generated", lw=1)
    if not wgan:
        ax2.axhline(0.5, color="grey", ls="--", lw=1, label="½ (the optimum)")
        ax2.set_ylim(0, 1)
    ax2.set_xlabel("generator step")
    ax2.set_title("critic values" if wgan else "discriminator outputs")
    ax2.legend()
    evals = result.evaluations
    ax3.plot([r["step"] for r in evals], [r["frechet"] for r in evals], "o-", color="C3")
    ax3.set_xlabel("generator step")
    ax3.set_title("Fréchet distance (lower is better)")
    ax3b = ax3.twinx()
    ax3b.plot([r["step"] for r in evals], [r["covered"] for r in evals], "s--", color="C2")
    ax3b.set_ylim(0, result.coverage.num_classes + 0.5)
    ax3b.set_ylabel("classes covered", color="C2")
    return _report.png(fig)


def _plot_coverage(result: GANResult, real_counts: list[int]) -> bytes:
    cov = result.coverage
    k = cov.num_classes
    fig = _report.figure(6, 3)
    ax = fig.add_subplot()
    positions = np.arange(k)
    real_share = np.asarray(real_counts, dtype=np.float64) / max(1, sum(real_counts))
    ax.bar(positions - 0.2, real_share, width=0.4, label="real test images", color="#90a4ae")
    ax.bar(positions + 0.2, cov.fractions, width=0.4, label="generated samples", color="C0")
    ax.axhline(cov.min_share / k, color="C3", ls=":", lw=1, label="coverage threshold")
    ax.set_xticks(positions)
    ax.set_xlabel("class (by the monitor classifier)")
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    return _report.png(fig)


def run_gan(
    config: GANConfig,
    *,
    data: str = "digits",
    name: str | None = None,
    out_dir: str | Path = "runs",
    monitor_epochs: int = 8,
    quiet: bool = False,
    device: str | torch.device = "cpu",
) -> GANRun:
    """Train a GAN with :func:`~advlearn.games.gan.train_gan` and write its run folder.

    Writes ``config.toml``, ``metrics.jsonl`` (a ``step`` record every ``log_every`` steps and an
    ``eval`` record per evaluation), ``generator.safetensors`` / ``.json``,
    ``discriminator.safetensors`` / ``.json``,
    ``samples/step_<N>.png`` at every evaluation, ``samples.png`` (the last grid), ``real.png``,
    ``curves.png``, ``coverage.png``, ``report.md`` and ``report.html``.

    Args:
        config: the game's settings.
        data: one of :data:`GAN_DATA`.
        name: the run folder's name (default ``gan-<data>-<loss>``).
        out_dir: where run folders go.
        monitor_epochs: training epochs of the monitor classifier.
        device: where the players train: ``"cpu"`` (default), ``"auto"``, ``"cuda[:N]"``, ``"mps"``.
        quiet: no progress bars.

    Returns:
        A :class:`GANRun`.

    Raises:
        ValueError: for unknown data, a bad name, or a bad config.
    """
    start = time.perf_counter()
    split = _gan_data(data)
    check_positive_int("monitor_epochs", monitor_epochs)
    run_dir = _run_dir(out_dir, name or f"gan-{data}-{config.loss}")
    resolved = {"data": data, "monitor_epochs": monitor_epochs, **config_dict(config)}
    atomic_write_text(run_dir / "config.toml", _toml(resolved))
    monitor = GANMonitor(split.train, split.test, epochs=monitor_epochs, seed=config.seed)
    real_frechet = monitor.distance(split.train.x)

    def save_grid(step: int, grid: Tensor) -> None:
        _report_grid = _report.grid_png(grid, 10, f"step {step}")
        (run_dir / "samples").mkdir(exist_ok=True)
        from advlearn._io import atomic_write_bytes

        atomic_write_bytes(run_dir / "samples" / f"step_{step:06d}.png", _report_grid)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModeCollapseWarning)
        result = train_gan(
            config,
            split.train,
            monitor=monitor,
            quiet=quiet,
            callback=save_grid,
            device=resolve_device(device),
        )
    collapse = [str(w.message) for w in caught if issubclass(w.category, ModeCollapseWarning)]
    for message in collapse:  # pass it on to the caller as well
        warnings.warn(message, ModeCollapseWarning, stacklevel=2)

    records = [{"kind": "step", **r} for r in result.history]
    records += [{"kind": "eval", **r} for r in result.evaluations]
    atomic_write_text(run_dir / "metrics.jsonl", _jsonl(records))
    # Through advlearn.checkpoint, so that load_model(run_dir, stem="generator") rebuilds them.
    image_shape, meta = split.train.input_shape, {"game": "gan", "data": data, "loss": config.loss}
    generator_options = {"latent_dim": config.latent_dim, "image_shape": image_shape, "arch": config.arch}
    discriminator_options = {"image_shape": image_shape, "arch": config.arch}
    save_model(
        run_dir,
        result.generator,
        name="gan_generator",
        options=generator_options,
        metadata=meta,
        stem="generator",
    )
    save_model(
        run_dir,
        result.discriminator,
        name="gan_discriminator",
        options=discriminator_options,
        metadata=meta,
        stem="discriminator",
    )

    k = split.num_classes
    cov = result.coverage
    real_counts = torch.bincount(split.test.y, minlength=k).tolist()
    shape = "×".join(str(s) for s in split.train.input_shape[1:])
    summary = (
        f"{'An MLP' if config.arch == 'mlp' else 'A DCGAN-style'} GAN with the {config.loss} loss, "
        f"trained for {config.steps} generator "
        f"steps ({config.d_steps} discriminator step{'s' if config.d_steps != 1 else ''} each, batch "
        f"{config.batch_size}) "
        f"on {len(split.train)} {shape} images of {data}, in {result.seconds:.0f} s. Its last "
        f"{config.eval_samples} samples cover {cov.covered} of {k} classes and lie at Fréchet distance "
        f"{result.frechet:.3g} from the real test images (real training images: {real_frechet:.3g})."
    )
    table = [["generator step", "classes covered", "Fréchet distance"]]
    table += [[str(r["step"]), f"{r['covered']}/{k}", f"{r['frechet']:.3g}"] for r in result.evaluations]
    last = result.history[-1]
    d_label = "critic" if config.loss == "wgan-gp" else "D"
    sections = [
        _report.Section(
            "Samples",
            [f"100 samples from a fixed set of z after {config.steps} steps; real images for comparison."],
            figures=[
                (
                    "samples.png",
                    f"generated samples, step {config.steps}",
                    _report.grid_png(result.samples[-1][1], 10),
                ),
                ("real.png", f"real {data} training images", _report.grid_png(split.train.x[:100], 10)),
            ],
        ),
        _report.Section(
            "Training curves",
            [
                "At the game's optimum p_g = p_data and D ≡ ½ (eq. 62.4). At the last record, mean "
                f"{d_label}(x) = {last['d_real']:.3f} on real and {last['d_fake']:.3f} on generated images"
                + (" (raw critic values: WGAN-GP has no ½ target)." if config.loss == "wgan-gp" else ".")
            ],
            figures=[
                (
                    "curves.png",
                    "losses, discriminator outputs, Fréchet distance and coverage",
                    _plot_gan_curves(result),
                )
            ],
        ),
        _report.Section(
            "Mode coverage and Fréchet distance",
            [
                "A small CNN trained on the real training images (test accuracy "
                f"{monitor.accuracy:.1%}) labels {config.eval_samples} samples. A class counts as covered "
                "when it holds at least "
                f"{config.min_share:g} × 1/{k} of the samples. The Fréchet distance is computed between "
                "Gaussians fitted to the CNN's 128-d penultimate features (the FID recipe in a small "
                f"classifier's feature space), against the {len(split.test)} real test images.",
            ],
            table=table,
            figures=[
                ("coverage.png", "class histogram of the final samples", _plot_coverage(result, real_counts))
            ],
        ),
    ]
    html, md = _report.write_page(run_dir, f"GAN on {data} ({config.loss})", summary, sections, collapse)
    return GANRun(run_dir, html, md, result, monitor.accuracy, real_frechet, time.perf_counter() - start)


__all__ = ["GAN_DATA", "GANRun", "run_gan"]
