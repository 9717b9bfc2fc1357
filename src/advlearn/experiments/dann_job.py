"""The run behind ``advlearn dann``: source-only versus DANN on MNIST-5k → MNIST-M style."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from advlearn._checks import check_positive_int
from advlearn._io import atomic_write_text
from advlearn.checkpoint import save_model
from advlearn.data import DataSplit, mnist5k, mnist_m_style
from advlearn.experiments._run_folder import _jsonl, _run_dir, _toml
from advlearn.games.dann import (
    DANN,
    DANNHistory,
    accuracy,
    adapt_batchnorm,
    as_rgb,
    features,
    train_dann,
)
from advlearn.models.loading import resolve_device
from advlearn.report import page as _report

# Reported by Ganin et al. (2016), Table 2, MNIST → MNIST-M.
PAPER_SOURCE_ONLY, PAPER_DANN = 0.5225, 0.7666


@dataclass(frozen=True)
class DANNConfig:
    """Settings of :func:`run_dann`.

    Args:
        epochs: passes over the 4,000 source images, for each of the two models.
        batch_size: source (and target) images per step.
        lr: the learning rate (Adam's; SGD's before annealing).
        optimizer: ``"adam"`` (constant rate) or ``"sgd"`` (Ganin et al.'s momentum 0.9 and
            annealing; use it with ``lr=0.01``), see :func:`~advlearn.games.dann.train_dann`.
        gamma: ``γ`` of the λ schedule.
        batchnorm: domain-specific batch normalization after each convolution of both networks
            (:class:`~advlearn.games.dann.DomainBatchNorm2d`); the source-only network never sees
            a target image, so it scores the target through its source statistics, and also
            after AdaBN (:func:`~advlearn.games.dann.adapt_batchnorm`: target statistics from
            the unlabelled target training images), the fair baseline for this network.
        domain_hidden: hidden widths of the domain classifier (``(100,)``, the paper's MNIST
            head; ``(1024, 1024)`` the larger head, about 1.35× the DANN training time).
        seed: seeds both models' initialization (the same for both), batches and the target set.
        embed_examples: source and target test images in the embedding plot (each).
        max_examples: use only the first this many training and test images of each domain
            (``None``: all 4,000 + 1,000 of each); for smoke tests.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    gamma: float = 10.0
    batchnorm: bool = False
    domain_hidden: tuple[int, ...] = (100,)
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
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not isinstance(self.batchnorm, bool):
            raise ValueError(f"batchnorm must be True or False, got {self.batchnorm!r}")
        DANN(domain_hidden=self.domain_hidden)  # checks the widths by name (cheap: no training)
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
            ``domain_separability`` (held-out accuracy of a linear domain classifier on its
            features), ``seconds``; with ``batchnorm`` also ``target_acc_adabn`` (after AdaBN).
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
    device: str | torch.device = "cpu",
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
        device: where both networks train: ``"cpu"`` (default), ``"auto"``, ``"cuda[:N]"``, ``"mps"``.

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
            model = DANN(batchnorm=config.batchnorm, domain_hidden=config.domain_hidden)
        history = train_dann(
            model,
            source.train,
            target.train.x,
            adapt=adapt,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            optimizer="sgd" if config.optimizer == "sgd" else "adam",
            gamma=config.gamma,
            seed=config.seed,
            source_test=source.test,
            target_test=target.test,
            quiet=quiet,
            device=resolve_device(device),
            desc=label,
        )
        histories[label] = history
        fs, ft = features(model, source.test.x), features(model, target.test.x, domain="target")
        finals[label] = {
            "source_acc": history.records[-1]["source_acc"],
            "target_acc": history.records[-1]["target_acc"],
            "domain_separability": _domain_separability(fs, ft, config.seed),
            "seconds": history.seconds,
        }
        if not adapt and adapt_batchnorm(model, target.train.x):  # the source-only net, target statistics
            finals[label]["target_acc_adabn"] = accuracy(model, target.test.x, target.test.y, domain="target")
        embeds.append((f"{label}: target acc {finals[label]['target_acc']:.1%}", fs[:n_embed], ft[:n_embed]))
        save_model(
            run_dir,
            model,
            name="dann",
            options={
                "in_channels": 3,
                "num_classes": 10,
                "batchnorm": config.batchnorm,
                "domain_hidden": list(config.domain_hidden),
            },
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
        if "target_acc_adabn" in m:  # the same network, target statistics from the unlabelled target set
            table.append(
                [f"{label} + AdaBN", f"{m['source_acc']:.1%}", f"{m['target_acc_adabn']:.1%}", "", ""]
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


__all__ = ["PAPER_DANN", "PAPER_SOURCE_ONLY", "DANNConfig", "DANNRun", "run_dann"]
