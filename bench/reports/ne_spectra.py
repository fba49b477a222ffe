"""NE Table 5 and Figure 3 (first-layer singular values) and Table 6 (layer-wise deviation norms), measured.

`authbench tables ne-spectra` and `authbench tables ne-layers` build the paper's backbones from their
published configurations (transformers, `pretrained = false`: seeded random weights, labelled so; with
`--pretrained` on a machine with hub access, the published weights) or the digits zoo (trained weights),
measure, and write Markdown with the paper's figures beside the measured ones and the delta.

- Table 5: max / min / mean / median of the singular values of the first linear map's weight, flattened
  per output as the public code does (`layer.weight.view(out_channels, -1)`: the layer's own weight, on
  the processor-normalized input; min(m, n) values).
- Figure 3: P95 / P99 = the fewest singular components (largest first) whose squared singular values
  reach 95% / 99% of the total (the spectral energy), and the spectra as a PNG.
- Table 6: NE (ne-patch, tau = 1e-4 threshold) made for the authorized model at each PSNR; the
  forward operations the paper counts (Conv2d, BatchNorm2d, ReLU, downsample 1x1 convs included) are
  taken in execution order and every `every`-th one (L0 = the first) records the relative deviation
  ||h(x~) - h(x)|| / ||h(x)||, averaged over the images, for the authorized model and for every other
  model on the same release. The paper does not say how its norms are normalised; relative is ours.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from bench.core import provenance  # noqa: E402
from bench.data import load_dataset  # noqa: E402
from bench.defenses import get_defense  # noqa: E402
from bench.defenses.release import calibrate  # noqa: E402
from bench.core.errors import UserError  # noqa: E402
from bench.models.sources import load_model  # noqa: E402
from bench.reports.ne_reported import CITATION, LAYERS_REPORTED, SPECTRA_REPORTED  # noqa: E402
from bench.reports.tables import to_markdown  # noqa: E402

# The paper's backbones (its Tables 1 and 5), as the GPU suites load them; MambaVision ships its own code
# and needs CUDA (bench.models.hf_vision), so it is listed but builds only on such a machine.
BACKBONES = {
    "resnet-50": ("ResNet-50", {"source": "hf", "model": "microsoft/resnet-50"}),
    "vit-b16": ("ViT-Base", {"source": "hf", "model": "google/vit-base-patch16-224"}),
    "swinv2-t": ("SwinV2-T", {"source": "hf", "model": "microsoft/swinv2-tiny-patch4-window8-256"}),
    "deit-b16": ("DeiT-B", {"source": "hf", "model": "facebook/deit-base-patch16-224"}),
    "mambavision-t": ("MambaVision-T", {"source": "hf", "model": "nvidia/MambaVision-T-1K", "trust_remote_code": True}),
}
ZOO = ("mlp-s0", "cnn-s0", "resnet-s0", "vit-s0", "mixer-s0")
LAYER_OPS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)
TABLE6_PSNR = (40, 35, 30, 25, 20, 15, 10, 5, 0)


def model_spec(name: str, pretrained: bool, seed: int = 0) -> tuple[str, dict, str]:
    """(paper name or '', load_model spec, weights label) for a backbone key or 'zoo:<name>'."""
    if name.startswith("zoo:"):
        return "", {"source": "zoo", "model": name[4:]}, "digits zoo (trained, pinned)"
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)} or zoo:<name> ({', '.join(ZOO)})")
    paper, spec = BACKBONES[name]
    if pretrained:
        return paper, {**spec, "name": name}, "pretrained (hub)"
    return paper, {**spec, "name": name, "pretrained": False, "init_seed": seed}, f"random weights (seed {seed})"


def raw_weight(adapter) -> torch.Tensor:
    """The first linear map as the layer holds it (normalized-input space): (m, n) float64."""
    fl = adapter.first_linear()
    c = fl.input_shape[0]
    n = fl.matrix.shape[1]
    std = torch.tensor(adapter.preprocess.std, dtype=torch.float64).expand(c).repeat_interleave(n // c)
    return fl.matrix.to(torch.float64) * std


def spectrum(adapter) -> np.ndarray:
    return torch.linalg.svdvals(raw_weight(adapter)).numpy()


def energy_count(s: np.ndarray, fraction: float) -> int:
    """The fewest largest singular components whose squared values reach `fraction` of the total."""
    e = np.cumsum(np.sort(s)[::-1] ** 2) / max(float((s**2).sum()), 1e-300)
    return int(np.searchsorted(e, fraction - 1e-12) + 1)


def spectrum_stats(s: np.ndarray) -> dict:
    return {"Max": float(s.max()), "Min": float(s.min()), "Mean": float(s.mean()), "Median": float(np.median(s)),
            "P95": energy_count(s, 0.95), "P99": energy_count(s, 0.99), "values": len(s)}


def _reported(entries: list[dict], table, row: str, column: str) -> dict | None:
    return next((e for e in entries if e["table"] == table and e["row"] == row and e["column"] == column), None)


def _fmt(v: float) -> str:
    return f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"


def _header(weights: set[str], quoted: bool) -> list[str]:
    line = f"Measured by authbench (git `{provenance.git_revision()}`); " + (
        f"the `reported` column quotes {CITATION} (table, row and column as labelled), at the paper's printed precision."
        if quoted else "no figure here is reported by a paper.")
    out = [line, ""]
    if any(w.startswith("random") for w in weights):
        out += ["**RANDOM WEIGHTS**: backbones built from their published configurations with seeded random "
                "initialisation (`pretrained = false`, no hub). Their spectra are the initialiser's, not the trained "
                "models' the paper measured: the delta shows the shape of the comparison only. Rerun with "
                "`--pretrained` where the hub is reachable.", ""]
    return out


def render_spectra(names: list[str], out_dir: Path, pretrained: bool = False, seed: int = 0) -> list[Path]:
    """ne_table5_spectra.md (+ .csv) and ne_fig3_spectra.png for the backbones `names`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, compare, spectra, weights = [], [], {}, set()
    for k, name in enumerate(names):
        paper, spec, label = model_spec(name, pretrained, seed + k)
        adapter = load_model(spec, progress=False)
        s = spectrum(adapter)
        stats = spectrum_stats(s)
        w = raw_weight(adapter)
        spectra[name] = s
        weights.add(label)
        records.append({"model": name, "paper name": paper or "–", "weights": label,
                        "W (m x n)": f"{w.shape[0]} x {w.shape[1]}", **stats})
        for col in ("Max", "Min", "Mean", "Median", "P95", "P99"):
            rep = _reported(SPECTRA_REPORTED, 5 if col not in ("P95", "P99") else "Figure 3", paper, col)
            if rep is not None:
                compare.append({"model": name, "weights": label, "paper row": paper, "column": col,
                                "measured": _fmt(stats[col]) if col not in ("P95", "P99") else str(stats[col]),
                                "reported": rep["text"], "delta": _fmt(stats[col] - rep["value"]),
                                "cite": f"{'Table 5' if rep['table'] == 5 else 'Figure 3 (App. C.1 text)'}"})
    frame = pd.DataFrame.from_records(records)
    shown = frame.copy()
    for col in ("Max", "Min", "Mean", "Median"):
        shown[col] = shown[col].map(_fmt)
    parts = _header(weights, bool(compare)) + ["# NE Table 5 and Figure 3: first-layer singular values", "",
                                "Singular values of the first linear map's weight as the layer holds it "
                                "(out x in, flattened per output, as the public NE code takes it); P95 / P99: "
                                "components (largest first) reaching 95% / 99% of the sum of squared singular values.", "",
                                "## Measured", "", shown.to_markdown(index=False), ""]
    if compare:
        parts += ["## Measured beside the paper (delta = measured - reported)", "",
                  pd.DataFrame.from_records(compare).to_markdown(index=False), ""]
    md = out_dir / "ne_table5_spectra.md"
    md.write_text("\n".join(parts))
    csv = out_dir / "ne_table5_spectra.csv"
    frame.to_csv(csv, index=False)
    return [md, csv, _plot_spectra(spectra, out_dir / "ne_fig3_spectra.png", weights)]


