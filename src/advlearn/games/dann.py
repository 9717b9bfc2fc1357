"""Domain-adversarial neural networks (DANN): features that a domain classifier cannot tell apart.

Ganin et al. (2016) train three parts together: a feature extractor ``G_f``, a label predictor
``G_y`` fed with labelled *source* examples, and a domain classifier ``G_d`` that tells source
features from *target* features. The game (eq. 9-10 of the paper)

.. math::

    \\min_{\\theta_f, \\theta_y} \\max_{\\theta_d} \\;
        \\mathcal L_y(\\theta_f, \\theta_y) - \\lambda\\, \\mathcal L_d(\\theta_f, \\theta_d)

is the same min-max skeleton as adversarial training, with a network as the inner player.
The gradient reversal layer (:func:`~advlearn.games.reversal.grad_reverse`) between ``G_f``
and ``G_d`` turns it into one backward pass: ``G_d`` descends ``L_d`` while ``G_f`` receives
``−λ ∂L_d/∂θ_f``. ``λ`` follows :func:`dann_lambda`, ``2/(1 + e^{−10p}) − 1`` over training
progress ``p``, so the domain signal is switched on gradually. Target labels are never used
for training; :func:`train_dann` reads them only to report target accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from advlearn._checks import check_nonnegative, check_positive_int
from advlearn.data import Dataset
from advlearn.games.reversal import GradientReversal
from advlearn.models import register_model

__all__ = [
    "DANN",
    "DANNHistory",
    "DomainBatchNorm2d",
    "accuracy",
    "adapt_batchnorm",
    "dann_lambda",
    "dann_network",
    "features",
    "train_dann",
]

Domain = Literal["source", "target"]
_DOMAINS: tuple[Domain, Domain] = ("source", "target")


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """The adaptation weight ``λ_p = 2 / (1 + exp(−γ p)) − 1`` (Ganin et al. 2016, Section 5.2.2).

    Args:
        progress: training progress ``p`` in ``[0, 1]``.
        gamma: ``γ`` (10 in the paper).

    Returns:
        ``λ_p``, rising from 0 at ``p = 0`` to ``(1 − e^{−γ}) / (1 + e^{−γ}) ≈ 0.9999`` at ``p = 1``.

    Example:
        >>> dann_lambda(0.0), round(dann_lambda(0.1), 4), round(dann_lambda(1.0), 4)
        (0.0, 0.4621, 0.9999)
    """
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0 <= progress <= 1:
        raise ValueError(f"progress must be a number in [0, 1], got {progress!r}")
    check_nonnegative("gamma", gamma)
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainBatchNorm2d(nn.Module):
    """Batch normalization with running statistics per domain and one shared affine map.

    Source and target batches are normalized by their own statistics (in training, their
    own batch's; in eval mode, their own domain's running averages), then scaled and shifted
    by the same learned ``weight`` and ``bias``: domain-specific batch normalization
    (Chang et al. 2019; AdaBN, Li et al. 2018, is its test-time half). Which domain a batch
    belongs to is the attribute ``domain`` (``"source"`` or ``"target"``), which
    :meth:`DANN.in_domain` sets. A layer that has never seen a target batch in training
    normalizes target inputs with the *source* statistics, so a source-only network is
    scored on the target exactly as it was trained.

    Args:
        channels: feature maps ``C`` of the ``(B, C, H, W)`` input.
        momentum: of the running averages (as :class:`torch.nn.BatchNorm2d`).

    Example:
        >>> bn = DomainBatchNorm2d(4)
        >>> x = torch.randn(8, 4, 5, 5) * 3 + 1
        >>> bn.domain = "target"
        >>> out = bn(x)  # training mode: the batch's own statistics
        >>> bool(bn.target_seen), abs(round(float(out.detach().mean()), 4))
        (True, 0.0)
    """

    def __init__(self, channels: int, momentum: float = 0.1) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        self.norms = nn.ModuleList(
            [nn.BatchNorm2d(channels, momentum=momentum, affine=False) for _ in _DOMAINS]
        )
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("target_seen", torch.zeros((), dtype=torch.bool))
        self.domain: Domain = "source"

    def forward(self, x: Tensor) -> Tensor:
        index = _DOMAINS.index(self.domain)
        seen: Tensor = self.target_seen  # type: ignore[assignment]
        if index == 1 and self.training:
            seen.fill_(True)
        elif index == 1 and not bool(seen):
            index = 0  # never adapted: the target is seen through the source statistics
        out = self.norms[index](x)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)  # type: ignore[no-any-return]


class DANN(nn.Module):
    """The MNIST → MNIST-M network of Ganin et al. (2016, Section 5.2.2 and Figure 4).

    - feature extractor ``G_f``: conv 5×5×32, ReLU, max-pool 2, conv 5×5×48, ReLU, max-pool 2
      (28×28 → 768 features); inputs are centred by subtracting 0.5 first;
    - label predictor ``G_y``: 768 → 100 → 100 → ``num_classes``;
    - domain classifier ``G_d``: 768 → 100 → 1 (a logit: target = 1), behind a
      :class:`~advlearn.games.reversal.GradientReversal` layer whose ``lambd`` the training loop sets.
      ``domain_hidden`` sets its hidden widths: ``(1024, 1024)`` is the larger head Ganin et al.
      use for their other digit pairs (SVHN, synthetic digits); it costs about 1.35× the training
      time of the default ``(100,)`` on one CPU thread.

    ``forward(x)`` returns the class logits; :meth:`domain_logits` the domain logits of features.

    With ``batchnorm=True`` each convolution is followed by a :class:`DomainBatchNorm2d`
    (not in the paper's network): source and target images are normalized by their own
    domain's statistics before the shared layers, which removes the per-channel first and
    second moments the domain classifier would otherwise read (colour, contrast) and leaves
    the adversarial game the rest. Select the domain of the inputs with :meth:`in_domain`
    (default: source).

    Args:
        in_channels: image channels (3: grey source digits are repeated over channels).
        num_classes: classes of the label predictor.
        batchnorm: domain-specific batch normalization after each convolution.
        domain_hidden: the hidden layer widths of the domain classifier (ReLU after each),
            ``(100,)`` in the paper's MNIST → MNIST-M network.

    Example:
        >>> net = DANN()
        >>> x = torch.rand(2, 3, 28, 28)
        >>> net(x).shape, net.domain_logits(net.features(x)).shape
        (torch.Size([2, 10]), torch.Size([2]))
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        batchnorm: bool = False,
        domain_hidden: Sequence[int] = (100,),
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("num_classes", num_classes)
        if not isinstance(batchnorm, bool):
            raise ValueError(f"batchnorm must be True or False, got {batchnorm!r}")
        widths = _check_domain_hidden(domain_hidden)

        def norm(channels: int) -> list[nn.Module]:
            return [DomainBatchNorm2d(channels)] if batchnorm else []

        self.feature_extractor = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5),
            *norm(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 5),
            *norm(48),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.label_predictor = nn.Sequential(
            nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, num_classes)
        )
        self.reversal = GradientReversal(0.0)
        domain_layers: list[nn.Module] = []
        for fan_in, fan_out in zip((768, *widths), widths, strict=False):
            domain_layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.domain_classifier = nn.Sequential(*domain_layers, nn.Linear((768, *widths)[-1], 1))
        self.domain_hidden = widths

    @property
    def batchnorm(self) -> bool:
        """Whether the feature extractor has domain-specific batch normalization."""
        return any(isinstance(m, DomainBatchNorm2d) for m in self.feature_extractor)

    @contextmanager
    def in_domain(self, domain: Domain) -> Iterator[DANN]:
        """Within the block, inputs are from ``domain`` (``"source"`` or ``"target"``); then back.

        Only :class:`DomainBatchNorm2d` layers read it; without them this does nothing.

        Raises:
            ValueError: for another domain name.
        """
        if domain not in _DOMAINS:
            raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
        layers = [m for m in self.feature_extractor if isinstance(m, DomainBatchNorm2d)]
        before = [m.domain for m in layers]
        for m in layers:
            m.domain = domain
        try:
            yield self
        finally:
            for m, d in zip(layers, before, strict=True):
                m.domain = d

    def features(self, x: Tensor) -> Tensor:
        """``G_f(x)``, ``(B, 768)`` for 28×28 inputs."""
        return self.feature_extractor(x - 0.5)  # type: ignore[no-any-return]

    def domain_logits(self, h: Tensor) -> Tensor:
        """``G_d(R_λ(h))``: the logit that ``h`` comes from the target domain, ``(B,)``."""
        return self.domain_classifier(self.reversal(h)).squeeze(1)  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> Tensor:
        return self.label_predictor(self.features(x))  # type: ignore[no-any-return]


