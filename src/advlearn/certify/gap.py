"""The empirical-vs-certified gap: provable accuracy to set beside an attack's robust accuracy.

An attack's robust accuracy is an upper bound on the true robust accuracy (a
stronger attack could only lower it); a certificate's accuracy is a lower bound
(every example it counts is provably robust). :func:`certified_accuracies`
measures the lower bounds that apply to a threat model, so an evaluation can
report the interval ``[certified, empirical]`` and its width, the gap.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from advlearn.certify.ibp import check_ibp_supported, verify
from advlearn.certify.smoothing import Smooth, certified_accuracy, certify_dataset
from advlearn.threat import L2, ThreatModel

logger = logging.getLogger(__name__)


def smoothing_label(sigma: float) -> str:
    """The name of smoothing's entry in :attr:`advlearn.evaluation.Evaluation.certified`."""
    return f"smoothing σ={sigma:g}"


def certified_accuracies(
    model: nn.Module,
    data: Any,
    threat: ThreatModel,
    *,
    sigma: float | None = None,
    num_classes: int | None = None,
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    batch_size: int = 256,
    seed: int = 0,
    quiet: bool = True,
) -> dict[str, float]:
    """Certified accuracy of ``model`` on ``data`` at the threat model's ε, by every method that applies.

    - ``"IBP"``: the IBP-verified accuracy (:func:`verify`), when every layer of the model
      has a bound rule (otherwise left out, with a log message). Deterministic and cheap: about
      two forward passes. For ℓ2/ℓ1 threat models it bounds the enclosing ℓ∞ box, so it is
      sound but loose.
    - ``"smoothing σ=…"``: when ``sigma`` is given and the norm is ℓ2, the share of examples
      that randomized smoothing certifies correct at radius ε (probability ``1 − alpha`` per
      example). This certifies the *smoothed* classifier, not ``model`` itself, so it bounds a
      different classifier's robust accuracy; it costs ``n0 + n`` forward passes per example.

    Args:
        model: the classifier, in eval mode.
        data: an ``(x, y)`` pair of tensors (smoothing needs them), or anything
            :func:`advlearn.evaluation.batches` takes (IBP only).
        threat: the threat model of the empirical evaluation (ε a float).
        sigma, num_classes, n0, n, alpha, seed: randomized smoothing's settings; ``num_classes``
            defaults to the model's output width.
        batch_size: batch size for IBP and for the noisy copies of smoothing.
        quiet: no progress bars.

    Returns:
        ``{method: certified accuracy}``, possibly empty.
    """
    out: dict[str, float] = {}
    try:
        check_ibp_supported(model)
    except ValueError as err:
        logger.info("no IBP certificate: %s", err)
    else:
        out["IBP"] = verify(model, data, threat, batch_size=batch_size, quiet=quiet).verified_accuracy
    if sigma is not None and isinstance(threat.norm, L2):
        if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor)):
            raise ValueError("smoothing needs data as an (x, y) pair of tensors")
        x, y = data
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(model(x[:1].to(device)).shape[1])
        smooth = Smooth(model, num_classes=num_classes, sigma=sigma)
        result = certify_dataset(
            smooth,
            x,
            y,
            n0=n0,
            n=n,
            alpha=alpha,
            batch_size=batch_size,
            generator=torch.Generator(device=device).manual_seed(seed),
            quiet=quiet,
        )
        out[smoothing_label(sigma)] = float(
            certified_accuracy(result.radii, result.correct, [float(threat.eps)])[0]
        )
    elif sigma is not None:
        logger.info("no smoothing certificate: it certifies l2 radii, the threat model is %s", threat.norm)
    return out


__all__ = ["certified_accuracies", "smoothing_label"]
