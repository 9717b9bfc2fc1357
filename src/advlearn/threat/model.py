"""The threat model: the ε-ball of one norm, intersected with a box.

Every other module asks a :class:`ThreatModel` for projections, ascent
directions, random starts and norms; none of them branches on the norm (each
norm's geometry is one class in :mod:`advlearn.threat.norms`). The constraint
set around a clean input ``x0`` is

.. math::

    S(x_0) = \\{x : \\|x - x_0\\|_p \\le \\varepsilon\\} \\cap [lo, hi]^d,
    \\qquad p \\in \\{\\infty, 2, 1\\},

or the ball alone when ``bounds=None`` (perturbations of hidden activations, VAT).
Norms are taken per example over all non-batch dimensions, so an input of
shape ``(B, C, H, W)`` is treated as ``B`` vectors of ``C*H*W`` entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from advlearn.threat.norms import Norm, flat, get_norm, per_example

#: input dtypes whose perturbations, projections and ε-ball tests are computed in float32
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def round_toward(x: Tensor, x0: Tensor) -> Tensor:
    """``x`` (float32) in ``x0``'s dtype, each coordinate rounded toward ``x0`` rather than to nearest.

    Rounding a point of ``S(x0)`` to nearest in bf16 can step out of the ball (``x0 + 0.1``
    becomes ``x0 + 0.1016``). Rounding toward ``x0``, which is itself representable, only
    shrinks every ``|xᵢ − x0ᵢ|``, so the point stays in every ℓp ball and in the box.
    """
    r = x.to(x0.dtype)
    overshoot = (r.float() - x0.float()).abs() > (x - x0.float()).abs()
    return torch.where(overshoot, torch.nextafter(r, x0), r)


@dataclass(frozen=True, eq=False, init=False)
class ThreatModel:
    """An ε-ball in the ℓ∞, ℓ2 or ℓ1 norm intersected with the box ``bounds``.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (or a :class:`~advlearn.threat.norms.Norm`);
            ``threat.norm`` is then the norm object, equal to its name.
        eps: the radius, a float shared by the batch or a ``(B,)`` tensor with
            one radius per example. Must be finite and non-negative.
        bounds: the box ``(lo, hi)`` valid inputs live in, ``lo < hi``; ``None``
            for a ball with no box (hidden activations, VAT's perturbations).

    Raises:
        ValueError: for an unknown norm, a negative or non-finite ``eps``, or
            bounds that are not an increasing pair of finite numbers.

    Example:
        >>> import torch
        >>> threat = ThreatModel("l1", eps=1.0, bounds=(-10.0, 10.0))
        >>> threat.project(torch.tensor([[3.0, 1.0, 0.2]]), torch.zeros(1, 3))
        tensor([[1., 0., 0.]])
    """

    norm: Norm
    eps: float | Tensor
    bounds: tuple[float, float] | None

    def __init__(
        self, norm: Norm | str, eps: float | Tensor, bounds: tuple[float, float] | None = (0.0, 1.0)
    ) -> None:
        object.__setattr__(self, "norm", get_norm(norm))
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "bounds", bounds)
        if isinstance(self.eps, Tensor):
            eps = self.eps.detach()
            if eps.dim() != 1 or not eps.is_floating_point():
                raise ValueError(
                    f"eps must be a float or a 1-D floating tensor of shape (B,), got a tensor of "
                    f"shape {tuple(eps.shape)} and dtype {eps.dtype}"
                )
            if not bool(torch.isfinite(eps).all()) or bool((eps < 0).any()):
                raise ValueError("eps must be finite and >= 0 for every example")
        else:
            if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)):
                raise ValueError(f"eps must be a float or a (B,) tensor, got {type(self.eps).__name__}")
            if not math.isfinite(self.eps) or self.eps < 0:
                raise ValueError(f"eps must be finite and >= 0, got {self.eps}")
            object.__setattr__(self, "eps", float(self.eps))
        if self.bounds is None:
            return
        try:
            lo, hi = (float(b) for b in self.bounds)
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be a pair (lo, hi) of numbers, got {self.bounds!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be finite with lo < hi, got {self.bounds!r}")
        object.__setattr__(self, "bounds", (lo, hi))

    # ------------------------------------------------------------------ helpers

    @property
    def dual_ord(self) -> float:
        """The exponent q of the dual norm (1 for ℓ∞, 2 for ℓ2, ∞ for ℓ1)."""
        return self.norm.dual_ord

    def dual_norm(self, g: Tensor) -> Tensor:
        """``‖g‖_q`` per example, ``(B,)``, with q the dual exponent: the most a step in the
        unit ball can raise a linear function with gradient ``g`` (Hölder)."""
        return self.norm.dual(g)

    @property
    def ord(self) -> float:
        """The exponent p of the norm (∞, 2 or 1)."""
        return self.norm.ord

    @property
    def label(self) -> str:
        """How a person reads it: ``"ℓ∞, ε = 0.3"``."""
        eps = "per-example" if isinstance(self.eps, Tensor) else f"{self.eps:g}"
        return f"{self.norm.symbol}, ε = {eps}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ThreatModel):
            return NotImplemented
        if isinstance(self.eps, Tensor) or isinstance(other.eps, Tensor):
            same_eps = (
                isinstance(self.eps, Tensor)
                and isinstance(other.eps, Tensor)
                and self.eps.shape == other.eps.shape
                and bool((self.eps.cpu() == other.eps.cpu()).all())
            )
        else:
            same_eps = self.eps == other.eps
        return self.norm == other.norm and same_eps and self.bounds == other.bounds

    def __hash__(self) -> int:
        # eps is left out so that equal threat models with tensor radii hash alike.
        return hash((self.norm.name, self.bounds))

    def eps_for(self, x: Tensor) -> Tensor:
        """The radius of every example of ``x``, shape ``(B,)``, on ``x``'s device and dtype."""
        if isinstance(self.eps, Tensor):
            if self.eps.shape[0] != x.shape[0]:
                raise ValueError(
                    f"eps holds {self.eps.shape[0]} radii but the batch has {x.shape[0]} examples"
                )
            return self.eps.to(device=x.device, dtype=x.dtype)
        return torch.full((x.shape[0],), self.eps, device=x.device, dtype=x.dtype)

    def select(self, index: Tensor) -> ThreatModel:
        """The same threat model restricted to the examples ``index`` picks.

        A shared float ``eps`` is returned unchanged; a per-example tensor is indexed.
        """
        if isinstance(self.eps, Tensor):
            return replace(self, eps=self.eps[index.to(self.eps.device)])
        return self

    def with_eps(self, eps: float | Tensor) -> ThreatModel:
        """A copy with another radius (used by ε sweeps)."""
        return replace(self, eps=eps)

    # ----------------------------------------------------------------- geometry

    def contains(self, x: Tensor, x0: Tensor, atol: float = 1e-5) -> Tensor:
        """Whether each ``x`` lies in ``S(x0)``, up to ``atol``; a ``(B,)`` bool tensor.

        ``atol`` absorbs float rounding, both on the norm (``‖x − x0‖ ≤ ε + atol``)
        and on the box (``lo − atol ≤ x ≤ hi + atol``).
        """
        if x.dtype in _LOW_PRECISION or x0.dtype in _LOW_PRECISION:
            # The test is taken in float32: a difference of two bf16 numbers rounds in bf16.
            x, x0 = x.float(), x0.float()
        in_ball = self.norm(x - x0) <= self.eps_for(x) + atol
        if self.bounds is None:
            return in_ball
        lo, hi = self.bounds
        in_box = flat((x >= lo - atol) & (x <= hi + atol)).all(dim=1)
        return in_ball & in_box

    def project_ball(self, delta: Tensor) -> Tensor:
        """The exact Euclidean projection of ``delta`` onto the ε-ball around 0.

        ℓ∞: coordinate-wise clipping. ℓ2: radial rescaling. ℓ1: the sorting
        algorithm of Duchi et al. (2008, Fig. 1), soft-thresholding by the θ that
        puts the result on the sphere.

        References:
            Duchi, Shalev-Shwartz, Singer, Chandra. Efficient projections onto
            the ℓ1-ball for learning in high dimensions. ICML 2008.
        """
        return self.norm.project(delta, self.eps if isinstance(self.eps, float) else self.eps_for(delta))

    @property
    def box(self) -> tuple[float, float]:
        """``bounds`` for code that needs a box (input-space attacks, reports, IBP).

        Raises:
            ValueError: when ``bounds`` is ``None`` (an unbounded ball).
        """
        if self.bounds is None:
            raise ValueError(
                "this needs a box but the threat model has bounds=None; give ThreatModel(bounds=(lo, hi))"
            )
        return self.bounds

    def enclosing_box(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        """The smallest axis-aligned box holding ``S(x0)``'s ball part, cut to ``bounds``: ``(lower, upper)``.

        Every ℓp ball with p ≥ 1 lies inside the ℓ∞ ball of the same radius
        (``‖δ‖∞ ≤ ‖δ‖_p``), and that is tight, so the box is ``[x0 − ε, x0 + ε]``
        for every norm; it is ``S(x0)`` itself for ℓ∞. Interval bound propagation starts from it.
        """
        # A float radius is subtracted as a scalar (one fused op), a per-example one broadcast.
        eps = self.eps if isinstance(self.eps, float) else per_example(self.eps_for(x0), x0)
        lower, upper = x0 - eps, x0 + eps
        if self.bounds is not None:
            lo, hi = self.bounds
            lower, upper = lower.clamp_(min=lo), upper.clamp_(max=hi)
        return lower, upper

    def project_box(self, x: Tensor) -> Tensor:
        """Clip ``x`` to the box ``bounds`` (``x`` itself when there is no box)."""
        if self.bounds is None:
            return x
        lo, hi = self.bounds
        return x.clamp(lo, hi)

    def project(self, x: Tensor, x0: Tensor) -> Tensor:
        """A point of ``S(x0)``: the ball projection of ``x − x0``, then the box.

        For ℓ∞ this is the exact nearest point of ``S(x0)``. For ℓ2 and ℓ1 the
        ball step is the exact projection and the box step can only shrink
        ``|x − x0|`` coordinate-wise (``x0`` lies in the box), so the result
        always stays in the ball: it is feasible, idempotent, and what PGD has
        used since Madry et al. (2018), though not in general the nearest point
        of the intersection.
        """
        if x.dtype in _LOW_PRECISION:
            return round_toward(self.project(x.float(), x0.float()), x0)
        x = x0 + self.project_ball(x - x0)
        if self.bounds is None:
            return x
        lo, hi = self.bounds
        return x.clamp_(lo, hi)

    def steepest_ascent(self, g: Tensor, x: Tensor | None = None) -> Tensor:
        """The unit-norm direction ``d`` maximizing ``⟨g, d⟩`` (eq. 62.1).

        ``sign(g)`` for ℓ∞, ``g / ‖g‖₂`` for ℓ2, and for ℓ1 all mass on one
        coordinate of largest ``|g|``, with its sign. Then
        ``⟨g, ε·steepest_ascent(g)⟩ = ε‖g‖_q`` with ``q`` the dual exponent.

        Args:
            g: the gradient, shape ``(B, ...)``.
            x: optional current point. When given, coordinates sitting on the box
                boundary whose gradient points out of the box are left out, so the
                step is spent where it can move (the steepest feasible direction).
                This matters for ℓ2 and ℓ1, where mass put on a clipped
                coordinate would be lost; for ℓ∞ the result after clipping is the same.

        Returns:
            A tensor shaped like ``g`` with ``‖d‖_p = 1`` per example (0 where ``g`` is 0).
        """
        if x is not None and self.bounds is not None and self.norm.masks_blocked:
            lo, hi = self.bounds
            blocked = ((x <= lo) & (g < 0)) | ((x >= hi) & (g > 0))
            g = g.masked_fill(blocked, 0.0)
        return self.norm.steepest_ascent(g)

    def ascent_step(self, x: Tensor, x0: Tensor, grad: Tensor, step_size: Tensor) -> Tensor:
        """One projected steepest-ascent step, the move every first-order attack makes:

        .. math::

            x' = \\Pi_{S(x_0)}\\big(x + \\eta \\cdot d^*(\\nabla, x)\\big)

        with ``d*`` the steepest feasible ascent direction and ``η`` the per-example
        ``step_size`` ``(B,)``. Descend by passing ``-grad``.
        """
        ascent = self.steepest_ascent(grad, x)
        return self.project(torch.addcmul(x, ascent, per_example(step_size, x)), x0)

    def ascent_step_(
        self, x: Tensor, x0: Tensor, grad: Tensor, step_size: Tensor, box: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """:meth:`ascent_step` computed in place, for an attack's inner loop: ``x`` and ``grad`` are
        scratch (both overwritten) and the new point is returned, in ``x``'s storage for ℓ∞ and ℓ2,
        which allocate no full-size tensor (ℓ1's exact projection sorts, into new tensors, once the
        iterate leaves the ball).

        ``box`` is :meth:`enclosing_box` of ``x0``, computed once per attack by the caller (it is
        computed here when ``None``). For ℓ∞ the ball is that box, so a step is ``sign``, one
        multiply-add and one clamp to ``[max(x0 − ε, lo), min(x0 + ε, hi)]``: the same set as
        :meth:`ascent_step`'s clip of ``x − x0`` then of ``x``, with the float ops in another order
        (a coordinate inside the box is ``x + η·sign`` rather than ``x0 + ((x + η·sign) − x0)``,
        so results can differ from :meth:`ascent_step` in the last bit). For ℓ2 and ℓ1 the
        float ops are :meth:`ascent_step`'s, in place: the same bits. ℓ2 and ℓ1 read one ``(B,)``
        flag on the host per step (whether every gradient row is finite, else the exact
        non-finite handling of :meth:`Norm.steepest_ascent` runs); ℓ∞ reads nothing.

        Shape:
            ``x``, ``x0``, ``grad``: ``(B, ...)``; ``step_size``: ``(B,)``.
        """
        step = per_example(step_size, x)
        if 0 in grad.stride():  # an expanded gradient (a model summing its input) cannot be written in place
            grad = grad.contiguous()
        if self.norm.ball_is_box:
            lower, upper = self.enclosing_box(x0) if box is None else box
            direction = grad.sign_().nan_to_num_(nan=0.0)  # sign(±inf) = ±1; NaN: no information, no move
            return x.addcmul_(direction, step).clamp_(lower, upper)
        if self.bounds is not None and self.norm.masks_blocked:
            lo, hi = self.bounds
            # pressed against the box: where(grad < 0, x <= lo, x >= hi), in three bool ops in place
            # (torch.where on bools costs as much as the rest of the step on CPU)
            low, blocked = x <= lo, x >= hi
            low ^= blocked
            low &= grad < 0
            blocked ^= low
            grad.masked_fill_(blocked, 0.0)
        direction = self.norm.steepest_ascent_(grad)
        delta = x.addcmul_(direction, step).sub_(x0)
        delta = self.norm.project_(delta, self.eps if isinstance(self.eps, float) else self.eps_for(delta))
        x = delta.add_(x0)
        if self.bounds is None:
            return x
        lo, hi = self.bounds
        return x.clamp_(lo, hi)

    def random_init(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A point drawn uniformly from the volume of the ε-ball around ``x0``, then clipped to the box.

        ℓ∞: ``U[−ε, ε]`` per coordinate. ℓ2: a Gaussian direction with radius
        ``ε·U^(1/D)``. ℓ1: ``ε·s·e₁..D / Σe₁..D+1`` with ``e`` i.i.d. Exp(1) and
        random signs ``s``, which is uniform on the ℓ1 ball.
        """
        if x0.dtype in _LOW_PRECISION:
            return round_toward(self.random_init(x0.float(), generator), x0)
        b, d = flat(x0).shape
        eps = self.eps_for(x0).unsqueeze(1)  # (B, 1)
        delta = self.norm.random_delta(b, d, eps, x0, generator)
        return self.project_box(x0 + delta.reshape(x0.shape))

    def __repr__(self) -> str:
        eps = f"tensor(shape={tuple(self.eps.shape)})" if isinstance(self.eps, Tensor) else f"{self.eps:g}"
        return f"ThreatModel(norm={self.norm!r}, eps={eps}, bounds={self.bounds})"
