"""MFUE Figures 5a/5b, 7 and Figure 9's test-accuracy and loss curves, measured on an ownership suite's models.

T. Xu, Z. Wang, G. Liu, J. Chen, A. M. Abdelmoniem and C. Wang, "Breaking the Boundary Barrier: Robust Model
Fingerprinting via Unlearnable Examples in Model-Parameter Space", KDD '26, doi 10.1145/3770854.3780310.

    python -m bench.reports.mfue_models fingerprint-digits --out reports/mfue-figures-digits

builds what the ownership protocol builds for the suite (bench.protocols.ownership: the source, the defender /
attacker halves of the training split, the suspect zoo of [suspects], cached) and fingerprints the source with
the suite's first `mfue-w` entry (tau 0.5) and its first `ipguard` entry (the adversarial triggers of Figure 7),
through the methods' public `fingerprint`, `losses` and `verify`. Then:

- Figure 5a: t-SNE of the classification-head parameters (the last Linear's weight and bias) of the source, the
  positives that keep its architecture (extraction excluded, as the paper's 49) and the negatives of its
  architecture (the suite's, plus `--extra-negatives` more seeds of the source's family);
- Figure 5b: per suspect of the source's architecture, the L2 distance of all its parameters from the source's
  against the mean MFUE-w loss of the unlearnable triggers (and their Spearman correlation);
- Figure 7: t-SNE of the embeddings (the last Linear's input) of the unlearnable (MFUE) and the adversarial
  (IPGuard) triggers in the source and in the adversarially trained positive (`advtrain(4/255)`, as the paper's
  eps_adv = 4/255), with each trigger's relative embedding shift ||e_pos - e_src|| / ||e_src||;
- Figure 9 (models): under DP-Logits (sigma 0 = none), the source's test top-1, the mean MFUE-w trigger loss of
  positives and negatives, and the AUC of the MFUE-w matching rates.

Every file names the suite, its digest and the git revision. What the paper's text says about each figure is
quoted in a separate, labelled section.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from bench.core import provenance  # noqa: E402
from bench.core.errors import UserError, script_main  # noqa: E402
from bench.reports.mfue_figures import CITATION  # noqa: E402
from bench.reports.figures import save_titled  # noqa: E402
from bench.reports.tables import write_csv  # noqa: E402
from bench.data import load_dataset  # noqa: E402
from bench.fingerprint.suspects import build_zoo  # noqa: E402
from bench.fingerprint.training import halves  # noqa: E402
from bench.models.sources import default_init_seed, load_model, model_label  # noqa: E402
from bench.protocols.ownership import zoo_config  # noqa: E402
from bench.suite import load_suite  # noqa: E402
from bench.fingerprint.base import SuspectOracle  # noqa: E402
from bench.attacks import get_attack  # noqa: E402
from bench.fingerprint.suspects import Suspect, independent  # noqa: E402
from bench.fingerprint.training import accuracy  # noqa: E402
from bench.defenses import get_defense  # noqa: E402
from bench.models.adapter import ModelAdapter  # noqa: E402
from bench.fingerprint.suspects import parse_chain, parse_number  # noqa: E402

ADV_POSITIVE = "advtrain(4/255)"
EXTRACTION = ("distill", "hardlabel")
SIGMAS = (0.0, 0.5, 2.0, 5.0, 10.0)
REPORTED = {
    "5": [("Sec. 4.3, Figure 5a", "CIFAR-10, 49 positives (extraction excluded) and 60 negatives, classification-head "
           "parameters: all modified models cluster closely around the source, the negatives lie well apart; "
           "fine-tuned and pruned models are closer to the source than adversarially trained ones"),
          ("Sec. 4.3, Figure 5b", "the 49 positives show loss values near zero, far lower than the 60 negatives'; the "
           "loss gap follows the L2-distance gap between positive and negative models")],
    "7": [("Sec. 4.3, Figure 7", "after adversarial training (eps_adv = 4/255) the adversarial triggers' embeddings in "
           "the positive hardly overlap those in the source; the unlearnable triggers' embeddings remain nearly "
           "unchanged")],
    "9": [("Sec. 4.4, Figure 9", "CIFAR-10: as sigma increases to 5 both MFUE-w and MFUE-b drop sharply; the test "
           "accuracy also declines, somewhat slower; the AUC drop comes with a higher loss value; above sigma 10 both "
           "MFUE and the model approach random guessing")],
}


# -- what the ownership protocol builds --------------------------------------------------------------------


def setting(suite_name: str, progress: bool = False):
    """(suite, source adapter, defender half, attacker half, test split, suspects) as the ownership protocol
    builds them for the suite's first authorized model."""

    suite = load_suite(suite_name)
    data = suite.data
    if "train_split" not in data:
        raise UserError(f"suite {suite.name!r} has no [data] train_split; give an ownership (verify) suite such as "
                        "fingerprint-digits")
    options = {k: data[k] for k in ("root",) if k in data}
    train = load_dataset(str(data["dataset"]), str(data["train_split"]), **options)
    test = load_dataset(str(data["dataset"]), str(data.get("split", "test")), **options)
    spec = suite.authorized[0]
    label = model_label(spec)
    source = load_model(spec, progress=progress, default_seed=default_init_seed(suite.seed, label))
    source.name = label
    defender, attacker = halves(train)
    zoo = build_zoo(source, zoo_config(suite), attacker, test, str(data["dataset"]), progress)
    return suite, source, defender, attacker, test, zoo


