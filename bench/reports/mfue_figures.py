"""MFUE Figures 6a/b, 8, 9 and 10 in the paper's own metric (the matching rate), from ownership-protocol rows.

T. Xu, Z. Wang, G. Liu, J. Chen, A. M. Abdelmoniem and C. Wang, "Breaking the Boundary Barrier: Robust Model
Fingerprinting via Unlearnable Examples in Model-Parameter Space", KDD '26, doi 10.1145/3770854.3780310.

- Figure 6a/b: matching rate of the four fine-tuning strategies' positives (FTLL, RTLL, FTAL, RTAL), bars.
- Figure 8: matching rate of the extracted positives per student architecture (`distill(<family>)`: Knockoff,
  suffix -K; `hardlabel(<family>)`: HL, suffix -H), their average ("Avg") and the negatives' mean, bars.
- Figure 9: under DP-Logits (noise scale sigma on the returned logits; sigma 0 = no attack): AUC and the mean
  matching rate of positives and negatives per sigma. The paper's other two curves (test accuracy, loss value)
  need the models: bench.reports.mfue_models writes them.
- Figure 10: mean matching rate of the positives after each query-processing attack, bars.

"Matching rate" is each method's verification score (MFUE: Eq. 5-6 loss-interval match; the baselines: their
trigger label match). Each method is taken in its first configuration (the first summary row without attack,
as fingerprint_strength.md), so that one bar stands for one fingerprint. The paper prints these figures as
plots; what its text says about them is quoted in each file's reported section, never in measured cells.
`python -m bench.reports.mfue_figures runs/<suite>/results.jsonl --out reports/<suite>` renders them;
every ownership run writes them too (bench.reports.fingerprint.render_fingerprint).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.core.errors import UserError, script_main  # noqa: E402
from bench.fingerprint.suspects import parse_chain, parse_number  # noqa: E402
from bench.reports.figures import save_titled  # noqa: E402
from bench.reports.tables import MISSING, provenance_of, write_csv  # noqa: E402

CITATION = ('T. Xu, Z. Wang, G. Liu, J. Chen, A. M. Abdelmoniem and C. Wang, "Breaking the Boundary Barrier: Robust '
            'Model Fingerprinting via Unlearnable Examples in Model-Parameter Space", KDD \'26, '
            "doi 10.1145/3770854.3780310")
PAPER_METHODS = ("ipguard", "cae", "metafinger", "adv-tra", "mfue-w", "mfue-b")  # the methods of the paper's figures
FT_MODES = ("FTLL", "RTLL", "FTAL", "RTAL")
QUERY_ATTACKS = ("crop", "flip", "rotate", "gauss-noise", "blur")  # Figure 10's five (Sec. 4.5)
REPORTED = {  # what the paper's text says about each figure (kind `reported`): (section, claim)
    "6ab": [("Sec. 4.2, Figure 6a/6b", "both MFUE-w and MFUE-b maintain a high matching rate (above 0.7) across all "
             "fine-tuning attacks (CIFAR-100, ImageNet); under RTAL MFUE's matching rate is more than twice the "
             "best baseline's")],
    "8": [("Sec. 4.2, Figure 8", "MFUE-w and MFUE-b achieve more than twice the matching rates of the other baselines "
           "on models extracted with various architectures (Knockoff -K, HL -H); for most extracted models IPGuard "
           "and CAE match less than the negative models")],
    "9": [("Sec. 4.4, Figure 9", "CIFAR-10: as sigma increases to 5 both MFUE-w and MFUE-b drop sharply; the test "
           "accuracy also declines; the AUC drop comes with a higher loss value; above sigma 10 both MFUE and the "
           "model approach random guessing; sigma = 2 is a preferable trade-off for an attacker")],
    "10": [("Sec. 4.5, Figure 10", "the five processing methods render most (over 50%) of the baselines' samples "
            "ineffective (Gaussian blur: over 80% on ImageNet); MFUE-w and MFUE-b keep an average matching rate "
            "above 0.7 across all attacks; Gaussian noise is less effective than the first three transformations")],
}


def _key(r: dict) -> str:
    return json.dumps([r.get("params") or {}, r.get("point") or {}], sort_keys=True, default=str)


def first_configs(rows: list[dict]) -> dict[tuple[str, str], str]:
    """(suite, defense) -> its first configuration (params and point) with an unattacked summary row."""
    chosen: dict = {}
    for r in rows:
        if r.get("role") == "summary" and r.get("attack") == "none" and r.get("defense") in PAPER_METHODS:
            chosen.setdefault((r["suite"], r["defense"]), _key(r))
    return chosen


def scores(rows: list[dict]) -> pd.DataFrame:
    """Suspect rows of each method's first configuration: method, attack, role, suspect, score."""
    chosen = first_configs(rows)
    records = [{"method": r["defense"], "attack": r["attack"], "role": r["role"], "suspect": r["evaluated"],
                "score": float(r["metrics"]["score"])}
               for r in rows if r.get("role") in ("positive", "negative")
               and chosen.get((r["suite"], r["defense"])) == _key(r) and "score" in (r.get("metrics") or {})]
    return pd.DataFrame.from_records(records, columns=["method", "attack", "role", "suspect", "score"])


