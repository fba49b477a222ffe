"""Figures: the chance line from the dataset's class count, nothing cut off, legends outside the
data, min-max bands that stay readable with several defenses, and the log-FPR ROC panel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bench.api import dataset_classes  # noqa: E402
from bench.protocols import render  # noqa: E402
from bench.reports.figures import BAND_ALPHA, band_alpha, chance_level, psnr_curves  # noqa: E402
from bench.reports.fingerprint import roc_figure  # noqa: E402
from bench.suite import load_suite  # noqa: E402
from test_reports import MODELS, make_row, ne_top1, synthetic_rows  # noqa: E402

SLACK_IN = 0.05  # inches an artist may reach past the figure edge (antialiasing)


@pytest.fixture
def figures(monkeypatch):
    """Every Figure saved while the test runs (closing a figure leaves the object inspectable)."""
    saved: list[Figure] = []
    original = Figure.savefig

    def capture(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return saved


def chance_lines(fig: Figure) -> list:
    return [line for ax in fig.axes if ax.get_visible() for line in ax.get_lines()
            if line.get_label().startswith("chance")]


def boxes(fig: Figure):
    canvas = FigureCanvasAgg(fig)  # a closed figure keeps its artists, not its canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    return renderer, [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()]


def assert_nothing_cut_off(fig: Figure):
    renderer, _ = boxes(fig)
    tight = fig.get_tightbbox(renderer)  # inches
    width, height = fig.get_size_inches()
    assert tight.x0 >= -SLACK_IN and tight.y0 >= -SLACK_IN, tight
    assert tight.x1 <= width + SLACK_IN and tight.y1 <= height + SLACK_IN, (tight, width, height)


def assert_legends_outside_axes(fig: Figure):
    renderer, axes = boxes(fig)
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in axes:
            assert not box.overlaps(ax), (legend, box, ax)


def one_model_rows():
    return [r for r in synthetic_rows(releases=("float",)) if r["authorized"] in ("", "mlp-b")]


def test_chance_line_comes_from_the_class_count(tmp_path, figures):
    psnr_curves(synthetic_rows(releases=("float",)), tmp_path, "float", classes=4)
    lines = chance_lines(figures[-1])
    assert len(lines) == len(MODELS)  # one per panel
    assert all(list(line.get_ydata()) == [25.0, 25.0] for line in lines)
    assert lines[0].get_label() == "chance (25%, 4 classes)"
    psnr_curves(synthetic_rows(releases=("float",)), tmp_path, "float")  # class count unknown: no line
    assert chance_lines(figures[-1]) == []
    assert chance_level(100) == pytest.approx(1.0) and chance_level(None) is None


def test_render_passes_the_class_count_to_the_figures(tmp_path, figures):
    render(synthetic_rows(releases=("float",)), tmp_path, {}, classes=100)
    assert {tuple(line.get_ydata()) for fig in figures for line in chance_lines(fig)} == {(1.0, 1.0)}


def test_dataset_classes_of_the_digits_suite():
    assert dataset_classes(load_suite("digits")) == 10


@pytest.mark.parametrize("rows", [one_model_rows, lambda: synthetic_rows(releases=("float",))],
                         ids=["one-model", "five-models"])
def test_psnr_figure_nothing_cut_off_and_legend_outside(tmp_path, figures, rows):
    psnr_curves(rows(), tmp_path, "float", classes=10)
    fig = figures[-1]
    assert_nothing_cut_off(fig)
    assert_legends_outside_axes(fig)


def test_bands_lighter_the_more_defenses_share_a_panel(tmp_path, figures):
    rows = synthetic_rows(releases=("float",))
    for name in ("ne-b", "ne-c"):
        rows += [make_row(name, a, e, ne_top1(psnr, i, j) + (5.0 if name == "ne-b" else 9.0), psnr, "float")
                 for psnr in (20.0, 0.0, -10.0) for i, a in enumerate(MODELS) for j, e in enumerate(MODELS)]
    psnr_curves(rows, tmp_path, "float", classes=10)
    bands = [c for c in figures[-1].axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # ne, ne-b, ne-c; the noise control has none
    assert {round(b.get_alpha(), 6) for b in bands} == {round(band_alpha(3), 6)}
    assert band_alpha(3) < band_alpha(1) == pytest.approx(BAND_ALPHA)
    assert band_alpha(50) >= 0.06


def verify_rows(n_pos=12, n_neg=40):
    """Synthetic ownership rows: two methods' matching scores on positive and negative suspects."""
    rows = []
    for method, shift in (("mfue-w", 0.6), ("ipguard", 0.2)):
        for role, n in (("positive", n_pos), ("negative", n_neg)):
            for i in range(n):
                score = (shift if role == "positive" else 0.0) + ((i * 37) % n) / (2.0 * n)
                rows.append({"suite": "syn", "defense": method, "params": {}, "point": {}, "attack": "none",
                             "role": role, "authorized": "src", "evaluated": f"{role}{i}", "suspect_kind": "finetune",
                             "metrics": {"score": score}, "provenance": {"git": "abc123"}})
    return rows


def test_roc_has_a_log_fpr_panel_beside_the_linear_one(tmp_path, figures):
    roc_figure(verify_rows(), tmp_path / "roc.png")
    fig = figures[-1]
    linear, log = fig.axes
    assert linear.get_xscale() == "linear" and log.get_xscale() == "log"
    assert log.get_xlim()[0] == pytest.approx(0.005)  # 1% FPR in view (40 negatives: smallest step 2.5%)
    roc_figure(verify_rows(n_neg=400), tmp_path / "roc400.png")
    assert figures[-1].axes[1].get_xlim()[0] == pytest.approx(0.5 / 400)  # half the smallest FPR step
    assert len(linear.get_lines()) == 3  # two methods + the chance diagonal
    assert len(log.get_lines()) == 4  # the same, and the 1% FPR marker
    assert any(list(line.get_xdata()) == [0.01, 0.01] for line in log.get_lines())
    assert_legends_outside_axes(fig)
    assert_nothing_cut_off(fig)
