"""Reports: self-contained HTML, Markdown that links real files, escaping, skipped figures, the table."""

from __future__ import annotations

import base64
import dataclasses
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from advlearn.attacks import FGSM, Attack
from advlearn.evaluation import (
    EpsSweep,
    Evaluation,
    Examples,
    accuracy_vs_eps,
    adversarial_examples,
    evaluate,
)
from advlearn.report import MAX_EXAMPLES, ModelReport, format_table, plot_examples, write_report
from advlearn.threat import ThreatModel

THREAT = ThreatModel("linf", 0.3)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
MD_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def make_evaluation(
    clean: float, robust: dict[str, float], worst: float, conf: dict[str, float], n: int = 200
) -> Evaluation:
    return Evaluation(
        threat=THREAT,
        num_examples=n,
        clean_accuracy=clean,
        robust_accuracy=robust,
        worst_case_accuracy=worst,
        confidence_on_errors=conf,
        correct={},
    )


def make_examples(n: int = 5, channels: int = 1, size: int = 6, seed: int = 0) -> Examples:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=g)
    delta = 0.3 * torch.randn(n, channels, size, size, generator=g).sign()
    y = torch.arange(n) % 10
    pred_adv = y.clone()
    pred_adv[::2] = (y[::2] + 3) % 10  # every other example fooled
    return Examples(
        x=x,
        x_adv=(x + delta).clamp(0, 1),
        y=y,
        pred_clean=y.clone(),
        conf_clean=torch.full((n,), 0.992),
        pred_adv=pred_adv,
        conf_adv=torch.full((n,), 0.976),
        attack="PGD-40x5",
    )


def history(epochs: int, robust: bool) -> list[dict[str, float]]:
    records = []
    for epoch in range(1, epochs + 1):
        record = {
            "epoch": float(epoch),
            "train_loss": 2.0 / epoch,
            "lr": 0.1,
            "val_clean_acc": 0.5 + 0.1 * epoch,
        }
        if robust:
            record["val_robust_acc"] = 0.2 + 0.1 * epoch
        record["seconds"] = 1.0
        records.append(record)
    return records


def full_models() -> list[ModelReport]:
    """A standard model broken by the attacks and a robust one, with every optional part present."""
    eps = [0.0, 0.1, 0.2, 0.3, 0.4]
    standard = ModelReport(
        label="standard",
        evaluation=make_evaluation(
            0.99, {"FGSM": 0.05, "PGD-40x5": 0.0}, 0.0, {"clean": 0.62, "FGSM": 0.93, "PGD-40x5": 1.0}
        ),
        history=history(3, robust=False),
        sweep=EpsSweep(THREAT, eps, [0.99, 0.4, 0.05, 0.0, 0.0], 200),
        examples=make_examples(seed=1),
    )
    robust = ModelReport(
        label="pgd-at",
        evaluation=make_evaluation(
            0.985,
            {"FGSM": 0.9, "PGD-40x5": 0.851},
            0.85,
            {"clean": float("nan"), "FGSM": 0.7, "PGD-40x5": 0.8},
        ),
        history=history(3, robust=True),
        sweep=EpsSweep(THREAT, eps, [0.985, 0.95, 0.9, 0.85, 0.3], 200),
        examples=make_examples(seed=2),
    )
    return [standard, robust]


@pytest.fixture
def models() -> list[ModelReport]:
    return full_models()


@pytest.fixture
def bare_models() -> list[ModelReport]:
    """The same two models with their evaluations only: reports of them draw no figure."""
    return [ModelReport(m.label, m.evaluation) for m in full_models()]


