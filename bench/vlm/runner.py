"""Run an MMBench suite: clean and NE cells per (authorized, evaluated) VLM, one row per cell.

The released artifact of an NE cell is one 8-bit PNG per MMBench image (circular copies share
their image), at the authorized model's canvas, written under <out>/released/. Every evaluated
model answers VLMEvalKit's prompt with that image; predictions are cached per (model identity,
image bytes, prompt), so a rerun or an added unauthorized model recomputes nothing already
answered. Rows follow bench.results; metrics.top1 = Overall x 100, plus every group.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from bench import provenance
from bench.cache import atomic_write_bytes, cache_root, digest
from bench.errors import UserError
from bench.models.adapter import weights_digest
from bench.results import ResultWriter
from bench.runner import RunSummary, _grid, model_label
from bench.suite import Suite
from bench.vlm.mmbench import PredictionCache, evaluate, file_sha, load_mmbench, message_for
from bench.vlm.ne import VLMNE, patch_deviation
from bench.vlm.profiles import profile_for
from bench.vlm.vlmeval_import import import_vlmeval


def load_vlm(spec: dict, progress: bool = False):
    """A VLMEvalKit model by its VLMEvalKit name (spec "vlmeval", default the label), kwargs from "kwargs"."""
    config = import_vlmeval("vlmeval.config")
    name = spec.get("vlmeval", spec["name"])
    if name not in config.supported_VLM:
        raise UserError(f"VLMEvalKit has no model {name!r}; see vlmeval.config.supported_VLM")
    return config.supported_VLM[name](**spec.get("kwargs", {}))


class VLMRunner:
    def __init__(self, suite: Suite, out_dir: Path, *, models: list[str] | None = None, cache_dir: Path | None = None,
                 progress: bool = True, loader=load_vlm):
        self.suite, self.out_dir, self.progress, self.loader = suite, Path(out_dir), progress, loader
        root = Path(cache_dir) if cache_dir else cache_root()
        self.cache = PredictionCache(root)
        self.encoded = root / "vlm-encoded"
        name = str(suite.data.get("name") or "MMBench_DEV_EN")
        root = suite.data.get("root")  # --data-root: <root>/<name>.tsv
        self.source = str(suite.data.get("path") or (Path(root) / f"{name}.tsv" if root else name))
        self.judge = str(suite.data.get("judge", "exact_matching"))
        specs = [s if isinstance(s, dict) else {"name": s} for s in [*suite.authorized, *suite.evaluated]]
        self.specs = {model_label(s): s for s in specs}
        for m in models or []:
            if m not in self.specs:
                raise UserError(f"model {m!r} is not in suite {suite.name!r}; valid choices: {', '.join(self.specs)}")
        keep = (lambda labels: [x for x in labels if x in models]) if models else (lambda labels: labels)
        self.authorized = keep([model_label(s) for s in suite.authorized])
        self.evaluated = keep(list(self.specs))
        self.profiles = {label: profile_for(spec) for label, spec in self.specs.items()}
        self.entries = []
        for entry in suite.defenses:
            if entry.name != VLMNE.name:
                raise UserError(f"suite {suite.name!r}: MMBench suites take defense {VLMNE.name!r}, got {entry.name!r}")
            for point in _grid(entry.sweep):
                self.entries.append((VLMNE(**{**entry.params, **point}).params, point))
        self._models: dict = {}
        self._identities: dict = {}
        self.generated = 0

    def model(self, label: str):
        if label not in self._models:
            self._models[label] = self.loader(self.specs[label], self.progress)
        return self._models[label]

    def identity(self, label: str) -> dict:
        """VLMEvalKit name, kwargs and a digest of the weights (or the model's own `identity`), computed once."""
        if label not in self._identities:
            m = self.model(label)
            self._identities[label] = getattr(m, "identity", None) or {
                "vlmeval": self.specs[label].get("vlmeval", label), "kwargs": self.specs[label].get("kwargs", {}),
                "weights": weights_digest(self._module(label))}
        return self._identities[label]

    def _cells(self) -> list[dict]:
        base = {"suite": self.suite.name, "benchmark": "mmbench", "task": "mmbench", "attack": "none", "trial": 0}
        cells = [{**base, "defense": "none", "params": {}, "point": {}, "release": "clean", "authorized": "",
                  "evaluated": e} for e in self.evaluated]
        for params, point in self.entries:
            cells += [{**base, "defense": VLMNE.name, "params": params, "point": dict(point), "release": "uint8",
                       "authorized": a, "evaluated": e} for a in self.authorized for e in self.evaluated]
        for c in cells:
            c["cell"] = digest({**c, "data": self.suite.data, "seed": self.suite.seed})[:24]
        return cells

    def _subset(self, dataset) -> None:
        """Keep a seeded subset of `subset` questions (with all their circular copies); 0 keeps all."""
        n = int(self.suite.data.get("subset", 0))
        groups = np.unique([int(i) % 1_000_000 for i in dataset.data["index"]])
        if 0 < n < len(groups):
            keep = set(np.random.default_rng(int(self.suite.data.get("subset_seed", self.suite.seed))).choice(groups, n, replace=False))
            dataset.data = dataset.data[[int(i) % 1_000_000 in keep for i in dataset.data["index"]]]

    def _images(self, dataset) -> dict[int, str]:
        """group index -> the clean image file VLMEvalKit decodes for it."""
        out = {}
        for i in range(len(dataset.data)):
            line = dataset.data.iloc[i]
            g = int(line["index"]) % 1_000_000
            if g not in out:
                out[g] = dataset.dump_image(line)[0]
        return out

    def _release(self, auth: str, params: dict, clean: dict[int, str]) -> tuple[dict[int, str], dict]:
        """Encode every image for `auth` (or take it from the encoding cache) and write the released PNGs."""
        folder = self.out_dir / "released" / auth / digest(params)[:12]
        folder.mkdir(parents=True, exist_ok=True)
        ne = None
        paths, stats = {}, []
        for g, path in tqdm(clean.items(), desc=f"NE for {auth}", disable=not self.progress, leave=False):
            key = digest({"auth": self.identity(auth), "params": params, "seed": self.suite.seed, "image": file_sha(path)})
            png, meta = self.encoded / key[:2] / f"{key}.png", self.encoded / key[:2] / f"{key}.json"
            try:
                data, s = png.read_bytes(), json.loads(meta.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                if ne is None:
                    ne = VLMNE(**params)
                    ne.fit(self._module(auth), self.profiles[auth])
                image, s = ne.encode(Image.open(path), g, self.suite.seed)
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                data = buf.getvalue()
                atomic_write_bytes(png, data)
                atomic_write_bytes(meta, json.dumps(s).encode())
            paths[g] = str(folder / f"{g}.png")
            atomic_write_bytes(Path(paths[g]), data)
            stats.append(s)
        summary = {k: float(np.mean([s[k] for s in stats])) for k in ("psnr_true", "auth_dev", "encode_ms")}
        summary["subspace_dim"] = int(np.mean([s["subspace_dim"] for s in stats]))
        return paths, summary

    def _module(self, label: str):
        m = self.model(label)
        return getattr(m, "model", m)

    def _answer(self, label: str, dataset, images: dict[int, str]) -> dict[int, str]:
        model, ident, out = self.model(label), self.identity(label), {}
        shas = {g: file_sha(p) for g, p in images.items()}
        for i in tqdm(range(len(dataset.data)), desc=f"{label} answers", disable=not self.progress, leave=False):
            line = dataset.data.iloc[i]
            g = int(line["index"]) % 1_000_000
            message = message_for(model, dataset, line, images[g])
            key = self.cache.key(ident, shas[g], message)
            pred = self.cache.get(key)
            if pred is None:
                with torch.no_grad():
                    pred = str(model.generate(message=message, dataset=dataset.dataset_name))
                self.cache.put(key, pred)
                self.generated += 1
            out[int(line["index"])] = pred
        return out

    def _row(self, cell: dict, scores: dict, extra: dict, n: int) -> dict:
        auth, e = cell["authorized"], cell["evaluated"]
        role = "clean" if not auth else "authorized" if e == auth else \
            "same-arch" if self.profiles[e].family == self.profiles[auth].family else "unauthorized"
        return {
            **cell,
            "suite_digest": self.suite.digest,
            "role": role,
            "arch": {"authorized": self.profiles[auth].family if auth else "", "evaluated": self.profiles[e].family},
            "metrics": {**scores, "top1": 100.0 * scores["Overall"], "first_layer_dev": extra.get("dev")},
            "encoding": extra.get("encoding"),
            "attack_stats": None,
            "cost": None,
            "n": n,
            "provenance": provenance.row_provenance(
                digest(self.identity(e)), digest(self.identity(auth)) if auth else None, extra["input_digest"], None,
                self.suite.seed, extra["wall_s"], {"hits": self.cache.hits, "misses": self.cache.misses, "corrupt": 0},
                self.generated),
        }

    def run(self) -> RunSummary:
        start = time.perf_counter()
        writer = ResultWriter(self.out_dir)
        before = writer.rows()
        done = {r["cell"] for r in before}
        pending = [c for c in self._cells() if c["cell"] not in done]
        rows = []
        if pending:
            dataset = load_mmbench(self.source)
            self._subset(dataset)
            clean = self._images(dataset)
            released: dict = {}
            for cell in tqdm(pending, desc=f"{self.suite.name} cells", disable=not self.progress):
                t0 = time.perf_counter()
                extra: dict = {}
                if cell["defense"] == "none":
                    images = clean
                else:
                    key = digest([cell["authorized"], cell["params"]])
                    if key not in released:
                        released[key] = self._release(cell["authorized"], cell["params"], clean)
                    images, enc = released[key]
                    extra["encoding"] = {**enc, "psnr_nominal": None}
                    e = cell["evaluated"]
                    extra["dev"] = float(np.mean([patch_deviation(self._module(e), self.profiles[e], Image.open(clean[g]),
                                                                  Image.open(images[g])) for g in clean]))
                preds = self._answer(cell["evaluated"], dataset, images)
                scores = evaluate(dataset, preds, self.out_dir / "vlmeval" / cell["cell"], self.judge)
                extra["input_digest"] = digest(sorted(file_sha(p) for p in images.values()))
                extra["wall_s"] = time.perf_counter() - t0
                row = self._row(cell, scores, extra, len(dataset.data))
                writer.append([row])
                rows.append(row)
        return RunSummary(cells_total=len(before) + len(rows), cells_done_before=len(before), cells_run=len(rows),
                          forwards=self.generated, encodings=0,
                          cache={"hits": self.cache.hits, "misses": self.cache.misses, "corrupt": 0},
                          wall_s=time.perf_counter() - start, results=writer.path)
