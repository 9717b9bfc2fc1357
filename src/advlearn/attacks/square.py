"""The Square attack (Andriushchenko et al. 2020): a score-based black-box attack by random squares.

It never asks for a gradient: each query changes the perturbation inside one
random square window (two for ℓ2) and keeps the change if the loss improved.
The window shrinks on a fixed schedule as the query budget is spent. Because it
only reads the model's scores, it sees through defenses that break gradients
(gradient masking), which is why AutoAttack runs it last.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from advlearn import _keyed_random as keyed
from advlearn._checks import check_inputs, check_logits, check_positive_int
from advlearn.attacks import _progress as progress
from advlearn.attacks._base import (
    DERIVED,
    ActiveSet,
    Attack,
    AttackResult,
    attack_config,
    is_success,
    register,
)
from advlearn.losses import get_loss
from advlearn.threat import L1, L2, Linf, Norm, ThreatModel, get_norm, per_example

# Iterations (out of 10,000) after which p halves; other budgets rescale them linearly (§3, "p schedule").
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, i: int, queries: int, rescale: bool = True) -> float:
    """The fraction ``p`` of pixels the window covers at iteration ``i`` of ``queries``.

    ``p_init`` halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
    8000 of a 10,000-query budget, rescaled to ``queries`` (``rescale=False``: at those
    iterations whatever the budget, as the reference AutoAttack runs Square).

    Example:
        >>> [square_fraction(0.8, i, 10_000) for i in (0, 10, 11, 51, 9000)]
        [0.8, 0.8, 0.4, 0.2, 0.0015625]
        >>> square_fraction(0.8, 30, 5000), square_fraction(0.8, 30, 5000, rescale=False)
        (0.2, 0.4)
    """
    it = int(i / queries * 10_000) if rescale else i
    halvings = sum(it > h for h in _HALVINGS)
    return float(p_init) / 2.0**halvings


def _as_images(x: Tensor) -> Tensor:
    """View inputs as ``(B, C, H, W)``: ``(B, D)`` as ``(B, 1, 1, D)``, ``(B, C, L)`` as ``(B, C, 1, L)``."""
    if x.dim() == 4:
        return x
    if x.dim() == 2:
        return x.reshape(x.shape[0], 1, 1, x.shape[1])
    if x.dim() == 3:
        return x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])
    raise ValueError(
        f"x must have shape (B, C, H, W), (B, C, L) or (B, D) for the Square attack, got {tuple(x.shape)}"
    )


def _window(p: float, height: int, width: int, l2: bool) -> tuple[int, int]:
    """The window's side(s) covering a fraction ``p`` of the ``height × width`` pixels.

    A square of side ``round(√(p·H·W))`` on images, a segment of ``round(p·W)`` on
    rows (``H = 1``). ℓ∞ keeps it below the image size; ℓ2 makes it at least 3
    and odd (where the image allows), so its pattern has a centre.
    """
    if height == 1:
        sides = [1, round(p * width)]
    else:
        side = round(math.sqrt(p * height * width))
        sides = [side, side]
    out = []
    for side, size in zip(sides, (height, width), strict=True):
        if size == 1:
            out.append(1)
        elif l2:
            side = max(side, 3)
            out.append(min(side + 1 - side % 2, size))
        else:
            out.append(min(max(side, 1), size - 1))
    return out[0], out[1]


def _rings(h: int, w: int, device: torch.device, dtype: torch.dtype, q: float = 2.0) -> Tensor:
    """Concentric rectangles around the centre, weighted ``Σ_{k ≥ d} w_k`` at Chebyshev distance ``d``.

    The ℓ2 pattern of Andriushchenko et al. (2020, §3.2) for ``q = 2`` (``w_k = 1/(k+1)²``), the
    ℓ1 one of the reference code for ``q = 1`` (``w_k = 1/(k+1)⁴``: mass near the centre, sparse);
    unit ℓq norm, shape ``(h, w)``.
    """
    rows = (torch.arange(h, device=device) - h // 2).abs()
    cols = (torch.arange(w, device=device) - w // 2).abs()
    ring = torch.maximum(rows[:, None], cols[None, :])  # (h, w)
    rings = max(h // 2, w // 2) + 1
    weights = 1.0 / torch.arange(1, rings + 1, device=device, dtype=dtype) ** int(2 * (3 - q))
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = Σ_{k >= d} w_k
    pattern: Tensor = tail[ring]
    unit: Tensor = pattern / pattern.norm(p=q)
    return unit


@functools.lru_cache(maxsize=64)
def _pattern(
    h: int, w: int, transpose: bool, device: torch.device, dtype: torch.dtype, q: float = 2.0
) -> Tensor:
    """The ℓq meta-pattern (q = 2 or 1): two halves of concentric rings with opposite signs, unit ℓq norm.

    Cached (a pure function of its arguments, a few window sizes per run): built once per size instead
    of twice per proposal. The tensor is shared, so callers never write into it.
    """
    if h == w and transpose:
        return _pattern(h, w, False, device, dtype, q).T
    if h >= 2:
        top = _rings(h // 2, w, device, dtype, q)
        pattern = torch.cat([top, -_rings(h - h // 2, w, device, dtype, q)], dim=0)
    elif w >= 2:
        left, right = _rings(h, w // 2, device, dtype, q), _rings(h, w - w // 2, device, dtype, q)
        pattern = torch.cat([left, -right], dim=1)
    else:
        pattern = torch.ones(h, w, device=device, dtype=dtype)
    unit: Tensor = pattern / pattern.norm(p=q)
    return unit


def _offsets(sides: tuple[int, int], height: int, width: int, u: Tensor) -> tuple[Tensor, Tensor]:
    """One random window position per example, ``(top, left)`` ``(B, 1)`` each, uniform over the
    positions that fit, from two uniforms per example ``u`` ``(B, 2)``."""
    sh, sw = sides
    top = (u[:, :1] * (height - sh + 1)).long().clamp_max(height - sh)  # u < 1; the clamp guards rounding
    left = (u[:, 1:] * (width - sw + 1)).long().clamp_max(width - sw)
    return top, left


def _axes(sides: tuple[int, int], height: int, width: int, u: Tensor) -> tuple[Tensor, Tensor]:
    """One random window per example (:func:`_offsets`) as each row's and column's offset into it,
    ``(B, H)`` and ``(B, W)``, outside the window negative or at least its side."""
    top, left = _offsets(sides, height, width, u)
    rows = torch.arange(height, device=u.device)[None, :] - top  # (B, H)
    cols = torch.arange(width, device=u.device)[None, :] - left  # (B, W)
    return rows, cols


def _window_mask(sides: tuple[int, int], rows: Tensor, cols: Tensor) -> Tensor:
    """The windows of :func:`_axes` as a mask ``(B, 1, H, W)``, broadcast from a row and a column mask."""
    sh, sw = sides
    in_rows, in_cols = (rows >= 0) & (rows < sh), (cols >= 0) & (cols < sw)
    return in_rows[:, None, :, None] & in_cols[:, None, None, :]


def _placed(sides: tuple[int, int], rows: Tensor, cols: Tensor, patterns: Tensor) -> Tensor:
    """Each ``patterns[b]`` ``(sh, sw)`` put at its window (:func:`_axes`), ``(B, 1, H, W)``.

    The pattern is moved by one-hot row and column matrices, ``E_r · P · E_c``: each entry inside the
    window is one product by 1 plus zeros, so exactly the pattern's value; outside it the result is 0.
    """
    sh, sw = sides
    dtype = patterns.dtype
    to_rows = (rows[:, :, None] == torch.arange(sh, device=rows.device)).to(dtype)  # (B, H, sh)
    to_cols = (cols[:, None, :] == torch.arange(sw, device=cols.device)[:, None]).to(dtype)  # (B, sw, W)
    return torch.bmm(torch.bmm(to_rows, patterns), to_cols).unsqueeze(1)


def _signs(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """±1 of ``like``'s dtype, shaped ``shape`` (first dimension: examples), one draw call."""
    return keyed.random_sign(shape, generator=generator, device=like.device, dtype=like.dtype)