@dataclass(frozen=True)
class FullRun:
    run_dir: Path
    html_path: Path
    md_path: Path
    page: str
    md: str
    figures_open_before: list[int]
    figures_open_after: list[int]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> FullRun:
    """One complete report, written once for the tests that only read it."""
    import matplotlib.pyplot as plt

    run_dir = tmp_path_factory.mktemp("full") / "run"
    before = plt.get_fignums()
    html_path, md_path = write_report(
        run_dir,
        title="MNIST: standard vs PGD-AT",
        models=full_models(),
        config_text='[threat]\nnorm = "linf"\neps = 0.3\n',
        notes=["Two models, one seed."],
        class_names=[f"digit {k}" for k in range(10)],
    )
    return FullRun(
        run_dir=run_dir,
        html_path=html_path,
        md_path=md_path,
        page=html_path.read_text(encoding="utf-8"),
        md=md_path.read_text(encoding="utf-8"),
        figures_open_before=before,
        figures_open_after=plt.get_fignums(),
    )


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk."""
    assert png[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def external_references(page: str) -> list[str]:
    """Anything in ``page`` that would make a browser fetch from elsewhere or run code."""
    patterns = [
        r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)""",
        r"<script",
        r"<link",
        r"<iframe",
        r"@import",
        r"url\(",
        r"https?://",
    ]
    return [p for p in patterns if re.search(p, page, flags=re.IGNORECASE)]


# ----------------------------------------------------------------------------- the full report

FIGURES = ["accuracy_vs_eps.png", "examples_pgd-at.png", "examples_standard.png", "training_curves.png"]


def test_report_files_are_written_where_asked(full_run: FullRun) -> None:
    assert full_run.html_path == full_run.run_dir / "report.html"
    assert full_run.md_path == full_run.run_dir / "report.md"
    assert sorted(p.name for p in full_run.run_dir.iterdir()) == sorted(
        [*FIGURES, "report.html", "report.md"]
    )


def test_html_is_self_contained(full_run: FullRun) -> None:
    assert full_run.page.startswith("<!DOCTYPE html>")
    assert external_references(full_run.page) == []
    pngs = [base64.b64decode(data) for data in DATA_URI.findall(full_run.page)]
    assert len(pngs) == len(FIGURES)
    for png in pngs:
        width, height = png_size(png)  # checks the PNG signature too
        assert 300 <= width <= 1600
        assert 200 <= height <= 1200
    # The embedded figures are the files on disk, byte for byte.
    assert sorted(pngs) == sorted((full_run.run_dir / name).read_bytes() for name in FIGURES)


def test_html_shows_the_labels_numbers_and_sections_in_order(full_run: FullRun) -> None:
    page = full_run.page
    for text in ["MNIST: standard vs PGD-AT", "standard", "pgd-at", "Two models, one seed.", "PGD-40x5"]:
        assert text in page
    for number in ["99.0%", "98.5%", "85.1%", "85.0%", "5.0%", "0.0%", "62.0%", "—"]:
        assert number in page
    assert "ℓ∞, ε = 0.3" in page
    assert "rescaled per image to [0, 1] for visibility" in page
    assert "<pre>[threat]\nnorm = &quot;linf&quot;\neps = 0.3\n</pre>" in page
    order = ["class='summary'", "Two models", "<h2>Results", "Accuracy against ε", "<h2>Training"]
    order += ["Adversarial examples", "<h2>Configuration"]
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions)


def test_markdown_links_the_pngs_beside_it_and_embeds_the_table(full_run: FullRun) -> None:
    linked = MD_IMAGE.findall(full_run.md)
    assert sorted(linked) == FIGURES
    assert all((full_run.run_dir / name).is_file() for name in linked)
    assert format_table({m.label: m.evaluation for m in full_models()}) in full_run.md
    assert '```toml\n[threat]\nnorm = "linf"\neps = 0.3\n```' in full_run.md


def test_figures_leave_no_pyplot_state(full_run: FullRun) -> None:
    assert full_run.figures_open_after == full_run.figures_open_before


# ----------------------------------------------------------------------------- the text


