"""NE Figure 1: authorized vs unauthorized top-1 accuracy across target PSNR."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.core.errors import UserError  # noqa: E402
from bench.reports.tables import clean_top1, provenance_of, results_frame  # noqa: E402

CONTROL = "noise"  # the Gaussian-noise control: same PSNR, no model specificity
UNREACHED_MARKER = "X"  # a point whose release could not reach its target PSNR (clip / uint8 saturation)
UNREACHED_LABEL = "target PSNR not reached (point at the achieved PSNR)"
BAND_ALPHA = 0.22  # min-max band opacity with one band per panel; shared among the bands of a panel
SIDE_LEGEND_BELOW = 3  # panels per row under which the legend goes beside the panels, not below


def chance_level(classes: int | None) -> float | None:
    """Top-1 (%) of guessing uniformly among `classes` classes; None when the count is unknown."""
    return 100.0 / classes if classes else None


def band_alpha(bands: int) -> float:
    """Opacity of each of `bands` overlapping min-max bands: light enough that their overlaps stay readable."""
    return max(0.06, BAND_ALPHA / max(1, bands) ** 0.75)


def outside_legend(fig, handles, labels, panels_per_row: int, fontsize: float = 8):
    """A figure legend outside every panel (constrained layout reserves its room): beside the panels for
    narrow figures (one or two panels a row), below them otherwise."""
    if panels_per_row < SIDE_LEGEND_BELOW:
        return fig.legend(handles, labels, loc="outside right center", fontsize=fontsize, frameon=False)
    return fig.legend(handles, labels, loc="outside lower center", ncol=min(panels_per_row, len(labels)),
                      fontsize=fontsize, frameon=False)


def wrapped(title: str, width_in: float, fontsize: float = 10) -> str:
    """`title` wrapped to `width_in` inches (no suptitle runs off the figure or into a side legend)."""
    return "\n".join(textwrap.wrap(title, max(30, int(width_in * 120 / fontsize))))


def save_titled(fig, path: Path, title: str, head: str, fontsize: float = 6) -> Path:
    """Title `fig` with `title` over the provenance line `head` (wrapped to the figure's width), write it to `path`
    (130 dpi) and close it."""
    fig.suptitle(f"{title}\n" + wrapped(head, fig.get_figwidth(), fontsize), fontsize=fontsize)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _variants(protected: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(legend label, defense, params, psnr_mode) of every curve family; the label names params
    and mode only where one defense has several."""
    keys = protected[["defense", "params", "psnr_mode"]].drop_duplicates().itertuples(index=False)
    keys = sorted(keys, key=lambda k: (k[0] == CONTROL, k))
    counts = pd.Series([k[0] for k in keys]).value_counts()
    out = []
    for defense, params, mode in keys:
        label = defense if counts[defense] == 1 else f"{defense} ({', '.join(x for x in (params, mode) if x)})"
        out.append((label, defense, params, mode))
    return out


def _curves(cells: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per PSNR point for authorized model `model`: its own top1 and the mean/min/max of the others,
    indexed by the measured true PSNR."""
    mine = cells[cells["authorized"] == model]
    own = mine[mine["role"] == "authorized"].groupby("psnr")["top1"].mean()
    others = mine[mine["role"].isin(["same-arch", "unauthorized"])].groupby("psnr")["top1"]
    reached = mine[mine["role"] == "authorized"].groupby("psnr")["target_reached"].all()
    curve = pd.DataFrame({"own": own, "mean": others.mean(), "min": others.min(), "max": others.max(),
                          "reached": reached.reindex(own.index, fill_value=True).astype(bool)})
    true = mine.groupby("psnr")["psnr_true"].mean()  # x = the measured true PSNR, whatever the calibration mode
    curve.index = true.reindex(curve.index).fillna(pd.Series(curve.index, index=curve.index))
    return curve.sort_index()


def _nominal_axis(ax, cells: pd.DataFrame) -> None:
    """A top axis in the paper's nominal PSNR (MSE on the normalized tensor): its offset from the true
    PSNR is the model's normalization, measured as the median (nominal - true) over its cells."""
    offset = (cells["psnr_nominal"] - cells["psnr_true"]).dropna()
    if offset.empty:
        return
    shift = float(offset.median())
    top = ax.secondary_xaxis("top", functions=(lambda x: x + shift, lambda x: x - shift))
    top.set_xlabel("paper-nominal PSNR (dB)", fontsize=8)
    top.tick_params(labelsize=7)


def psnr_curves(rows: list[dict], out_dir: Path, release: str, classes: int | None = None) -> Path:
    """Write fig1_psnr_<release>.png: one panel per authorized model; solid = authorized model,
    dashed = mean of the other models with a min..max band (lighter the more bands share a panel); the
    Gaussian control in grey; the chance line at 100/`classes` % when the class count is known."""
    frame = results_frame(rows)
    protected = frame[(frame["defense"] != "none") & (frame["release"] == release) & (frame["attack"] == "none")
                      & frame["psnr"].notna()]
    if protected.empty:
        raise UserError(f"no protected result rows with release {release!r} to plot")
    models = list(dict.fromkeys(protected["authorized"]))
    clean = clean_top1(frame)
    variants = _variants(protected)
    colors = iter(plt.get_cmap("tab10").colors)
    styles = {label: ("0.45" if defense == CONTROL else next(colors)) for label, defense, _, _ in variants}
    alpha = band_alpha(sum(defense != CONTROL for _, defense, _, _ in variants))
    chance = chance_level(classes)

    ncols = min(5, len(models))
    nrows = math.ceil(len(models) / ncols)
    side = 3.4 if ncols < SIDE_LEGEND_BELOW else 0.0  # room for a legend beside narrow figures
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + side, 3.4 * nrows + 1.0), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, model in zip(axes.flat, models):
        for label, defense, params, mode in variants:
            cells = protected[(protected["defense"] == defense) & (protected["params"] == params)
                              & (protected["psnr_mode"] == mode)]
            curve, color = _curves(cells, model), styles[label]
            ax.plot(curve.index, curve["own"], "-o", color=color, ms=3, lw=1.6, label=f"{label}: authorized")
            short = curve[~curve["reached"]]
            if not short.empty:  # plotted at the achieved PSNR, which is not the target
                ax.plot(short.index, short["own"], ls="none", marker=UNREACHED_MARKER, ms=9, mfc="none", mec="black",
                        mew=1.2, label=UNREACHED_LABEL)
            ax.plot(curve.index, curve["mean"], "--", color=color, lw=1.2, label=f"{label}: others (mean)")
            if defense != CONTROL:
                ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=alpha, lw=0,
                                label=f"{label}: others (min-max)")
        if model in clean.index:
            ax.axhline(clean[model], color="black", lw=0.8, ls="-.", alpha=0.6, label="clean accuracy")
        if chance is not None:
            ax.axhline(chance, color="black", lw=0.8, ls=":", label=f"chance ({chance:.3g}%, {classes} classes)")
        ax.set_title(f"authorized: {model}", fontsize=10)
        ax.set_ylim(-2, 102)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        _nominal_axis(ax, protected[protected["authorized"] == model])
    for ax in axes[-1]:
        ax.set_xlabel("true PSNR (dB, pixel space)")
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1 accuracy (%)")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)

    legend = {}
    for ax in axes.flat:  # every panel's entries once (a not-reached marker may be in one panel only)
        for handle, text in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(text, handle)
    handles, labels = list(legend.values()), list(legend)
    outside_legend(fig, handles, labels, ncols)
    prov = provenance_of(rows)
    fig.suptitle(wrapped(f"Accuracy vs PSNR (NE Figure 1 shape), release {release}; measured by authbench, "
                         f"suite {prov['suite']}, git {prov['git'][:12]}", fig.get_figwidth() - side), fontsize=10)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"fig1_psnr_{release}.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def render_figures(rows: list[dict], out_dir: Path, releases: list[str], classes: int | None = None) -> list[Path]:
    """One fig1_psnr_<release>.png per release that has protected rows without an attack."""
    present = {r["release"] for r in rows if r["defense"] != "none" and r["attack"] == "none"}
    return [psnr_curves(rows, out_dir, release, classes) for release in releases if release in present]
