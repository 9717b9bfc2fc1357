"""The runs behind ``advlearn gan`` and ``advlearn dann``: train, measure, and write ``runs/<name>/``.

Each run folder holds ``config.toml`` (as resolved), ``metrics.jsonl``, the trained networks
(``<stem>.safetensors`` and ``<stem>.json``, written by :func:`advlearn.checkpoint.save_model`, so
``load_model(run_dir, stem=...)`` rebuilds them), PNG figures, and ``report.md`` /
``report.html`` (self-contained).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from advlearn._checks import check_positive_int
from advlearn._io import atomic_write_text
from advlearn.checkpoint import save_model
from advlearn.data import DataSplit, digits, mnist5k, mnist_m_style
from advlearn.games import _report
from advlearn.games.dann import DANN, DANNHistory, as_rgb, features, train_dann
from advlearn.games.gan import GANConfig, GANMonitor, GANResult, ModeCollapseWarning, config_dict, train_gan

__all__ = ["GAN_DATA", "DANNConfig", "DANNRun", "GANRun", "run_dann", "run_gan"]

GAN_DATA: tuple[str, ...] = ("digits", "mnist5k")
"""Datasets ``run_gan`` trains on: scikit-learn's 8×8 digits or the 28×28 MNIST-5k."""

# Reported by Ganin et al. (2016), Table 2, MNIST → MNIST-M.
PAPER_SOURCE_ONLY, PAPER_DANN = 0.5225, 0.7666


def _run_dir(out_dir: str | Path, name: str) -> Path:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"name must be a folder name without slashes, got {name!r}")
    path = Path(out_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def _jsonl(records: list[dict[str, Any]]) -> str:
    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return "".join(json.dumps({k: clean(v) for k, v in r.items()}) + "\n" for r in records)


# ----------------------------------------------------------------------------- GAN


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
        result = train_gan(config, split.train, monitor=monitor, quiet=quiet, callback=save_grid)
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


# ----------------------------------------------------------------------------- DANN


@dataclass(frozen=True)
class DANNConfig:
    """Settings of :func:`run_dann`.

    Args:
        epochs: passes over the 4,000 source images, for each of the two models.
        batch_size: source (and target) images per step.
        lr: Adam's learning rate.
        gamma: ``γ`` of the λ schedule.
        seed: seeds both models' initialization (the same for both), batches and the target set.
        embed_examples: source and target test images in the embedding plot (each).
        max_examples: use only the first this many training and test images of each domain
            (``None``: all 4,000 + 1,000 of each); for smoke tests.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    gamma: float = 10.0
    seed: int = 0
    embed_examples: int = 500
    max_examples: int | None = None

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "embed_examples"):
            check_positive_int(key, getattr(self, key))
        if self.max_examples is not None:
            check_positive_int("max_examples", self.max_examples, minimum=self.batch_size)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class DANNRun:
    """What :func:`run_dann` returns.

    Attributes:
        run_dir: ``out_dir/name``.
        html: its ``report.html``.
        markdown: its ``report.md``.
        source_only: final metrics of the source-only model: ``source_acc``, ``target_acc``,
            ``domain_separability`` (held-out accuracy of a linear domain classifier on its features).
        dann: the same for the DANN model.
        histories: the two :class:`~advlearn.games.dann.DANNHistory`, by label.
        seconds: wall time of the whole run.
    """

    run_dir: Path
    html: Path
    markdown: Path
    source_only: dict[str, float]
    dann: dict[str, float]
    histories: dict[str, DANNHistory]
    seconds: float


def _domain_separability(source_features: Tensor, target_features: Tensor, seed: int) -> float:
    """Held-out accuracy of a logistic regression telling target features from source features.

    0.5 means the feature distributions look alike to a linear probe; 1.0 means they are apart.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import StandardScaler

    x = torch.cat([source_features, target_features]).double().numpy()
    y = np.r_[np.zeros(len(source_features)), np.ones(len(target_features))]
    x = StandardScaler().fit_transform(x)
    probe = LogisticRegression(C=0.1, max_iter=2000)
    order = np.random.RandomState(seed).permutation(len(y))
    return float(cross_val_score(probe, x[order], y[order], cv=2).mean())


def _plot_embedding(panels: list[tuple[str, Tensor, Tensor]]) -> bytes:
    from sklearn.decomposition import PCA

    fig = _report.figure(10, 4.4)
    axes = fig.subplots(1, len(panels))
    for ax, (title, fs, ft) in zip(axes, panels, strict=True):
        both = torch.cat([fs, ft]).double().numpy()
        xy = PCA(n_components=2, random_state=0).fit_transform(both)
        n = len(fs)
        ax.scatter(xy[:n, 0], xy[:n, 1], s=5, alpha=0.5, label="source (MNIST)", color="C0")
        ax.scatter(xy[n:, 0], xy[n:, 1], s=5, alpha=0.5, label="target (MNIST-M style)", color="C3")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8, markerscale=3)
    return _report.png(fig)