def test_summary_is_generated_from_the_numbers(tmp_path: Path, bare_models: list[ModelReport]) -> None:
    html_path, md_path = write_report(tmp_path, title="t", models=bare_models)
    summary = re.search(r"<p class='summary'>(.*?)</p>", html_path.read_text(encoding="utf-8"), re.S)
    assert summary is not None
    text = summary.group(1)
    # Most robust first; the worst case over both attacks, with the threat model and clean accuracy.
    assert text.startswith("Under ℓ∞ attacks of radius ε = 0.3, ")
    assert (
        "the pgd-at model keeps 85.0% accuracy in the worst case over FGSM and PGD-40x5 (clean 98.5%)" in text
    )
    assert "the standard model keeps 0.0% (clean 99.0%)" in text
    assert text.index("pgd-at") < text.index("standard")
    assert "200 examples" in text
    assert text in md_path.read_text(encoding="utf-8")  # no special characters: the same sentence in both


def test_summary_states_where_the_sweeps_end(full_run: FullRun) -> None:
    sentence = "At the largest radius swept, ε = 0.4, worst-case accuracy falls to 30.0% (pgd-at) and 0.0%"
    assert f"{sentence} (standard)." in full_run.page


def test_summary_names_each_threat_when_models_differ(tmp_path: Path) -> None:
    linf = Evaluation(ThreatModel("linf", 0.1), 10, 0.9, {"PGD": 0.4}, 0.4, {"clean": 0.5, "PGD": 0.9}, {})
    l2 = Evaluation(ThreatModel("l2", 1.5), 20, 0.8, {"PGD": 0.5}, 0.5, {"clean": 0.5, "PGD": 0.9}, {})
    html_path, _ = write_report(tmp_path, title="t", models=[ModelReport("a", linf), ModelReport("b", l2)])
    page = html_path.read_text(encoding="utf-8")
    assert "The b model keeps 50.0% accuracy under PGD at ε = 1.5 (ℓ2) (clean 80.0%, n = 20)" in page
    assert "the a model keeps 40.0% accuracy under PGD at ε = 0.1 (ℓ∞) (clean 90.0%, n = 10)" in page


def test_user_strings_are_escaped(tmp_path: Path, models: list[ModelReport]) -> None:
    evil = "<script>alert(1)</script>"
    reports = [
        ModelReport(evil, models[0].evaluation, examples=models[0].examples),
        ModelReport("pgd-at", models[1].evaluation, examples=models[1].examples),
    ]
    html_path, md_path = write_report(
        tmp_path,
        title=f"title {evil}",
        models=reports,
        config_text=f"</pre>{evil}",
        notes=[f"note {evil} & more"],
        class_names=[evil] * 10,
    )
    page = html_path.read_text(encoding="utf-8")
    assert evil not in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp; more" in page
    assert page.count("</pre>") == 1
    md = md_path.read_text(encoding="utf-8")
    prose, _ = md.split("```toml")
    assert evil not in prose  # the config block is verbatim, where Markdown renders nothing
    # The file name is made safe too, and the Markdown links it.
    names = {p.name for p in tmp_path.glob("examples_*.png")}
    assert names == {"examples_script-alert-1-script.png", "examples_pgd-at.png"}
    assert set(MD_IMAGE.findall(md)) == names


def test_eps_that_is_a_multiple_of_1_255_is_shown_as_a_fraction(tmp_path: Path) -> None:
    evaluation = Evaluation(ThreatModel("l2", 8 / 255), 10, 0.5, {}, 0.5, {"clean": 0.6}, {})
    html_path, _ = write_report(tmp_path, title="t", models=[ModelReport("m", evaluation)])
    page = html_path.read_text(encoding="utf-8")
    assert "ℓ2, ε = 0.03137 (8/255)" in page
    assert "classifies 50.0% of its inputs correctly" in page  # no attack: the summary gives clean accuracy


