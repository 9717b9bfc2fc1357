"""An AutoAttack-style ensemble (Croce & Hein 2020): APGD-CE, APGD-T, then Square, with early exit.

Each member attacks only the examples that are classified correctly clean and
that every earlier member left standing, so the strong but expensive members
spend their budget where it can still change the figure. The per-example
outcome is the worst case over the members. With ``state_path`` the robust
flags (and the adversarial points found so far) are written to a JSON file
after every member, so an evaluation that is killed resumes where it stopped.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from advlearn._checks import check_inputs, check_logits
from advlearn._io import atomic_write_text
from advlearn.attacks._base import (
    ATTACKS,
    DERIVED,
    ActiveSet,
    Attack,
    AttackResult,
    attack_config,
    build_attack,
    register,
)
from advlearn.attacks.apgd import APGD  # noqa: F401  (registers "apgd" and "apgd_t")
from advlearn.attacks.square import Square  # noqa: F401  (registers "square")
from advlearn.losses import cw_margin
from advlearn.threat import ThreatModel

logger = logging.getLogger(__name__)

#: The members of each version: (display name, registered attack, options).
VERSIONS: dict[str, tuple[tuple[str, str, dict[str, Any]], ...]] = {
    # Croce & Hein (2020)'s standard settings, FAB-T left out.
    "standard": (
        ("APGD-CE", "apgd", {"steps": 100, "loss": "ce", "early_stop": True}),
        ("APGD-T", "apgd_t", {"steps": 100, "num_targets": 9, "early_stop": True}),
        ("Square", "square", {"queries": 5000}),
    ),
    # APGD-T on the 3 best targets instead of 9 and 1,000 Square queries instead of 5,000: on an
    # example that stays robust, 733 instead of 2,667 pass-equivalents (a forward ≈ 1/3 of a gradient).
    "fast": (
        ("APGD-CE", "apgd", {"steps": 100, "loss": "ce", "early_stop": True}),
        ("APGD-T", "apgd_t", {"steps": 100, "num_targets": 3, "early_stop": True}),
        ("Square", "square", {"queries": 1000}),
    ),
}
_STATE_FORMAT = "advlearn.autoattack-state/1"
_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
CLEAN_WRONG, ROBUST = -2, -1


@dataclass(frozen=True)
class AutoAttackResult:
    """What the ensemble found, per example and per member.

    Attributes:
        x_adv: ``(B, ...)``: for an example some member fooled, that member's
            point; for one left robust, the first member's point (its highest
            loss); for one misclassified clean, ``x`` itself.
        clean_correct: ``(B,)`` bool, the model classifies ``x`` correctly.
        robust: ``(B,)`` bool, correct clean and under every member.
        broken_by: ``(B,)`` int64: the index in ``members`` of the first member that
            fooled the example, ``-1`` (``ROBUST``) if none did, ``-2``
            (``CLEAN_WRONG``) if it was misclassified clean and never attacked.
        members: the members' display names, in the order they ran.
        num_grads: forward+backward passes spent in this call, per example.
        num_forwards: forward-only passes spent in this call, per example.
        seconds: wall time of each member in this call (0 for members a state file had done).
        resumed: how many members were read from the state file instead of run.
    """

    x_adv: Tensor
    clean_correct: Tensor
    robust: Tensor
    broken_by: Tensor
    members: tuple[str, ...]
    num_grads: int
    num_forwards: int
    seconds: tuple[float, ...]
    resumed: int = 0

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if self.robust.numel() else 0.0

    @property
    def robust_accuracy(self) -> float:
        """The fraction correct clean and under every member."""
        return float(self.robust.float().mean()) if self.robust.numel() else 0.0

    def accuracy_after(self) -> dict[str, float]:
        """Robust accuracy after each member: the worst case over it and every earlier one."""
        n = max(self.robust.numel(), 1)
        standing = self.clean_correct.clone()
        out = {}
        for i, name in enumerate(self.members):
            standing &= self.broken_by != i
            out[name] = float(standing.sum()) / n
        return out


def _hash_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _encode(t: Tensor) -> dict[str, Any]:
    t = t.detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return {"dtype": name, "shape": list(t.shape), "data": base64.b64encode(raw).decode("ascii")}


def _decode(blob: Mapping[str, Any]) -> Tensor:
    dtype = _DTYPES[blob["dtype"]]
    raw = bytearray(base64.b64decode(blob["data"]))
    flat = torch.frombuffer(raw, dtype=torch.uint8).view(dtype) if raw else torch.zeros(0, dtype=dtype)
    return flat.reshape(blob["shape"]).clone()


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    version: str = "standard",
    attacks: tuple[str | Mapping[str, Any], ...] = (),
    state_path: str | None = None,
    generator: torch.Generator | None = None,
) -> AutoAttackResult:
    """Function form of :class:`AutoAttack`: ``AutoAttack(threat, ...).evaluate(model, x, y)``."""
    return AutoAttack(threat, version=version, attacks=tuple(attacks), state_path=state_path).evaluate(
        model, x, y, generator=generator
    )


@register("autoattack")
@attack_config(autoattack)
class AutoAttack(Attack):
    """APGD-CE, then APGD-T (targeted DLR over the top 9 classes), then Square, each on what is left standing.

    Versions:
        ``"standard"``: the settings of Croce & Hein (2020): APGD-CE and APGD-T with
        100 steps, 9 targets, and Square with 5,000 queries (FAB-T is left out).
        ``"fast"``: APGD-CE with 100 steps, APGD-T on the 3 best targets, Square with
        1,000 queries; about a quarter of the standard cost on examples that stay robust.
        ``"custom"``: the members listed in ``attacks``, each a registered name or a
        mapping ``{"name": ..., **options}``, e.g. ``("apgd", {"name": "square", "queries": 500})``.

    For ℓ1 the members that do not support it (Square) are left out of the
    standard and fast versions. Members run with their own generators, seeded
    from the caller's at the start of a call, so a resumed evaluation draws the
    same random numbers as one that was never interrupted.

    Args:
        threat: the threat model every member runs under.
        version: ``"standard"``, ``"fast"`` or ``"custom"``.
        attacks: the members of a ``"custom"`` version (empty otherwise).
        state_path: a JSON file to resume from and write after each member. One
            file may hold several batches (one entry per hash of the model, ``x``, ``y``
            and ``eps``); a file written under another threat model or version is refused.

    ``run()`` returns an :class:`AttackResult` whose ``loss`` is the margin
    ``max_{j≠y} z_j − z_y`` at ``x_adv``; :meth:`evaluate` returns the
    :class:`AutoAttackResult` that says which member broke each example.

    References:
        Croce & Hein. Reliable evaluation of adversarial robustness with an
        ensemble of diverse parameter-free attacks. ICML 2020, §4 and §5.

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
        >>> members = ({"name": "apgd", "steps": 20}, {"name": "square", "queries": 100})
        >>> attack = AutoAttack(ThreatModel("linf", eps=0.1), version="custom", attacks=members)
        >>> out = attack.evaluate(model, x, y)
        >>> out.members, out.robust_accuracy <= out.clean_accuracy
        (('apgd', 'square'), True)
    """

    loss: ClassVar[str] = "cw"
    threat: ThreatModel
    version: str = DERIVED
    attacks: tuple[str | Mapping[str, Any], ...] = DERIVED
    state_path: str | None = DERIVED

    def __post_init__(self) -> None:
        if not isinstance(self.attacks, (tuple, list)):
            raise ValueError(f"attacks must be a list of attack names or tables, got {self.attacks!r}")
        object.__setattr__(self, "attacks", tuple(self.attacks))
        if self.state_path is not None and not isinstance(self.state_path, (str, Path)):
            raise ValueError(f"state_path must be a file path or None, got {self.state_path!r}")
        if self.version == "custom":
            if not self.attacks:
                raise ValueError("version='custom' needs attacks=[...], the members to run in order")
        elif self.version in VERSIONS:
            if self.attacks:
                raise ValueError(f"attacks=... is only for version='custom', not version={self.version!r}")
        else:
            known = ", ".join(map(repr, [*VERSIONS, "custom"]))
            raise ValueError(f"version={self.version!r} is not known; use one of {known}")
        self.members()

    def _specs(self) -> list[tuple[str, str, dict[str, Any]]]:
        if self.version != "custom":
            return [
                (label, name, dict(options))
                for label, name, options in VERSIONS[self.version]
                if self.threat.norm in ATTACKS[name].norms
            ]
        specs = []
        for i, item in enumerate(self.attacks):
            if isinstance(item, str):
                name, options = item, {}
            elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
                options = {k: v for k, v in item.items() if k != "name"}
                name = item["name"]
            else:
                raise ValueError(
                    f"attacks[{i}] must be an attack name or a table with a 'name', got {item!r}"
                )
            if name == "autoattack":
                raise ValueError(f"attacks[{i}]: an AutoAttack cannot be a member of another")
            specs.append((name, name, options))
        labels = [label for label, _, _ in specs]
        return [
            (f"{label}#{i}" if labels.count(label) > 1 else label, name, options)
            for i, (label, name, options) in enumerate(specs)
        ]

    def members(self) -> tuple[tuple[str, Attack], ...]:
        """The members as ``(display name, attack)`` pairs, in the order they run."""
        out = []
        for i, (label, name, options) in enumerate(self._specs()):
            try:
                out.append((label, build_attack(name, self.threat, **options)))
            except ValueError as err:
                raise ValueError(f"attacks[{i}] ({name}): {err}") from None
        return tuple(out)

    # ------------------------------------------------------------------ state

    def _config_key(self) -> dict[str, Any]:
        eps = "per-example" if isinstance(self.threat.eps, Tensor) else self.threat.eps
        return {
            "norm": str(self.threat.norm),
            "eps": eps,
            "bounds": list(self.threat.box),
            "version": self.version,
            "members": [[label, name, options] for label, name, options in self._specs()],
        }

    def _data_key(self, model: nn.Module, x: Tensor, y: Tensor) -> str:
        h = hashlib.sha256()
        for t in (x, y):
            _hash_tensor(h, t)
        if isinstance(self.threat.eps, Tensor):
            _hash_tensor(h, self.threat.eps)
        for name, t in model.state_dict().items():
            h.update(name.encode())
            _hash_tensor(h, t)
        return h.hexdigest()

    def _load_state(self) -> dict[str, Any] | None:
        if self.state_path is None or not Path(self.state_path).is_file():
            return None
        path = Path(self.state_path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(
                f"state_path={str(path)!r} is not a readable AutoAttack state file: {err}"
            ) from None
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(
                f"state_path={str(path)!r} is not an AutoAttack state file (no {_STATE_FORMAT!r})"
            )
        config = json.loads(json.dumps(self._config_key()))  # as it reads back from JSON
        if state.get("config") != config:
            raise ValueError(
                f"state_path={str(path)!r} was written for another evaluation ({state.get('config')}), "
                f"not this one ({config}); delete it or pass another state_path"
            )
        return state

    def _save_state(self, key: str, entry: dict[str, Any]) -> None:
        if self.state_path is None:
            return
        # Re-read so that entries other batches wrote since are kept.
        state = self._load_state() or {"format": _STATE_FORMAT, "config": self._config_key(), "entries": {}}
        state["entries"][key] = entry
        atomic_write_text(self.state_path, json.dumps(state))

    # ------------------------------------------------------------------ attack

    def evaluate(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> AutoAttackResult:
        """Run the members in order, each on the examples still standing; see :class:`AutoAttackResult`."""
        check_inputs(x, y, self.threat)
        members = self.members()
        names = tuple(label for label, _ in members)
        n = x.shape[0]
        # Draw every member's seed first, so that resuming after member k draws the same numbers.
        seed_device = generator.device if generator is not None else torch.device("cpu")
        seeds = torch.randint(0, 2**62, (len(members),), generator=generator, device=seed_device).tolist()
        with torch.no_grad():
            logits = check_logits(model(x), y)
        num_forwards, num_grads = n, 0
        clean_correct = logits.argmax(dim=1) == y
        broken_by = torch.full((n,), ROBUST, dtype=torch.int64, device=x.device)
        broken_by[~clean_correct] = CLEAN_WRONG
        x_adv = x.clone()
        attacked = torch.zeros(n, dtype=torch.bool, device=x.device)

        key = self._data_key(model, x, y) if self.state_path is not None else ""
        done = 0
        state = self._load_state()
        if state is not None and key in state.get("entries", {}):
            entry = state["entries"][key]
            done = len(entry["done"])
            if list(entry["done"]) != list(names[:done]):
                raise ValueError(
                    f"state_path={self.state_path!r}: members {entry['done']} do not match {names}"
                )
            broken_by = torch.tensor(entry["broken_by"], dtype=torch.int64, device=x.device)
            if broken_by.shape != (n,) or not torch.equal(broken_by == CLEAN_WRONG, ~clean_correct):
                raise ValueError(
                    f"state_path={self.state_path!r} does not match the model's clean predictions"
                )
            index = torch.tensor(entry["index"], dtype=torch.int64, device=x.device)
            if index.numel():
                x_adv[index] = _decode(entry["x_adv"]).to(device=x.device, dtype=x.dtype)
                attacked[index] = True
            logger.info("AutoAttack: resumed after %s from %s", ", ".join(names[:done]), self.state_path)

        seconds = [0.0] * len(members)
        for i, (label, member) in enumerate(members):
            if i < done:
                continue
            started = time.perf_counter()
            standing = ActiveSet.where(broken_by == ROBUST, self.threat)
            idx = standing.index
            if len(standing):
                attack = dataclasses.replace(member, threat=standing.threat)  # type: ignore[type-var]
                member_gen = torch.Generator(device=x.device).manual_seed(int(seeds[i]))
                result = attack.run(model, x[idx], y[idx], generator=member_gen)
                num_grads += result.num_grads
                num_forwards += result.num_forwards
                # The first member's point for everyone it attacked; a later one's where it fooled.
                take = result.success | ~attacked[idx]
                x_adv[idx[take]] = result.x_adv[take]
                attacked[idx] = True
                broken_by[idx[result.success]] = i
            seconds[i] = time.perf_counter() - started
            logger.info(
                "AutoAttack %s: %d of %d robust after %.1f s",
                label,
                int((broken_by == ROBUST).sum()),
                n,
                seconds[i],
            )
            if self.state_path is not None:
                index = attacked.nonzero().squeeze(1)
                self._save_state(
                    key,
                    {
                        "done": list(names[: i + 1]),
                        "broken_by": broken_by.tolist(),
                        "index": index.tolist(),
                        "x_adv": _encode(x_adv[index]),
                    },
                )
        return AutoAttackResult(
            x_adv=x_adv,
            clean_correct=clean_correct,
            robust=broken_by == ROBUST,
            broken_by=broken_by,
            members=names,
            num_grads=num_grads,
            num_forwards=num_forwards,
            seconds=tuple(seconds),
            resumed=done,
        )

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> AttackResult:
        out = self.evaluate(model, x, y, generator=generator)
        with torch.no_grad():
            logits = model(out.x_adv)
        return AttackResult(
            x_adv=out.x_adv,
            success=logits.argmax(dim=1) != y,
            loss=cw_margin(logits, y),
            num_grads=out.num_grads,
            num_forwards=out.num_forwards + x.shape[0],
        )
