"""The three norms of the threat model, one class each: everything that depends on ``p``.

A norm is its own name: :class:`Linf` is the string ``"linf"`` (so configs, JSON
and ``threat.norm == "linf"`` keep working) that also knows the geometry of its
ball. Each class answers the same questions:

| method | ℓ∞ | ℓ2 | ℓ1 |
|---|---|---|---|
| ``norm(delta)`` | max \\|δᵢ\\| | √Σδᵢ² | Σ\\|δᵢ\\| |
| ``dual(g)`` (Hölder: max of ⟨g, d⟩ over ‖d‖ ≤ 1) | ‖g‖₁ | ‖g‖₂ | ‖g‖∞ |
| ``project(delta, eps)`` (nearest point of the ball) | clip to ±ε | rescale | Duchi et al. sorting |
| ``steepest_ascent(g)`` (the argmax above) | sign(g) | g/‖g‖₂ | ±1 on the largest \\|gᵢ\\| |
| ``random_delta`` (uniform in the ball) | U[−ε, ε]ᴰ | Gaussian dir., radius ε·U^(1/D) | Exp(1) spacings |
| ``hyperplane_step(w, c, lo, up)`` (FAB) | one level λ | level ∝ \\|wᵢ\\| | largest \\|wᵢ\\| first |

Adding a norm means adding one subclass here; :data:`NORMS` and
:func:`get_norm` pick it up by its ``name``. Norms are taken per example over
all non-batch dimensions.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from advlearn import _keyed_random as keyed


def flat(t: Tensor) -> Tensor:
    """View ``(B, ...)`` as ``(B, D)``."""
    return t.reshape(t.shape[0], -1)  # (B, D)


def per_example(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a ``(B,)`` tensor to ``(B, 1, ..., 1)`` so it broadcasts over ``like``."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


class Norm(str):
    """An ℓp norm named by its string, with the geometry of its ε-ball.

    Subclasses set the class attributes and implement the methods; each is a
    singleton equal to its name.
    """

    __slots__ = ()
    #: the name used in configs and on the command line
    name: ClassVar[str]
    #: how a person writes it: ``"ℓ∞"``
    symbol: ClassVar[str]
    #: the exponent p
    ord: ClassVar[float]
    #: the exponent q of the dual norm, 1/p + 1/q = 1
    dual_ord: ClassVar[float]
    #: the dual norm's symbol, ``"ℓ₁"`` for ℓ∞
    dual_symbol: ClassVar[str]
    #: whether :meth:`ThreatModel.steepest_ascent` should drop coordinates pressed against
    #: the box before normalizing (mass put on them would be lost to the clip)
    masks_blocked: ClassVar[bool] = True
    #: whether the ε-ball is its own enclosing ℓ∞ box ``[x0 − ε, x0 + ε]`` (only ℓ∞): then interval
    #: bounds over the box are tight, and a radius as wide as the input box reaches every input
    ball_is_box: ClassVar[bool] = False

    _registry: ClassVar[dict[str, Norm]] = {}

    def __new__(cls) -> Norm:
        return super().__new__(cls, cls.name)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        Norm._registry[cls.name] = cls()

    def __reduce__(self) -> tuple[object, ...]:
        return (get_norm, (self.name,))

    def __call__(self, delta: Tensor) -> Tensor:
        """``‖delta‖_p`` per example, ``(B,)``."""
        norms: Tensor = torch.linalg.vector_norm(flat(delta), ord=self.ord, dim=1)
        return norms

    def dual(self, g: Tensor) -> Tensor:
        """``‖g‖_q`` per example, ``(B,)``: the most a step in the unit ball raises ⟨g, ·⟩ (Hölder)."""
        norms: Tensor = torch.linalg.vector_norm(flat(g), ord=self.dual_ord, dim=1)
        return norms

    def project(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        """The exact Euclidean projection of ``delta`` onto the ball of radius ``eps`` around 0.

        ``eps`` is a float or one radius per example, ``(B,)``, on ``delta``'s device.
        """
        raise NotImplementedError

    def steepest_ascent(self, g: Tensor) -> Tensor:
        """The unit-norm ``d`` maximizing ``⟨g, d⟩`` (eq. 62.1), shaped like ``g``; 0 where ``g`` is 0.

        Never NaN: NaN entries of ``g`` count as 0, and a row with infinite entries gets
        the limit direction, that of ``sign(g)`` on its infinite entries alone.
        """
        raise NotImplementedError

    def steepest_ascent_(self, g: Tensor) -> Tensor:
        """:meth:`steepest_ascent`, overwriting ``g`` where that saves an allocation (same bits)."""
        return self.steepest_ascent(g)

    def project_(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        """:meth:`project`, overwriting ``delta`` where that saves an allocation (same bits)."""
        return self.project(delta, eps)

    def random_delta(
        self, b: int, d: int, eps: Tensor, like: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """``b`` points ``(B, D)`` uniform in the volume of balls of radii ``eps`` ``(B, 1)``."""
        raise NotImplementedError

    def project_in_box(self, delta: Tensor, eps: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        """A point of ``{‖d‖ ≤ ε} ∩ [lower, upper]`` near ``delta`` (``lower ≤ 0 ≤ upper``, ``eps`` ``(B,)``).

        Here the ball projection then the clip, as :meth:`ThreatModel.project` does: feasible, and
        exact for ℓ∞; :class:`L1` overrides it with the exact projection onto the intersection.
        """
        return torch.minimum(torch.maximum(self.project(delta, eps), lower), upper)

    def hyperplane_step(self, w: Tensor, c: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        """The smallest ``d`` (in this norm) with ``⟨w, d⟩ = c`` and ``lower ≤ d ≤ upper``, per row.

        The projection onto a box-constrained hyperplane that FAB takes at every step
        (Croce & Hein 2020, §3.1): ``w`` ``(B, D)`` is the hyperplane's normal, ``c`` ``(B,)``
        how far ``⟨w, ·⟩`` must move, and ``[lower, upper]`` ``(B, D)`` the box around the
        current point (``lower ≤ 0 ≤ upper``). When no point of the box reaches the
        hyperplane, the box point that comes closest (the corner maximizing ``c·⟨w, d⟩``) is
        returned. A coordinate only moves in the direction of ``sign(c·wᵢ)``; each has room
        ``rᵢ`` (``upper`` or ``−lower``) and gains ``|wᵢ|`` per unit moved, so every norm
        solves ``min ‖d‖ s.t. Σ |wᵢ| |dᵢ| = |c|, 0 ≤ |dᵢ| ≤ rᵢ``. Costs one sort of ``D`` per row.

        Example:
            >>> w, c = torch.tensor([[1.0, 2.0]]), torch.tensor([3.0])
            >>> box = torch.full((1, 2), -5.0), torch.full((1, 2), 5.0)
            >>> [get_norm(p).hyperplane_step(w, c, *box) for p in ("linf", "l2", "l1")]
            [tensor([[1., 1.]]), tensor([[0.6000, 1.2000]]), tensor([[0.0000, 1.5000]])]
        """
        dtype = w.dtype
        if torch.finfo(dtype).bits < 32:  # fp16/bf16: solve in fp32 (its sentinels overflow half)
            w, c, lower, upper = (t.float() for t in (w, c, lower, upper))
        toward = w.sign()
        sign = torch.where(c.unsqueeze(1) >= 0, toward, -toward)  # the way each coordinate moves
        room = torch.where(sign >= 0, upper, -lower).clamp_min(0.0)  # (B, D)
        magnitude = self._hyperplane_magnitudes(w.abs(), room, c.abs())
        return (sign * magnitude).to(dtype)

    def _hyperplane_magnitudes(self, gain: Tensor, room: Tensor, need: Tensor) -> Tensor:
        """``|dᵢ|`` of :meth:`hyperplane_step`: least norm with ``Σ gainᵢ|dᵢ| = need``, ``|dᵢ| ≤ roomᵢ``."""
        raise NotImplementedError


class Linf(Norm):
    """ℓ∞: the box ``|δᵢ| ≤ ε``."""

    __slots__ = ()
    name = "linf"
    symbol = "ℓ∞"
    ord = math.inf
    dual_ord = 1.0
    dual_symbol = "ℓ₁"
    # Every coordinate moves by the full step anyway and the box clip undoes the blocked ones,
    # so the mask would change nothing but the cost.
    masks_blocked = False
    ball_is_box = True

    def project(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        if isinstance(eps, float):
            return delta.clamp(-eps, eps)  # one fused op on the attack's hot path
        e = per_example(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)

    def steepest_ascent(self, g: Tensor) -> Tensor:
        # sign(±inf) = ±1 already; only NaN needs a value (0: no information, no move).
        return g.sign().nan_to_num_(nan=0.0)

    def random_delta(
        self, b: int, d: int, eps: Tensor, like: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        return (2 * keyed.rand((b, d), generator=generator, device=like.device, dtype=like.dtype) - 1) * eps

    def _hyperplane_magnitudes(self, gain: Tensor, room: Tensor, need: Tensor) -> Tensor:
        # min max|dᵢ|: every useful coordinate moves by the same λ, capped by its room.
        return _water_fill(gain, (gain > 0).to(gain.dtype), room, need)


class L2(Norm):
    """ℓ2: the Euclidean ball."""

    __slots__ = ()
    name = "l2"
    symbol = "ℓ2"
    ord = 2.0
    dual_ord = 2.0
    dual_symbol = "ℓ₂"

    def project(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        eps = _as_tensor(eps, delta)
        norms = self(delta)
        scale = torch.where(norms > eps, eps / norms.clamp_min(1e-30), torch.ones_like(norms))
        return delta * per_example(scale, delta)

    def project_(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        eps = _as_tensor(eps, delta)
        norms = self(delta)
        scale = torch.where(norms > eps, eps / norms.clamp_min(1e-30), torch.ones_like(norms))
        return delta.mul_(per_example(scale, delta))

    def steepest_ascent(self, g: Tensor) -> Tensor:
        rows = _finite_rows(flat(g))  # (B, D)
        # Rescale by the largest entry first: squaring entries of ~1e-25 underflows in float32,
        # and saturated softmax gives gradients that small. All-zero rows stay zero.
        scaled = rows / rows.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
        unit: Tensor = scaled / torch.linalg.vector_norm(scaled, dim=1, keepdim=True).clamp_min(1e-30)
        return unit.reshape(g.shape)

    def steepest_ascent_(self, g: Tensor) -> Tensor:
        rows = flat(g)  # (B, D), a view of g
        # max |g|: NaN/inf propagate, as in vector_norm(ord=inf), which is 10x slower on CPU
        largest = rows.abs().amax(dim=1, keepdim=True)
        if not bool(largest.isfinite().all()):  # one (B,) flag read per step; rare rows take the exact path
            return self.steepest_ascent(g)
        rows.div_(largest.clamp_min(torch.finfo(rows.dtype).tiny))
        rows.div_(torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(1e-30))
        return g

    def random_delta(
        self, b: int, d: int, eps: Tensor, like: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        device, dtype = like.device, like.dtype
        direction = keyed.randn((b, d), generator=generator, device=device, dtype=dtype)
        direction = direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True).clamp_min(1e-30)
        radius = keyed.rand((b, 1), generator=generator, device=device, dtype=dtype) ** (1.0 / d)
        delta: Tensor = direction * radius * eps
        return delta

    def _hyperplane_magnitudes(self, gain: Tensor, room: Tensor, need: Tensor) -> Tensor:
        # min Σdᵢ²: by the KKT conditions |dᵢ| = min(λ·|wᵢ|, roomᵢ).
        return _water_fill(gain, gain, room, need)


class L1(Norm):
    """ℓ1: the cross-polytope ``Σ|δᵢ| ≤ ε``."""

    __slots__ = ()
    name = "l1"
    symbol = "ℓ1"
    ord = 1.0
    dual_ord = math.inf
    dual_symbol = "ℓ∞"

    def project(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        """Duchi et al. (2008, Fig. 1): soft-thresholding by the θ that puts the result on the sphere.

        References:
            Duchi, Shalev-Shwartz, Singer, Chandra. Efficient projections onto
            the ℓ1-ball for learning in high dimensions. ICML 2008.
        """
        eps = _as_tensor(eps, delta)
        rows = flat(delta)  # (B, D)
        u = rows.abs()
        return self._project_rows(delta, rows, u, u.sum(dim=1) <= eps, eps)

    def _project_rows(self, delta: Tensor, rows: Tensor, u: Tensor, inside: Tensor, eps: Tensor) -> Tensor:
        """:meth:`project` given ``rows = flat(delta)``, ``u = |rows|`` and which rows are ``inside``."""
        mu = _sorted_descending(u)
        cumsum = mu.cumsum(dim=1)  # (B, D)
        index = torch.arange(rows.shape[1], device=rows.device)
        # rho = the largest j with mu_j > (sum_{i<=j} mu_i - eps) / j
        positive = mu * (index + 1).to(rows.dtype) > cumsum - eps.unsqueeze(1)
        rho = (positive * index).amax(dim=1, keepdim=True)  # index of the last True (0 if none)
        theta = (cumsum.gather(1, rho) - eps.unsqueeze(1)) / (rho + 1).to(rows.dtype)  # (B, 1)
        projected = rows.sign() * (u - theta).clamp_min(0.0)
        out = torch.where(inside.unsqueeze(1), rows, projected)
        return out.reshape(delta.shape)

    def steepest_ascent(self, g: Tensor) -> Tensor:
        rows = _finite_rows(flat(g))  # (B, D)
        top = rows.abs().argmax(dim=1, keepdim=True)  # (B, 1)
        d = torch.zeros_like(rows).scatter_(1, top, rows.gather(1, top).sign())
        return d.reshape(g.shape)

    def steepest_ascent_(self, g: Tensor) -> Tensor:
        rows = flat(g)  # (B, D), a view of g
        largest, top = rows.abs().max(dim=1, keepdim=True)  # top: the first largest, as argmax's
        if not bool(largest.isfinite().all()):  # one (B,) flag read per step
            return self.steepest_ascent(g)
        signs = rows.gather(1, top).sign()
        rows.zero_().scatter_(1, top, signs)
        return g

    def project_(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        # Inside the ball (every step until the iterate reaches the sphere) the sort is skipped;
        # outside, |δ| and the row sums are not computed twice.
        eps = _as_tensor(eps, delta)
        rows = flat(delta)
        u = rows.abs()
        inside = u.sum(dim=1) <= eps
        if bool(inside.all()):
            return delta
        return self._project_rows(delta, rows, u, inside, eps)

    def random_delta(
        self, b: int, d: int, eps: Tensor, like: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        device, dtype = like.device, like.dtype
        e = keyed.exponential((b, d + 1), generator=generator, device=device, dtype=dtype)
        signs = keyed.random_sign((b, d), generator=generator, device=device, dtype=dtype)
        return signs * e[:, :d] / e.sum(dim=1, keepdim=True) * eps

    def sparse_random_delta(
        self, eps: Tensor, lower: Tensor, upper: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """A standard Gaussian draw, projected exactly onto ``{‖d‖₁ ≤ ε} ∩ [lower, upper]``
        (:meth:`project_in_box`; ``eps`` ``(B,)``, the bounds ``(B, ...)``): sparse APGD-ℓ1's start.

        Unlike :meth:`random_delta` it is not uniform: when the draw's clipped mass exceeds ``ε``
        (it does unless ``ε`` is large against ``D`` and the box), the point lies on the sphere and
        only the coordinates of the largest draws that the box lets move are nonzero, each by far
        more than ``ε/D``.

        Example:
            >>> lower, upper = torch.full((2, 100), -0.5), torch.full((2, 100), 0.5)
            >>> d = L1().sparse_random_delta(torch.tensor([2.0, 3.0]), lower, upper, None)
            >>> [round(v, 4) for v in L1()(d).tolist()], bool(((d != 0).sum(1) < 50).all())
            ([2.0, 3.0], True)
        """
        z = keyed.randn(tuple(lower.shape), generator=generator, device=lower.device, dtype=lower.dtype)
        return self.project_in_box(z, eps, lower, upper)

    def project_in_box(self, delta: Tensor, eps: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        """The exact Euclidean projection of ``delta`` onto ``{‖d‖₁ ≤ ε} ∩ [lower, upper]`` (``lower ≤ 0``).

        Unlike ball-then-clip, this is the nearest point of the intersection: soft-thresholding
        clipped to the box, ``dᵢ = sign(δᵢ)·clip(|δᵢ| − θ, 0, roomᵢ)``, with the least ``θ ≥ 0``
        that puts it in the ball. Its ℓ1 mass is piecewise linear in ``θ`` with kinks at
        ``|δᵢ| − roomᵢ`` and ``|δᵢ|``; sorting the ``2D`` kinks finds ``θ`` exactly (Croce & Hein
        2021, "Mind the box", §3). ``eps`` is ``(B,)``; the other tensors are ``(B, ...)``.

        Example:
            >>> d = torch.tensor([[0.9, -0.2, 0.6]])
            >>> lower, upper = torch.full((1, 3), -1.0), torch.full((1, 3), 0.5)
            >>> L1().project_in_box(d, torch.tensor([0.8]), lower, upper) + 0.0  # θ = 0.3, then the box
            tensor([[0.5000, 0.0000, 0.3000]])
        """
        # θ comes from cumulative sums over 2D kinks: in float32 they drift by D·ulp, enough to
        # leave the ball by 1e-5 at ε = 4 on 192 coordinates, so they run in float64 (not on MPS,
        # which has none).
        work = torch.float32 if delta.device.type == "mps" else torch.float64
        z = flat(delta).to(work)
        eps, upper, lower = eps.to(work), upper.to(work), lower.to(work)
        mag = z.abs()
        room = torch.where(z >= 0, flat(upper), -flat(lower)).clamp_min(0.0)
        clipped = torch.minimum(mag, room)  # θ = 0
        inside = clipped.sum(dim=1) <= eps
        events = torch.cat(
            [(mag - room).clamp_min(0.0), mag], dim=1
        )  # a coordinate starts, then stops, shrinking
        # θ does not depend on the order of equal kinks (no mass is lost between them, and it is read
        # at the last of each run of equal kinks), so the sort need not be torch's
        events, order = _argsort_rows(events)
        change = torch.where(order < mag.shape[1], 1.0, -1.0).to(work)  # a start or a stop
        shrinking = change.cumsum(dim=1)  # coordinates shrinking just after each event
        lost = (shrinking[:, :-1] * (events[:, 1:] - events[:, :-1])).cumsum(dim=1)
        mass = clipped.sum(dim=1, keepdim=True) - torch.cat([torch.zeros_like(lost[:, :1]), lost], dim=1)
        k = (mass > eps.unsqueeze(1)).sum(dim=1, keepdim=True).clamp(1, events.shape[1] - 1) - 1
        theta = events.gather(1, k) + (mass.gather(1, k) - eps.unsqueeze(1)) / shrinking.gather(
            1, k
        ).clamp_min(1)
        theta = torch.where(inside.unsqueeze(1), torch.zeros_like(theta), theta)
        out = z.sign() * torch.minimum((mag - theta).clamp_min(0.0), room)
        return out.reshape(delta.shape).to(delta.dtype)

    def sparse_ascent(self, g: Tensor, fraction: Tensor) -> Tensor:
        """The unit-ℓ1 direction spreading equal mass, with ``g``'s signs, over the ``fraction`` ``(B,)``
        of coordinates with the largest ``|gᵢ|`` (at least one): sparse APGD-ℓ1's step.

        ``fraction → 0`` is :meth:`steepest_ascent` (one coordinate); ``fraction = 1`` is ``sign(g)/D``.

        Example:
            >>> L1().sparse_ascent(torch.tensor([[0.1, -3.0, 2.0, 0.0]]), torch.tensor([0.5]))
            tensor([[ 0.0000, -0.5000,  0.5000,  0.0000]])
        """
        rows = flat(g)
        n = rows.shape[1]
        mag = rows.abs()
        rank = ((1.0 - fraction) * n).long().clamp(0, n - 1).unsqueeze(1)
        threshold = mag.sort(dim=1).values.gather(1, rank)  # (B, 1)
        signs = rows.sign() * (mag >= threshold)
        d = signs / signs.abs().sum(dim=1, keepdim=True).clamp_min(1.0)
        return d.reshape(g.shape)

    def _hyperplane_magnitudes(self, gain: Tensor, room: Tensor, need: Tensor) -> Tensor:
        # min Σ|dᵢ|, a knapsack with divisible items: fill the coordinates of largest |wᵢ| first.
        order = gain.argsort(dim=1, descending=True)
        g, r = gain.gather(1, order), room.gather(1, order)
        reach = (g * r).cumsum(dim=1)  # (B, D) what the first j coordinates give when full
        k = (reach < need.unsqueeze(1)).sum(dim=1, keepdim=True)  # the coordinate filled in part
        before = torch.cat([torch.zeros_like(reach[:, :1]), reach], dim=1).gather(1, k)  # (B, 1)
        j = torch.arange(g.shape[1], device=g.device).unsqueeze(0)
        partial = (need.unsqueeze(1) - before) / g.gather(1, k.clamp_max(g.shape[1] - 1)).clamp_min(1e-30)
        sorted_d = torch.where(j < k, r, torch.where(j == k, torch.minimum(partial, r), torch.zeros_like(r)))
        return torch.zeros_like(sorted_d).scatter_(1, order, sorted_d)


def _water_fill(gain: Tensor, rate: Tensor, room: Tensor, need: Tensor) -> Tensor:
    """``|dᵢ| = min(λ·rateᵢ, roomᵢ)`` with the level ``λ ≥ 0`` that makes ``Σ gainᵢ|dᵢ| = need`` (B rows).

    ``Σ gainᵢ min(λ rateᵢ, roomᵢ)`` is piecewise linear and increasing in ``λ`` with kinks at
    ``roomᵢ / rateᵢ``: sorting the kinks finds the piece holding ``need`` and ``λ`` on it. Where
    even ``λ = ∞`` falls short, every coordinate with ``rateᵢ > 0`` is filled to its room.
    """
    useful = rate > 0
    kink = torch.where(useful, room / rate.clamp_min(1e-30), math.inf)
    kink, order = kink.sort(dim=1)
    finite = kink.isfinite()
    g, a, r = gain.gather(1, order), rate.gather(1, order), room.gather(1, order)
    full = torch.where(finite, g * r, 0.0).cumsum(dim=1)  # saturated, j ≤ i
    slope = (g * a).flip(1).cumsum(dim=1).flip(1)  # Σ_{j ≥ i} gain·rate
    zero = full.new_zeros(full.shape[0], 1)
    after = torch.cat([slope[:, 1:], zero], dim=1)  # Σ_{j > i}
    at_kink = torch.where(finite, full + kink.clamp_max(1e30) * after, math.inf)
    k = (at_kink < need.unsqueeze(1)).sum(dim=1, keepdim=True)  # kinks below the level
    full_before = torch.cat([zero, full], dim=1).gather(1, k)
    slope_from = torch.cat([slope, zero], dim=1).gather(1, k)
    level = torch.where(
        slope_from > 0, (need.unsqueeze(1) - full_before) / slope_from.clamp_min(1e-30), math.inf
    )
    return torch.where(useful, torch.minimum(level * rate, room), 0.0)


def _sorted_descending(u: Tensor) -> Tensor:
    """The rows of ``u`` ``(B, D)`` sorted in descending order: ``torch.sort``'s values, bit for bit.

    On CPU (float32/float64, no autograd) numpy's vectorised sort of a zero-copy view does it about
    20x faster than ``torch.sort``, which sorts (value, index) pairs (7.4 vs 0.5 ms for 128 x 784):
    the values are the same numbers in the same order (ties are equal; NaN, the largest for
    ``torch.sort``, ends numpy's ascending sort and so starts the flipped one).
    """
    if u.device.type == "cpu" and u.dtype in (torch.float32, torch.float64) and not u.requires_grad:
        return torch.from_numpy(np.sort(u.numpy(), axis=1)).flip(1)
    return torch.sort(u, dim=1, descending=True).values


def _argsort_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """The rows of ``t`` ``(B, D)`` sorted ascending and the permutation that sorts them.

    The values are ``torch.sort``'s, but equal entries may come in another order: only for callers
    whose result does not depend on it. On CPU (float32/float64, no autograd) numpy's stable sort,
    which is quick on the long runs of equal entries of sparse rows, does it in about 0.7x the time.
    """
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not t.requires_grad:
        rows = t.numpy()
        permutation = np.argsort(rows, axis=1, kind="stable")
        return torch.from_numpy(np.take_along_axis(rows, permutation, axis=1)), torch.from_numpy(permutation)
    values, order = torch.sort(t, dim=1)
    return values, order


def _finite_rows(rows: Tensor) -> Tensor:
    """``rows`` ``(B, D)`` with NaN set to 0 and, in a row holding ±inf, ``sign`` on its infinite
    entries and 0 elsewhere: the direction ``g/‖g‖`` tends to as those entries grow. Finite rows
    come back unchanged (bit for bit)."""
    inf = rows.isinf()
    has_inf = inf.any(dim=1, keepdim=True)
    return torch.where(has_inf, torch.where(inf, rows.sign(), 0.0), rows.nan_to_num(nan=0.0))


def _as_tensor(eps: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(eps, Tensor):
        return eps
    return torch.full((like.shape[0],), eps, device=like.device, dtype=like.dtype)


#: every known norm, in the order configs and docs list them
NORMS: tuple[Norm, ...] = tuple(Norm._registry.values())


def get_norm(name: str | Norm) -> Norm:
    """The norm called ``name``.

    Raises:
        ValueError: for a name that is not a known norm, listing the known ones.
    """
    if isinstance(name, Norm):
        return name
    found = Norm._registry.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"norm={name!r} is not a known norm; use one of {', '.join(map(repr, NORMS))}")
    return found