def test_sweep_that_rises_with_eps_is_flagged(tmp_path: Path, bare_models: list[ModelReport]) -> None:
    sweep = EpsSweep(THREAT, [0.0, 0.1, 0.2, 1.0], [0.9, 0.5, 0.7, 0.4], 200)
    masked = ModelReport("masked", bare_models[1].evaluation, sweep=sweep)
    html_path, md_path = write_report(tmp_path, title="t", models=[masked])
    page = html_path.read_text(encoding="utf-8")
    assert "rises from 50.0% at ε = 0.1 to 70.0% at ε = 0.2" in page
    assert "can reach any input" in page  # 40% survive an ℓ∞ ball as wide as [0, 1]
    assert "**Warning:**" in md_path.read_text(encoding="utf-8")


def test_sweep_weaker_than_the_table_is_flagged(tmp_path: Path, bare_models: list[ModelReport]) -> None:
    # The table's worst case at ε = 0.3 is 85.0%; a sweep that finds 90.0% there ran weaker attacks.
    sweep = EpsSweep(THREAT, [0.0, 0.3], [0.985, 0.9], 200)
    html_path, _ = write_report(
        tmp_path, title="t", models=[ModelReport("weak", bare_models[1].evaluation, sweep=sweep)]
    )
    page = html_path.read_text(encoding="utf-8")
    assert "measures 90.0% at the evaluation radius ε = 0.3" in page
    assert "worst case gives 85.0%: the sweep&#x27;s attacks are weaker" in page


def test_healthy_sweeps_raise_no_warning(full_run: FullRun) -> None:
    assert "class='warning'" not in full_run.page
    assert "**Warning:**" not in full_run.md


# ----------------------------------------------------------------------------- what is left out


def test_figures_are_skipped_without_their_data(tmp_path: Path, bare_models: list[ModelReport]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        html_path, md_path = write_report(tmp_path, title="bare", models=bare_models)
    assert list(tmp_path.glob("*.png")) == []
    page = html_path.read_text(encoding="utf-8")
    assert "data:image" not in page
    for heading in ["Accuracy against", "Training", "Adversarial examples", "Configuration"]:
        assert heading not in page
    md = md_path.read_text(encoding="utf-8")
    assert MD_IMAGE.findall(md) == []
    assert "85.0%" in page
    assert "85.0%" in md


def test_only_models_with_data_enter_each_figure(tmp_path: Path, models: list[ModelReport]) -> None:
    standard, robust = models
    partial = [
        ModelReport(standard.label, standard.evaluation, history=[], sweep=standard.sweep),
        ModelReport(robust.label, robust.evaluation, history=robust.history, examples=make_examples(n=2)),
    ]
    write_report(tmp_path, title="partial", models=partial)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "accuracy_vs_eps.png",
        "examples_pgd-at.png",
        "training_curves.png",
    ]


def test_rewriting_a_report_replaces_it(tmp_path: Path, bare_models: list[ModelReport]) -> None:
    write_report(tmp_path, title="alpha-title", models=bare_models)
    html_path, _ = write_report(tmp_path, title="omega-title", models=bare_models)
    page = html_path.read_text(encoding="utf-8")
    assert "omega-title" in page
    assert "alpha-title" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]  # no temporary files


def test_bad_arguments_are_rejected(tmp_path: Path, bare_models: list[ModelReport]) -> None:
    with pytest.raises(ValueError, match="models"):
        write_report(tmp_path, title="t", models=[])
    with pytest.raises(ValueError, match="distinct labels"):
        write_report(tmp_path, title="t", models=[bare_models[0], bare_models[0]])
    with pytest.raises(ValueError, match="label"):
        ModelReport("  ", bare_models[0].evaluation)


# ----------------------------------------------------------------------------- example grids