def _summary(rows: list[dict]) -> pd.DataFrame:
    chosen = first_configs(rows)
    records = [{"method": r["defense"], "attack": r["attack"], "auc": r["metrics"].get("auc", np.nan),
                "pos_mean": r["metrics"].get("score_pos_mean", np.nan),
                "neg_mean": r["metrics"].get("score_neg_mean", np.nan)}
               for r in rows if r.get("role") == "summary" and chosen.get((r["suite"], r["defense"])) == _key(r)]
    return pd.DataFrame.from_records(records, columns=["method", "attack", "auc", "pos_mean", "neg_mean"])


def _single_step(suspect: str) -> tuple[str, list[str]] | None:
    chain = suspect.split("->", 1)[-1] if "->" in suspect else ""
    if not chain or "->" in chain:
        return None
    steps = parse_chain(chain)
    return steps[0] if len(steps) == 1 else None


def _methods(frame: pd.DataFrame) -> list[str]:
    return [m for m in PAPER_METHODS if m in set(frame["method"])]


def fig6ab(rows: list[dict]) -> pd.DataFrame:
    """method x fine-tuning strategy: matching rate of finetune(MODE) (whole attacker data), no attack."""
    s = scores(rows)
    s = s[(s["attack"] == "none") & (s["role"] == "positive")]
    records = []
    for r in s.itertuples():
        step = _single_step(r.suspect)
        if step and step[0] == "finetune" and len(step[1]) == 1 and step[1][0] in FT_MODES:
            records.append({"method": r.method, "column": step[1][0], "score": r.score})
    return _wide(pd.DataFrame.from_records(records, columns=["method", "column", "score"]), list(FT_MODES))


def fig8(rows: list[dict]) -> pd.DataFrame:
    """method x extracted architecture (-K Knockoff, -H HL), Avg, and the negatives' mean matching rate."""
    s = scores(rows)
    s = s[s["attack"] == "none"]
    records = []
    for r in s.itertuples():
        if r.role == "negative":
            records.append({"method": r.method, "column": "negatives (mean)", "score": r.score})
            continue
        step = _single_step(r.suspect)
        if step and step[0] in ("distill", "hardlabel"):
            records.append({"method": r.method, "column": f"{step[1][0]}-{'K' if step[0] == 'distill' else 'H'}",
                            "score": r.score})
    frame = pd.DataFrame.from_records(records, columns=["method", "column", "score"])
    extracted = sorted(c for c in set(frame["column"]) if c != "negatives (mean)")
    if not extracted:  # no extracted positives: no Figure 8 (the negatives alone are not one)
        return pd.DataFrame()
    wide = _wide(frame, extracted + ["negatives (mean)"])
    wide.insert(len(extracted), "Avg", wide[extracted].mean(axis=1))
    return wide


def fig9(rows: list[dict]) -> pd.DataFrame:
    """One line per (method, sigma): AUC and the positives' / negatives' mean matching rate under DP-Logits."""
    s = _summary(rows)
    out = []
    for r in s.itertuples():
        if r.attack == "none":
            sigma = 0.0
        elif r.attack.startswith("dp-logits(sigma="):
            sigma = parse_number(r.attack[len("dp-logits(sigma="):-1])
        else:
            continue
        out.append({"method": r.method, "sigma": sigma, "auc": r.auc, "positives (mean)": r.pos_mean,
                    "negatives (mean)": r.neg_mean})
    frame = pd.DataFrame.from_records(out, columns=["method", "sigma", "auc", "positives (mean)", "negatives (mean)"])
    if frame.empty:
        return frame
    frame = frame.groupby(["method", "sigma"], as_index=False).mean()
    with_noise = set(frame.loc[frame["sigma"] > 0, "method"])  # methods measured under DP-Logits at all
    return frame[frame["method"].isin(with_noise)].sort_values(["method", "sigma"], ignore_index=True)


def fig10(rows: list[dict]) -> pd.DataFrame:
    """method x query-processing attack (and none): the positives' mean matching rate."""
    s = scores(rows)
    s = s[s["role"] == "positive"]
    records = []
    for r in s.itertuples():
        name = r.attack.split("(", 1)[0]
        if r.attack == "none" or name in QUERY_ATTACKS:
            records.append({"method": r.method, "column": "none" if r.attack == "none" else r.attack, "score": r.score})
    frame = pd.DataFrame.from_records(records, columns=["method", "column", "score"])
    attacked = [c for c in dict.fromkeys(frame["column"]) if c != "none"]
    return _wide(frame, ["none"] + attacked) if attacked else pd.DataFrame()


