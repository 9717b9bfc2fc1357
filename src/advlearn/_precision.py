"""Mixed precision, ``channels_last`` and ``torch.compile`` for a model, behind one wrapper.

:class:`FastModel` runs a model's forward pass under :func:`torch.autocast` (bf16 or fp16),
optionally in the ``channels_last`` memory format and through :func:`torch.compile`, and returns
float32 logits. Everything around the model stays float32: an attack's perturbation, projection
and ε-ball test act on the float32 inputs the caller passed (autocast casts only the matrix
products and convolutions inside the model), so every point an attack returns satisfies
``threat.contains`` in float32 whatever the model's precision.

fp16 has too few exponent bits for small gradients: a softmax saturated at a margin of 20 gives
logit gradients of about 2e-9, below fp16's smallest subnormal (6e-8), and the input gradient
comes out exactly zero. Inside an attack (:func:`attack_gradients`, entered by every attack's
guard), the wrapper therefore multiplies the gradient flowing back into the fp16 network by
:data:`ATTACK_GRAD_SCALE` and divides it out again at the float32 input, where it cannot
underflow: the input gradient is the true one. Outside an attack (a training loss) nothing is
scaled here; the Trainer's :class:`torch.amp.GradScaler` scales the loss instead.

This module sits beside the layers (like ``_checks``): attacks, training and evaluation use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

#: the precisions a config, the Trainer, ``evaluate`` and the CLI accept
PRECISIONS: tuple[str, ...] = ("32", "bf16", "fp16")
#: the memory formats they accept
MEMORY_FORMATS: tuple[str, ...] = ("contiguous", "channels_last")
_DTYPES = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: the factor on the gradient flowing back into an fp16 network inside an attack: CE and margin
#: losses have logit gradients of at most 1 per coordinate, so 2**10 leaves a factor of 64 below
#: fp16's largest number (65504) for layers that amplify gradients, and lifts gradients of
#: 6e-8 / 2**10 ≈ 6e-11 above fp16's smallest subnormal.
ATTACK_GRAD_SCALE = 2.0**10

_IN_ATTACK: contextvars.ContextVar[bool] = contextvars.ContextVar("advlearn_in_attack", default=False)


@contextlib.contextmanager
def attack_gradients() -> Iterator[None]:
    """Mark the code inside as an attack: only input gradients are taken, so fp16 may scale them."""
    token = _IN_ATTACK.set(True)
    try:
        yield
    finally:
        _IN_ATTACK.reset(token)


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """Refuse an unknown precision, or one the device cannot run, in one line.

    Raises:
        ValueError: naming ``precision`` and what to use instead.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(map(repr, PRECISIONS))}")
    dtype = _DTYPES[precision]
    if dtype is None or device is None:
        return
    device = torch.device(device)
    reason = None
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        reason = "this GPU has no bfloat16"
    else:
        try:
            with torch.autocast(device_type=device.type, dtype=dtype):
                probe = torch.ones(2, 2, device=device)
                torch.mm(probe, probe)
        except (RuntimeError, AssertionError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    if reason is not None:
        other = "'bf16' or '32'" if precision == "fp16" else "'32'"
        raise ValueError(
            f"precision={precision!r} is not available on device {str(device)!r} ({reason}); "
            f"use precision={other}"
        )


def check_memory_format(memory_format: str) -> None:
    """Refuse an unknown memory format in one line."""
    if memory_format not in MEMORY_FORMATS:
        known = ", ".join(map(repr, MEMORY_FORMATS))
        raise ValueError(f"memory_format={memory_format!r} is not one of {known}")


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


class FastModel(nn.Module):
    """``model`` in another precision, memory format and/or compiled; returns float32 outputs.

    Args:
        model: the network (registered as ``module``; its parameters stay float32).
        precision: ``"32"`` (no autocast), ``"bf16"`` or ``"fp16"``: the autocast dtype of the forward pass.
        memory_format: ``"channels_last"`` converts the model's 4-D weights once and every 4-D
            input on the way in (a no-op for inputs already in that format).
        compile: run the forward through ``torch.compile(model, dynamic=True)`` (the batch
            dimension is dynamic, so an early-exit attack's shrinking batches do not recompile).
            If compiling is unavailable or fails, a warning says why and the eager model runs.
        attack_grad_scale: the factor of the fp16 gradient scaling inside attacks (module docstring).

    Costs nothing beyond autocast's casts: the wrapper adds two views and, in fp16 inside an
    attack, one multiplication of the input gradient.

    Example:
        >>> net = FastModel(torch.nn.Linear(3, 2), precision="bf16")
        >>> net(torch.ones(4, 3)).dtype
        torch.float32
    """

    _compiled_forward: Callable[[Tensor], Tensor] | None

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str = "32",
        memory_format: str = "contiguous",
        compile: bool = False,
        attack_grad_scale: float = ATTACK_GRAD_SCALE,
    ) -> None:
        super().__init__()
        check_precision(precision)
        check_memory_format(memory_format)
        self.module = model
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.channels_last = memory_format == "channels_last"
        self.attack_grad_scale = float(attack_grad_scale)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.compiled = False
        compiled: Callable[[Tensor], Tensor] | None = None
        if compile:
            fn, self.compiled = _compile(model)
            compiled = fn if self.compiled else None
        # Kept out of the module tree (object.__setattr__), so parameters and state_dict list each
        # weight once, under ``module.``.
        object.__setattr__(self, "_compiled_forward", compiled)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        scale = self.attack_grad_scale if self.dtype == torch.float16 and _IN_ATTACK.get() else 1.0
        if scale != 1.0 and x.requires_grad:
            x = _ScaleGrad.apply(x, 1.0 / scale)  # (B, ...): the true gradient again, in float32
        with torch.autocast(
            device_type=x.device.type, dtype=self.dtype or torch.float32, enabled=bool(self.dtype)
        ):
            out = self._call(x)
        if out.is_floating_point() and out.dtype != torch.float32:
            out = out.float()
        if scale != 1.0 and out.requires_grad:
            out = _ScaleGrad.apply(out, scale)
        return out

    def _call(self, x: Tensor) -> Tensor:
        compiled = self._compiled_forward
        if compiled is None:
            return self.module(x)  # type: ignore[no-any-return]
        try:
            return compiled(x)
        except Exception as err:  # any compiler failure; the eager call below re-raises a real error
            first = str(err).splitlines()[0] if str(err) else ""
            warnings.warn(
                f"torch.compile failed ({type(err).__name__}: {first}); running the model eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "_compiled_forward", None)
            self.compiled = False
            return self.module(x)  # type: ignore[no-any-return]


def _compile(model: nn.Module) -> tuple[Callable[[Tensor], Tensor], bool]:
    """``torch.compile(model, dynamic=True)``, or ``model`` with a warning where compile is unavailable."""
    compiler = getattr(torch, "compile", None)
    if compiler is None:
        warnings.warn(
            "torch.compile is not available in this torch; running eagerly", RuntimeWarning, stacklevel=3
        )
        return model, False
    try:
        return compiler(model, dynamic=True), True
    except Exception as err:
        warnings.warn(f"torch.compile is unavailable ({err}); running eagerly", RuntimeWarning, stacklevel=3)
        return model, False


def fast_model(
    model: nn.Module, *, precision: str = "32", memory_format: str = "contiguous", compile: bool = False
) -> nn.Module:
    """``model`` itself when every option is the default, else a :class:`FastModel` around it."""
    if precision == "32" and memory_format == "contiguous" and not compile:
        check_precision(precision)
        return model
    return FastModel(model, precision=precision, memory_format=memory_format, compile=compile)


def to_memory_format(x: Tensor, model: nn.Module) -> Tensor:
    """``x`` in the memory format ``model`` wants (channels_last for a channels_last FastModel), once."""
    if isinstance(model, FastModel) and model.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
