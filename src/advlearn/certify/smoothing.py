"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): certified ℓ2 robustness from Gaussian noise.

A base classifier ``f`` (any model mapping inputs to logits) is turned into the
smoothed classifier

.. math::

    g(x) = \\arg\\max_c \\; P_{\\eta \\sim N(0, \\sigma^2 I)}\\big(f(x + \\eta) = c\\big).

If the top class ``c_A`` has probability at least ``p_A`` and every other class
at most ``p_B``, then ``g`` predicts ``c_A`` everywhere within the ℓ2 radius
(seed chapter eq. 62.6, Cohen et al. 2019, Theorem 1)

.. math::

    R = \\frac{\\sigma}{2}\\big(\\Phi^{-1}(p_A) - \\Phi^{-1}(p_B)\\big)
      \\;\\ge\\; \\sigma\\,\\Phi^{-1}(p_A) \\quad\\text{with } p_B = 1 - p_A.

The probabilities are unknown, so :meth:`Smooth.certify` estimates a lower
confidence bound on ``p_A`` from Monte Carlo samples, and the certificate holds
with probability at least ``1 − α`` over the sampling. The noise is added
without clipping to the input box: the smoothed classifier is defined on all of
``R^d``, exactly as in the paper, so train the base classifier under the same
unclipped noise (:class:`advlearn.training.GaussianAugment`).

References:
    Cohen, Rosenfeld, Kolter. Certified adversarial robustness via randomized
    smoothing. ICML 2019 (Theorem 1; Algorithms PREDICT and CERTIFY).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlearn import _distributed as dist
from advlearn._checks import check_model_dtype, check_positive_int
from advlearn._keyed_random import KeyedGenerator, stream_seed

ABSTAIN = -1
# Noise copies per draw call of an example's stream: fixed, so the draws do not depend on batch_size.
NOISE_BLOCK = 256


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be a confidence level in (0, 1), e.g. 0.001, got {alpha!r}")
    return float(alpha)


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """The one-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion.

    ``p̲ = Beta⁻¹(α; k, n − k + 1)`` for ``k`` successes in ``n`` trials (0 when
    ``k = 0``): with probability at least ``1 − α`` over the draw of ``k``, the
    true proportion is at least ``p̲`` (Clopper & Pearson 1934). With ``k = n`` it
    equals ``α^(1/n)``.

    Example:
        >>> round(lower_confidence_bound(100, 100, 0.001), 6) == round(0.001 ** (1 / 100), 6)
        True
    """
    check_positive_int("trials", trials)
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= trials:
        raise ValueError(f"successes must be an integer in [0, trials={trials}], got {successes!r}")
    _check_alpha(alpha)
    if successes == 0:
        return 0.0
    from scipy.stats import beta  # imported here: scipy.stats alone takes seconds to import

    return float(beta.ppf(alpha, successes, trials - successes + 1))


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _leading_affine(model: nn.Module, shape: torch.Size) -> tuple[nn.Linear, nn.Module] | None:
    """``(layer, rest)`` when ``model`` is exactly ``rest ∘ layer ∘ [Flatten]`` on inputs of ``shape``.

    Only a plain ``nn.Sequential`` (not a subclass, which may have its own
    ``forward``) whose first modules are exactly ``nn.Flatten(1, -1)`` (optional
    for 1-d inputs) and ``nn.Linear(d, k)`` with ``k < d``, none of them with
    hooks, and no global module hooks; otherwise ``None`` (the general path).
    """
    from torch.nn.modules import module as module_lib

    global_hooks = (module_lib._global_forward_hooks, module_lib._global_forward_pre_hooks)
    if type(model) is not nn.Sequential or any(global_hooks) or _has_hooks(model):
        return None
    children = list(model)
    index = 0
    if children and type(children[0]) is nn.Flatten:
        flatten = children[0]
        if flatten.start_dim != 1 or flatten.end_dim != -1 or _has_hooks(flatten):
            return None
        index = 1
    elif len(shape) != 1:
        return None
    if index >= len(children) or type(children[index]) is not nn.Linear:
        return None
    layer = children[index]
    assert isinstance(layer, nn.Linear)
    if _has_hooks(layer) or layer.in_features != math.prod(shape) or layer.out_features >= layer.in_features:
        return None
    return layer, nn.Sequential(*children[index + 1 :])


