"""One Trainer for every objective: the outer loop of min_θ E[max_δ L(θ, x + δ, y)].

It owns what every method shares (device placement, the learning-rate
schedule, per-epoch validation under attack, early stopping with the best
weights restored, metrics, the objective's per-run state, atomic checkpoints
and exact resume) and leaves what differs between methods to the
:class:`Objective`, which holds hyper-parameters only.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlearn import _distributed as dist
from advlearn._io import atomic_torch_save, atomic_write_text, safe_torch_load
from advlearn._precision import check_precision, fast_model, to_memory_format
from advlearn.attacks import Attack
from advlearn.training import distributed as ddp
from advlearn.training.objectives import Objective, RunState
from advlearn.training.optim import Schedule
from advlearn.training.optim import lr_schedule as lr_schedule  # re-exported for advlearn.training

logger = logging.getLogger(__name__)

Batches = Iterable[tuple[Tensor, Tensor]]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


# ----------------------------------------------------------------------------- RNG state


def _rng_state() -> dict[str, Any]:
    np_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))  # noqa: NPY002 (the global state is what we restore)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeds the legacy global RNG users rely on)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- trainer

#: what every ``train_state.pt`` holds (``objective_state`` is optional: older files lack it)
_STATE_KEYS: tuple[str, ...] = ("epochs_done", "model", "optimizer", "rng", "records", "best_epoch")
_STATE_KEYS += ("best_metric", "best_state", "bad_epochs", "stopped_early")


def _cycle(loader: Iterable[Any]) -> Iterator[Tensor]:
    """Unlabeled inputs forever: ``x`` from each batch (``x`` or ``(x, ...)``), restarting the loader."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch[0] if isinstance(batch, (tuple, list)) else batch
        if empty:
            raise ValueError("unlabeled_loader yields no batches")


@dataclass
class History:
    """What :meth:`Trainer.fit` did: one record per epoch, and the early-stopping outcome."""

    records: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False

    def column(self, key: str) -> list[float]:
        """The values of ``key`` over the epochs that recorded it."""
        return [r[key] for r in self.records if key in r]


