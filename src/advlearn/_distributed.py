"""The process group ``torchrun`` starts: who this process is among the ranks, and the few collectives
advlearn needs (gather per-rank results, broadcast rank 0's decisions, average gradients).

Outside a process group (one process, the default) every function is the identity of one rank:
``world_size() == 1``, ``rank() == 0``, a gather returns ``[obj]``, so library code calls them
unconditionally. Imports torch only, so every layer may use it.
"""

from __future__ import annotations

import datetime
import io
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")

#: how long a collective waits for the other ranks before it fails (a dead rank must not hang the rest)
TIMEOUT_S = float(os.environ.get("ADVLEARN_DIST_TIMEOUT", "600"))


def active() -> bool:
    """Whether this process is one of several ranks of an initialized process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """How many ranks share the work (1 outside a process group)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Whether this is rank 0: the one that writes files, bars and summaries."""
    return rank() == 0


def launched() -> bool:
    """Whether ``torchrun`` started this process as one of several (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | torch.device = "auto") -> bool:
    """Join the process group ``torchrun`` describes in the environment; ``False`` when there is none.

    The backend follows the device: NCCL when the ranks run on CUDA (``device`` ``"cuda"`` or
    ``"auto"`` with a GPU present; each rank takes GPU ``LOCAL_RANK``), gloo on CPU. Collectives
    fail after :data:`TIMEOUT_S` seconds (``ADVLEARN_DIST_TIMEOUT``), so a dead rank stops the others.
    Calling it again, or inside a group the caller made, does nothing.
    """
    if not launched() or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    wanted = str(device)
    cuda = torch.cuda.is_available() and (wanted == "auto" or wanted.startswith("cuda"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return True


def local_device(device: torch.device) -> torch.device:
    """``device`` for this rank: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if device.type == "cuda" and device.index is None and active():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    if not active():
        return [obj]
    # Through torch.save bytes: all_gather_object's own pickling of tensors fails on some storages
    # (RNG states), and reading back with weights_only unpickles nothing but tensors and plain values.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, buffer.getvalue())
    return [torch.load(io.BytesIO(raw), weights_only=True) for raw in out]


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
    if not active():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def all_sum(values: Sequence[float]) -> list[float]:
    """The sum over ranks of each value (in float64)."""
    if not active():
        return [float(v) for v in values]
    total = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return [float(v) for v in total.cpu()]


def average_(tensors: Sequence[Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in place (gradients computed outside DDP's hooks)."""
    if not active():
        return
    world = dist.get_world_size()
    for t in tensors:
        dist.all_reduce(t)
        t.div_(world)


def broadcast_tensors_(tensors: Sequence[Tensor]) -> None:
    """Overwrite each tensor with rank 0's, in place."""
    if not active():
        return
    for t in tensors:
        dist.broadcast(t, src=0)


def barrier() -> None:
    """Wait until every rank gets here."""
    if active():
        dist.barrier()


__all__ = [
    "active",
    "all_sum",
    "average_",
    "barrier",
    "broadcast",
    "broadcast_tensors_",
    "gather",
    "init_from_env",
    "is_main",
    "launched",
    "local_device",
    "rank",
    "world_size",
]
