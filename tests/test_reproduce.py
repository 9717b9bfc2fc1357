"""`advlearn reproduce`: the closed-form experiments against independent computations; registry and CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm as normal

from advlearn.cli import main
from advlearn.experiments.reproduce import (
    EXPERIMENTS,
    Comparison,
    _common,
    _mnist,
    gan_theory,
    holder,
    reproduce,
    table_62_1,
    tsipras,
)
from advlearn.experiments.reproduce._common import t_interval
from advlearn.threat import ThreatModel

# ----------------------------------------------------------------------------- the verdict


def test_verdict_rules():
    """matches inside the interval; same direction outside when the claim holds; differs otherwise."""
    values = (0.50, 0.52, 0.48, 0.51, 0.49)
    assert Comparison("q", 0.50, values, holds=False, why=".").verdict == "matches"
    assert Comparison("q", 0.90, values, holds=True, why=".").verdict == "same direction"
    assert Comparison("q", 0.90, values, holds=False, why=".").verdict == "differs"
    assert Comparison("q", None, values, holds=True, why=".").verdict == "no published figure"
    failed = Comparison("q", None, values, holds=False, why=".").verdict
    assert failed == "no published figure; our check fails"
    # one seed: no interval, so nothing can match
    assert Comparison("q", 0.5, (0.5,), holds=True, why=".").verdict == "same direction"


def test_t_interval_against_scipy():
    """The prediction interval of one run and the confidence interval of the mean, by hand."""
    values = [1.0, 2.0, 4.0, 7.0]
    n, mean, sd = 4, 3.5, float(np.std(values, ddof=1))
    t = 3.182446305284263  # t_{0.975, 3}, from a printed table
    lo, hi = t_interval(values, spread="mean")
    assert lo == pytest.approx(mean - t * sd / math.sqrt(n), rel=1e-12)
    assert hi == pytest.approx(mean + t * sd / math.sqrt(n), rel=1e-12)
    lo, hi = t_interval(values, spread="run")
    assert hi - lo == pytest.approx(2 * t * sd * math.sqrt(1 + 1 / n), rel=1e-12)


# ----------------------------------------------------------------------------- holder (eq. 62.1)


@pytest.mark.parametrize(("norm", "q"), [("linf", 1), ("l2", 2), ("l1", math.inf)])
@pytest.mark.parametrize("seed", [0, 7])
def test_holder_fgsm_equals_the_dual_norm_to_machine_precision(norm: str, q: float, seed: int):
    """The library's FGSM on a linear score gives gᵀδ = ε‖g‖_q, with g redrawn here independently."""
    value, bound, best, random = holder._one_seed(seed, norm, draws=2000)
    g = torch.randn(holder.DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    expected = holder.EPS * float(np.linalg.norm(g, ord=q))
    assert abs(value - expected) <= 16 * np.finfo(np.float64).eps * expected
    assert bound == expected
    assert best < expected  # random points of the ball never reach the bound
    assert random.shape == (2000,)


# ----------------------------------------------------------------------------- table-62.1


def test_bayes_accuracies_closed_form():
    """Clean: Φ(√(μᵀΣ⁻¹μ)) with μᵀΣ⁻¹μ = 2/1.3 by hand; robust at ε = 1: chance, as z = μ is allowed."""
    assert table_62_1.bayes_clean_accuracy() == pytest.approx(
        float(normal.cdf(math.sqrt(2 / 1.3))), abs=1e-12
    )
    assert table_62_1.best_linear_robust_accuracy(1.0) == pytest.approx(0.5, abs=1e-12)
    assert table_62_1.best_linear_robust_accuracy(0.0) == pytest.approx(
        table_62_1.bayes_clean_accuracy(), abs=1e-7
    )


@pytest.mark.parametrize("eps", [0.1, 0.3, 0.6, 0.9])
def test_robust_optimum_primal_equals_dual(eps: float):
    """max over linear w of the robust margin SNR equals min over the ε-box of the Mahalanobis distance.

    Along w = (1, 1)/√2 both sides are also known by hand: SNR = √2(1 − ε)/√1.3, and that w is optimal
    by symmetry, since Σ's eigenvector (1, 1) is μ's direction.
    """
    primal = table_62_1.best_linear_robust_accuracy(eps)
    dual = table_62_1.transport_robust_accuracy(eps)
    by_hand = float(normal.cdf(math.sqrt(2) * (1 - eps) / math.sqrt(1.3)))
    assert primal == pytest.approx(dual, abs=1e-6)
    assert dual == pytest.approx(by_hand, abs=1e-6)


def test_table_62_1_one_seed_is_consistent():
    """FGSM on the fitted LR is the closed-form point, and its accuracy the margin test's."""
    out = table_62_1._one_seed(0)
    assert out["fgsm_gap"] <= 1e-12
    assert out["standard"][1] == out["margin_acc"]
    clean, adversarial = out["standard"][:2]
    assert 0.8 < clean < 0.97  # 160 test points around the Bayes accuracy 89.3%
    assert adversarial < 0.65  # about chance


# ----------------------------------------------------------------------------- registry and CLI


def test_unknown_name_lists_the_known_ones(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(ValueError, match="holder") as info:
        reproduce("no-such-experiment")
    assert "table-62.1" in str(info.value)
    assert main(["reproduce", "no-such-experiment"]) == 2
    err = capsys.readouterr().err
    assert "no-such-experiment" in err
    assert all(name in err for name in EXPERIMENTS)


def test_list_prints_every_experiment(capsys: pytest.CaptureFixture[str]):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name, experiment in EXPERIMENTS.items():
        assert name in out
        assert experiment.source in out


def test_data_dir_refused_where_unused(tmp_path: Path):
    with pytest.raises(ValueError, match="--data-dir applies only to"):
        reproduce("holder", data_dir=tmp_path, out_dir=tmp_path)


def test_quick_run_writes_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`advlearn reproduce holder --quick` end to end: results.json, report.md, report.html, the PNG."""
    assert main(["reproduce", "holder", "--quick", "--seeds", "2", "--out-dir", str(tmp_path)]) == 0
    run_dir = tmp_path / "reproduce-holder"
    for name in ("results.json", "report.md", "report.html", "holder.png"):
        assert (run_dir / name).is_file(), name
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "src='http" not in html
    assert "published" in (run_dir / "report.md").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["seeds"] == [0, 1]
    assert all(c["passed"] for c in results["checks"])
    linf = results["comparisons"][0]
    assert linf["published"] == holder.PUBLISHED["fgsm"]
    assert len(linf["values"]) == 2
    assert linf["verdict"] in ("matches", "same direction", "differs")
    assert "| quantity | published | ours |" in capsys.readouterr().out


# ----------------------------------------------------------------------------- tsipras


def test_tsipras_closed_forms_by_hand():
    """η√d = 4 at every d; ε = 2η flips the weak means; x₁ survives iff ε = 8/√d < 1 (d > 64)."""
    for d in tsipras.DIMS:
        forms = tsipras.closed_forms(d)
        assert forms["weak clean"] == pytest.approx(float(normal.cdf(4.0)), abs=1e-12)
        assert forms["weak robust"] == pytest.approx(float(normal.cdf(-4.0)), abs=1e-12)
        assert forms["robust clean"] == 0.95
        assert forms["robust robust"] == (0.95 if d > 64 else 0.0)


def test_tsipras_weak_classifier_monte_carlo():
    """The weak-feature classifier on 40,000 fresh samples, within 5 binomial sd of Φ(±4)."""
    clean, robust = tsipras.monte_carlo_weak(100, 40_000, seed=3)
    sd = math.sqrt(normal.cdf(4.0) * normal.sf(4.0) / 40_000) + 1 / 40_000
    assert abs(clean - normal.cdf(4.0)) < 5 * sd
    assert abs(robust - normal.cdf(-4.0)) < 5 * sd


# ----------------------------------------------------------------------------- gan-theory


@pytest.mark.parametrize("p_g", gan_theory.GENERATORS[1:])
def test_gan_value_by_monte_carlo_matches_the_integral(p_g):
    """V(G, D*) from fresh samples (no quadrature) against −log 4 + 2·JSD (Simpson), 5 standard errors."""
    from advlearn.games.theory import jensen_shannon

    mc, se = gan_theory.monte_carlo_value(gan_theory.P_DATA, p_g, 100_000, seed=4)
    assert abs(mc - (-math.log(4) + 2 * jensen_shannon(gan_theory.P_DATA, p_g))) < 5 * se


# ----------------------------------------------------------------------------- MNIST data


def test_data_dir_without_files_names_what_it_looked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """An empty --data-dir: the error lists the four IDX files, before any training starts."""
    with pytest.raises(FileNotFoundError) as info:
        reproduce("goodfellow", data_dir=tmp_path, out_dir=tmp_path)
    for name in _mnist.IDX_FILES:
        assert name in str(info.value)
    assert main(["reproduce", "figure-7.8", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "t10k-labels-idx1-ubyte" in err
    assert "Traceback" not in err


def test_data_dir_with_idx_files_is_read(tmp_path: Path):
    """Four small IDX files (written here, two gzipped) are what the MNIST experiments train on."""
    import gzip
    import struct

    rng = np.random.default_rng(0)
    for stem, n in (("train", 30), ("t10k", 10)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (tmp_path / f"{stem}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
        )
        with gzip.open(tmp_path / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    context = _common.Context(quick=True, seeds=(0,), data_dir=tmp_path, run_dir=tmp_path / "run")
    split, described = _mnist.load(context)
    assert (len(split.train), len(split.test)) == (30, 10)
    assert "full MNIST" in described
    assert split.train.x.max() <= 1.0


def test_all_runs_each_in_order_and_gives_data_dir_only_to_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """`reproduce all --data-dir DIR`: every experiment runs, in order; DIR reaches only its readers."""
    import advlearn.experiments.reproduce as package
    from advlearn._registry import Registry

    seen: dict[str, object] = {}

    def reader(context: _common.Context) -> _common.Outcome:
        seen["data_dir"] = context.data_dir
        return _common.Outcome("a stand-in.", [Comparison("q", 1.0, (1.0, 1.0), True, ".")])

    fake: Registry[_common.Experiment] = Registry("reproduce experiment")
    fake["holder"] = EXPERIMENTS["holder"]
    fake["reader"] = _common.Experiment(
        "reader", "a test", "records data_dir.", "0 s", reader, reads_data_dir=True
    )
    monkeypatch.setattr(package, "EXPERIMENTS", fake)
    for name in _mnist.IDX_FILES:  # --data-dir is checked for the IDX files before anything runs
        (tmp_path / name).touch()
    args = [
        "reproduce",
        "all",
        "--quick",
        "--seeds",
        "2",
        "--data-dir",
        str(tmp_path),
        "--out-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.index("== holder") < out.index("== reader")
    assert seen["data_dir"] == tmp_path
    assert (tmp_path / "reproduce-holder" / "report.html").is_file()
    results = json.loads((tmp_path / "reproduce-reader" / "results.json").read_text())
    assert results["comparisons"][0]["verdict"] == "matches"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["figure-7.8", "claim-smoothing", "claim-tradeoff", "claim-unlabeled", "claim-head", "claim-overfitting"],
)
def test_trained_experiments_quick_end_to_end(name: str, tmp_path: Path):
    """The experiments that train networks, --quick, end to end (about a minute each on 2 cores)."""
    experiment, outcome, run_dir = reproduce(name, quick=True, out_dir=tmp_path)
    assert experiment.name == name
    assert (run_dir / "report.html").is_file()
    assert list(run_dir.glob("*.png"))
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["comparisons"]) == len(outcome.comparisons) > 0
    for row in results["comparisons"]:
        assert row["verdict"] in (
            "matches",
            "same direction",
            "differs",
            "no published figure",
            "no published figure; our check fails",
        )
        not_a_fraction = (
            "radius",
            "seconds",
            "epoch the guard",
            "gained",
        )  # radii, times, epochs, differences
        assert all(0.0 <= v <= 1.0 for v in row["values"]) or any(
            w in row["quantity"] for w in not_a_fraction
        )


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_registered_experiment_is_complete(name: str):
    """Conformance over the registry: named as registered, described, with positive seed counts."""
    experiment = EXPERIMENTS[name]
    assert experiment.name == name
    assert experiment.source.strip()
    assert experiment.claim.strip()
    assert experiment.cost.strip()
    assert callable(experiment.run)
    assert all(isinstance(s, int) and s >= 1 for s in experiment.seeds)


# ------------------------------------------------------------------- pieces of the trained experiments


def test_goodfellow_layer_spreads_are_the_activations_std():
    """The input arm's spread is the pixels' std, so its radius is ε exactly; the hook is removed."""
    from advlearn.experiments.reproduce import goodfellow

    torch.manual_seed(0)
    model = goodfellow._maxout()
    x = torch.rand(32, 1, 28, 28)
    spreads = goodfellow._layer_spreads(model, x)
    assert set(spreads) == set(goodfellow.LAYERS.values())
    assert spreads["flatten"] == pytest.approx(float(x.std()), rel=1e-6)
    with torch.no_grad():
        assert spreads["maxout2"] == pytest.approx(float(model[:3](x).std()), rel=1e-6)
    assert all(not m._forward_hooks for m in model.modules())


def test_madry_masked_model_hides_its_gradient_from_cross_entropy_only():
    """logits × 1000: CE's input gradient is exactly 0 on confident points, the margin loss's is not.

    So cross-entropy PGD leaves the masked linear model's accuracy where it is, while the same PGD on
    the margin loss takes it down to the unscaled model's figure (the attacks follow the same signs).
    """
    from advlearn.attacks import pgd
    from advlearn.experiments.reproduce import madry_mnist
    from advlearn.losses import get_loss

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        base[1].weight.mul_(20.0)
    masked = madry_mnist.ScaledLogits(base, madry_mnist.TEMPERATURE)
    x = torch.rand(64, 1, 4, 4)
    y = base(x).argmax(1).detach()  # every point correct, most with a margin far above 0.1
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(get_loss("ce")(masked(x_var), y).sum(), x_var)
    margins = base(x).topk(2, dim=1).values
    confident = (margins[:, 0] - margins[:, 1]) > 0.2
    assert bool(confident.sum() > 32)
    assert bool((grad[confident] == 0).all())
    x_var = x.clone().requires_grad_(True)
    (grad_cw,) = torch.autograd.grad(get_loss("cw")(masked(x_var), y).sum(), x_var)
    assert bool((grad_cw[confident].flatten(1).abs().sum(1) > 0).all())
    threat = ThreatModel("linf", 0.3, (0.0, 1.0))
    ce = pgd(masked, x, y, threat, steps=10, random_start=False)
    cw = pgd(masked, x, y, threat, steps=10, random_start=False, loss="cw")
    reference = pgd(base, x, y, threat, steps=10, random_start=False, loss="cw")
    assert int(ce.success.sum()) <= int((~confident).sum())
    assert int(cw.success.sum()) == int(reference.success.sum()) > int(ce.success.sum())


def test_claim_head_freezes_all_but_the_head():
    from advlearn.experiments.reproduce import claim_head

    model = claim_head._model()
    count = claim_head.freeze_all_but(model, claim_head.HEAD)
    assert count == 256 * 10 + 10
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["logits.weight", "logits.bias"]


def test_claim_unlabeled_split_is_stratified_and_disjoint():
    from advlearn.data import digits
    from advlearn.experiments.reproduce import claim_unlabeled

    train = digits().train
    labeled, unlabeled = claim_unlabeled.pseudo_labeled(train, claim_unlabeled.LABELED, seed=1)
    assert abs(len(labeled) - claim_unlabeled.LABELED) <= 10
    assert len(labeled) + len(unlabeled) == len(train)
    assert set(torch.bincount(labeled.y, minlength=10).tolist()) <= set(range(15, 26))  # ~20 per class
    both = torch.bincount(labeled.y, minlength=10) + torch.bincount(unlabeled.y, minlength=10)
    assert torch.equal(both, torch.bincount(train.y, minlength=10))
    key = torch.randn(64, dtype=torch.float64)  # a row's fingerprint
    fingerprint = {round(v, 9) for v in (train.x.flatten(1).double() @ key).tolist()}
    assert len(fingerprint) == len(train)  # no two training digits alike
    parts = torch.cat([labeled.x, unlabeled.x]).flatten(1).double() @ key
    assert {round(v, 9) for v in parts.tolist()} == fingerprint  # every training digit, each in one part


def test_claim_tradeoff_arms_span_both_knobs():
    from advlearn.experiments.reproduce import claim_tradeoff
    from advlearn.training import PGDAT, TRADES, Standard

    arms = claim_tradeoff._arms(quick=False, steps=5)
    assert isinstance(arms["standard"], Standard)
    assert [a.threat.eps for k, a in arms.items() if isinstance(a, PGDAT)] == [0.05, 0.1, 0.2]
    assert [a.beta for a in arms.values() if isinstance(a, TRADES)] == [1.0, 6.0]
    assert all(a.threat.eps == claim_tradeoff.EPS for a in arms.values() if isinstance(a, TRADES))
