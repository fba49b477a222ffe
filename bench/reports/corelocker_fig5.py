"""CoreLocker Figure 5 (accuracy of fully connected networks after l1 extraction, by depth and width), measured.

The rows are a `model_auth` run's CoreLocker rows whose models are named `fcn-d<depth>-w<width>`
(bench.recipes.fcn_grid, suites corelocker-fig5-digits and corelocker-fig5-mnist). For every extraction
ratio measured with the l1 criterion: the clean top-1, the released (extracted, no key) top-1, the drop in
points, and the number of weights extracted (the defense's cost), as a depth x width table
(corelocker_fig5.md, long form in corelocker_fig5.csv with provenance) and heatmaps (corelocker_fig5.png).

The paper gives Figure 5 as a plot, without the numbers behind it; what its text says about it (Sec. 5.1.1
and 5.1.2) is quoted in a separate, labelled section (REPORTED), never in the measured cells.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.recipes.fcn_grid import parse_fig5_label  # noqa: E402
from bench.reports.papers import CORELOCKER_AUTHORS  # noqa: E402
from bench.reports.figures import wrapped  # noqa: E402
from bench.reports.tables import MISSING, provenance_of, write_csv  # noqa: E402

CITATION = (f'{CORELOCKER_AUTHORS}, "CoreLocker: Neuron-level Usage Control", '
            "IEEE Symposium on Security and Privacy (S&P) 2024")


CRITERION = "l1"
# The paper's statements about Figure 5 (kind `reported`): the section and the sentence they come from.
REPORTED = (
    {"where": "Sec. 5.1.1", "claim": "80 FCNs, 4-13 hidden layers x 1,000-8,000 neurons, MNIST, Adam lr 0.001, batch 128, "
     "50 epochs; 98.6% test accuracy on average before extraction; l1-norm extraction at a global ratio of 0.002%"},
    {"where": "Sec. 5.1.2 (Figure 5)", "claim": "most networks with more than 6 hidden layers and more than 3,000 neurons "
     "per layer lose more than 50% of their accuracy after extraction"},
    {"where": "Sec. 5.1.2 (Figure 5)", "claim": "networks with more than 9 hidden layers and more than 5,000 neurons per "
     "layer mostly drop to about 10% (chance on 10 classes), e.g. N = 4,000, M = 12"},
    {"where": "Sec. 5.1.2 (Figure 5)", "claim": "one more hidden layer has about the effect of 1,000 more neurons per "
     "layer; depth matters more than width"},
)


def fig5_frame(rows: list[dict]) -> pd.DataFrame:
    """One record per (depth, width, ratio): clean and released top-1 (mean over trials), drop, weights extracted."""
    records = []
    clean: dict[str, list[float]] = {}
    for r in rows:
        model = r.get("authorized") or r.get("evaluated")
        if parse_fig5_label(model) is None or (r.get("attack") or "none") != "none":
            continue
        top1 = (r.get("metrics") or {}).get("top1")
        if r.get("role") == "clean" and top1 is not None:
            clean.setdefault(model, []).append(float(top1))
    for r in rows:
        model = r.get("authorized") or r.get("evaluated")
        dw = parse_fig5_label(model)
        merged = {**(r.get("params") or {}), **(r.get("point") or {})}
        if (dw is None or r.get("defense") != "corelocker" or r.get("role") != "unauthorized"
                or (r.get("attack") or "none") != "none" or merged.get("criterion", "bn-scale") != CRITERION):
            continue
        top1 = (r.get("metrics") or {}).get("top1")
        cost = r.get("cost") or {}
        records.append({"depth": dw[0], "width": dw[1], "ratio": float(merged["ratio"]),
                        "clean_top1": float(np.mean(clean[model])) if clean.get(model) else np.nan,
                        "released_top1": np.nan if top1 is None else float(top1),
                        "weights_extracted": cost.get("units_extracted", np.nan),
                        "weights_eligible": cost.get("units_eligible", np.nan)})
    cols = ["depth", "width", "ratio", "clean_top1", "released_top1", "weights_extracted", "weights_eligible"]
    f = pd.DataFrame.from_records(records, columns=cols)
    if f.empty:
        return f.assign(drop=[])
    f = f.groupby(["depth", "width", "ratio"], as_index=False).mean(numeric_only=True)
    return f.assign(drop=f["clean_top1"] - f["released_top1"]).sort_values(["ratio", "depth", "width"], ignore_index=True)


def _grid(f: pd.DataFrame, column: str, fmt: str) -> str:
    pivot = f.pivot(index="depth", columns="width", values=column)
    pivot.index.name = "hidden layers \\ neurons"
    text = pivot.apply(lambda c: c.map(lambda v: MISSING if pd.isna(v) else format(v, fmt)))
    return text.to_markdown(disable_numparse=True)


def _heatmaps(f: pd.DataFrame, path: Path, head: str) -> Path:
    ratios = sorted(f["ratio"].unique())
    panels = [("clean top-1 (%)", f[f["ratio"] == ratios[0]], "clean_top1")] + [
        (f"released top-1 (%), ratio {r * 100:g} %", f[f["ratio"] == r], "released_top1") for r in ratios]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels) + 0.6, 3.4), squeeze=False, layout="constrained")
    for ax, (title, part, column) in zip(axes[0], panels):
        pivot = part.pivot(index="depth", columns="width", values=column)
        im = ax.imshow(pivot.values, origin="lower", cmap="viridis", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(pivot.columns)), [str(w) for w in pivot.columns], fontsize=7)
        ax.set_yticks(range(len(pivot.index)), [str(d) for d in pivot.index], fontsize=7)
        for (i, j), v in np.ndenumerate(pivot.values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="w" if v < 60 else "k")
        ax.set(xlabel="neurons per hidden layer", ylabel="hidden layers", title=title)
        ax.title.set_fontsize(8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="top-1 (%)")
    fig.suptitle("CoreLocker Figure 5 shape: l1 extraction of single weights in fully connected networks\n"
                 + wrapped(head, fig.get_figwidth(), 6), fontsize=6)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def render_fig5(rows: list[dict], out_dir: Path, setting: str = "") -> list[Path]:
    """corelocker_fig5.{md,csv,png} when the rows hold l1 extraction of fcn-d<depth>-w<width> models; else nothing."""
    f = fig5_frame(rows)
    if f.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance_of(rows)
    head = (f"Measured by authbench (suite `{prov['suite']}`, suite digest `{prov['suite_digest']}`, git `{prov['git']}`); "
            "top-1 accuracy (%) on the suite's test split." + (f" Setting: {setting}." if setting else ""))
    parts = [head, "# Figure 5 (CoreLocker shape): accuracy after l1 extraction by depth and width",
             "## Measured by authbench",
             "Rows: hidden layers; columns: neurons per hidden layer. l1 criterion over single weights of the hidden "
             "layers (the input and output layers are never extracted), ranked globally; mean over trials.",
             "### Clean top-1 (%), before extraction", _grid(f[f["ratio"] == f["ratio"].min()], "clean_top1", ".1f")]
    for ratio in sorted(f["ratio"].unique()):
        at = f[f["ratio"] == ratio]
        parts += [f"### Global extraction ratio {ratio * 100:g} % ({ratio:g})",
                  "Released top-1 (%), no key:", _grid(at, "released_top1", ".1f"),
                  "Drop (points, clean - released):", _grid(at, "drop", ".1f"),
                  "Weights extracted:", _grid(at, "weights_extracted", ".0f")]
    parts += ["## Reported by the paper (not measured here)",
              f"Figure 5 is a plot without the numbers behind it; its text says (kind `reported`; cite: {CITATION}, "
              "Figure 5 and the section shown):",
              pd.DataFrame(REPORTED).to_markdown(index=False)]
    md, csv, png = out_dir / "corelocker_fig5.md", out_dir / "corelocker_fig5.csv", out_dir / "corelocker_fig5.png"
    md.write_text("\n\n".join(parts) + "\n")
    return [md, *write_csv(f, csv, prov, head), _heatmaps(f, png, head)]