def _plot_dann_curves(histories: dict[str, DANNHistory]) -> bytes:
    fig = _report.figure(10, 3.2)
    ax1, ax2 = fig.subplots(1, 2)
    for i, (label, history) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in history.records]
        ax1.plot(
            epochs, [r["target_acc"] for r in history.records], "o-", color=f"C{i}", label=f"{label}: target"
        )
        ax1.plot(
            epochs, [r["source_acc"] for r in history.records], "s:", color=f"C{i}", label=f"{label}: source"
        )
    ax1.axhline(PAPER_SOURCE_ONLY, color="grey", ls="--", lw=0.8)
    ax1.axhline(PAPER_DANN, color="grey", ls="-.", lw=0.8)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test accuracy")
    ax1.set_ylim(0, 1)
    ax1.set_title("accuracy (grey: Ganin et al. on real MNIST-M)", fontsize=9)
    ax1.legend(fontsize=7)
    dann = histories.get("DANN")
    if dann is not None:
        epochs = [r["epoch"] for r in dann.records]
        ax2.plot(
            epochs,
            [r["domain_acc"] for r in dann.records],
            "o-",
            color="C1",
            label="domain classifier accuracy",
        )
        ax2.plot(epochs, [r["lambd"] for r in dann.records], "^--", color="C2", label="λ at epoch end")
        ax2.axhline(0.5, color="grey", ls=":", lw=0.8)
        ax2.set_ylim(0, 1.05)
        ax2.set_xlabel("epoch")
        ax2.set_title("the domain game (½ = features indistinguishable)", fontsize=9)
        ax2.legend(fontsize=7)
    return _report.png(fig)