def _init_linf(x0: Tensor, eps: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
    """Vertical stripes: every column of every channel moved by ±ε (§3.1)."""
    b, c, _, w = x0.shape
    stripes = _signs((b, c, 1, w), x0, generator)
    return threat.project_box(x0 + eps * stripes)


def _init_l2(x0: Tensor, eps: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
    """A grid of tiles of side H/5 (or W/5), each the ℓq pattern with a random sign; at ℓ2 scaled to
    norm ε, at ℓ1 (the reference's start) projected exactly onto the ball ∩ box, which keeps the
    tiles' centres (sparse)."""
    b, c, h, w = x0.shape
    th, tw = max(h // 5, 1), max(w // 5, 1)
    tile = _pattern(th, tw, False, x0.device, x0.dtype, threat.norm.ord)
    delta = torch.zeros_like(x0)
    oh, ow = (h - th * (h // th)) // 2, (w - tw * (w // tw)) // 2
    signs = _signs((b, h // th, w // tw, c), x0, generator)  # one sign per tile and channel
    for i in range(h // th):
        for j in range(w // tw):
            rs, cs = oh + i * th, ow + j * tw
            delta[:, :, rs : rs + th, cs : cs + tw] = tile * signs[:, i, j, :, None, None]
    if isinstance(threat.norm, L1):
        return _project_l1(x0, x0 + delta, eps, threat)
    norms = delta.reshape(b, -1).norm(dim=1).clamp_min(1e-12)
    delta = delta * per_example(eps.flatten() / norms, delta)
    return threat.project(x0 + delta, x0)


#: Sign draws per ℓ∞ proposal: the first that changes the window is taken (a no-op wastes a query).
_SIGN_DRAWS = 10


def _ends_linf(x0: Tensor, eps: Tensor, threat: ThreatModel) -> Tensor:
    """ℓ∞'s anchor: the two values a window can take, the box-clipped ``x0 + ε`` and ``x0 − ε``,
    stacked ``(B, 2, C, H, W)``; computed once per attack instead of once per proposal."""
    return torch.stack([threat.project_box(x0 + eps), threat.project_box(x0 - eps)], dim=1)


def _propose_linf(ends: Tensor, x: Tensor, eps: Tensor, p: float, threat: ThreatModel, u: Tensor) -> Tensor:
    """Set the perturbation to ±ε (one sign per channel) inside a random square (Algorithm 2).

    A sign draw that leaves the window as it is would waste a query, so each example draws
    :data:`_SIGN_DRAWS` sign vectors at once and takes the first that changes its window (the last
    if none does): the distribution of redrawing until a change, at one draw call per proposal and
    without a pass over the image per redraw. Which draws are no-ops is read from two masks per
    channel, the window's pixels already at the box-clipped ``x0 + ε`` and at ``x0 − ε`` (``ends``,
    from :func:`_ends_linf`).
    """
    b, c, h, w = x.shape
    sides = _window(p, h, w, l2=False)
    window = _window_mask(sides, *_axes(sides, h, w, u[:, :2]))  # (B, 1, H, W)
    signs = u[:, 2:].reshape(b, _SIGN_DRAWS, c) >= 0.5  # (B, R, C): True for +ε
    outside = ~window
    # (B, 2, C): moving channel c's window to +ε (−ε) changes nothing
    still = ((ends - x[:, None]).abs() < 1e-7).logical_or_(outside[:, None]).flatten(3).all(dim=3)
    noop = torch.where(signs, still[:, None, 0], still[:, None, 1]).all(dim=2)  # (B, R)
    noop[:, -1] = False
    first = noop.logical_not().to(torch.uint8).argmax(dim=1)  # the first draw that changes the window
    chosen = signs[torch.arange(b, device=x.device), first]  # (B, C)
    return torch.where(window, torch.where(chosen[:, :, None, None], ends[:, 0], ends[:, 1]), x)


def _project_l1(x0: Tensor, x: Tensor, eps: Tensor, threat: ThreatModel) -> Tensor:
    """The exact projection onto the ℓ1 ball ∩ box (the reference's ``L1_projection``), as a point."""
    lo, hi = threat.box
    eps_b = eps.reshape(eps.shape[0], -1)[:, 0]
    d = threat.norm.project_in_box(x - x0, eps_b, lo - x0, hi - x0)
    # x0 + d rounds every coordinate to nearest; on the sphere D such roundings add up to D·ulp to
    # ‖x − x0‖₁ (1.1e-5 at ε = 4 on 3×8×8 inputs). Rounded toward x0 instead, no |xᵢ − x0ᵢ| exceeds
    # |dᵢ|, so the point stays in the ball (and in the box, which holds x0 and x0 + d).
    point = x0 + d
    overshoot = (point.double() - x0.double()).abs() > d.double().abs()
    return torch.where(overshoot, torch.nextafter(point, x0), point)


def _clean(x0: Tensor, eps: Tensor, threat: ThreatModel) -> Tensor:
    """ℓ2's and ℓ1's anchor: the clean input itself."""
    return x0


def _propose_l2(x0: Tensor, x: Tensor, eps: Tensor, p: float, threat: ThreatModel, u: Tensor) -> Tensor:
    """Move the mass of two random windows into the first, with a fresh pattern (Algorithm 3).

    Per channel the first window receives ``ν = ((ε^q − ‖δ‖_q^q)/C + ‖δ_{W1∪W2}‖_q^q)^{1/q}``,
    the second is emptied, so ``‖δ‖_q`` becomes ε before the box. ``q`` is the threat's: 2
    (Algorithm 3, then the box clip) or 1 (the ℓ1 version of the reference code, Croce & Hein
    2021, with its ℓ1 pattern and the exact projection onto ball ∩ box; for C > 1 channels the
    reference gives the window C times this mass and lets the projection take it back).
    """
    q = threat.norm.ord
    _, c, h, w = x.shape
    sides = _window(p, h, w, l2=True)
    rows1, cols1 = _axes(sides, h, w, u[:, 0:2])
    w1 = _window_mask(sides, rows1, cols1)  # (B, 1, H, W)
    w2 = _window_mask(sides, *_axes(sides, h, w, u[:, 2:4]))
    # each example's pattern is transposed or not (a square window's only freedom), by its own coin
    transpose = (u[:, 4] >= 0.5)[:, None, None]  # (B, 1, 1)
    pattern = _pattern(sides[0], sides[1], False, x.device, x.dtype, q)
    patterns = torch.where(transpose, _pattern(sides[0], sides[1], True, x.device, x.dtype, q), pattern)
    placed = _placed(sides, rows1, cols1, patterns)  # (B, 1, H, W), 0 outside the first window
    delta = x - x0

    def channel_norm(t: Tensor) -> Tensor:
        return t.abs().pow(q).sum(dim=(2, 3), keepdim=True).pow(1 / q)  # (B, C, 1, 1)

    slack = (eps.pow(q) - delta.abs().pow(q).sum(dim=(1, 2, 3), keepdim=True)).clamp_min(0.0) / c
    nu = (slack + channel_norm(delta * (w1 | w2)).pow(q)).pow(1 / q)
    inside = delta * w1
    signs = torch.where(u[:, 5:] >= 0.5, 1.0, -1.0).to(x.dtype)[:, :, None, None]  # (B, C, 1, 1)
    fresh = placed * signs + inside / channel_norm(inside).clamp_min(1e-12)
    fresh = fresh / channel_norm(fresh).clamp_min(1e-12) * nu
    delta_new = torch.where(w1, fresh, delta.masked_fill(w2, 0.0))
    if isinstance(threat.norm, L1):
        return _project_l1(x0, x0 + delta_new, eps, threat)
    return threat.project(x0 + delta_new, x0)


# Each norm's start, anchor (what its proposals need of x0, computed once) and proposal (§3.1 and
# Algorithm 2 for ℓ∞, §3.2 and Algorithm 3 for ℓ2), keyed by the norm's class: the Square attack asks the
# threat model's norm which to use, and supports exactly these.
_Init = Callable[[Tensor, Tensor, ThreatModel, "torch.Generator | None"], Tensor]
_Anchor = Callable[[Tensor, Tensor, ThreatModel], Tensor]
_Propose = Callable[[Tensor, Tensor, Tensor, float, ThreatModel, Tensor], Tensor]
_GEOMETRY: dict[type[Norm], tuple[_Init, _Anchor, _Propose]] = {
    Linf: (_init_linf, _ends_linf, _propose_linf),
    L2: (_init_l2, _clean, _propose_l2),
    L1: (_init_l2, _clean, _propose_l2),  # the reference's ℓ1 branch: ℓ2's moves with ℓ1 mass and projection
}
_SUPPORTED: tuple[Norm, ...] = tuple(get_norm(norm.name) for norm in _GEOMETRY)


#: Uniforms per example each proposal takes, given the channels: ℓ∞ a window position and
#: :data:`_SIGN_DRAWS` sign vectors; ℓ2/ℓ1 two window positions, a transpose coin and a sign per channel.
_UNIFORMS: dict[type[Norm], Callable[[int], int]] = {
    Linf: lambda c: 2 + _SIGN_DRAWS * c,
    L2: lambda c: 5 + c,
    L1: lambda c: 5 + c,
}
#: Iterations whose uniforms are drawn in one call.
_BLOCK = 100


class _Uniforms:
    """Each iteration's uniforms for the examples still running, drawn :data:`_BLOCK` iterations at a time.

    One draw call per block, for the examples running at its start (keyed by theirs under a
    :class:`~advlearn._keyed_random.KeyedGenerator`, so example ``e``'s uniforms at iteration ``i`` are
    the same in any batch); the rows of examples that leave are dropped with them.
    """

    def __init__(self, generator: torch.Generator | None, width: int, like: Tensor) -> None:
        self.generator, self.width, self.like = generator, width, like
        self.block = like.new_empty(0)

    def at(self, i: int, active: ActiveSet) -> Tensor:
        """The uniforms ``(A, width)`` of iteration ``i`` (from 1) for the ``active`` examples."""
        if (i - 1) % _BLOCK == 0:
            shape = (len(active), _BLOCK, self.width)
            self.block = keyed.rand(shape, generator=active.draws(self.generator), device=self.like.device)
        return self.block[:, (i - 1) % _BLOCK]

    def drop(self, leave: Tensor) -> None:
        self.block = self.block[~leave]


def _check_square(queries: int, p_init: float, loss: str, rescale: bool) -> None:
    if not isinstance(rescale, bool):
        raise ValueError(f"rescale must be True or False, got {rescale!r}")
    check_positive_int("queries", queries)
    if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must be a number in (0, 1], got {p_init!r}")
    get_loss(loss)


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    queries: int = 5000,
    p_init: float = 0.8,
    loss: str = "cw",
    rescale: bool = True,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """The Square attack: random search over square-shaped updates, using the model's scores only.

    Starting from vertical ±ε stripes (ℓ∞) or a grid of ε-scaled patterns (ℓ2),
    each iteration draws a window covering a fraction ``p`` of the pixels
    (:func:`square_fraction`), proposes a new perturbation there and keeps it if
    the loss rises:

    .. math::

        x^{(i+1)} = \\begin{cases}
            \\Pi_S(x^{(i)} + \\delta) & \\text{if } L(x^{(i)} + \\delta, y) > L(x^{(i)}, y) \\\\
            x^{(i)} & \\text{otherwise}
        \\end{cases}

    ℓ∞: the window's perturbation becomes ``±ε`` per channel. ℓ2: the mass of two
    windows moves into the first one, shaped by the concentric-ring pattern, so
    ``‖δ‖₂`` stays ε. ℓ1 (the reference code's version, Croce & Hein 2021): the same
    moves with ℓ1 masses and a sharper pattern, each point then projected exactly onto
    the ℓ1 ball ∩ box (which keeps it sparse). An example stops at its first success; the others stop when
    they have spent ``queries`` forward passes. No gradient is ever computed, so
    the attack works on models that cannot be differentiated.

    Inputs are read as images ``(B, C, H, W)``; vectors ``(B, D)`` are treated as
    one-row images, where the window becomes a segment covering a fraction ``p``.

    Args:
        model: maps inputs in ``threat.bounds`` to logits ``(B, C)``.
        x: clean inputs ``(B, C, H, W)``, ``(B, C, L)`` or ``(B, D)`` inside ``threat.bounds``.
        y: labels ``(B,)``.
        threat: an ℓ∞, ℓ2 or ℓ1 ball and the box (``eps`` may be a ``(B,)`` tensor).
        queries: forward passes per example, the first at the initial point included.
        p_init: the fraction of pixels the first windows cover.
        loss: what a proposal must raise: ``"cw"`` (the margin, the paper's
            untargeted loss), ``"ce"`` or ``"dlr"``.
        rescale: stretch the window schedule (written for 10,000 queries) to ``queries``;
            ``False`` keeps it at fixed iterations, as the reference AutoAttack does
            (``resc_schedule=False``; at 5,000 queries the windows then shrink half as early).
        generator: random source; ``None`` uses torch's global RNG. A
            :class:`~advlearn._keyed_random.KeyedGenerator` (as :func:`~advlearn.evaluation.evaluate`
            passes) draws each example's windows and signs from its own key, so an example's
            result does not depend on the batch it is in nor on which others are still running.

    Returns:
        An :class:`AttackResult` with ``num_grads = 0`` and ``num_forwards`` the
        queries spent.

    Raises:
        ValueError: for bad options or bad inputs, or an ℓ1 threat without bounds (its
            projection is onto ball ∩ box).

    References:
        Andriushchenko, Croce, Flammarion & Hein. Square Attack: a query-efficient
        black-box adversarial attack via random search. ECCV 2020, Algorithms 1-3.

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.randint(0, 3, (4,))
        >>> threat = ThreatModel("l2", eps=0.5)
        >>> result = square(model, x, y, threat, queries=50)
        >>> bool(threat.contains(result.x_adv, x).all()), result.num_grads
        (True, 0)
    """
    check_inputs(x, y, threat)
    geometry = _GEOMETRY.get(type(threat.norm))
    if geometry is None:
        supported = " and ".join(map(repr, _SUPPORTED))
        raise ValueError(f"the Square attack supports norm {supported}, not threat.norm={threat.norm.name!r}")
    _check_square(queries, p_init, loss, rescale)
    if isinstance(threat.norm, L1):
        _ = threat.box  # the exact ℓ1 projection needs the box: a clear ValueError without one
    loss_fn = get_loss(loss)
    images = _as_images(x)  # (B, C, H, W)
    b = images.shape[0]
    eps = per_example(threat.eps_for(x), images)
    init, anchor, propose = geometry

    with torch.no_grad():
        x_cur = init(images, eps, threat, generator)
        logits = check_logits(model(x_cur.reshape(x.shape)), y)
        loss_cur, success = loss_fn(logits, y), is_success(logits, y, False)
        num_forwards = b
        # The examples still running, gathered once and compacted only when some succeed.
        progress.broken(int(success.sum()))
        active = ActiveSet.where(~success, threat)
        x0_a, x_a, eps_a, y_a, loss_a = map(active.gather, (images, x_cur, eps, y, loss_cur))
        anchor_a = anchor(x0_a, eps_a, active.threat)  # what each proposal needs of x0
        uniforms = _Uniforms(generator, _UNIFORMS[type(threat.norm)](images.shape[1]), images)
        for i in range(1, queries):
            if len(active) == 0:
                break
            progress.spent(i / queries)
            candidate = propose(
                anchor_a,
                x_a,
                eps_a,
                square_fraction(p_init, i, queries, rescale),
                active.threat,
                uniforms.at(i, active),
            )
            logits = model(candidate.reshape((-1, *x.shape[1:])))
            num_forwards += len(active)
            new_loss = loss_fn(logits, y_a)
            hit = is_success(logits, y_a, False)
            accept = (new_loss > loss_a) | hit
            x_a = torch.where(per_example(accept, x_a), candidate, x_a)
            loss_a = torch.where(accept, new_loss, loss_a)
            if bool(hit.any()):
                progress.broken(int(hit.sum()))
                done = active.index[hit]
                x_cur[done], loss_cur[done], success[done] = x_a[hit], loss_a[hit], True
                anchor_a, x_a, eps_a, y_a, loss_a = active.drop(hit, anchor_a, x_a, eps_a, y_a, loss_a)
                uniforms.drop(hit)
        x_cur[active.index], loss_cur[active.index] = x_a, loss_a

    return AttackResult(
        x_adv=x_cur.reshape(x.shape), success=success, loss=loss_cur, num_grads=0, num_forwards=num_forwards
    )


@register("square")
@attack_config(square, check=_check_square)
class Square(Attack):
    """Config for :func:`square`: ``Square(threat, queries=5000)(model, x, y) -> x_adv``."""

    norms: ClassVar[tuple[str, ...]] = _SUPPORTED
    threat: ThreatModel
    queries: int = DERIVED
    p_init: float = DERIVED
    loss: str = DERIVED
    rescale: bool = DERIVED