def _plot_spectra(spectra: dict, path: Path, weights: set[str]) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, s in spectra.items():
        s = np.sort(s)[::-1]
        energy = np.cumsum(s**2) / (s**2).sum()
        axes[0].semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-12), label=name)
        axes[1].plot(np.arange(1, len(s) + 1), energy, label=f"{name} (P95@{energy_count(s, .95)}, P99@{energy_count(s, .99)})")
    axes[0].set(xlabel="component", ylabel="singular value", title="first-layer spectrum")
    axes[1].axhline(0.95, ls="--", c="grey"), axes[1].axhline(0.99, ls=":", c="grey")
    axes[1].set(xlabel="components", ylabel="energy fraction", title="cumulative spectral energy")
    axes[1].legend(fontsize=7)
    fig.suptitle("measured by authbench; " + ", ".join(sorted(weights)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- Table 6 -------------------------------------------------------------------------------------------


def layer_outputs(adapter, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of the paper's forward operations (LAYER_OPS), in execution order, for pixel images x."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().flatten(1).double().clone()))
             for m in adapter.module.modules() if isinstance(m, LAYER_OPS)]
    try:
        adapter.predict(x, batch_size=len(x))
    finally:
        for h in hooks:
            h.remove()
    return seen


def layer_deviations(adapter, clean: torch.Tensor, released: torch.Tensor, every: int) -> list[float]:
    """Mean relative deviation at operations 0, every, 2 * every, ... (the paper's L0, L1, ...)."""
    a, b = layer_outputs(adapter, clean), layer_outputs(adapter, released)
    return [float(((b[i] - a[i]).norm(dim=1) / a[i].norm(dim=1).clamp_min(1e-12)).mean()) for i in range(0, len(a), every)]


def probe_images(adapter, samples: int, seed: int) -> tuple[torch.Tensor, str]:
    """Images at the model's input size: the digits test split for a 1-channel zoo model, else seeded smooth
    random images (no dataset is reachable offline; labelled so)."""
    c, h, w = adapter.preprocess.input_size
    if c == 1:
        test = load_dataset("digits", "test").subset(samples, seed)
        return adapter.preprocess.geometry(test.images), f"digits test split ({samples} seeded images)"
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(samples, c, max(2, h // 16), max(2, w // 16), generator=g)
    x = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return x, f"{samples} seeded smooth random images (synthetic: no dataset offline)"


def render_layers(authorized: str, others: list[str], out_dir: Path, pretrained: bool = False, seed: int = 0,
                  samples: int = 8, psnrs=TABLE6_PSNR, every: int = 40, psnr_mode: str = "true") -> list[Path]:
    """ne_table6_layers.md (+ .csv): layer-wise deviation of the authorized model and of `others` on NE made
    for the authorized one, at each PSNR."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paper, spec, label = model_spec(authorized, pretrained, seed)
    auth = load_model(spec, progress=False)
    models = {authorized: (auth, label)}
    for k, name in enumerate(others):
        _, s, lab = model_spec(name, pretrained, seed + 1 + k)
        models[name] = (load_model(s, progress=False), lab)
    x, data_label = probe_images(auth, samples, seed)
    ne = get_defense("ne-patch")(tau=1e-4, rule="threshold")
    ne.fit(SimpleNamespace(first_linear=auth.first_linear))
    d = ne.directions(x, list(range(len(x))), [0] * len(x), seed)
    std = tuple(auth.preprocess.std) * (x.shape[1] if len(auth.preprocess.std) == 1 else 1)
    records = []
    for db in psnrs:
        cal = calibrate(x.double(), d, float(db), "float", psnr_mode, std)
        for name, (adapter, lab) in models.items():
            devs = layer_deviations(adapter, x, cal.released.to(x.dtype), every)
            records.append({"model": name, "role": "authorized" if name == authorized else "unauthorized",
                            "weights": lab, "PSNR (dB)": db, "true PSNR": float(cal.psnr_true.mean()),
                            **{f"L{i}": v for i, v in enumerate(devs)}})
    frame = pd.DataFrame.from_records(records)
    levels = [c for c in frame.columns if c.startswith("L")]
    parts = _header({lab for _, lab in models.values()}, paper == "ResNet-50") + [
        f"# NE Table 6: layer-wise deviation norms, NE made for {authorized}", "",
        f"Relative deviation ||h(x~) - h(x)|| / ||h(x)|| (mean over {data_label}) at every {every}th forward operation "
        f"({', '.join(t.__name__ for t in LAYER_OPS)}, in execution order; L0 = the first); ne-patch tau = 1e-4, "
        f"psnr_mode {psnr_mode!r}, float release. The paper's Table 6 is the authorized ResNet-50 only and does not "
        "say how its norms are normalised.", "",
        "## Measured", "", to_markdown(frame, decimals={**{c: 4 for c in levels}, "true PSNR": 2, "PSNR (dB)": 0},
                                        index=False), ""]
    if paper == "ResNet-50":
        compare = []
        own = frame[frame["model"] == authorized]
        for _, row in own.iterrows():
            for col in levels:
                rep = _reported(LAYERS_REPORTED, 6, f"{row['PSNR (dB)']} dB", col)
                if rep is not None and not math.isnan(row[col]):
                    compare.append({"PSNR (dB)": row["PSNR (dB)"], "level": col, "measured": f"{row[col]:.4f}",
                                    "reported": rep["text"], "delta": f"{row[col] - rep['value']:.4f}"})
        parts += ["## Authorized ResNet-50 beside the paper's Table 6 (delta = measured - reported)", "",
                  pd.DataFrame.from_records(compare).to_markdown(index=False), ""]
    md, csv = out_dir / "ne_table6_layers.md", out_dir / "ne_table6_layers.csv"
    md.write_text("\n".join(parts))
    frame.to_csv(csv, index=False)
    return [md, csv]
