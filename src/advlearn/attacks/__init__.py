"""Inner maximizers: every attack is a function returning an :class:`AttackResult`
and a frozen-dataclass config callable as ``attack(model, x, y) -> x_adv``.

Example:
    >>> import advlearn as al
    >>> threat = al.ThreatModel("linf", eps=0.1)
    >>> {"fgsm", "pgd", "apgd", "apgd_t", "square", "autoattack"} <= set(al.attacks.ATTACKS)
    True
"""

from advlearn.attacks._base import ATTACKS, Attack, AttackResult, build_attack, register
from advlearn.attacks.adaptive import BPDA, EOT
from advlearn.attacks.apgd import APGD, APGDT, apgd, apgd_checkpoints, apgd_t, targeted_dlr
from advlearn.attacks.cw import CW, cw
from advlearn.attacks.deepfool import DeepFool, deepfool
from advlearn.attacks.ensemble import AutoAttack, AutoAttackResult, EnsembleProgress, autoattack
from advlearn.attacks.fab import FAB, FABT, fab, fab_t
from advlearn.attacks.gradient import FGSM, PGD, fgsm, pgd, pgd_maximize
from advlearn.attacks.lbfgs import LBFGS, lbfgs
from advlearn.attacks.noise import SignNoise, UniformNoise, random_sign_noise, uniform_noise
from advlearn.attacks.spatial import Rotation, rotate, rotation
from advlearn.attacks.square import Square, square, square_fraction
from advlearn.attacks.transfer import Transfer, transfer

__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "BPDA",
    "CW",
    "EOT",
    "FAB",
    "FABT",
    "FGSM",
    "LBFGS",
    "PGD",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "AutoAttackResult",
    "DeepFool",
    "EnsembleProgress",
    "Rotation",
    "SignNoise",
    "Square",
    "Transfer",
    "UniformNoise",
    "apgd",
    "apgd_checkpoints",
    "apgd_t",
    "autoattack",
    "build_attack",
    "cw",
    "deepfool",
    "fab",
    "fab_t",
    "fgsm",
    "lbfgs",
    "pgd",
    "pgd_maximize",
    "random_sign_noise",
    "register",
    "rotate",
    "rotation",
    "square",
    "square_fraction",
    "targeted_dlr",
    "transfer",
    "uniform_noise",
]
