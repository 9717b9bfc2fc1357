"""The first look at the problem: a model trained on the 8×8 digits, fooled by FGSM and PGD.

Trains a small MLP on scikit-learn's 1,797 handwritten digits (no download),
then measures clean accuracy, accuracy under random sign noise of the same size
(Goodfellow et al. 2015, §5: noise barely matters) and under FGSM and PGD
(worst-case perturbations do).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlearn.attacks import FGSM, PGD, Attack, SignNoise
from advlearn.threat import Linf, ThreatModel


@dataclass(frozen=True)
class DemoResult:
    """Accuracies of the demo model on the held-out digits, by attack name (``"clean"`` included)."""

    accuracy: dict[str, float]
    eps: float
    num_test: int


def load_digits_tensors(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 8×8 digits scaled to [0, 1], shape ``(N, 1, 8, 8)``, split 75/25 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    return x_tr, y_tr, x_te, y_te


def train_mlp(x: Tensor, y: Tensor, *, epochs: int = 40, seed: int = 0, quiet: bool = False) -> nn.Module:
    """A 64-128-10 ReLU MLP trained with Adam on ``(x, y)``; seeded, a few seconds on a CPU."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc="train", disable=quiet, leave=False):
        for batch in torch.randperm(x.shape[0], generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def robust_accuracy(model: nn.Module, attack: Attack, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """Fraction of examples classified correctly both clean and after ``attack``."""
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    result = attack.run(model, x, y, generator=torch.Generator().manual_seed(seed))
    return float((clean_ok & ~result.success).float().mean())


def run_demo(eps: float = 0.1, seed: int = 0, quiet: bool = False) -> DemoResult:
    """Train on the digits and report clean, noise, FGSM and PGD accuracy at ``eps`` (ℓ∞)."""
    x_tr, y_tr, x_te, y_te = load_digits_tensors(seed)
    model = train_mlp(x_tr, y_tr, seed=seed, quiet=quiet)
    threat = ThreatModel(Linf(), eps=eps)
    attacks: dict[str, Attack] = {
        "sign noise": SignNoise(threat),
        "FGSM": FGSM(threat),
        "PGD-20": PGD(threat, steps=20),
        "PGD-20x5 (early stop)": PGD(threat, steps=20, restarts=5, early_stop=True),
    }
    with torch.no_grad():
        accuracy = {"clean": float((model(x_te).argmax(1) == y_te).float().mean())}
    for name, attack in tqdm(attacks.items(), desc="attack", disable=quiet, leave=False):
        accuracy[name] = robust_accuracy(model, attack, x_te, y_te, seed)
    return DemoResult(accuracy=accuracy, eps=eps, num_test=x_te.shape[0])