def run_dann(
    config: DANNConfig,
    *,
    name: str | None = None,
    out_dir: str | Path = "runs",
    quiet: bool = False,
) -> DANNRun:
    """Source-only vs DANN on MNIST-5k → MNIST-M style (:func:`advlearn.data.mnist_m_style`).

    Trains two :class:`~advlearn.games.dann.DANN` networks from the same initialization with
    the same batches: one on the source labels only, one with the domain classifier behind the
    reversal layer on the unlabelled target training images. Both are scored on the held-out
    source and target test images, and a linear probe measures how separable the two domains
    are in each one's feature space. Writes ``config.toml``, ``metrics.jsonl``,
    ``source_only.safetensors`` / ``.json``, ``dann.safetensors`` / ``.json``, ``examples.png``,
    ``curves.png``,
    ``embedding.png`` (PCA of source and target features, before and after adaptation),
    ``report.md`` and ``report.html``.

    Args:
        config: the :class:`DANNConfig`.
        name: the run folder's name (default ``dann-seed<seed>``).
        out_dir: where run folders go.
        quiet: no progress bars.

    Returns:
        A :class:`DANNRun`.
    """
    if not isinstance(config, DANNConfig):
        raise ValueError(f"config must be a DANNConfig, got {type(config).__name__}")
    start = time.perf_counter()
    run_dir = _run_dir(out_dir, name or f"dann-seed{config.seed}")
    settings = {k: v for k, v in asdict(config).items() if v is not None}
    atomic_write_text(run_dir / "config.toml", _toml({"task": "mnist5k -> mnist_m_style", **settings}))
    source, target = mnist5k(), mnist_m_style(seed=config.seed)
    if config.max_examples is not None:
        n = config.max_examples
        source = DataSplit(source.train.subset(min(n, 4000)), source.test.subset(min(n, 1000)))
        target = DataSplit(target.train.subset(min(n, 4000)), target.test.subset(min(n, 1000)))
    histories: dict[str, DANNHistory] = {}
    finals: dict[str, dict[str, float]] = {}
    embeds: list[tuple[str, Tensor, Tensor]] = []
    n_embed = min(config.embed_examples, len(source.test), len(target.test))
    for label, adapt in (("source only", False), ("DANN", True)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = DANN()
        history = train_dann(
            model,
            source.train,
            target.train.x,
            adapt=adapt,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            gamma=config.gamma,
            seed=config.seed,
            source_test=source.test,
            target_test=target.test,
            quiet=quiet,
            desc=label,
        )
        histories[label] = history
        fs, ft = features(model, source.test.x), features(model, target.test.x)
        finals[label] = {
            "source_acc": history.records[-1]["source_acc"],
            "target_acc": history.records[-1]["target_acc"],
            "domain_separability": _domain_separability(fs, ft, config.seed),
            "seconds": history.seconds,
        }
        embeds.append((f"{label}: target acc {finals[label]['target_acc']:.1%}", fs[:n_embed], ft[:n_embed]))
        save_model(
            run_dir,
            model,
            name="dann",
            options={"in_channels": 3, "num_classes": 10},
            metadata={"game": "dann", "adapt": adapt, "epochs": config.epochs, **finals[label]},
            stem=label.replace(" ", "_").lower(),
        )
    records = [{"model": label, **r} for label, h in histories.items() for r in h.records]
    records += [{"model": label, "final": True, **m} for label, m in finals.items()]
    atomic_write_text(run_dir / "metrics.jsonl", _jsonl(records))

    so, da = finals["source only"], finals["DANN"]
    summary = (
        f"Source: {len(source.train)} MNIST-5k digits with labels. Target: {len(target.train)} MNIST-M style "
        f"images (the same kind of digits blended with scikit-image photo patches), without labels. "
        f"After {config.epochs} epochs, target test accuracy is {so['target_acc']:.1%} for the source-only "
        f"network and {da['target_acc']:.1%} with DANN ({da['target_acc'] - so['target_acc']:+.1%}); "
        f"Ganin et al. (2016) report {PAPER_SOURCE_ONLY:.2%} → {PAPER_DANN:.2%} on the real MNIST-M."
    )
    table = [["model", "source test acc", "target test acc", "domain separability", "train time"]]
    for label, m in finals.items():
        table.append(
            [
                label,
                f"{m['source_acc']:.1%}",
                f"{m['target_acc']:.1%}",
                f"{m['domain_separability']:.1%}",
                f"{m['seconds']:.0f} s",
            ]
        )
    k = 12
    examples = torch.cat([as_rgb(source.test.x[:k]), target.test.x[:k]])
    sections = [
        _report.Section(
            "Results",
            [
                f"Scored on {len(source.test)} held-out source and {len(target.test)} held-out target images "
                "(digits neither model saw). Target labels are used for scoring only. Domain separability is "
                "the held-out accuracy of a logistic regression telling target from source features "
                "(50% = indistinguishable)."
            ],
            table=table,
        ),
        _report.Section(
            "The two domains",
            [],
            figures=[
                (
                    "examples.png",
                    "top: source test digits; bottom: the same digits in the target domain",
                    _report.grid_png(examples, k),
                )
            ],
        ),
        _report.Section(
            "Training",
            [],
            figures=[
                (
                    "curves.png",
                    "test accuracy per epoch, and the domain classifier's accuracy under DANN",
                    _plot_dann_curves(histories),
                )
            ],
        ),
        _report.Section(
            "Feature embeddings",
            [
                f"PCA of the {n_embed} source and {n_embed} target test images' 768-d features, for each "
                f"model. A linear probe tells the domains apart with {so['domain_separability']:.1%} "
                f"held-out accuracy in the source-only features and {da['domain_separability']:.1%} in "
                "DANN's (50% would mean the two domains are indistinguishable)."
            ],
            figures=[
                (
                    "embedding.png",
                    "2-D PCA of the features, before (source only) and after (DANN) adaptation",
                    _plot_embedding(embeds),
                )
            ],
        ),
    ]
    html, md = _report.write_page(run_dir, "DANN: MNIST-5k → MNIST-M style", summary, sections)
    return DANNRun(run_dir, html, md, so, da, histories, time.perf_counter() - start)
