"""The runs behind ``advlearn gan`` and ``advlearn dann``: train, measure, and write ``runs/<name>/``.

Each run folder holds ``config.toml`` (as resolved), ``metrics.jsonl``, the trained networks
(``<stem>.safetensors`` and ``<stem>.json``, written by :func:`advlearn.checkpoint.save_model`, so
``load_model(run_dir, stem=...)`` rebuilds them), PNG figures, and ``report.md`` /
``report.html`` (self-contained).
"""

from advlearn.experiments.dann_job import PAPER_DANN, PAPER_SOURCE_ONLY, DANNConfig, DANNRun, run_dann
from advlearn.experiments.gan_job import GAN_DATA, GANRun, run_gan

__all__ = [
    "GAN_DATA",
    "PAPER_DANN",
    "PAPER_SOURCE_ONLY",
    "DANNConfig",
    "DANNRun",
    "GANRun",
    "run_dann",
    "run_gan",
]