def _stream_seeds(generator: torch.Generator | None, count: int, device: torch.device) -> list[int]:
    """The seed of each of ``count`` examples' noise streams for one sampling pass.

    Keyed (a :class:`~advlearn._keyed_random.KeyedGenerator` with one key per example): from the
    keys, the key seed, the stream and the generator's draw counter, so an example's noise does not
    depend on the examples beside it. Otherwise one number drawn from ``generator`` (or torch's
    global stream) seeds the pass and example ``e`` of it is keyed ``e``.
    """
    if isinstance(generator, KeyedGenerator):
        if generator.keys.numel() != count:
            raise ValueError(
                f"generator is keyed for {generator.keys.numel()} examples but {count} are sampled; "
                "key it with one key per input"
            )
        return generator.row_seeds()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    return [stream_seed(seed, 0, e, 0) for e in range(count)]


class _ExampleNoise:
    """``N(0, std²)`` noise for noisy copies laid out example after example, keyed per example.

    Example ``e``'s ``num`` copies come from a torch generator seeded ``seeds[e]``, drawn in calls of
    :data:`NOISE_BLOCK` copies (the last one shorter), so copy ``j`` of example ``e`` gets the same
    numbers whatever batches the copies are cut into. A block drawn straight into the batch costs
    what ``normal_`` costs; a block the batch cuts is drawn once into a staging buffer and copied
    (at most two per batch, the rest of it served to the next batch); reseeding costs about 1 µs
    per example and pass.
    """

    def __init__(
        self,
        seeds: list[int],
        num: int,
        shape: Sequence[int],
        std: float,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.seeds, self.num, self.std = seeds, num, std
        self.blocks = -(-num // NOISE_BLOCK)  # per example
        self.generator = torch.Generator(device=device)
        self.staging = torch.empty((min(NOISE_BLOCK, num), *shape), device=device, dtype=dtype)
        self.staged = -1  # the block (e * blocks + c) the staging buffer holds
        self.example, self.next_block = -1, 0  # where the generator stands

    def _draw(self, e: int, c: int, out: Tensor) -> None:
        if self.example != e:
            self.generator.manual_seed(self.seeds[e])
            self.example, self.next_block = e, 0
        if c != self.next_block:  # copies are filled in order, each block drawn once
            raise RuntimeError(f"noise block {c} of example {e} drawn out of order")
        out.normal_(0.0, self.std, generator=self.generator)
        self.next_block += 1

    def fill(self, out: Tensor, start: int) -> list[tuple[int, int, int]]:
        """Copies ``start, ..., start + len(out) - 1`` into ``out``; ``(example, lo, hi)`` row spans of it."""
        spans: list[tuple[int, int, int]] = []
        t, end = start, start + out.shape[0]
        while t < end:
            e, j = divmod(t, self.num)
            c = j // NOISE_BLOCK
            first, last = c * NOISE_BLOCK, min((c + 1) * NOISE_BLOCK, self.num)  # the block's copies
            stop = min(e * self.num + last, end)
            lo, hi = t - start, stop - start
            if j == first and stop == e * self.num + last:
                self._draw(e, c, out[lo:hi])
            else:
                if self.staged != e * self.blocks + c:
                    self._draw(e, c, self.staging[: last - first])
                    self.staged = e * self.blocks + c
                out[lo:hi].copy_(self.staging[j - first : j - first + hi - lo])
            if spans and spans[-1][0] == e:
                spans[-1] = (e, spans[-1][1], hi)
            else:
                spans.append((e, lo, hi))
            t = stop
        return spans


class Smooth:
    """The Gaussian-smoothed version ``g`` of a base classifier, with Cohen et al.'s PREDICT and CERTIFY.

    The base classifier is called on noisy copies of one input in batches, in
    whatever mode it is in (put it in ``eval()`` first); its parameters are never
    touched and no gradient is recorded. Noise is drawn on the model's device;
    pass a :class:`torch.Generator` on that device for reproducible results.
    Each input's noise is a stream of its own (keyed by its place in the inputs
    and one draw of the generator, or by a
    :class:`~advlearn._keyed_random.KeyedGenerator`'s keys), so the counts and
    certificates do not depend on ``batch_size``, the examples certified beside
    it, or the number of ranks.

    Args:
        model: the base classifier ``f``, mapping ``(B, *shape)`` inputs to ``(B, num_classes)`` logits.
        num_classes: the number of classes (at least 2).
        sigma: the standard deviation of the Gaussian noise, > 0; the certified
            radii are ℓ2 radii in the model's input space.

    Raises:
        ValueError: for ``num_classes < 2`` or ``sigma <= 0``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2)).eval()
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        ...     _ = model[1].bias.zero_()
        >>> smooth = Smooth(model, num_classes=2, sigma=0.5)
        >>> g = torch.Generator().manual_seed(0)
        >>> label, radius = smooth.certify(torch.tensor([1.0, 0.0]), n0=100, n=10_000, alpha=0.001,
        ...                                batch_size=1000, generator=g)
        >>> label, 0.9 < radius <= 1.0   # the true radius is the distance 1.0 to the hyperplane x_0 = 0
        (0, True)

    References:
        Cohen, Rosenfeld, Kolter. Certified adversarial robustness via randomized
        smoothing. ICML 2019; eq. 62.6 of the seed chapter.
    """

    def __init__(self, model: nn.Module, num_classes: int, sigma: float) -> None:
        check_positive_int("num_classes", num_classes, minimum=2)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < math.inf:
            raise ValueError(f"sigma must be a finite noise level > 0, e.g. 0.25, got {sigma!r}")
        self.model = model
        self.num_classes = num_classes
        self.sigma = float(sigma)

    def __repr__(self) -> str:
        return (
            f"Smooth(model={type(self.model).__name__}, num_classes={self.num_classes}, sigma={self.sigma:g})"
        )

    # ------------------------------------------------------------------ sampling

    def _device(self, x: Tensor) -> torch.device:
        return next((p.device for p in self.model.parameters()), x.device)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be one floating-point input without a batch dimension, got {kind}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf; clean the data before certifying it")
        check_model_dtype(self.model, x)

    def sample_counts(
        self, x: Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """How often the base classifier predicts each class on ``num`` noisy copies of ``x``.

        The noise is the stream :meth:`sample_counts_many` draws for an input alone
        (the same counts for the same generator state), whatever ``batch_size``; a
        model with a leading linear layer takes :meth:`sample_counts_many`'s fast path
        (noise after that layer), which is where it runs then.

        Args:
            x: one input, without a batch dimension.
            num: the number of noise samples.
            batch_size: how many noisy copies go through the model at once.
            generator: the noise's random stream (on the model's device); ``None`` uses torch's global one.

        Returns:
            ``(num_classes,)`` int64 counts on the CPU, summing to ``num``.
        """
        self._check_input(x)
        check_positive_int("num", num)
        check_positive_int("batch_size", batch_size)
        device = self._device(x)
        self._check_generator(generator, device)
        if _leading_affine(self.model, x.shape) is not None:  # its shapes fit: no batch-dimension error
            return self.sample_counts_many(x.unsqueeze(0), num, batch_size, generator)[0]
        x = x.to(device)
        counts = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        noise = _ExampleNoise(_stream_seeds(generator, 1, device), num, x.shape, self.sigma, device, x.dtype)
        remaining = num
        with torch.no_grad():
            while remaining > 0:
                b = min(batch_size, remaining)
                # One fresh buffer per batch: noise·σ + x in place, no extra copy of the batch.
                batch = torch.empty((b, *x.shape), device=device, dtype=x.dtype)
                noise.fill(batch, num - remaining)
                batch.add_(x)  # (b, *shape)
                try:
                    logits = self.model(batch)
                except RuntimeError as err:
                    # Most often x came with a batch dimension: the copies are then (b, B, ...).
                    raise ValueError(
                        f"the model failed on a batch of noisy copies of x, shape {tuple(batch.shape)} "
                        f"({str(err).splitlines()[0]}); x must be one input without a batch dimension "
                        "(certify many with certify_dataset)"
                    ) from None
                if not isinstance(logits, Tensor) or logits.shape != (b, self.num_classes):
                    shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                    raise ValueError(
                        "the model must return logits of shape (B, num_classes) = "
                        f"({b}, {self.num_classes}), got {shape}"
                    )
                counts += torch.bincount(logits.argmax(dim=1), minlength=self.num_classes)
                remaining -= b
        return counts.cpu()

    def sample_counts_many(
        self, xs: Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """:meth:`sample_counts` for every input of ``xs`` at once, in full batches across examples.

        The ``N·num`` noisy copies are laid out example after example and cut into
        batches of ``batch_size`` regardless of where one example ends, so every
        forward pass but the last is full even when ``num`` is small or not a
        multiple of ``batch_size``. Two buffers of ``batch_size`` rows are
        allocated once and reused: the noise is drawn into one in place
        (``normal_``, at the input's dtype), the inputs of its rows are gathered
        into the other (or added per example when a batch spans few of them), and
        the sum goes through the model. Each example's copies are independent
        draws, as for :meth:`sample_counts`.

        Keyed noise: example ``e``'s copies come from a generator of its own,
        seeded from ``generator`` (its keys, stream and draw counter for a
        :class:`~advlearn._keyed_random.KeyedGenerator` keyed one per input; else
        one number drawn from it, with ``e`` as the key) and drawn
        :data:`NOISE_BLOCK` copies per call, so each example's counts are the same
        whatever ``batch_size`` and whatever inputs share its batches (under a
        keyed generator, also whatever its place in ``xs``). This costs what
        ``normal_`` costs, plus about 1 µs per example for reseeding and one copy
        of the blocks a batch boundary cuts.

        Noise after the first layer (exact in distribution). On the CPU, torch's
        Gaussian draws cost about 3–4 ns per number (its Mersenne Twister: drawing
        the uniforms alone is 96% of ``normal_``; bf16 draws are slower, not
        faster, and fewer random bits per number would truncate the tails), so for
        an MLP the ``d`` normals per copy cost about as much as its forward pass.
        When the model is a plain ``nn.Sequential`` that starts with
        ``[nn.Flatten(),] nn.Linear(d, k)`` with ``k < d`` (and no hooks), the
        noise is drawn after that layer instead: with ``Wᵀ = QR`` (reduced QR, in
        float64, once per call), ``W(x + η) + b`` for ``η ~ N(0, σ²I_d)`` has the
        same distribution as ``Wx + b + σ·Rᵀz`` for ``z ~ N(0, I_k)``, because
        ``Qᵀη ~ N(0, σ²I_k)`` exactly. Each copy then costs ``k`` normals and a
        ``k × k`` product instead of ``d`` normals and the ``d × k`` layer, and the
        rest of the model sees the same pre-activations in distribution (up to
        float rounding of ``R``). The certificates are the same random variables
        as on the general path; the draws differ, so seeded results differ from a
        model of another class computing the same function. Any other model (a
        CNN, a custom ``nn.Module``) takes the general path.

        Args:
            xs: ``(N, *shape)`` inputs.
            num: noise samples per input.
            batch_size: noisy copies per forward pass.
            generator: the noise's random stream (on the model's device); a
                :class:`~advlearn._keyed_random.KeyedGenerator` must hold one key per input.

        Returns:
            ``(N, num_classes)`` int64 counts on the CPU, each row summing to ``num``.
        """
        if not isinstance(xs, Tensor) or not xs.is_floating_point() or xs.dim() < 2 or xs.shape[0] == 0:
            got = (tuple(xs.shape), xs.dtype) if isinstance(xs, Tensor) else type(xs).__name__
            raise ValueError(f"xs must be a non-empty floating-point batch (N, *shape) of inputs, got {got}")
        if not bool(torch.isfinite(xs).all()):
            raise ValueError("xs contains NaN or Inf; clean the data before certifying it")
        check_positive_int("num", num)
        check_positive_int("batch_size", batch_size)
        device = self._device(xs)
        self._check_generator(generator, device)
        xs = xs.to(device)
        count, classes = xs.shape[0], self.num_classes
        counts = torch.zeros(count * classes, dtype=torch.int64, device=device)
        total = count * num
        size = min(batch_size, total)
        split = _leading_affine(self.model, xs.shape[1:])
        seeds = _stream_seeds(generator, count, device)
        with torch.no_grad():
            if split is None:
                model, sources, scale = self.model, xs, None
                noise = torch.empty((size, *xs.shape[1:]), device=device, dtype=xs.dtype)
                batches = noise
                draws = _ExampleNoise(seeds, num, xs.shape[1:], self.sigma, device, xs.dtype)
            else:
                layer, model = split
                sources = layer(xs.reshape(count, -1))  # (N, k): W x + b
                r = torch.linalg.qr(layer.weight.detach().double().T, mode="r").R  # (k, k), Wᵀ = QR
                scale = (self.sigma * r).to(sources.dtype)
                noise = torch.empty((size, layer.out_features), device=device, dtype=sources.dtype)
                batches = torch.empty_like(noise)
                draws = _ExampleNoise(seeds, num, (layer.out_features,), 1.0, device, sources.dtype)
            gathered = torch.empty_like(batches)
            for start in range(0, total, size):
                b = min(size, total - start)
                spans = draws.fill(noise[:b], start)  # σ η per row (general path), z (fast path)
                # (b, k) on the fast path: σ Rᵀ z per row
                batch = noise[:b] if scale is None else torch.mm(noise[:b], scale, out=batches[:b])
                if len(spans) <= 4:
                    for e, lo, hi in spans:
                        batch[lo:hi].add_(sources[e])
                    rows = None
                else:
                    rows = torch.arange(start, start + b, device=device).floor_divide_(num)
                    torch.index_select(sources, 0, rows, out=gathered[:b])
                    batch.add_(gathered[:b])
                logits = model(batch)
                if logits.dim() != 2 or logits.shape != (b, classes):
                    raise ValueError(
                        "the model must return logits of shape (B, num_classes) = "
                        f"({b}, {classes}), got {tuple(logits.shape)}"
                    )
                if rows is None:
                    rows = torch.arange(start, start + b, device=device).floor_divide_(num)
                counts += torch.bincount(rows * classes + logits.argmax(dim=1), minlength=count * classes)
        return counts.reshape(count, classes).cpu()

    def _check_generator(self, generator: torch.Generator | None, device: torch.device) -> None:
        if isinstance(generator, KeyedGenerator):  # only its keys are read: any device will do
            return
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"generator is on {generator.device} but the model is on {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )

    def certify_many(
        self,
        xs: Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`certify` on every input of ``xs``, the noise batched across examples.

        Selection (``n0`` copies of each input) and estimation (``n`` fresh copies)
        are two passes of :meth:`sample_counts_many` (two draw calls of a keyed
        generator, so two independent streams per example), so the guarantee of
        :meth:`certify` holds for each example exactly as stated there.

        Returns:
            ``(labels, radii)``: ``(N,)`` int64 (−1 where it abstains) and ``(N,)`` float64.
        """
        from scipy.stats import norm  # imported here: scipy.stats alone takes seconds to import

        alpha = _check_alpha(alpha)
        check_positive_int("n0", n0)
        check_positive_int("n", n)
        selection = self.sample_counts_many(xs, n0, batch_size, generator)
        c_a = selection.argmax(dim=1)  # (N,)
        estimation = self.sample_counts_many(xs, n, batch_size, generator)
        n_a = estimation.gather(1, c_a[:, None]).squeeze(1)
        labels = torch.full((xs.shape[0],), ABSTAIN, dtype=torch.int64)
        radii = torch.zeros(xs.shape[0], dtype=torch.float64)
        for i, k in enumerate(n_a.tolist()):
            p_a = lower_confidence_bound(int(k), n, alpha)
            if p_a >= 0.5:
                labels[i], radii[i] = int(c_a[i]), self.sigma * float(norm.ppf(p_a))
        return labels, radii

    # ------------------------------------------------------------------ the two algorithms

    def predict(
        self, x: Tensor, n: int, alpha: float, batch_size: int, generator: torch.Generator | None = None
    ) -> int:
        """Cohen et al.'s PREDICT: the smoothed classifier's label at ``x``, or abstain (−1).

        Draw ``n`` noisy copies, count the two most frequent classes ``n_A ≥ n_B``,
        and return the top class if the two-sided binomial test of
        ``n_A ~ Bin(n_A + n_B, ½)`` rejects at level ``alpha``; otherwise abstain.

        Guarantee: with probability at most ``alpha`` over the noise, the returned
        label differs from ``g(x)`` (it may abstain instead; Cohen et al. 2019, Theorem 2).

        Args:
            x: one input, without a batch dimension.
            n: the number of noise samples.
            alpha: the probability of returning a wrong (non-abstaining) answer.
            batch_size: noisy copies per forward pass.
            generator: the noise's random stream.

        Returns:
            The predicted class, or ``-1`` (:data:`ABSTAIN`).
        """
        alpha = _check_alpha(alpha)
        counts = self.sample_counts(x, n, batch_size, generator)
        top2 = counts.topk(2)
        n_a, n_b = int(top2.values[0]), int(top2.values[1])
        from scipy.stats import binomtest

        if binomtest(n_a, n_a + n_b, p=0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2.indices[0])

    def certify(
        self,
        x: Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """Cohen et al.'s CERTIFY: a label and an ℓ2 radius within which ``g`` provably keeps it.

        1. Selection: the most frequent class ``ĉ_A`` on ``n0`` noisy copies.
        2. Estimation: ``n_A`` = how often ``ĉ_A`` wins on ``n`` fresh copies, and
           the one-sided Clopper–Pearson lower bound ``p̲_A`` at level ``alpha``.
        3. If ``p̲_A < ½`` abstain; else return ``(ĉ_A, σ·Φ⁻¹(p̲_A))`` (eq. 62.6
           with ``p̄_B = 1 − p̲_A``).

        Guarantee: with probability at least ``1 − alpha`` over the noise, if a
        label is returned then ``g(x + δ) = ĉ_A`` for every ``‖δ‖₂ < radius``.

        Args:
            x: one input, without a batch dimension.
            n0: samples for selecting the top class (e.g. 100).
            n: samples for estimating its probability (e.g. 100,000).
            alpha: the failure probability of the certificate.
            batch_size: noisy copies per forward pass.
            generator: the noise's random stream.

        Returns:
            ``(label, radius)``; ``(-1, 0.0)`` when it abstains.
        """
        alpha = _check_alpha(alpha)
        check_positive_int("n0", n0)
        check_positive_int("n", n)
        selection = self.sample_counts(x, n0, batch_size, generator)
        c_a = int(selection.argmax())
        estimation = self.sample_counts(x, n, batch_size, generator)
        p_a = lower_confidence_bound(int(estimation[c_a]), n, alpha)
        if p_a < 0.5:
            return ABSTAIN, 0.0
        from scipy.stats import norm

        return c_a, self.sigma * float(norm.ppf(p_a))


# ----------------------------------------------------------------------------- data sets and curves


@dataclass(frozen=True)
class SmoothingCertificates:
    """:meth:`Smooth.certify` run on every example of a data set.

    Attributes:
        labels: the true labels, ``(N,)`` int64.
        predictions: the certified labels, ``-1`` where it abstained, ``(N,)`` int64.
        radii: the certified ℓ2 radii, 0 where it abstained, ``(N,)`` float64.
        seconds: the wall time per example, ``(N,)`` float64: each chunk's time shared equally by its
            examples (they are certified together).
        sigma, n0, n, alpha: the settings the certificates hold for.
    """

    labels: Tensor
    predictions: Tensor
    radii: Tensor
    seconds: Tensor
    sigma: float
    n0: int
    n: int
    alpha: float

    @property
    def correct(self) -> Tensor:
        """``(N,)`` bool: the certified label is the true one (never where it abstained)."""
        return self.predictions == self.labels

    @property
    def num_examples(self) -> int:
        return int(self.labels.numel())

    def certified_accuracy(self, radii: Sequence[float] | Tensor) -> Tensor:
        """The fraction of examples certified correct within each radius; see :func:`certified_accuracy`."""
        return certified_accuracy(self.radii, self.correct, radii)


def certified_accuracy(radii: Tensor, correct: Tensor, at: Sequence[float] | Tensor) -> Tensor:
    """Certified accuracy at each radius of ``at``: the share of examples correct with radius ≥ r.

    An example counts at radius ``r`` when its certified label is right and its
    certified radius is at least ``r`` (Cohen et al. 2019, §4: "approximate
    certified test accuracy"). The curve is non-increasing in ``r``.

    Args:
        radii: ``(N,)`` certified radii.
        correct: ``(N,)`` bool, whether each certified label is the true one.
        at: the radii to evaluate at.

    Returns:
        ``(len(at),)`` float64 tensor.

    Example:
        >>> radii, correct = torch.tensor([0.0, 0.5, 1.2]), torch.tensor([True, True, False])
        >>> certified_accuracy(radii, correct, [0.0, 0.5, 1.0])
        tensor([0.6667, 0.3333, 0.0000], dtype=torch.float64)
    """
    radii = torch.as_tensor(radii, dtype=torch.float64).reshape(-1).cpu()
    correct = torch.as_tensor(correct).reshape(-1).cpu().bool()
    if radii.shape != correct.shape:
        raise ValueError(
            f"radii and correct must have the same length, got {radii.numel()} and {correct.numel()}"
        )
    if radii.numel() == 0:
        raise ValueError("radii is empty: certify at least one example")
    points = torch.as_tensor(at, dtype=torch.float64).reshape(-1)  # (R,)
    hits = correct[None, :] & (radii[None, :] >= points[:, None])  # (R, N)
    return hits.double().mean(dim=1)


def certify_dataset(
    smooth: Smooth,
    x: Tensor,
    y: Tensor,
    *,
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    quiet: bool = False,
    chunk: int = 100,
) -> SmoothingCertificates:
    """Run :meth:`Smooth.certify` on every example of ``(x, y)``, the noise batched across examples.

    Examples are certified ``chunk`` at a time by :meth:`Smooth.certify_many`: the
    network sees full batches of ``batch_size`` noisy copies even when an example's
    ``n0`` or ``n`` is not a multiple of it, and the noise buffers are reused. Each
    certificate is the one :meth:`Smooth.certify` gives (same algorithm, same
    guarantee). The noise is keyed by the example's index in ``x`` and one number
    drawn from ``generator`` (:meth:`Smooth.sample_counts_many`), so each example's
    counts and certificate are the same whatever ``batch_size``, ``chunk`` and the
    number of ranks (under torchrun every rank draws the same number).

    Args:
        smooth: the smoothed classifier.
        x: ``(N, *shape)`` inputs; y: ``(N,)`` labels.
        n0, n, alpha, batch_size, generator: as in :meth:`Smooth.certify`.
        quiet: no progress bar.
        chunk: examples certified together (memory: ``chunk`` inputs, the counts and two
            buffers of ``batch_size`` inputs).

    Returns:
        The per-example :class:`SmoothingCertificates`.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x holds {x.shape[0]} inputs but y holds {y.shape[0]} labels")
    check_positive_int("chunk", chunk)
    predictions, radii, seconds = [], [], []
    quiet = quiet or not dist.is_main()
    # The noise is keyed by (one draw of ``generator``, the same on every rank; the example's index).
    device = generator.device if generator is not None else smooth._device(x)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    bar = tqdm(range(0, x.shape[0], chunk), desc=f"certify σ={smooth.sigma:g}", disable=quiet, leave=False)
    for index, start in enumerate(bar):
        if index % dist.world_size() != dist.rank():  # under torchrun, chunk c is rank c mod N's
            continue
        started = time.perf_counter()
        xs = x[start : start + chunk]
        keyed = KeyedGenerator(seed, torch.arange(start, start + xs.shape[0]), device=device)
        labels, rad = smooth.certify_many(xs, n0, n, alpha, batch_size, keyed)
        elapsed = time.perf_counter() - started
        predictions.append(labels)
        radii.append(rad)
        seconds.append(torch.full((len(labels),), elapsed / len(labels), dtype=torch.float64))
    if dist.active():  # every rank's chunks, back in order: chunk c is rank c mod N's c // N-th
        shards = dist.gather(
            [[p.cpu(), r.cpu(), t] for p, r, t in zip(predictions, radii, seconds, strict=True)]
        )
        chunks = [shards[c % len(shards)][c // len(shards)] for c in range(len(bar))]
        predictions, radii, seconds = ([chunk[j] for chunk in chunks] for j in range(3))
    return SmoothingCertificates(
        labels=y.detach().cpu().long(),
        predictions=torch.cat(predictions),
        radii=torch.cat(radii),
        seconds=torch.cat(seconds),
        sigma=smooth.sigma,
        n0=n0,
        n=n,
        alpha=alpha,
    )