def _check_domain_hidden(domain_hidden: object) -> tuple[int, ...]:
    if isinstance(domain_hidden, (str, bytes)) or not isinstance(domain_hidden, Sequence):
        raise ValueError(
            f"domain_hidden must be a sequence of layer widths, e.g. (100,), got {domain_hidden!r}"
        )
    for width in domain_hidden:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(
                f"domain_hidden must hold positive integer widths, e.g. (1024, 1024), got {domain_hidden!r}"
            )
    return tuple(domain_hidden)


@register_model("dann")
def dann_network(
    in_channels: int = 3,
    num_classes: int = 10,
    batchnorm: bool = False,
    domain_hidden: Sequence[int] = (100,),
) -> nn.Module:
    """A fresh :class:`DANN`, by name for :mod:`advlearn.checkpoint` (``load_model`` rebuilds it)."""
    return DANN(in_channels, num_classes, batchnorm=batchnorm, domain_hidden=tuple(domain_hidden))


def as_rgb(x: Tensor) -> Tensor:
    """Grey images ``(N, 1, H, W)`` repeated over 3 channels; colour images pass through."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be images (N, 1, H, W) or (N, 3, H, W), got shape {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@contextmanager
def _domain(model: nn.Module, domain: Domain) -> Iterator[None]:
    if isinstance(model, DANN):
        with model.in_domain(domain):
            yield
    elif domain not in _DOMAINS:
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    else:
        yield


def accuracy(
    model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500, domain: Domain = "source"
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in eval mode (the mode is restored after).

    ``domain`` names where ``x`` comes from, for a :class:`DANN` with domain-specific batch
    normalization (otherwise it changes nothing).
    """
    was_training = model.training
    model.eval()
    correct = 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad(), _domain(model, domain):
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            correct += int((model(as_rgb(xb.to(device))).argmax(1).cpu() == yb.cpu()).sum())
    model.train(was_training)
    return correct / max(1, len(y))