def entry_params(suite, name: str, **fixed) -> dict:
    """The parameters of the suite's first [[defenses]] entry `name`, with its swept values' first, and `fixed`."""
    for entry in suite.defenses:
        if entry.name == name:
            return {**entry.params, **{k: v[0] for k, v in entry.sweep.items()}, **fixed}
    raise UserError(f"suite {suite.name!r} has no [[defenses]] entry {name!r}; Figures 5, 7 and 9 need mfue-w and ipguard")


def last_linear(module: nn.Module) -> nn.Linear:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{type(module).__name__} has no Linear layer: no classification head to read")
    return linears[-1]


def head_vector(module: nn.Module) -> np.ndarray:
    head = last_linear(module)
    parts = [head.weight.detach().flatten()] + ([head.bias.detach()] if head.bias is not None else [])
    return torch.cat(parts).double().cpu().numpy()


def param_distance(a: nn.Module, b: nn.Module) -> float:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return float(torch.sqrt(sum(((pa[k].detach().double() - pb[k].detach().double()) ** 2).sum() for k in pa)))


def same_arch(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def embeddings(adapter, x: torch.Tensor) -> torch.Tensor:
    """The input of the last Linear (the feature extractor's output) for pixel-space images `x`."""
    got = []
    hook = last_linear(adapter.module).register_forward_pre_hook(lambda _m, inputs: got.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            adapter.predict(x.clamp(0, 1))
    finally:
        hook.remove()
    return got[-1].flatten(1).double().cpu()


def tsne(points: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(points)
    if n < 3:
        raise UserError(f"t-SNE needs at least 3 points, got {n}")
    return TSNE(n_components=2, perplexity=float(min(30, max(2, (n - 1) // 3))), init="pca",
                random_state=seed).fit_transform(points)


# -- the figures --------------------------------------------------------------------------------------------


def _group(s) -> str:
    if s.role == "negative":
        return "negative"
    kind = s.kind.split("+")[0]
    return f"positive ({kind})" + (" +chain" if "+" in s.kind else "")


def trigger_scores(mfue, fp, oracle) -> tuple[torch.Tensor, float]:
    """A suspect's MFUE-w loss per trigger and its matching rate, each through a fresh oracle (`oracle()`), as
    Figures 5 and 9 score every suspect."""
    return mfue.losses(fp.queries, fp.reference["labels"], oracle()), float(mfue.verify(fp, oracle()))


def figure5(source, zoo, extra: list, mfue, fp, seed: int) -> pd.DataFrame:
    """One line per model of the source's architecture: group, L2 distance, mean / median trigger loss, matching
    rate, and the 2-d t-SNE of its classification head."""

    records, heads = [], []
    models = [("source", "source", source)]
    for s in list(zoo) + extra:
        if s.role == "positive" and any(k in s.kind for k in EXTRACTION):
            continue
        models.append((s.name, _group(s), s.adapter))
    for name, group, adapter in models:
        if not same_arch(adapter.module, source.module):
            continue
        loss, rate = trigger_scores(mfue, fp, lambda: SuspectOracle(adapter))
        records.append({"model": name, "group": group, "l2_distance": param_distance(adapter.module, source.module),
                        "loss_mean": float(loss.mean()), "loss_median": float(loss.median()), "matching_rate": rate})
        heads.append(head_vector(adapter.module))
    frame = pd.DataFrame.from_records(records)
    xy = tsne(np.stack(heads), seed)
    return frame.assign(tsne_x=xy[:, 0], tsne_y=xy[:, 1])


def figure7(source, positive, triggers: dict[str, torch.Tensor], seed: int) -> pd.DataFrame:
    """One line per (trigger kind, trigger, model): its t-SNE point (joint per kind over both models) and shift."""
    records = []
    for kind, x in triggers.items():
        e_src, e_pos = embeddings(source, x), embeddings(positive, x)
        shift = ((e_pos - e_src).norm(dim=1) / e_src.norm(dim=1).clamp_min(1e-12)).numpy()
        xy = tsne(torch.cat([e_src, e_pos]).numpy(), seed)
        n = len(x)
        for i in range(n):
            for j, model in ((i, "source"), (n + i, "positive")):
                records.append({"triggers": kind, "index": i, "model": model, "tsne_x": xy[j, 0], "tsne_y": xy[j, 1],
                                "relative_shift": float(shift[i])})
    return pd.DataFrame.from_records(records)


def figure9_models(source, zoo, mfue, fp, test, seed: int, sigmas=SIGMAS) -> pd.DataFrame:
    """Per sigma: the source's test top-1 under DP-Logits, the mean trigger loss of positives / negatives, the AUC."""
    from sklearn.metrics import roc_auc_score


    out = []
    for sigma in sigmas:
        attack = get_attack({"name": "dp-logits", "sigma": sigma}) if sigma > 0 else None
        oracle = SuspectOracle(source, output_attack=attack, seed=seed)
        top1 = float((oracle.labels(test.images) == test.labels).float().mean()) * 100
        losses, rates = {"positive": [], "negative": []}, {"positive": [], "negative": []}
        for s in zoo:
            loss, rate = trigger_scores(mfue, fp, lambda: SuspectOracle(s.adapter, output_attack=attack, seed=seed))
            losses[s.role].append(float(loss.mean()))
            rates[s.role].append(rate)
        y = [1] * len(rates["positive"]) + [0] * len(rates["negative"])
        out.append({"sigma": sigma, "source_test_top1": top1, "loss_positives": float(np.mean(losses["positive"])),
                    "loss_negatives": float(np.mean(losses["negative"])),
                    "auc": float(roc_auc_score(y, rates["positive"] + rates["negative"]))})
    return pd.DataFrame.from_records(out)


# -- rendering ------------------------------------------------------------------------------------------------


def _reported(figure: str) -> str:
    frame = pd.DataFrame(REPORTED[figure], columns=["where", "claim"])
    return ("## Reported by the paper (not measured here)\n\nThe paper gives this figure as a plot without the numbers "
            f"behind it; its text says (kind `reported`; cite: {CITATION}, the figure and section shown):\n\n"
            + frame.to_markdown(index=False))


def _fig5_png(f: pd.DataFrame, path: Path, head: str) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for i, (group, part) in enumerate(f.groupby("group", sort=True)):
        style = {"marker": "*", "s": 160, "color": "k"} if group == "source" else \
            {"marker": "x" if group == "negative" else "o", "s": 28, "color": f"C{i}"}
        axes[0].scatter(part["tsne_x"], part["tsne_y"], label=group, **style)
        axes[1].scatter(part["l2_distance"], part["loss_mean"], label=group, **style)
    axes[0].set(title="(a) t-SNE of classification-head parameters", xlabel="t-SNE 1", ylabel="t-SNE 2")
    axes[1].set(title="(b) mean loss of the unlearnable triggers vs L2 distance from the source",
                xlabel="L2 distance of all parameters from the source", ylabel="mean MFUE-w trigger loss")
    axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    for ax in axes:
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3)
    return save_titled(fig, path, "MFUE Figure 5 shape", head)


def _fig7_png(f: pd.DataFrame, path: Path, head: str) -> Path:
    kinds = list(dict.fromkeys(f["triggers"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), layout="constrained", squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = f[f["triggers"] == kind]
        for model, marker, color in (("source", "o", "C0"), ("positive", "x", "C3")):
            pts = part[part["model"] == model]
            ax.scatter(pts["tsne_x"], pts["tsne_y"], marker=marker, s=18, color=color,
                       label=f"{model} model" + (f" ({ADV_POSITIVE})" if model == "positive" else ""))
        shift = part.drop_duplicates("index")["relative_shift"]
        ax.set(title=f"{kind} triggers: median relative shift {shift.median():.3f}", xlabel="t-SNE 1", ylabel="t-SNE 2")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    return save_titled(fig, path, "MFUE Figure 7 shape: t-SNE of trigger embeddings (last Linear's input)", head)


def _fig9_png(f: pd.DataFrame, path: Path, head: str) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained", sharex=True)
    axes[0].plot(f["sigma"], f["auc"], marker="o")
    axes[0].set(ylabel="AUC (MFUE-w)", ylim=(0, 1.05))
    axes[1].plot(f["sigma"], f["source_test_top1"], marker="o")
    axes[1].set(ylabel="source test top-1 (%)", ylim=(0, 102))
    axes[2].plot(f["sigma"], f["loss_positives"], marker="o", label="positives")
    axes[2].plot(f["sigma"], f["loss_negatives"], marker="x", label="negatives")
    axes[2].set(ylabel="mean MFUE-w trigger loss")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("DP-Logits noise scale sigma")
        ax.grid(alpha=0.3)
    return save_titled(fig, path, "MFUE Figure 9 shape (models): AUC, test accuracy and loss under DP-Logits", head)


def render_models(suite_name: str, out_dir: Path, extra_negatives: int = 8, sigmas=SIGMAS,
                  progress: bool = False) -> list[Path]:
    """mfue_fig5.{md,csv,png}, mfue_fig7.{md,csv,png} and mfue_fig9_models.{md,csv,png} for `suite_name`."""

    start = time.perf_counter()
    suite, source, defender, attacker, test, zoo = setting(suite_name, progress)
    seed = suite.seed
    positive = next((s for s in zoo if s.role == "positive" and _is_adv_positive(s.name)), None)
    if positive is None:
        raise UserError(f"suite {suite.name!r} has no positive {ADV_POSITIVE!r} (one step, any epochs) in [suspects]; "
                        "Figure 7 needs it")
    mfue_params = entry_params(suite, "mfue-w", tau=0.5)
    mfue = get_defense("mfue-w")(**mfue_params)
    fp = mfue.fingerprint(source, defender, seed)
    ipguard_params = entry_params(suite, "ipguard")
    adversarial = get_defense("ipguard")(**ipguard_params).fingerprint(source, defender, seed)
    family = ((suite.authorized[0] if isinstance(suite.authorized[0], dict) else {}).get("kwargs") or {}).get("family")
    extra = []
    if extra_negatives and family:
        config = zoo_config(suite)
        first = max(config.negative_seeds, default=-1) + 1
        for s in range(first, first + extra_negatives):
            module = independent(family, s, attacker, source.preprocess, config)
            adapter = ModelAdapter(f"independent({family},s{s},{attacker.name})", module, source.preprocess,
                                   f"fingerprint/{family}", "suspect-zoo")
            extra.append(Suspect(adapter.name, "independent", "negative", adapter,
                                 accuracy(module, source.preprocess, test)))

    f5 = figure5(source, zoo, extra, mfue, fp, seed)
    f7 = figure7(source, positive.adapter, {"unlearnable (MFUE-w)": fp.queries,
                                            "adversarial (IPGuard)": adversarial.queries}, seed)
    f9 = figure9_models(source, zoo, mfue, fp, test, seed, sigmas)
    wall = time.perf_counter() - start

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prov = {"suite": suite.name, "suite_digest": suite.digest, "git": provenance.git_revision(),
            "versions": provenance.versions(), "command": provenance.command_line(), "wall_s": round(wall, 1),
            "mfue-w": mfue_params, "ipguard": ipguard_params, "extra_negatives": extra_negatives}
    head = (f"Measured by authbench (suite `{suite.name}`, suite digest `{suite.digest}`, git `{prov['git']}`; "
            f"`python -m bench.reports.mfue_models {suite.name}`, {wall:.0f} s); MFUE-w {_params(mfue_params)}; "
            f"IPGuard {_params(ipguard_params)}.")
    paths = []
    spearman = _spearman(f5[f5["group"] != "source"], "l2_distance", "loss_mean")
    groups = f5.groupby("group", sort=True)[["l2_distance", "loss_mean", "matching_rate"]].mean()
    md5 = out / "mfue_fig5.md"
    md5.write_text("\n\n".join([
        head, "# MFUE Figure 5 shape: (a) t-SNE of classification-head parameters, (b) trigger loss vs L2 distance",
        "## Measured by authbench",
        f"Models of the source's architecture: the source, {int((f5['group'].str.startswith('positive')).sum())} positives "
        f"(extraction excluded) and {int((f5['group'] == 'negative').sum())} negatives ({extra_negatives} of them extra "
        f"seeds of the source's family beyond the suite's). Spearman correlation of L2 distance and mean trigger loss "
        f"over the suspects: {spearman:.3f}.",
        "### Mean per group", groups.to_markdown(floatfmt=".4f"),
        "### Every model (t-SNE coordinates in mfue_fig5.csv)",
        f5.drop(columns=["tsne_x", "tsne_y"]).to_markdown(index=False, floatfmt=".4f"), _reported("5")]) + "\n")
    paths += [md5, *write_csv(f5, out / "mfue_fig5.csv", prov, head), _fig5_png(f5, out / "mfue_fig5.png", head)]
    shifts = f7.drop_duplicates(["triggers", "index"]).groupby("triggers")["relative_shift"].describe()
    md7 = out / "mfue_fig7.md"
    md7.write_text("\n\n".join([
        head, f"# MFUE Figure 7 shape: trigger embeddings in the source and in the positive `{positive.name}`",
        "## Measured by authbench",
        "Relative embedding shift ||e_positive - e_source|| / ||e_source|| of each trigger (the t-SNE points, joint "
        "per trigger kind over both models, are in mfue_fig7.csv):", shifts.to_markdown(floatfmt=".4f"),
        _reported("7")]) + "\n")
    paths += [md7, *write_csv(f7, out / "mfue_fig7.csv", prov, head), _fig7_png(f7, out / "mfue_fig7.png", head)]
    md9 = out / "mfue_fig9_models.md"
    md9.write_text("\n\n".join([
        head, "# MFUE Figure 9 shape (models): the source's test top-1, the mean MFUE-w trigger loss of positives and "
        "negatives, and the AUC of the MFUE-w matching rates under DP-Logits (sigma 0 = no attack)",
        "## Measured by authbench", f9.to_markdown(index=False, floatfmt=".4f"), _reported("9")]) + "\n")
    paths += [md9, *write_csv(f9, out / "mfue_fig9_models.csv", prov, head),
              _fig9_png(f9, out / "mfue_fig9_models.png", head)]
    return paths


def _is_adv_positive(name: str) -> bool:
    """A one-step positive `...->advtrain(4/255[,epochs])`: the paper's eps_adv of Figure 7."""

    chain = name.split("->", 1)[-1] if "->" in name else ""
    steps = parse_chain(chain) if chain and "->" not in chain else []
    return (len(steps) == 1 and steps[0][0] == "advtrain"
            and abs(parse_number(steps[0][1][0]) - parse_number(ADV_POSITIVE[9:-1])) < 1e-12)


def _params(p: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(p.items()))


def _spearman(f: pd.DataFrame, a: str, b: str) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(f[a], f[b]).statistic) if len(f) > 2 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reports.mfue_models", description=__doc__.splitlines()[0])
    parser.add_argument("suite", help="an ownership (verify) suite with mfue-w and ipguard entries, e.g. fingerprint-digits")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--extra-negatives", type=int, default=8,
                        help="more negatives of the source's family for Figure 5 (default 8)")
    parser.add_argument("--sigma", type=float, action="append", help=f"DP-Logits sigma (repeatable; default {SIGMAS})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))

    def work() -> list[Path]:
        if args.extra_negatives < 0 or any(s < 0 for s in args.sigma or ()):
            raise UserError("--extra-negatives and --sigma must be >= 0")
        return render_models(args.suite, args.out, args.extra_negatives, tuple(args.sigma or SIGMAS))

    return script_main(work)


if __name__ == "__main__":
    sys.exit(main())
