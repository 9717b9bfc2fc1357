"""The modes an objective's forward passes run in: the attack in eval mode, proxies without BN updates.

The reference implementations of TRADES, MART and AWP call ``model.eval()`` before their
inner maximization and ``model.train()`` before the outer loss, so the adversarial
iterates neither normalize with their own batch statistics nor leak into BatchNorm's
running averages; AWP's weight step runs on a proxy copy whose statistics are thrown
away. :func:`eval_mode` and :func:`frozen_batchnorm_stats` give the same behaviour
without copying the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Inside the block every module of ``model`` is in eval mode; on leaving (also on an error) each
    module is back in the mode it had, module by module.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
        >>> with eval_mode(net):
        ...     print(net.training, net[1].training)
        False False
        >>> net.training, net[1].training
        (True, True)
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


@contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Inside the block forward passes may normalize with batch statistics (train mode), but every
    BatchNorm's running mean, variance and ``num_batches_tracked`` are restored on leaving, bit for bit.

    This is what AWP's proxy model does in Wu et al.'s code: the weight-perturbation step's
    forward pass leaves the model's statistics as they were.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).train()
        >>> with frozen_batchnorm_stats(net):
        ...     _ = net(torch.randn(8, 2))
        >>> int(net[1].num_batches_tracked), bool((net[1].running_mean == 0).all())
        (0, True)
    """
    saved = [
        (buffer, buffer.detach().clone())
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._NormBase)
        for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
        if buffer is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


__all__ = ["eval_mode", "frozen_batchnorm_stats"]
