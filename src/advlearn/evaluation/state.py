"""Evaluation state: an AutoAttack evaluation that resumes where it stopped.

The ensemble (:class:`advlearn.attacks.AutoAttack`) is a pure attack: it can go
on from an :class:`~advlearn.attacks.ensemble.EnsembleProgress` and reports one
after every member. :class:`AutoAttackState` keeps those in a JSON file,
written atomically after each member (and after each chunk of a member, with
:attr:`AutoAttack.batch_size`: a kill loses at most one chunk of one member's
work), one entry per batch keyed by a hash of
the model's weights, ``x``, ``y`` and a per-example ``eps``; a file written for
another evaluation (threat model, version or members) is refused. This is the
``state.py`` of fra31/auto-attack, in the evaluation layer where it belongs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlearn._io import PathLike, atomic_write_text
from advlearn.attacks.ensemble import (
    CLEAN_WRONG,
    AutoAttack,
    AutoAttackResult,
    EnsembleProgress,
    chunked_logits,
)

logger = logging.getLogger(__name__)

FORMAT = "advlearn.autoattack-state/1"
_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


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


def config_key(attack: AutoAttack) -> dict[str, Any]:
    """What a state file must have been written for: the threat model, the version and the members."""
    threat = attack.threat
    eps = "per-example" if isinstance(threat.eps, Tensor) else threat.eps
    return {
        "norm": str(threat.norm),
        "eps": eps,
        "bounds": list(threat.box),
        "version": attack.version,
        "members": [[label, name, options] for label, name, options in attack.specs()],
    }


def data_key(attack: AutoAttack, model: nn.Module, x: Tensor, y: Tensor) -> str:
    """The entry of one batch: a SHA-256 of ``x``, ``y``, a per-example ``eps`` and the model's weights."""
    h = hashlib.sha256()
    for t in (x, y):
        _hash_tensor(h, t)
    if isinstance(attack.threat.eps, Tensor):
        _hash_tensor(h, attack.threat.eps)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        _hash_tensor(h, t)
    return h.hexdigest()


