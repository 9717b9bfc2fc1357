"""Training on several processes: the Trainer under ``DistributedDataParallel``, launched by ``torchrun``.

``torchrun --nproc_per_node N -m advlearn train CONFIG`` (or ``advlearn train CONFIG --nproc N``,
which runs that command) starts ``N`` copies of the same program; each joins the process group
(:func:`advlearn._distributed.init_from_env`: gloo on CPU, NCCL on GPU), and the
:class:`~advlearn.training.Trainer` then

- wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel` (:func:`wrap_model`), so
  the parameter gradients of every ``loss.backward()`` are averaged over the ranks: one
  synchronisation per optimizer step, whatever the objective does before it (the inner attack
  differentiates w.r.t. the input only and never triggers one; Free-AT's every replay and AWP's
  update are optimizer steps and synchronise; AWP's weight-ascent gradient, taken with
  ``torch.autograd.grad`` outside DDP's hooks, is averaged explicitly);
- splits the training set with a :class:`~torch.utils.data.DistributedSampler`
  (:func:`shard_loader`): the config's batch size is the global one, each rank takes
  ``batch_size / N`` examples of every step, so a step sees the same examples as one process
  with that batch and the same sampler;
- splits validation by batches and sums the counts, lets rank 0 alone write the run folder,
  the checkpoint (with every rank's RNG and per-run state, so ``resume`` is exact) and the bars.

Example (one process: every function is the identity):
    >>> import torch
    >>> loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 2)), batch_size=4)
    >>> shard_loader(loader, seed=0) is loader
    True
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from advlearn import _distributed as dist

L = TypeVar("L")


def wrap_model(model: nn.Module, device: torch.device, *, sync_batchnorm: bool = False) -> nn.Module:
    """``model`` under DDP when several ranks run (the model itself in one process).

    The wrapper starts every rank from rank 0's parameters and buffers and averages the
    parameter gradients in each backward pass. Buffers are not re-broadcast at every forward
    pass (an attack's forward passes need no collective, so ranks may run different numbers of
    them); the Trainer copies rank 0's buffers to every rank at the end of each epoch.

    Args:
        model: the network, already on ``device``.
        device: this rank's device.
        sync_batchnorm: convert BatchNorm layers to :class:`~torch.nn.SyncBatchNorm`, whose
            train-mode statistics are those of the global batch (CUDA only, as in torch; every
            rank must then run the same number of train-mode forward passes per step, which the
            fixed-step inner attacks of the objectives do).

    Raises:
        ValueError: ``sync_batchnorm`` on CPU ranks.
    """
    if not dist.active():
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError(
                "sync_batchnorm needs CUDA ranks (torch's SyncBatchNorm runs on GPUs only); "
                "drop sync_batchnorm on CPU"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def shard_loader(loader: L, seed: int) -> L:
    """This rank's part of ``loader``: a DataLoader over the same dataset with a DistributedSampler.

    The loader's ``batch_size`` is the global batch: each rank gets ``batch_size / world_size``
    examples per step. A loader that shuffles (a RandomSampler) gets a sampler shuffling with
    ``seed + epoch`` (the Trainer calls ``set_epoch``); a DistributedSampler's own ``shuffle`` and
    ``seed`` are kept, so a one-process loader built on ``DistributedSampler(data, num_replicas=1,
    rank=0, seed=s)`` walks the data in the same order as ``N`` ranks. When the dataset's size is
    not a multiple of the rank count the sampler repeats a few examples (torch's behaviour),
    unless the loader has ``drop_last``.

    Raises:
        ValueError: a loader that is not a DataLoader, has no batch size, a batch size not
            divisible by the rank count, or a sampler of its own.
    """
    if not dist.active():
        return loader
    world = dist.world_size()
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise ValueError(
            "under torchrun train_loader must be a torch DataLoader with a batch_size "
            "(its dataset is split across the ranks)"
        )
    batch = int(loader.batch_size)
    if batch % world:
        raise ValueError(
            f"batch_size {batch} cannot be split evenly across {world} ranks (it is the global batch); "
            f"use a multiple of {world}"
        )
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        shuffle, seed = bool(sampler.shuffle), int(sampler.seed)
    elif isinstance(sampler, (RandomSampler, SequentialSampler)):
        shuffle = isinstance(sampler, RandomSampler)
    else:
        raise ValueError(
            f"under torchrun the train_loader's sampler ({type(sampler).__name__}) cannot be split "
            "across ranks; use shuffle=True/False or a DistributedSampler"
        )
    own: DistributedSampler[Any] = DistributedSampler(
        loader.dataset,  # type: ignore[arg-type]
        num_replicas=world,
        rank=dist.rank(),
        shuffle=shuffle,
        seed=seed,
        drop_last=loader.drop_last,
    )
    sharded = DataLoader(
        loader.dataset,
        batch_size=batch // world,
        sampler=own,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )
    return cast(L, sharded)


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell a DistributedSampler which epoch starts (its shuffle is ``seed + epoch``); else nothing."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


def check_in_sync(model: nn.Module, what: str) -> None:
    """Raise when the ranks' parameters differ (an objective whose gradients DDP did not average)."""
    if not dist.active():
        return
    with torch.no_grad():
        sums = [float(p.detach().double().sum()) for p in model.parameters()]
    every = dist.gather(sums)
    if any(other != every[0] for other in every[1:]):
        raise RuntimeError(
            f"{what}: the ranks' weights differ after the epoch; its gradients were not averaged by "
            "DistributedDataParallel (a forward pass that bypasses the wrapper?)"
        )


# ----------------------------------------------------------------------------- launching


def _devices_available(device: str) -> tuple[int, str]:
    """How many ranks this machine can host for ``device``, and what they are."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count(), "CUDA devices"
    return os.cpu_count() or 1, "CPU cores"


def torchrun_command(nproc: int, argv: Sequence[str], device: str = "auto") -> list[str]:
    """The ``torchrun`` command that runs ``python -m advlearn ARGV`` on ``nproc`` ranks of this machine.

    Raises:
        ValueError: ``nproc`` below 1 or above the CUDA devices (or, on CPU, the cores) present.
    """
    available, kind = _devices_available(device)
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if nproc > available:
        raise ValueError(f"--nproc {nproc} is more than the {available} {kind} here; use --nproc {available}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "advlearn",
        *argv,
    ]


def launch(nproc: int, argv: Sequence[str], device: str = "auto") -> int:
    """Run ``advlearn ARGV`` on ``nproc`` ranks through ``torchrun`` and return its exit code.

    torchrun stops every rank when one fails, so an error on one rank ends the run.
    """
    command = torchrun_command(nproc, argv, device)
    if shutil.which(command[0]) is None and not os.path.exists(command[0]):
        raise ValueError(f"cannot find the Python interpreter {command[0]!r} to launch torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(command, env=env, check=False).returncode


__all__ = ["check_in_sync", "launch", "set_epoch", "shard_loader", "torchrun_command", "wrap_model"]
