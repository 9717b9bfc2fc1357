"""Inner maximizers: every attack is a function returning an :class:`AttackResult`
and a frozen-dataclass config callable as ``attack(model, x, y) -> x_adv``.

Example:
    >>> import advlearn as al
    >>> threat = al.ThreatModel("linf", eps=0.1)
    >>> sorted(al.attacks.ATTACKS)
    ['fgsm', 'pgd', 'sign_noise', 'uniform_noise']
"""

from advlearn.attacks._base import ATTACKS, Attack, AttackResult, build_attack, register
from advlearn.attacks.gradient import FGSM, PGD, fgsm, pgd
from advlearn.attacks.noise import SignNoise, UniformNoise, random_sign_noise, uniform_noise

__all__ = [
    "ATTACKS",
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "SignNoise",
    "UniformNoise",
    "build_attack",
    "fgsm",
    "pgd",
    "random_sign_noise",
    "register",
    "uniform_noise",
]