class AutoAttackState:
    """A JSON file that lets :meth:`AutoAttack.evaluate` resume after a kill.

    Args:
        path: the file; it need not exist. One file may hold several batches.

    Example:
        >>> import advlearn as al, tempfile, os
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
        >>> attack = AutoAttack(al.ThreatModel("linf", eps=0.1), version="custom", attacks=("fgsm",))
        >>> state = AutoAttackState(os.path.join(tempfile.mkdtemp(), "state.json"))
        >>> first, again = state.evaluate(attack, model, x, y), state.evaluate(attack, model, x, y)
        >>> again.resumed, torch.equal(first.broken_by, again.broken_by)
        (1, True)
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"AutoAttackState({str(self.path)!r})"

    def evaluate(
        self,
        attack: AutoAttack,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> AutoAttackResult:
        """``attack.evaluate(model, x, y)``, resumed from this batch's entry and saved after each member.

        Raises:
            ValueError: (naming ``state_path``) for a file that is not a state file, one
                written for another evaluation, or an entry that does not match the batch.
        """
        key = data_key(attack, model, x, y)
        state = self._load(attack)
        resume = None
        if state is not None and key in state["entries"]:
            resume = self._progress(state["entries"][key], x, len(attack.specs()))
            self._check_points(attack, model, x, y, resume)
            logger.info("AutoAttack: resumed after %s from %s", ", ".join(resume.done), self.path)

        def save(progress: EnsembleProgress) -> None:
            index = progress.attacked.nonzero().squeeze(1)
            entry: dict[str, Any] = {
                "done": list(progress.done),
                "broken_by": progress.broken_by.tolist(),
                "index": index.tolist(),
                "x_adv": _encode(progress.x_adv[index]),
            }
            if progress.covered is not None:  # the member running has done some chunks
                entry["covered"] = progress.covered.nonzero().squeeze(1).tolist()
            self._save(attack, key, entry)

        try:
            return attack.evaluate(model, x, y, generator=generator, resume=resume, after_member=save)
        except ValueError as err:
            if str(err).startswith("resume:"):
                raise ValueError(
                    f"state_path={str(self.path)!r}: {str(err).removeprefix('resume: ')}"
                ) from None
            raise

    # ------------------------------------------------------------------ the file

    def _progress(self, entry: object, x: Tensor, members: int) -> EnsembleProgress:
        """The entry as progress, after checking every field against the batch; a ValueError otherwise.

        Checked: the types of every field; ``done`` names at most ``members`` members;
        ``broken_by`` has one value per example, each in ``[-2, len(done))`` (or ``len(done)``,
        the running member, for an example in ``covered``); ``covered`` (optional: the examples
        the running member has attacked) lists distinct positions of examples correct clean;
        ``index`` lists distinct positions in ``[0, B)``, exactly the examples the members
        attacked (all classified correctly clean, once a member has run; the covered ones
        before); the points' dtype, shape and byte count. Whether the points lie in the threat set
        and agree with ``broken_by`` is checked
        by :meth:`_check_points` once the model is at hand.
        """
        n = x.shape[0]

        def bad(why: str) -> ValueError:
            return ValueError(f"state_path={str(self.path)!r} has a corrupt entry for this batch: {why}")

        fields = {"done", "broken_by", "index", "x_adv"}
        if not isinstance(entry, Mapping) or not fields <= set(entry) <= {*fields, "covered"}:
            raise bad("it must hold exactly done, broken_by, index and x_adv (and covered, mid-member)")
        done, broken, index, blob = entry["done"], entry["broken_by"], entry["index"], entry["x_adv"]
        if not isinstance(done, list) or not all(isinstance(d, str) for d in done) or len(done) > members:
            raise bad(f"done must list at most {members} member names")

        def ints(value: object) -> bool:
            return isinstance(value, list) and all(type(v) is int for v in value)

        def positions(value: object) -> bool:
            return (
                isinstance(value, list)
                and all(type(v) is int and 0 <= v < n for v in value)
                and len(set(value)) == len(value)
            )

        covered = entry.get("covered", [])
        if not ints(broken) or len(broken) != n:
            raise bad(f"broken_by must hold {n} integers, one per example")
        if not positions(covered) or (covered and len(done) == members):
            raise bad(f"covered must list distinct positions in [0, {n}) while a member runs")
        if any(broken[i] == CLEAN_WRONG for i in covered):
            raise bad("covered must list only examples classified correctly clean")
        running = set(covered)
        if any(
            not (CLEAN_WRONG <= b < len(done) or (b == len(done) and i in running))
            for i, b in enumerate(broken)
        ):
            raise bad(
                f"broken_by values must lie in [{CLEAN_WRONG}, {len(done)}), "
                f"or be {len(done)} for a covered example"
            )
        if not positions(index):
            raise bad(f"index must list distinct positions in [0, {n})")
        attacked_expected = [i for i, b in enumerate(broken) if b != CLEAN_WRONG] if done else sorted(running)
        if sorted(index) != attacked_expected:
            raise bad("index must list exactly the examples the members attacked")
        if not isinstance(blob, Mapping) or set(blob) != {"dtype", "shape", "data"}:
            raise bad("x_adv must hold dtype, shape and data")
        if blob["dtype"] != str(x.dtype).removeprefix("torch."):
            raise bad(f"x_adv has dtype {blob['dtype']!r}, not x's {str(x.dtype).removeprefix('torch.')!r}")
        if blob["shape"] != [len(index), *x.shape[1:]]:
            raise bad(f"x_adv has shape {blob['shape']}, not {[len(index), *x.shape[1:]]}")
        try:
            points = _decode(blob)
        except (ValueError, TypeError, RuntimeError) as err:
            raise bad(f"x_adv does not decode ({err})") from None

        broken_by = torch.tensor(broken, dtype=torch.int64, device=x.device)
        where = torch.tensor(index, dtype=torch.int64, device=x.device)
        attacked = torch.zeros(n, dtype=torch.bool, device=x.device)
        x_adv = x.clone()
        if where.numel():
            attacked[where] = True
            x_adv[where] = points.to(device=x.device, dtype=x.dtype)
        part = None
        if "covered" in entry:
            part = torch.zeros(n, dtype=torch.bool, device=x.device)
            part[torch.tensor(covered, dtype=torch.int64, device=x.device)] = True
        return EnsembleProgress(tuple(done), broken_by, attacked, x_adv, part)

    def _check_points(
        self, attack: AutoAttack, model: nn.Module, x: Tensor, y: Tensor, progress: EnsembleProgress
    ) -> None:
        """Refuse stored points outside the threat set, or whose model prediction contradicts ``broken_by``.

        A point a member broke must be misclassified, and the point kept for an example
        still standing must be classified correctly; a file that says otherwise was edited.
        """
        attacked = progress.attacked
        if not bool(attacked.any()):
            return
        points = progress.x_adv[attacked]
        threat = attack.threat.select(attacked.nonzero().squeeze(1))
        inside = threat.contains(points, x[attacked])
        if not bool(inside.all()):
            raise ValueError(
                f"state_path={str(self.path)!r}: {int((~inside).sum())} stored point(s) lie outside the "
                "threat set; the file was edited or written for other data; delete it to start over"
            )
        if any(getattr(member, "targeted", False) for _, member in attack.members()):
            return  # a targeted member's "success" is not misclassification; nothing to compare
        logits = chunked_logits(model, points, attack.batch_size)  # in the attack's chunks, as its own passes
        wrong = logits.argmax(dim=1) != y[attacked]
        if not torch.equal(wrong, progress.broken_by[attacked] >= 0):
            raise ValueError(
                f"state_path={str(self.path)!r}: the stored points disagree with the recorded broken_by "
                "(a point marked broken is classified correctly, or one marked robust is not); "
                "delete the file to start over"
            )

    def _load(self, attack: AutoAttack) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(
                f"state_path={str(self.path)!r} is not a readable AutoAttack state file: {err}"
            ) from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"state_path={str(self.path)!r} is not an AutoAttack state file (no {FORMAT!r})")
        if not isinstance(state.get("entries"), dict):
            raise ValueError(
                f"state_path={str(self.path)!r} is corrupt: 'entries' must be a table of batches"
            )
        config = json.loads(json.dumps(config_key(attack)))  # as it reads back from JSON
        if state.get("config") != config:
            raise ValueError(
                f"state_path={str(self.path)!r} was written for another evaluation ({state.get('config')}), "
                f"not this one ({config}); delete it or pass another state_path"
            )
        return state

    def _save(self, attack: AutoAttack, key: str, entry: dict[str, Any]) -> None:
        # Re-read so that entries other batches wrote since are kept.
        state = self._load(attack) or {"format": FORMAT, "config": config_key(attack), "entries": {}}
        state["entries"][key] = entry
        atomic_write_text(self.path, json.dumps(state))


def resumable_autoattack(
    attack: AutoAttack,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    state_path: PathLike,
    *,
    generator: torch.Generator | None = None,
) -> AutoAttackResult:
    """Function form: ``AutoAttackState(state_path).evaluate(attack, model, x, y, generator=generator)``."""
    return AutoAttackState(state_path).evaluate(attack, model, x, y, generator=generator)


__all__ = ["FORMAT", "AutoAttackState", "config_key", "data_key", "resumable_autoattack"]