def features(model: DANN, x: Tensor, *, batch_size: int = 500, domain: Domain = "source") -> Tensor:
    """``G_f(x)`` for a whole set from ``domain``, in eval mode, ``(N, 768)``."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad(), _domain(model, domain):
        out = torch.cat([model.features(as_rgb(xb.to(device))).cpu() for xb in x.split(batch_size)])
    model.train(was_training)
    return out


def adapt_batchnorm(model: DANN, target_x: Tensor, *, batch_size: int = 500) -> int:
    """AdaBN (Li et al. 2018): re-estimate the target statistics of ``model``'s domain batch norms.

    Each :class:`DomainBatchNorm2d`, in order, takes as its target running statistics the exact
    mean and (unbiased) variance of its inputs over all of ``target_x`` (unlabelled target
    images), with the layers before it already normalizing by theirs: what eval mode will
    then see. The source statistics and every weight are left as they are, so source accuracy
    does not change. This is the fair source-only baseline for a network with domain batch
    norms: without it, a source-only network normalizes target images with the *source*
    statistics. Cost: one forward pass of the feature extractor over ``target_x`` per layer
    (two for :class:`DANN`), without gradients.

    Args:
        model: a :class:`DANN`; it is left in eval mode.
        target_x: unlabelled target images ``(M, 1 or 3, 28, 28)``.
        batch_size: images per forward pass.

    Returns:
        The number of layers adapted (0 for a network without domain batch norms: nothing changes).

    Example:
        >>> net = DANN(batchnorm=True)
        >>> adapt_batchnorm(net, torch.rand(20, 3, 28, 28), batch_size=10)
        2
    """
    if not isinstance(model, DANN):
        raise ValueError(f"model must be a DANN, got {type(model).__name__}")
    check_positive_int("batch_size", batch_size)
    layers = [m for m in model.feature_extractor if isinstance(m, DomainBatchNorm2d)]
    if not layers:
        return 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = as_rgb(target_x)
    model.eval()
    for layer in layers:
        layer.target_seen.fill_(True)  # type: ignore[operator]  # eval mode now reads the target statistics
    for layer in layers:  # in order: each sees the earlier layers normalized by their final statistics
        norm: nn.BatchNorm2d = layer.norms[_DOMAINS.index("target")]  # type: ignore[assignment]
        total = torch.zeros(3, norm.num_features, dtype=torch.float64, device=device)  # Σh, Σh², n

        def collect(_: nn.Module, inputs: tuple[Tensor, ...], total: Tensor = total) -> None:
            h = inputs[0].double()
            total[0] += h.sum(dim=(0, 2, 3))
            total[1] += (h * h).sum(dim=(0, 2, 3))
            total[2] += h.numel() // h.shape[1]

        handle = norm.register_forward_pre_hook(collect)
        try:
            with torch.no_grad(), model.in_domain("target"):
                for xb in x.split(batch_size):
                    model.features(xb.to(device))
        finally:
            handle.remove()
        n = float(total[2, 0])
        mean = total[0] / n
        var = (total[1] / n - mean * mean).clamp_min(0.0) * (n / max(n - 1.0, 1.0))  # unbiased, as BatchNorm
        with torch.no_grad():
            norm.running_mean.copy_(mean)  # type: ignore[union-attr]
            norm.running_var.copy_(var)  # type: ignore[union-attr]
    return len(layers)


@dataclass(frozen=True)
class DANNHistory:
    """Per-epoch records of :func:`train_dann`.

    Attributes:
        records: one dict per epoch: ``epoch``, ``lambd`` (at the epoch's end), ``class_loss``,
            ``domain_loss`` (nan when not adapting), ``domain_acc`` (the domain classifier's
            training accuracy; 0.5 means the features fool it), ``source_acc`` and
            ``target_acc`` on the held-out sets passed in (nan when not given).
        seconds: wall time of the training loop.
    """

    records: list[dict[str, float]]
    seconds: float


def train_dann(
    model: DANN,
    source: Dataset,
    target_x: Tensor,
    *,
    adapt: bool = True,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    optimizer: Literal["adam", "sgd"] = "adam",
    gamma: float = 10.0,
    seed: int = 0,
    source_test: Dataset | None = None,
    target_test: Dataset | None = None,
    quiet: bool = False,
    desc: str = "DANN",
    device: str | torch.device | None = None,
) -> DANNHistory:
    """Train ``model`` on labelled ``source`` and unlabelled ``target_x`` (Ganin et al. 2016, Alg. 1).

    Each step draws a source batch ``(x_s, y_s)`` and a target batch ``x_t`` of ``batch_size``
    and minimizes, with the reversal layer at ``λ_p = dann_lambda(p, gamma)``,

    .. math::

        \\mathrm{CE}(G_y(G_f(x_s)), y_s)
            + \\mathrm{BCE}\\big(G_d(R_{\\lambda_p}(G_f([x_s; x_t]))), [0; 1]\\big),

    so ``G_d`` learns to tell the domains apart while ``G_f`` is pushed the other way. With
    ``adapt=False`` the domain term is dropped: the source-only baseline, same network, same
    steps. An epoch is one pass over the source set. The default optimizer is Adam with a
    constant learning rate; ``optimizer="sgd"`` is the paper's: SGD with momentum 0.9 and the
    annealed rate ``μ_p = lr/(1 + 10p)^0.75`` (Ganin et al. use ``lr = 0.01``; it needs far more
    steps than Adam).

    Args:
        model: a :class:`DANN`; trained in place and left in eval mode.
        source: labelled source images ``(N, 1 or 3, 28, 28)``.
        target_x: unlabelled target images ``(M, 3, 28, 28)``.
        adapt: train the domain classifier through the reversal layer (DANN) or not (source only).
        epochs: passes over the source set.
        batch_size: source and target examples per step.
        lr: the learning rate (Adam's, or SGD's at ``p = 0``).
        optimizer: ``"adam"`` (constant rate) or ``"sgd"`` (the paper's momentum and annealing).
        gamma: ``γ`` of the λ schedule.
        seed: seeds the batch order and target draws (the model's initialization is the caller's).
        source_test: held-out source images, to report per-epoch source accuracy.
        target_test: held-out *labelled* target images, to report per-epoch target accuracy
            (evaluation only: these labels never reach a loss).
        quiet: no progress bar.
        desc: the progress bar's label.
        device: where to train (``None``: where the model is); batches are drawn on the CPU
            with the seeded generator and moved, so the batch order does not depend on it. The
            model is moved there and stays there.

    Returns:
        A :class:`DANNHistory`.

    Raises:
        ValueError: for a model that is not a :class:`DANN`, bad sizes, or shapes that do not match.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, DANN):
        raise ValueError(f"model must be a DANN, got {type(model).__name__}")
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    x_source, y_source = as_rgb(source.x), source.y
    x_target = as_rgb(target_x)
    if x_target.shape[1:] != x_source.shape[1:]:
        raise ValueError(
            f"target_x has images of shape {tuple(x_target.shape[1:])} but the source has "
            f"{tuple(x_source.shape[1:])}; both domains need the same image shape"
        )
    if len(x_source) < batch_size or len(x_target) < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the source ({len(x_source)}) or target "
            f"({len(x_target)}) set; lower it"
        )
    if device is not None:
        model.to(device)
    on = next((p.device for p in model.parameters()), torch.device("cpu"))
    x_source, y_source, x_target = x_source.to(on), y_source.to(on), x_target.to(on)
    rng = torch.Generator().manual_seed(seed)
    opt = (
        torch.optim.Adam(model.parameters(), lr=lr)
        if optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    )
    steps_per_epoch = len(x_source) // batch_size
    total = epochs * steps_per_epoch
    domain_labels = torch.cat([torch.zeros(batch_size), torch.ones(batch_size)]).to(on)  # (2B,): target = 1
    records: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, disable=quiet, leave=False)
    model.train()
    step = 0
    with torch.enable_grad():
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(x_source), generator=rng)
            class_sum = domain_sum = 0.0
            domain_hits = 0
            for i in range(steps_per_epoch):
                lambd = dann_lambda(step / total, gamma) if adapt else 0.0
                model.reversal.lambd = lambd
                if optimizer == "sgd":  # Ganin et al.'s annealing, Section 5.2.2
                    for group in opt.param_groups:
                        group["lr"] = lr / (1.0 + 10.0 * step / total) ** 0.75
                batch = order[i * batch_size : (i + 1) * batch_size].to(on)
                with model.in_domain("source"):
                    h_source = model.features(x_source[batch])  # (B, 768)
                class_loss = F.cross_entropy(model.label_predictor(h_source), y_source[batch])
                loss = class_loss
                if adapt:
                    picks = torch.randint(0, len(x_target), (batch_size,), generator=rng).to(on)
                    with model.in_domain("target"):
                        h_target = model.features(x_target[picks])  # (B, 768): target statistics
                    h = torch.cat([h_source, h_target])  # (2B, 768)
                    domain_out = model.domain_logits(h)  # (2B,)
                    domain_loss = F.binary_cross_entropy_with_logits(domain_out, domain_labels)
                    loss = class_loss + domain_loss
                    domain_sum += float(domain_loss.detach())
                    domain_hits += int(((domain_out.detach() > 0).float() == domain_labels).sum())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                class_sum += float(class_loss.detach())
                step += 1
                bar.update(1)
            record = {
                "epoch": float(epoch),
                "lambd": model.reversal.lambd,
                "class_loss": class_sum / steps_per_epoch,
                "domain_loss": domain_sum / steps_per_epoch if adapt else math.nan,
                "domain_acc": domain_hits / (2 * batch_size * steps_per_epoch) if adapt else math.nan,
                "source_acc": accuracy(model, source_test.x, source_test.y) if source_test else math.nan,
                "target_acc": (
                    accuracy(model, target_test.x, target_test.y, domain="target")
                    if target_test
                    else math.nan
                ),
            }
            records.append(record)
            bar.set_postfix(target=f"{record['target_acc']:.3f}", refresh=False)
    bar.close()
    model.eval()
    return DANNHistory(records=records, seconds=time.perf_counter() - start)