def _wide(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame()
    wide = frame.groupby(["method", "column"])["score"].mean().unstack("column")
    wide = wide.reindex(index=_methods(frame), columns=[c for c in columns if c in wide.columns])
    wide.index.name = "method"
    return wide


def _bars(wide: pd.DataFrame, path: Path, title: str, head: str, ylabel: str = "matching rate") -> Path:
    methods, columns = list(wide.index), list(wide.columns)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(columns) * max(1, len(methods)) / 3 + 3), 3.6),
                           layout="constrained")
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        ax.bar(np.arange(len(columns)) + i * width, wide.loc[method].values.astype(float), width, label=method)
    ax.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns, rotation=20, ha="right", fontsize=7)
    ax.set(ylabel=ylabel, ylim=(0, 1.05))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save_titled(fig, path, title, head)


def _fig9_png(frame: pd.DataFrame, path: Path, head: str) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained", sharex=True)
    for ax, column in zip(axes, ("auc", "positives (mean)", "negatives (mean)")):
        for method in _methods(frame):
            part = frame[frame["method"] == method]
            ax.plot(part["sigma"], part[column], marker="o", label=method)
        ax.set(xlabel="DP-Logits noise scale sigma", ylabel="AUC" if column == "auc" else f"matching rate, {column}",
               ylim=(0, 1.05))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_titled(fig, path, "MFUE Figure 9 shape: verification under DP-Logits", head)


def _reported(figure: str) -> str:
    frame = pd.DataFrame(REPORTED[figure], columns=["where", "claim"])
    return ("## Reported by the paper (not measured here)\n\nThe paper gives this figure as a plot without the numbers "
            f"behind it; its text says (kind `reported`; cite: {CITATION}, the figure and section shown):\n\n"
            + frame.to_markdown(index=False))


def _markdown(wide: pd.DataFrame, decimals: int = 3) -> str:
    return wide.apply(lambda c: c.map(lambda v: MISSING if pd.isna(v) else f"{v:.{decimals}f}")).to_markdown(
        disable_numparse=True)


def _long(wide: pd.DataFrame) -> pd.DataFrame:
    return wide.reset_index().melt(id_vars="method", var_name="column", value_name="matching_rate")


def render_mfue_figures(rows: list[dict], out_dir: Path) -> list[Path]:
    """mfue_fig{6ab,8,9,10}.{md,csv,png} for whatever the rows hold; nothing for rows without the paper's methods."""
    if not first_configs(rows):
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance_of(rows)
    head = (f"Measured by authbench (suite `{prov['suite']}`, suite digest `{prov['suite_digest']}`, git `{prov['git']}`); "
            "each method in its first configuration; matching rate = the method's verification score per suspect.")
    paths: list[Path] = []
    specs = (
        ("6ab", "MFUE Figure 6a/b shape: matching rate of the fine-tuned positives per fine-tuning strategy",
         fig6ab(rows)),
        ("8", "MFUE Figure 8 shape: matching rate of the extracted positives per architecture (-K Knockoff, -H HL)",
         fig8(rows)),
        ("10", "MFUE Figure 10 shape: mean matching rate of the positives after each query-processing attack",
         fig10(rows)),
    )
    for number, title, wide in specs:
        if wide.empty:
            continue
        stem = out / f"mfue_fig{number}"
        (md := stem.with_suffix(".md")).write_text("\n\n".join(
            [head, f"# {title}", "## Measured by authbench", _markdown(wide), _reported(number)]) + "\n")
        paths += [md, *write_csv(_long(wide), stem.with_suffix(".csv"), prov, head),
                  _bars(wide, stem.with_suffix(".png"), title, head)]
    f9 = fig9(rows)
    if not f9.empty:
        stem = out / "mfue_fig9"
        title = ("MFUE Figure 9 shape: AUC and mean matching rates under DP-Logits (sigma 0 = no attack); test accuracy "
                 "and loss value: mfue_fig9_models.md")
        table = f9.to_markdown(index=False, floatfmt=".3f")
        (md := stem.with_suffix(".md")).write_text("\n\n".join(
            [head, f"# {title}", "## Measured by authbench", table, _reported("9")]) + "\n")
        paths += [md, *write_csv(f9, stem.with_suffix(".csv"), prov, head), _fig9_png(f9, stem.with_suffix(".png"), head)]
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reports.mfue_figures", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="an ownership run's results.jsonl (or its folder)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    path = args.results / "results.jsonl" if args.results.is_dir() else args.results

    def work() -> list[Path]:
        if not path.is_file():
            raise UserError(f"no results file at {str(path)!r}; give an ownership run's results.jsonl or its folder")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        paths = render_mfue_figures(rows, args.out)
        if not paths:
            raise UserError(f"{str(path)!r} has no ownership rows of {', '.join(PAPER_METHODS)}; give a verify-protocol "
                            "run such as runs/fingerprint-digits")
        return paths

    return script_main(work)


if __name__ == "__main__":
    sys.exit(main())