class Trainer:
    """Runs any :class:`Objective` over epochs.

    Args:
        model: the network; moved to ``device``.
        objective: what each step minimizes.
        optimizer: built on ``model.parameters()``; its learning rates are the
            base rates the schedule multiplies.
        schedule: a name for :func:`lr_schedule` or a function of progress ``p ∈ [0, 1)``.
        val_attack: attack for the per-epoch robust validation accuracy (use
            ``early_stop=True`` for speed); ``None`` validates clean accuracy only.
        early_stopping: patience in epochs. Training stops when the validation
            metric (robust accuracy under ``val_attack``, else clean accuracy) has
            not improved for that many epochs, and the best weights are restored
            (Goodfellow et al. 2015's protocol on the adversarial validation error).
        run_dir: where ``metrics.jsonl`` and the training state
            ``train_state.pt`` go (written atomically every epoch); ``None`` keeps
            everything in memory and disables ``resume``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        seed: seeds Python, NumPy and torch when a fit starts fresh (rank ``r`` of a
            torchrun job: ``seed + r``); ``None`` leaves them.
        quiet: no progress bars.
        sync_batchnorm: under torchrun, BatchNorm statistics of the global batch
            (:func:`~advlearn.training.distributed.wrap_model`; CUDA only).
        precision: ``"32"``, ``"bf16"`` or ``"fp16"``: every forward pass (the objective's, its
            attack's, validation's) runs under ``torch.autocast`` in that dtype; weights,
            optimizer state and the attacks' perturbations stay float32. ``"fp16"`` scales the
            loss with a :class:`torch.amp.GradScaler` (checkpointed), so it needs an objective
            that uses the default :meth:`~Objective.train_step`; ``"bf16"`` needs no scaler
            and works with every objective. bf16 runs on CPU too.
        memory_format: ``"channels_last"`` converts the weights and each 4-D batch once.
        compile: run the forward passes through ``torch.compile`` (batch dimension dynamic);
            a warning and the eager model where compiling is unavailable or fails.

    Under ``torchrun`` (several ranks) the Trainer runs DistributedDataParallel
    (:mod:`advlearn.training.distributed`): each rank trains on its shard of every
    global batch, rank 0 alone writes ``run_dir`` and shows the bars.

    Example:
        >>> from advlearn.training import Standard
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(2, 2)
        >>> x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
        >>> loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
        >>> trainer = Trainer(model, Standard(), torch.optim.SGD(model.parameters(), lr=0.1), quiet=True)
        >>> len(trainer.fit(loader, epochs=3).records)
        3
    """

    STATE_FILE = "train_state.pt"
    METRICS_FILE = "metrics.jsonl"

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        *,
        schedule: str | Schedule = "constant",
        val_attack: Attack | None = None,
        early_stopping: int | None = None,
        run_dir: str | Path | None = None,
        device: str | torch.device = "auto",
        seed: int | None = 0,
        quiet: bool = False,
        sync_batchnorm: bool = False,
        precision: str = "32",
        memory_format: str = "contiguous",
        compile: bool = False,
    ) -> None:
        if early_stopping is not None and (isinstance(early_stopping, bool) or early_stopping < 1):
            raise ValueError(f"early_stopping must be a patience >= 1 epochs or None, got {early_stopping!r}")
        dist.init_from_env(device)
        self.device = dist.local_device(resolve_device(device))
        self.model = model.to(self.device)
        check_precision(precision, self.device)
        if precision == "fp16" and type(objective).train_step is not Objective.train_step:
            raise ValueError(
                f"precision='fp16' scales the loss with a GradScaler, which {type(objective).__name__}'s "
                "own train_step does not do; use precision='bf16' (no scaler needed) or '32'"
            )
        ddp_model = ddp.wrap_model(self.model, self.device, sync_batchnorm=sync_batchnorm)
        if ddp_model is not self.model:  # SyncBatchNorm may have replaced the model
            self.model = cast(nn.Module, ddp_model.module)
        #: the model every forward pass of validation and end_epoch goes through: ``model`` under
        #: autocast / channels_last / compile
        self.net = fast_model(self.model, precision=precision, memory_format=memory_format, compile=compile)
        #: what train steps call: ``net``, under DDP when several ranks run
        self.train_net = (
            self.net
            if ddp_model is self.model
            else fast_model(ddp_model, precision=precision, memory_format=memory_format, compile=compile)
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.objective = objective
        self.optimizer = optimizer
        self.schedule = lr_schedule(schedule) if isinstance(schedule, str) else schedule
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.val_attack = val_attack
        self.early_stopping = early_stopping
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed = seed
        self.quiet = quiet or not dist.is_main()
        self._monitor: tuple[Tensor, Tensor] | None = None
        #: the objective's per-run state (Free-AT's δ): fresh per fit, checkpointed, restored on resume
        self.run_state: RunState = {}

    # ------------------------------------------------------------------ public

    def fit(
        self,
        train_loader: Batches,
        val_loader: Batches | None = None,
        epochs: int = 10,
        *,
        unlabeled_loader: Iterable[Any] | None = None,
        resume: bool = False,
    ) -> History:
        """Train for ``epochs`` epochs (in total, counting those a resumed run already did).

        With ``resume=True`` training continues from ``run_dir/train_state.pt``
        (the end of the last completed epoch) with the weights, optimizer, step,
        RNG states, history and the objective's per-run state (:attr:`run_state`)
        it holds, so a run killed at any point and resumed ends with the same
        weights as one never interrupted; with no state file it starts fresh.

        ``unlabeled_loader`` (semi-supervised runs, objectives with ``uses_unlabeled``
        such as VAT) yields unlabeled batches (``x`` or ``(x, ...)``): one comes along
        with every labeled batch, the loader restarting whenever it runs out.

        After each epoch the objective's :meth:`~Objective.end_epoch` measures its own
        metrics (the catastrophic-overfitting guard of Fast-AT) on a fixed batch: the
        first validation batch, or without a validation loader the first training
        batch of the run (kept in the checkpoint, so a resumed run measures on the same one).
        """
        if unlabeled_loader is not None and not self.objective.uses_unlabeled:
            raise ValueError(
                f"unlabeled_loader given but {type(self.objective).__name__} does not train on "
                "unlabeled data; use an objective such as VAT or drop unlabeled_loader"
            )
        train_loader = ddp.shard_loader(train_loader, 0 if self.seed is None else self.seed)
        if not isinstance(train_loader, Sized):
            raise ValueError("train_loader must have a length (a DataLoader does); the schedule needs it")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        steps_per_epoch = len(train_loader)
        if steps_per_epoch == 0:
            raise ValueError("train_loader yields no batches")
        total_steps = epochs * steps_per_epoch

        history, best_state, bad_epochs, start_epoch = History(), None, 0, 0
        self.run_state = {}
        self._monitor = None  # a resumed run gets back the batch the first part measured on
        if resume:
            loaded = self._load_state()
            if loaded is not None:
                history, best_state, bad_epochs, start_epoch = loaded
                logger.info("resuming at epoch %d of %d", start_epoch + 1, epochs)
        elif self.seed is not None:
            seed_everything(self.seed + dist.rank())
        if self.run_dir is not None and dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if start_epoch == 0:
                self._write_metrics(history)

        unlabeled = _cycle(unlabeled_loader) if unlabeled_loader is not None else None
        for epoch in range(start_epoch, epochs if not history.stopped_early else start_epoch):
            started = time.perf_counter()
            ddp.set_epoch(train_loader, epoch)
            objective = self.objective.at_epoch(epoch, epochs, history.records)
            record: dict[str, float] = {"epoch": epoch + 1}
            record["train_loss"] = self._train_epoch(
                objective, train_loader, unlabeled, epoch, epochs, epoch * steps_per_epoch, total_steps
            )
            record["lr"] = self.optimizer.param_groups[0]["lr"]
            if val_loader is not None:
                record.update(self._validate(val_loader, epoch, epochs))
            record.update(self._end_epoch(objective, history.records))
            record["seconds"] = time.perf_counter() - started
            if dist.active():  # every rank continues from rank 0's record and buffers
                ddp.check_in_sync(self.model, type(objective).__name__)
                dist.broadcast_tensors_(list(self.model.buffers()))
                record = dist.broadcast(record)
            history.records.append(record)

            metric = record.get("val_robust_acc", record.get("val_clean_acc"))
            if metric is not None:
                if history.best_metric is None or metric > history.best_metric:
                    history.best_metric, history.best_epoch, bad_epochs = metric, epoch + 1, 0
                    if self.early_stopping is not None:
                        best_state = copy.deepcopy(self.model.state_dict())
                else:
                    bad_epochs += 1
            if self.early_stopping is not None and bad_epochs >= self.early_stopping:
                history.stopped_early = True
            if dist.is_main():
                self._log(record, epochs)
            if self.run_dir is not None:
                if dist.is_main():
                    self._write_metrics(history)
                self._save_state(epoch + 1, history, best_state, bad_epochs)
            if history.stopped_early:
                break

        if self.early_stopping is not None and best_state is not None:
            self.model.load_state_dict(best_state)
        return history

    # ------------------------------------------------------------------ phases

    def _train_epoch(
        self,
        objective: Objective,
        loader: Batches,
        unlabeled: Iterator[Tensor] | None,
        epoch: int,
        epochs: int,
        step: int,
        total_steps: int,
    ) -> float:
        self.net.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs} train", disable=self.quiet, leave=False)
        for x, y in bar:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            x = to_memory_format(x, self.net)
            if self._monitor is None:
                self._monitor = (x.detach().clone(), y.detach().clone())
            factor = self.schedule(step / total_steps)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * factor
            extra = next(unlabeled).to(self.device, non_blocking=True) if unlabeled is not None else None
            state = self.run_state
            if self.scaler is not None:
                loss = self._scaled_step(objective, x, y, extra)
            else:
                net = self.train_net
                loss = objective.train_step(net, x, y, self.optimizer, unlabeled=extra, state=state)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss} at epoch {epoch + 1}, step {step}")
            total, count, step = total + loss * len(y), count + len(y), step + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        total, examples = dist.all_sum([total, count])  # the mean over the global batch, on every rank
        return total / max(examples, 1)

    def _scaled_step(self, objective: Objective, x: Tensor, y: Tensor, extra: Tensor | None) -> float:
        """:meth:`Objective.train_step` with the loss scaled by :attr:`scaler` (fp16): a step whose
        gradients overflowed is skipped and the scale halved, as :class:`torch.amp.GradScaler` does."""
        assert self.scaler is not None
        self.optimizer.zero_grad(set_to_none=True)
        net = self.train_net
        loss = objective(net, x, y) if extra is None else objective.semi_supervised(net, x, y, extra)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def _validate(self, loader: Batches, epoch: int, epochs: int) -> dict[str, float]:
        was_training = self.model.training
        self.net.eval()
        clean = robust = count = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs} validate", disable=self.quiet, leave=False)
        for index, (x, y) in enumerate(bar):
            if index % dist.world_size() != dist.rank():  # under torchrun, batch b is rank b mod N's
                continue
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            x = to_memory_format(x, self.net)
            if index == dist.rank():  # the fixed held-out batch end_epoch measures on (its own per rank)
                self._monitor = (x, y)
            with torch.no_grad():
                correct = self.net(x).argmax(1) == y
            clean += int(correct.sum())
            if self.val_attack is not None:
                result = self.val_attack.run(self.net, x, y)
                robust += int((correct & ~result.success).sum())
            count += len(y)
        self.net.train(was_training)
        clean, robust, count = (int(v) for v in dist.all_sum([clean, robust, count]))
        out = {"val_clean_acc": clean / max(count, 1)}
        if self.val_attack is not None:
            out["val_robust_acc"] = robust / max(count, 1)
        return out

    def _end_epoch(self, objective: Objective, records: list[dict[str, float]]) -> dict[str, float]:
        if self._monitor is None:
            return {}
        was_training = self.model.training
        self.net.eval()
        try:
            return objective.end_epoch(self.net, *self._monitor, records)
        finally:
            self.net.train(was_training)

    def _log(self, record: dict[str, float], epochs: int) -> None:
        parts = [f"epoch {int(record['epoch'])}/{epochs}", f"loss {record['train_loss']:.4f}"]
        parts += [f"{k} {record[k]:.2%}" for k in ("val_clean_acc", "val_robust_acc") if k in record]
        parts.append(f"{record['seconds']:.1f}s")
        logger.info(" | ".join(parts))
        if not self.quiet:
            tqdm.write(" | ".join(parts))

    # ------------------------------------------------------------------ state

    def _write_metrics(self, history: History) -> None:
        assert self.run_dir is not None
        lines = "".join(json.dumps(r) + "\n" for r in history.records)
        atomic_write_text(self.run_dir / self.METRICS_FILE, lines)

    def _save_state(
        self, epochs_done: int, history: History, best_state: dict[str, Tensor] | None, bad_epochs: int
    ) -> None:
        assert self.run_dir is not None
        state = {
            "epochs_done": epochs_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(),
            "records": history.records,
            "best_epoch": history.best_epoch,
            "best_metric": history.best_metric,
            "best_state": best_state,
            "bad_epochs": bad_epochs,
            "stopped_early": history.stopped_early,
            "objective_state": self.run_state,
            "monitor": self._monitor,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if dist.active():  # what differs between ranks, rank by rank, so each resumes its own
            own = {"rng": state["rng"], "objective_state": self.run_state, "monitor": self._monitor}
            state["ranks"] = dist.gather(own)
        if dist.is_main():
            atomic_torch_save(state, self.run_dir / self.STATE_FILE)
        dist.barrier()

    def _load_state(self) -> tuple[History, dict[str, Tensor] | None, int, int] | None:
        if self.run_dir is None:
            raise ValueError("resume=True needs a run_dir to resume from")
        path = self.run_dir / self.STATE_FILE
        if not path.exists():
            logger.info("no training state at %s; starting fresh", path)
            if self.seed is not None:
                seed_everything(self.seed + dist.rank())
            return None
        state = safe_torch_load(path)
        try:
            if not isinstance(state, dict):
                raise TypeError(f"it holds a {type(state).__name__}, not a training state")
            missing = [k for k in _STATE_KEYS if k not in state]
            if missing:
                raise KeyError(f"it has no {', '.join(missing)}")
            ranks = state.get("ranks")  # written under torchrun: each rank's RNG and per-run state
            written = len(ranks) if isinstance(ranks, list) else 1
            if written != dist.world_size():
                raise ValueError(
                    f"it was written by {written} process(es) and this run has {dist.world_size()}; "
                    f"resume with the same number (--nproc {written})"
                )
            if isinstance(ranks, list):
                state = {**state, **ranks[dist.rank()]}
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            run_state = state.get("objective_state", {})  # absent from files written before it was saved
            if not isinstance(run_state, dict) or not all(isinstance(v, Tensor) for v in run_state.values()):
                raise TypeError("objective_state is not a mapping of tensors")
            _set_rng_state(state["rng"])
            history = History(
                records=list(state["records"]),
                best_epoch=state["best_epoch"],
                best_metric=state["best_metric"],
                stopped_early=bool(state["stopped_early"]),
            )
            progress = int(state["bad_epochs"]), int(state["epochs_done"])
        except Exception as err:  # a truncated file, foreign content or another model's weights
            detail = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise ValueError(f"cannot resume from {path}: {detail}") from None
        self.run_state = {str(k): v.to(self.device) for k, v in run_state.items()}
        if self.scaler is not None and isinstance(state.get("scaler"), dict):
            self.scaler.load_state_dict(state["scaler"])
        monitor = state.get("monitor")  # absent from files written before it was saved
        if isinstance(monitor, tuple) and len(monitor) == 2 and all(isinstance(t, Tensor) for t in monitor):
            self._monitor = (monitor[0].to(self.device), monitor[1].to(self.device))
        return history, state["best_state"], *progress