def test_example_grid_draws_at_most_eight_colour_images(
    tmp_path: Path, bare_models: list[ModelReport]
) -> None:
    many_rgb = ModelReport("rgb", bare_models[0].evaluation, examples=make_examples(n=12, channels=3, size=8))
    html_path, _ = write_report(tmp_path, title="t", models=[many_rgb])
    page = html_path.read_text(encoding="utf-8")
    assert f"{MAX_EXAMPLES} examples for the rgb model, attacked with PGD-40x5" in page
    assert "the largest perturbation shown has ℓ∞ norm 0.3" in page
    assert (tmp_path / "examples_rgb.png").read_bytes()[:8] == PNG_SIGNATURE


def test_examples_that_are_not_images_are_skipped_with_a_warning(
    tmp_path: Path, bare_models: list[ModelReport]
) -> None:
    ex = make_examples()
    flat = dataclasses.replace(ex, x=ex.x.flatten(1), x_adv=ex.x_adv.flatten(1))
    with pytest.warns(UserWarning, match="left out"):
        write_report(
            tmp_path, title="t", models=[ModelReport("flat", bare_models[0].evaluation, examples=flat)]
        )
    assert list(tmp_path.glob("*.png")) == []
    with pytest.raises(ValueError, match=r"examples\.x has shape"):
        plot_examples(flat, tmp_path / "flat.png")


def test_plot_examples_writes_a_png(tmp_path: Path) -> None:
    path = plot_examples(make_examples(n=3), tmp_path / "grid.png", class_names=["zero", "one", "two"])
    assert path == tmp_path / "grid.png"
    width, height = png_size(path.read_bytes())
    assert width >= 300
    assert height >= 200


# ----------------------------------------------------------------------------- the table


def test_format_table_has_a_header_and_one_row_per_model_and_attack(bare_models: list[ModelReport]) -> None:
    lines = format_table({m.label: m.evaluation for m in bare_models}).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["model", "attack", "accuracy", "error", "conf. on errors", "n"]
    assert re.fullmatch(r"\|(-+:?\|){6}", lines[1])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    # clean, FGSM, PGD-40x5 and the worst case, for each model
    attacks = ["clean", "FGSM", "PGD-40x5", "worst case"]
    expected = [(label, attack) for label in ["standard", "pgd-at"] for attack in attacks]
    assert [(r[0], r[1]) for r in rows] == expected
    assert rows[6] == ["pgd-at", "PGD-40x5", "85.1%", "14.9%", "80.0%", "200"]
    assert rows[4][4] == "—"  # no clean errors: no confidence to average
    assert len({len(line) for line in lines}) == 1  # padded into columns


def test_format_table_keeps_its_columns_whatever_the_label() -> None:
    evaluation = make_evaluation(0.5, {}, 0.5, {"clean": 0.5}, n=4)
    lines = format_table({"a|b\nc": evaluation}).splitlines()
    assert len(lines) == 3
    assert lines[2].count("|") - lines[2].count("\\|") == 7


# ----------------------------------------------------------------------------- with the real measurements


def test_report_from_real_measurements(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = torch.rand(24, 1, 4, 4), torch.randint(0, 3, (24,))
    threat = ThreatModel("linf", 0.1)
    attacks: dict[str, Attack] = {"FGSM": FGSM(threat)}
    evaluation = evaluate(model, (x, y), threat, attacks, quiet=True)
    sweep = accuracy_vs_eps(model, (x, y), threat, [0.0, 0.05, 0.1], attacks, quiet=True)
    examples = adversarial_examples(model, x[:4], y[:4], FGSM(threat), name="FGSM")
    report = ModelReport("linear", evaluation, sweep=sweep, examples=examples)
    html_path, md_path = write_report(tmp_path, title="linear", models=[report])
    page = html_path.read_text(encoding="utf-8")
    assert len(DATA_URI.findall(page)) == 2
    assert f"{100 * evaluation.clean_accuracy:.1f}%" in page
    assert f"{100 * evaluation.worst_case_accuracy:.1f}%" in page
    assert "examples_linear.png" in md_path.read_text(encoding="utf-8")
